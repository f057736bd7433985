"""The copy's options, declared once.

The engine's defaults (copier.DEFAULTS) and the pg_migration_copy module's argument spec and call come
from OPTIONS; tests/clone/test_copy_options.py checks the module's DOCUMENTATION block against it (Ansible reads
DOCUMENTATION as text, so it stays written out). Sizes have one spelling, the settings' ("1GB"): the engine
gets them in bytes.
"""

from ..common.module_args import parse_size

# name: the module's argument spec of the option (type, default, choices, elements).
OPTIONS = {
    "schema_mode": {"type": "str", "default": "copy", "choices": ["copy", "existing"]},
    "workers": {"type": "int", "default": 4},
    "split_tables_larger_than": {"type": "str", "default": "1GB"},
    "source_frozen": {"type": "bool", "default": False},
    "overwrite": {"type": "bool", "default": False},
    "restart": {"type": "bool", "default": False},
    "artifacts_dir": {"type": "path", "default": "artifacts"},
    "progress_file": {"type": "path", "default": None},
    "include_schemas": {"type": "list", "elements": "str", "default": []},
    "exclude_schemas": {"type": "list", "elements": "str", "default": []},
    "no_owner": {"type": "bool", "default": True},
    "no_privileges": {"type": "bool", "default": True},
    "analyze": {"type": "bool", "default": True},
    "retries": {"type": "int", "default": 3},
    "lock_timeout": {"type": "str", "default": "60s"},
    "maintenance_work_mem": {"type": "str", "default": "512MB"},
    "target_is_production": {"type": "bool", "default": False},
    "confirm_target": {"type": "str", "default": ""},
    "stop_when_process_exits": {"type": "int", "default": None},
    "run_lock_wait_seconds": {"type": "int", "default": 120},
    "database_settings": {"type": "bool", "default": True},
    "database_settings_skipped": {"type": "list", "elements": "str", "default": []},
    "pg_bin_dir": {"type": "path", "default": None},
    "extension_substitutes": {"type": "dict", "default": {}},
}
# Options given as sizes ("1GB", "512 MB", bytes): the engine takes bytes.
SIZE_OPTIONS = ("split_tables_larger_than",)
# The module must be told these; the engine has a default for calls from Python.
REQUIRED_IN_MODULE = ("artifacts_dir",)


def engine_options(values):
    """The engine's options from the module's (or the defaults') values: sizes in bytes."""
    options = {}
    for name in OPTIONS:
        value = values[name]
        options[name] = parse_size(value) if name in SIZE_OPTIONS else value
    return options


def engine_defaults():
    """copier.DEFAULTS: every option's default, sizes in bytes, and the engine's own check_mode."""
    defaults = engine_options({name: spec["default"] for name, spec in OPTIONS.items()})
    defaults["check_mode"] = False
    return defaults


def argument_spec():
    """The module's argument spec of the copy's options (its connections are added by the module)."""
    spec = {}
    for name, option in OPTIONS.items():
        option = {key: value for key, value in option.items() if not (key == "default" and value is None)}
        if name in REQUIRED_IN_MODULE:
            option = {key: value for key, value in option.items() if key != "default"}
            option["required"] = True
        spec[name] = option
    return spec
