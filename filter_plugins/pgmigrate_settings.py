"""Filter: the migration_* settings a spec refuses, one message each (module_utils/pgmigrate/common/settings.py).

Runs inside ansible-playbook, so the pre-check of every entry playbook costs no module run:
  {{ settings | pgmigrate_setting_problems(spec) }}  ->  ["migration_workers='0' is not accepted: ..."]
  {{ names | pgmigrate_misspelled_settings(known, ignore) }}  ->  ["migration_worker ...: did you mean ...?"]
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils"))
from pgmigrate.common.settings import misspelled, problems  # noqa: E402


class FilterModule:
    def filters(self):
        return {"pgmigrate_setting_problems": problems, "pgmigrate_misspelled_settings": misspelled}
