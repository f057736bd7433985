#!/usr/bin/env python3
"""Build the Ansible collection pgmigrate.migration from the project's own sources (docs/collection.md).

    .venv/bin/python scripts/build_collection.py [--build-dir DIR] [--no-tarball]

The project keeps its layout (library/, module_utils/, filter_plugins/, ..., roles/, playbooks/, run
from the repository root through ansible.cfg); this script assembles a collection tree from those
files under DIR/ansible_collections/pgmigrate/migration/ (default DIR: build/collection, gitignored)
and runs `ansible-galaxy collection build` there, leaving DIR/pgmigrate-migration-<version>.tar.gz.
DIR itself is then a collections path: ANSIBLE_COLLECTIONS_PATH=DIR uses the tree without installing.

A plain copy would not work, which is why this is a script and not just a galaxy.yml with build_ignore:
- a collection's modules cannot import `ansible.module_utils.pgmigrate...` (Ansible looks up
  ansible.module_utils.* only in ansible-core and the configured module_utils paths, never in a
  collection), so those imports become
  `ansible_collections.pgmigrate.migration.plugins.module_utils.pgmigrate...`; the controller-side
  plugins' `from pgmigrate...` imports likewise;
- filters and lookups of a collection need their fully qualified name even in the collection's own
  roles and playbooks, so `| pgmigrate_bytes` becomes `| pgmigrate.migration.pgmigrate_bytes` and
  `lookup('controller_pid')` `lookup('pgmigrate.migration.controller_pid')` there;
- a role's own modules (roles/<role>/library/) move to plugins/modules/: a collection's roles cannot
  carry plugins;
- migrate.yml moves into playbooks/ (collection playbooks live there), its imports following;
- the playbooks' group_vars links (to ../group_vars, outside the collection) are copied as files.
Module short names in the roles and playbooks are left alone: Ansible resolves them in the role's own
collection, and in the playbook's when it is run by its collection name (tests/collection/).

The version is pyproject.toml's ([project] version), the one place it is kept.
"""

import argparse
import ast
import pathlib
import re
import shutil
import subprocess
import sys
import tomllib

import yaml

PROJECT_DIR = pathlib.Path(__file__).resolve().parent.parent
NAMESPACE = "pgmigrate"
NAME = "migration"
FQ_PREFIX = f"{NAMESPACE}.{NAME}"
COLLECTION_MODULE_UTILS = f"ansible_collections.{NAMESPACE}.{NAME}.plugins.module_utils"
# Tested with the project's pinned ansible-core (requirements.txt); older versions are not tried.
REQUIRES_ANSIBLE = ">=2.19.0"

# Project directory -> collection directory, plugins by their type's name in a collection.
PLUGIN_DIRS = {
    "library": "plugins/modules",
    "filter_plugins": "plugins/filter",
    "lookup_plugins": "plugins/lookup",
    "callback_plugins": "plugins/callback",
    "vars_plugins": "plugins/vars",
}
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.retry")

GALAXY = {
    "namespace": NAMESPACE,
    "name": NAME,
    "readme": "README.md",
    "authors": ["pgmigrate maintainers"],
    "description": (
        "Migrate a PostgreSQL application database between environments: assessment, resumable parallel copy, "
        "validation, backups, zero-downtime replication, cutover and rollback (modules, roles and playbooks)."
    ),
    "tags": ["postgresql", "database", "migration", "backup"],
    # The collections the roles use besides ansible.builtin: the community.general.filetree lookup, and
    # community.postgresql's postgresql_query, postgresql_alter_system (3.13.0 on) and postgresql_ext
    # (roles post_checks and extensions).
    "dependencies": {"community.general": "*", "community.postgresql": ">=3.13.0"},
    "build_ignore": ["*.pyc", "__pycache__", "*.retry", ".pytest_cache"],
}


def project_version():
    with open(PROJECT_DIR / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]["version"]


def plugin_names(directory, kind):
    """The names a plugin directory provides: a filter file's filters() keys, a lookup's file name."""
    names = []
    for path in sorted((PROJECT_DIR / directory).glob("*.py")):
        if kind == "lookup":
            names.append(path.stem)
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef) and node.name == "filters":
                for ret in ast.walk(node):
                    if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Dict):
                        names += [key.value for key in ret.value.keys if isinstance(key, ast.Constant)]
    return names


def rewrite_python(text):
    """Imports of the project's module_utils, in both of its spellings, become the collection's."""
    text = re.sub(r"\bansible\.module_utils\.pgmigrate\b", f"{COLLECTION_MODULE_UTILS}.pgmigrate", text)
    return re.sub(r"^(\s*)(from|import) pgmigrate\b", rf"\1\2 {COLLECTION_MODULE_UTILS}.pgmigrate", text, flags=re.M)


def yaml_rewriter(filters, lookups):
    filter_re = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, filters)) + r")\b") if filters else None
    lookup_re = re.compile(r"\b(lookup|query|q)\((\s*)(['\"])(" + "|".join(map(re.escape, lookups)) + r")\3")

    def rewrite(text):
        if filter_re:
            text = filter_re.sub(rf"{FQ_PREFIX}.\1", text)
        return lookup_re.sub(rf"\1(\2\3{FQ_PREFIX}.\4\3", text)

    return rewrite


