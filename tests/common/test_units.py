"""One size style in everything a run prints: pg_size_pretty's units (module_utils/pgmigrate/common/units.py)."""

import pytest

from pgmigrate.common.units import human_bytes


@pytest.mark.parametrize("count, text", [
    (0, "0 B"), (None, "0 B"), (693, "693 B"), (1023, "1023 B"), (1024, "1.0 kB"), (44577, "43.5 kB"),
    (135790592, "129.5 MB"), (369467636, "352.4 MB"), (5 << 30, "5.0 GB"), (3 << 40, "3.0 TB"), (2 << 50, "2048.0 TB"),
])
def test_sizes_read_as_pg_size_pretty_writes_them(count, text):
    assert human_bytes(count) == text
