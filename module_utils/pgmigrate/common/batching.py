"""Consecutive groups of items bounded by count and size: large objects copied per batch, small tables
digested per statement."""


def consecutive_groups(items, size_of, max_count, max_bytes):
    """Groups of at most max_count items and (unless one alone is larger) max_bytes of size_of(item), in order."""
    groups, current, size = [], [], 0
    for item in items:
        if current and (len(current) >= max_count or size + size_of(item) > max_bytes):
            groups.append(current)
            current, size = [], 0
        current.append(item)
        size += size_of(item)
    if current:
        groups.append(current)
    return groups
