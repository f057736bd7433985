"""Where the application goes after the switch: the target's connection, without its password."""

from .run_state import now, write_json_atomically


def switch_description(target):
    """The target's connection without its password."""
    return {k: v for k, v in target.items() if k in ("host", "port", "dbname", "user", "sslmode")}


def write_switch_file(path, target, run_name):
    write_json_atomically(path, {**switch_description(target), "run": run_name, "switched_at": now()}, mode=0o644)
