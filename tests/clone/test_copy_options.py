"""The copy's options are declared once (module_utils/pgmigrate/clone/copy_options.py): the engine's defaults and the
module's argument spec come from the table, and the module's DOCUMENTATION, which Ansible reads as text, says
the same: every option, with its type, default, choices and elements."""

import ast
import pathlib

import yaml

from conftest import PROJECT_DIR
from pgmigrate.clone import copier, copy_options
from pgmigrate.common.module_args import parse_size

MODULE = pathlib.Path(PROJECT_DIR, "library", "pg_migration_copy.py")


def documented_options():
    tree = ast.parse(MODULE.read_text())
    text = next(node.value.value for node in tree.body if isinstance(node, ast.Assign)
                and getattr(node.targets[0], "id", "") == "DOCUMENTATION")
    return yaml.safe_load(text)["options"]


def test_the_documentation_names_every_option_as_the_table_declares_it():
    documented = documented_options()
    assert set(documented) - {"source", "target"} == set(copy_options.OPTIONS)
    for name, spec in copy_options.argument_spec().items():
        doc = documented[name]
        for key in ("type", "default", "choices", "elements", "required"):
            assert doc.get(key) == spec.get(key), f"{name}: DOCUMENTATION {key} {doc.get(key)!r}, " \
                                                  f"table {spec.get(key)!r}"


def test_the_engines_defaults_are_the_tables_with_sizes_in_bytes():
    for name, spec in copy_options.OPTIONS.items():
        expected = parse_size(spec["default"]) if name in copy_options.SIZE_OPTIONS else spec["default"]
        assert copier.DEFAULTS[name] == expected, name
    assert copier.DEFAULTS["split_tables_larger_than"] == 1 << 30
    assert set(copier.DEFAULTS) == set(copy_options.OPTIONS) | {"check_mode"}
