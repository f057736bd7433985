"""filter_plugins/pgmigrate_waves.py: the hosts of each blue-green wave, and the refusal of a wave that is not one."""

import pytest
from ansible.errors import AnsibleFilterError

from filter_plugins.pgmigrate_waves import wave_sizes


@pytest.mark.parametrize(("waves", "hosts", "sizes"), [
    ([], 4, []),
    (None, 4, []),
    ([1], 4, [1]),
    ([1, "50%"], 4, [1, 2]),
    ([1, "50%"], 3, [1, 2]),       # the share of all hosts, rounded up, capped by those left
    (["10%"], 3, [1]),             # at least one host
    ([1, 1, 1], 2, [1, 1]),        # no wave beyond the hosts
    ([2, "100%"], 5, [2, 3]),
])
def test_wave_sizes(waves, hosts, sizes):
    assert wave_sizes(waves, hosts) == sizes


@pytest.mark.parametrize("waves", [[0], ["0%"], ["150%"], ["half"], [-1], "1,2"])
def test_a_wave_that_is_not_one_is_refused_naming_the_setting(waves):
    with pytest.raises(AnsibleFilterError, match="zero_downtime_waves"):
        wave_sizes(waves, 4)
