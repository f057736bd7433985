"""Filter pgmigrate_wave_sizes: how many application hosts each wave of a blue-green cutover moves
(playbooks/zero_downtime.yml, zero_downtime_waves), from a list like [1, "50%"]."""

import math

from ansible.errors import AnsibleFilterError


def wave_sizes(waves, host_count):
    """The number of hosts of each wave, in order: an integer is that many hosts, "N%" that share of all the
    application hosts (rounded up, at least one). The waves stop when every host is in one; the hosts left
    after the last wave are switched at the cutover. Raises a message naming zero_downtime_waves."""
    if waves in (None, "", []):
        return []
    if not isinstance(waves, (list, tuple)):
        raise AnsibleFilterError(f"zero_downtime_waves must be a list such as [1, '50%'], not {waves!r}")
    sizes, placed = [], 0
    for entry in waves:
        size = _size(entry, host_count)
        size = min(size, host_count - placed)
        if size <= 0:
            break
        sizes.append(size)
        placed += size
    return sizes


def _size(entry, host_count):
    text = str(entry).strip()
    try:
        if text.endswith("%"):
            share = float(text[:-1])
            if not 0 < share <= 100:
                raise ValueError
            return max(1, math.ceil(host_count * share / 100))
        count = int(text)
        if count < 1:
            raise ValueError
        return count
    except ValueError:
        raise AnsibleFilterError(f"zero_downtime_waves: {entry!r} is not a wave: each is a number of hosts (1 or "
                                 "more) or a share of them ('1%' to '100%'), e.g. [1, '50%']") from None


class FilterModule:
    def filters(self):
        return {"pgmigrate_wave_sizes": wave_sizes}
