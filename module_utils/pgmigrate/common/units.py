"""One style for sizes in everything a run prints or sends: pg_size_pretty's units (1024-based, B, kB, MB,
GB, TB), one decimal above bytes: "693 B", "43.5 kB", "129.5 MB"."""


def human_bytes(count):
    value = float(count or 0)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"
