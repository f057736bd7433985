"""Argument specs shared by the project's modules, defined once (as community.postgresql does)."""


def connection_options():
    return {
        "host": {"type": "str", "required": True},
        "port": {"type": "int", "default": 5432},
        "dbname": {"type": "str", "required": True},
        "user": {"type": "str", "required": True},
        "password": {"type": "str", "no_log": True},
        "sslmode": {"type": "str"},
        "sslrootcert": {"type": "path"},
        "sslcert": {"type": "path"},
        "sslkey": {"type": "path", "no_log": False},
        "connect_timeout": {"type": "int", "default": 10},
    }


def connection_argument(required=True):
    return {"type": "dict", "required": required, "options": connection_options()}


def clean_connection(params):
    """Drop unset keys so that libpq's defaults apply."""
    return {k: v for k, v in (params or {}).items() if v not in (None, "")}


SIZE_UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}


def parse_size(value):
    """'1GB', '512 MB', '0' or an integer number of bytes -> int bytes."""
    if isinstance(value, int):
        return value
    text = str(value).strip().upper().replace(" ", "")
    number = text.rstrip("KMGTB")
    unit = text[len(number):]
    if unit not in SIZE_UNITS or not number.replace(".", "", 1).isdigit():
        raise ValueError(f"not a size: {value!r} (use bytes or a number with kB, MB, GB or TB)")
    return int(float(number) * SIZE_UNITS[unit])
