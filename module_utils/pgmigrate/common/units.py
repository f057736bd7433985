"""One style for sizes and durations in everything a run prints or sends: pg_size_pretty's units (1024-based,
B, kB, MB, GB, TB), one decimal above bytes: "693 B", "43.5 kB", "129.5 MB"; durations (human_duration) as
"850 ms", "12.3 s", "4 min 05 s", "1 h 02 min" in reports and summaries; the live one-line progress keeps its
compact whole seconds (human_seconds: 42s, 3m07s, 1h05m)."""


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


def human_duration(seconds):
    """850 ms, 12.3 s, 4 min 05 s, 1 h 02 min; "-" when unknown (None or not a number)."""
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        return "-"
    if seconds < 0:
        return "-" + human_duration(-seconds)
    if round(seconds * 1000) < 1000:
        return f"{seconds * 1000:.0f} ms"
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min"
