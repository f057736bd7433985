"""One style for sizes and durations in everything a run prints: pg_size_pretty's units, and "850 ms", "12.3 s",
"4 min 05 s", "1 h 02 min" (module_utils/pgmigrate/common/units.py)."""

import pytest

from pgmigrate.common.units import elapsed_and_eta, human_bytes, human_duration


@pytest.mark.parametrize("count, text", [
    (0, "0 B"), (None, "0 B"), (693, "693 B"), (1023, "1023 B"), (1024, "1.0 kB"), (44577, "43.5 kB"),
    (135790592, "129.5 MB"), (369467636, "352.4 MB"), (5 << 30, "5.0 GB"), (3 << 40, "3.0 TB"), (2 << 50, "2048.0 TB"),
])
def test_sizes_read_as_pg_size_pretty_writes_them(count, text):
    assert human_bytes(count) == text


@pytest.mark.parametrize("seconds, text", [
    (0, "0 s"), (0.4, "0 s"), (42.4, "42 s"), (59.6, "1 min 00 s"), (187, "3 min 07 s"), (3900, "1 h 05 min"),
])
def test_live_progress_durations_are_the_same_style_in_whole_seconds(seconds, text):
    assert human_duration(seconds, whole=True) == text


def test_the_progress_clock_says_when_the_eta_is_unknown():
    assert elapsed_and_eta(42, 187) == "elapsed 42 s ETA 3 min 07 s"
    assert elapsed_and_eta(42, None) == "elapsed 42 s ETA ?"
    assert elapsed_and_eta(3900) == "elapsed 1 h 05 min"
