"""The shape the code keeps (issue 16): no module of module_utils or library over 600 lines, no class over 300,
so that each step and check stays a file a newcomer can read."""

import ast

from conftest import PROJECT_DIR

MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 300


def python_files():
    return sorted((PROJECT_DIR / "module_utils").rglob("*.py")) + sorted((PROJECT_DIR / "library").glob("*.py"))


def test_no_module_over_600_lines_and_no_class_over_300():
    too_long = []
    for path in python_files():
        text = path.read_text()
        lines = text.count("\n")
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(PROJECT_DIR)}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                too_long.append(f"{path.relative_to(PROJECT_DIR)}: class {node.name}, "
                                f"{node.end_lineno - node.lineno + 1} lines")
    assert python_files() and not too_long, too_long
