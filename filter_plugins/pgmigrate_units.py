"""Filter pgmigrate_bytes: a size as every part of a run prints it (module_utils/pgmigrate/common/units.py):
  {{ 44577 | pgmigrate_bytes }}  ->  "43.5 kB"
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils"))
from pgmigrate.common.units import human_bytes  # noqa: E402


class FilterModule:
    def filters(self):
        return {"pgmigrate_bytes": human_bytes}
