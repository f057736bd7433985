"""One style for sizes and durations in everything a run prints or sends: pg_size_pretty's units (1024-based,
B, kB, MB, GB, TB), one decimal above bytes: "693 B", "43.5 kB", "129.5 MB"; durations as 42s, 3m07s, 1h05m."""


def human_bytes(count):
    value = float(count or 0)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def human_seconds(seconds):
    """42s, 3m07s, 1h05m; "?" when unknown (None)."""
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
