"""The names of what a run creates (publication, subscription, slot), its connection string, and the
masking of the passwords in every message that leaves the module."""

import re

from .errors import LogicalError

TOOL_MARK = "pgmigrate zero_downtime"


OBJECT_PREFIX = "pgmigrate_zd_"

# The reverse replication after the cutover (new database -> old source): its publication, slot, subscription.
REVERSE_PREFIX = "pgmigrate_zr_"


MAX_IDENTIFIER = 63


def object_name(run_name, prefix=OBJECT_PREFIX):
    """The publication's, subscription's and slot's name: pgmigrate_zd_<run name> (pgmigrate_zr_ for the
    reverse replication), a valid slot name."""
    cleaned = re.sub(r"[^a-z0-9_]", "_", str(run_name or "").lower()).strip("_")
    if not cleaned:
        raise LogicalError("zero_downtime_run_name is empty: set it to a short name for this migration")
    return (prefix + cleaned)[:MAX_IDENTIFIER]


class Secrets:
    """Masks the passwords in every message that leaves the module."""

    def __init__(self, *connections):
        self.values = [c["password"] for c in connections if c and c.get("password")]

    def mask(self, text):
        text = str(text)
        for value in self.values:
            text = text.replace(value, "********")
        return text


def conninfo(params):
    """A libpq connection string; values quoted as libpq wants (backslash and single quote escaped)."""
    parts = []
    for key in ("host", "port", "dbname", "user", "password", "sslmode", "sslrootcert", "sslcert", "sslkey"):
        value = params.get(key)
        if value in (None, ""):
            continue
        escaped = str(value).replace("\\", "\\\\").replace("'", "\\'")
        parts.append(f"{key}='{escaped}'")
    return " ".join(parts)