def check_imports(tree):
    """Refuse a built tree that still imports the project's code by a name a collection cannot resolve."""
    problems = []
    for path in sorted(tree.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            modules = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            for module in modules:
                if module.startswith("ansible.module_utils.pgmigrate") or module.split(".")[0] == "pgmigrate":
                    problems.append(f"{path.relative_to(tree)}:{node.lineno}: imports {module}")
    if problems:
        sys.exit("build_collection: imports left that a collection cannot resolve:\n  " + "\n  ".join(problems))


def copy_tree(source, destination, rewrite_py, rewrite_yaml):
    """Copy a directory, symlinks followed (the copy is self-contained), rewriting .py and .yml files."""
    shutil.copytree(source, destination, ignore=IGNORED, symlinks=False)
    for path in destination.rglob("*"):
        if path.is_file() and path.suffix == ".py":
            path.write_text(rewrite_py(path.read_text()))
        elif path.is_file() and path.suffix in (".yml", ".yaml", ".j2"):
            path.write_text(rewrite_yaml(path.read_text()))


def hoist_role_plugins(tree):
    """A collection's roles cannot carry plugins (a role's library/ is not searched there): its modules and
    plugins move to the collection's plugins/, where every role of the collection finds them by short name."""
    for role in sorted((tree / "roles").iterdir()):
        for role_dir, collection_dir in PLUGIN_DIRS.items():
            if not (role / role_dir).is_dir():
                continue
            for plugin in sorted((role / role_dir).glob("*.py")):
                destination = tree / collection_dir / plugin.name
                if destination.exists():
                    sys.exit(f"build_collection: roles/{role.name}/{role_dir}/{plugin.name} has the name of "
                             f"{collection_dir}/{plugin.name}: rename one, a collection has one namespace for both")
                destination.parent.mkdir(parents=True, exist_ok=True)
                plugin.rename(destination)
            shutil.rmtree(role / role_dir)
        if (role / "module_utils").exists():
            sys.exit(f"build_collection: roles/{role.name}/module_utils/ has no place in a collection: "
                     "move that code to module_utils/pgmigrate/")


def assemble(tree, version):
    filters = plugin_names("filter_plugins", "filter")
    lookups = plugin_names("lookup_plugins", "lookup")
    rewrite_yaml = yaml_rewriter(filters, lookups)

    for project_dir, collection_dir in PLUGIN_DIRS.items():
        copy_tree(PROJECT_DIR / project_dir, tree / collection_dir, rewrite_python, rewrite_yaml)
    copy_tree(PROJECT_DIR / "module_utils" / "pgmigrate", tree / "plugins/module_utils/pgmigrate",
              rewrite_python, rewrite_yaml)
    copy_tree(PROJECT_DIR / "roles", tree / "roles", rewrite_python, rewrite_yaml)
    hoist_role_plugins(tree)
    copy_tree(PROJECT_DIR / "playbooks", tree / "playbooks", rewrite_python, rewrite_yaml)
    # migrate.yml imports playbooks/<phase>.yml from the root; beside them in the collection.
    migrate = rewrite_yaml((PROJECT_DIR / "migrate.yml").read_text())
    (tree / "playbooks" / "migrate.yml").write_text(
        re.sub(r"(import_playbook:\s*)playbooks/", r"\1", migrate))

    (tree / "meta").mkdir()
    (tree / "meta" / "runtime.yml").write_text(
        "---\n# Written by scripts/build_collection.py.\n" + yaml.safe_dump({"requires_ansible": REQUIRES_ANSIBLE}))
    (tree / "galaxy.yml").write_text(
        "---\n# Written by scripts/build_collection.py (version: pyproject.toml).\n"
        + yaml.safe_dump({**GALAXY, "version": version}, sort_keys=False, width=1000))
    (tree / "README.md").write_text((PROJECT_DIR / "docs" / "collection.md").read_text())
    (tree / "docs").mkdir()
    for page in sorted((PROJECT_DIR / "docs").glob("*.md")):
        shutil.copy2(page, tree / "docs" / page.name)
    check_imports(tree)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--build-dir", default=str(PROJECT_DIR / "build" / "collection"),
                        help="where the tree and the tarball go (default: build/collection)")
    parser.add_argument("--no-tarball", action="store_true", help="assemble the tree only")
    parser.add_argument("--ansible-galaxy", default=str(pathlib.Path(sys.executable).parent / "ansible-galaxy"),
                        help="the ansible-galaxy program (default: the one beside this Python)")
    args = parser.parse_args()

    build_dir = pathlib.Path(args.build_dir).resolve()
    if build_dir == PROJECT_DIR or PROJECT_DIR.is_relative_to(build_dir):
        sys.exit(f"build_collection: --build-dir {build_dir} would contain the project; name a directory of its own")
    sources = [*PLUGIN_DIRS, "module_utils", "roles", "playbooks", "docs"]
    inside = [name for name in sources if build_dir.is_relative_to(PROJECT_DIR / name)]
    if inside:
        sys.exit(f"build_collection: --build-dir {build_dir} is inside {inside[0]}/, which the build copies; "
                 "name a directory outside the sources (the default is build/collection)")
    version = project_version()
    tree = build_dir / "ansible_collections" / NAMESPACE / NAME
    # Only what earlier builds wrote is removed: the tree and this collection's tarballs.
    shutil.rmtree(tree, ignore_errors=True)
    for old in build_dir.glob(f"{NAMESPACE}-{NAME}-*.tar.gz"):
        old.unlink()
    tree.mkdir(parents=True)
    assemble(tree, version)
    print(f"Collection tree: {tree}")
    if args.no_tarball:
        return
    if not shutil.which(args.ansible_galaxy):
        sys.exit(f"build_collection: --ansible-galaxy {args.ansible_galaxy} not found (scripts/install.sh installs it)")
    subprocess.run([args.ansible_galaxy, "collection", "build", "--force", "--output-path", str(build_dir), str(tree)],
                   check=True)
    print(f"Collection: {build_dir / f'{NAMESPACE}-{NAME}-{version}.tar.gz'}")


if __name__ == "__main__":
    main()
