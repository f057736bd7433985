"""One style for sizes and durations in everything a run prints or sends: pg_size_pretty's units (1024-based,
B, kB, MB, GB, TB), one decimal above bytes: "693 B", "43.5 kB", "129.5 MB"; durations (human_duration) as
"850 ms", "12.3 s", "4 min 05 s", "1 h 02 min" everywhere: reports, summaries, messages, and the live progress
lines (in whole seconds below a minute: "42 s")."""


def human_bytes(count):
    value = float(count or 0)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def human_duration(seconds, whole=False):
    """850 ms, 12.3 s, 4 min 05 s, 1 h 02 min; "-" when unknown (None or not a number). whole=True, for the
    live progress lines that change every second: whole seconds below a minute (0 s, 42 s), the same above."""
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        return "-"
    if seconds < 0:
        return "-" + human_duration(-seconds, whole)
    if whole and round(seconds) < 60:
        return f"{round(seconds)} s"
    if not whole and round(seconds * 1000) < 1000:
        return f"{seconds * 1000:.0f} ms"
    if not whole and round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min"


def elapsed_and_eta(elapsed, eta=False):
    """The live progress lines' clock: "elapsed 42 s ETA 3 min 07 s"; an unknown ETA (None) reads "ETA ?",
    and eta=False (no estimate at all) leaves it out."""
    text = f"elapsed {human_duration(elapsed, whole=True)}"
    if eta is False:
        return text
    return f"{text} ETA {'?' if eta is None else human_duration(eta, whole=True)}"
