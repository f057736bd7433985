"""The Ansible collection pgmigrate.migration built from the project's sources (scripts/build_collection.py).

Built once into a temporary directory, installed with ansible-galaxy into another, then used the way another
team's playbook repository would: from a directory outside the project, with an ansible.cfg of its own (none of
the project's library/, module_utils/ or plugin paths), the modules and plugins called by their collection
names against the embedded servers.
"""

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tarfile
import tomllib

import pytest
import yaml

from conftest import PROJECT_DIR, execute, write_inventory
from pgmigrate.common.units import human_bytes

BIN = pathlib.Path(sys.executable).parent
FQ = "pgmigrate.migration"
MODULES = sorted(p.stem for p in (PROJECT_DIR / "library").glob("*.py"))
ROLE_MODULES = sorted(p.stem for p in PROJECT_DIR.glob("roles/*/library/*.py"))
SOURCE_DIRS = ("library", "module_utils", "filter_plugins", "lookup_plugins", "callback_plugins", "vars_plugins",
               "roles", "playbooks", "docs")


def version():
    with open(PROJECT_DIR / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]["version"]


def source_digest():
    """One digest of every source file the build reads (caches aside): the build must leave them as they were."""
    digest = hashlib.sha256()
    paths = [PROJECT_DIR / "migrate.yml", PROJECT_DIR / "pyproject.toml"]
    for directory in SOURCE_DIRS:
        paths += sorted(p for p in (PROJECT_DIR / directory).rglob("*") if "__pycache__" not in p.parts)
    for path in paths:
        digest.update(str(path.relative_to(PROJECT_DIR)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    build_dir = tmp_path_factory.mktemp("collection_build")
    before = source_digest()
    script = PROJECT_DIR / "scripts" / "build_collection.py"
    subprocess.run([sys.executable, str(script), "--build-dir", str(build_dir)], check=True,
                   capture_output=True, text=True, cwd=str(PROJECT_DIR))
    tarball = build_dir / f"pgmigrate-migration-{version()}.tar.gz"
    return {"tarball": tarball, "unchanged": source_digest() == before}


@pytest.fixture(scope="module")
def consumer(built, tmp_path_factory):
    """Another team's directory: the collection installed from the tarball, an ansible.cfg of its own."""
    home = tmp_path_factory.mktemp("consumer")
    (home / "ansible.cfg").write_text("[defaults]\nretry_files_enabled = false\n")
    (home / "hosts.ini").write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(home / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=str(home / "collections"),
               ANSIBLE_LOCAL_TEMP=str(home / "tmp"), ANSIBLE_NOCOLOR="1", PYTHONWARNINGS="ignore")
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", str(built["tarball"]),
                    "-p", str(home / "collections")], check=True, capture_output=True, text=True, cwd=home, env=env)

    def run(program, *args, check=True):
        result = subprocess.run([str(BIN / program), *args], capture_output=True, text=True, cwd=home, env=env)
        if check:
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result

    return {"home": home, "run": run,
            "tree": home / "collections" / "ansible_collections" / "pgmigrate" / "migration"}


def test_the_build_leaves_the_project_as_it_was_and_its_output_is_ignored_by_git(built):
    assert built["unchanged"], "scripts/build_collection.py changed a source file of the project"
    ignored = subprocess.run(["git", "check-ignore", "-q", "build/collection/pgmigrate-migration-0.1.0.tar.gz"],
                             cwd=str(PROJECT_DIR))
    assert ignored.returncode == 0, "build/ must be in .gitignore"


def test_the_tarball_holds_the_collection_with_its_manifest(built):
    with tarfile.open(built["tarball"]) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("MANIFEST.json"))
        files = json.load(tar.extractfile("FILES.json"))
        sources = {name: tar.extractfile(name).read() for name in names if name.endswith(".py")}
        listed = {entry["name"]: entry for entry in files["files"] if entry["ftype"] == "file"}
        for name in ("plugins/modules/pg_migration_validate.py", "roles/validation/tasks/main.yml"):
            assert hashlib.sha256(tar.extractfile(name).read()).hexdigest() == listed[name]["chksum_sha256"]

    info = manifest["collection_info"]
    assert (info["namespace"], info["name"], info["version"]) == ("pgmigrate", "migration", version())
    expected = {f"plugins/modules/{name}.py" for name in MODULES + ROLE_MODULES} | {
        "plugins/module_utils/pgmigrate/__init__.py", "plugins/filter/pgmigrate_units.py",
        "plugins/lookup/controller_pid.py", "plugins/callback/migration_notify.py", "plugins/vars/pgmigrate_vault.py",
        "roles/validation/tasks/main.yml", "roles/backup/tasks/preflight.yml", "playbooks/migrate.yml",
        "playbooks/assess.yml", "playbooks/group_vars/all/migration.yml", "meta/runtime.yml", "README.md",
    }
    assert expected <= names, sorted(expected - names)
    assert expected <= set(listed), sorted(expected - set(listed))
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "/library/" in n]
    # Every import of the project's code now names the collection's module_utils.
    assert not [n for n, text in sources.items() if b"ansible.module_utils.pgmigrate" in text]
    assert b"from ansible_collections.pgmigrate.migration.plugins.module_utils.pgmigrate" in \
        sources["plugins/modules/pg_migration_validate.py"]
    runtime = yaml.safe_load(tar_member(built["tarball"], "meta/runtime.yml"))
    assert runtime["requires_ansible"].startswith(">=")


def tar_member(tarball, name):
    with tarfile.open(tarball) as tar:
        return tar.extractfile(name).read().decode()


def test_every_module_is_documented_under_its_collection_name(consumer):
    names = [f"{FQ}.{name}" for name in MODULES + ROLE_MODULES]
    docs = json.loads(consumer["run"]("ansible-doc", "--json", *names).stdout)
    assert sorted(docs) == sorted(names)
    for name, entry in docs.items():
        assert entry["doc"]["module"] == name.rsplit(".", 1)[1], name
        assert entry["doc"]["short_description"], name


def test_roles_and_playbooks_resolve_their_modules_inside_the_collection(consumer):
    """Every task file of every role, imported statically, and the collection's playbooks: Ansible resolves each
    task's module at parse time, so a short name the collection does not provide fails the syntax check."""
    home, tree = consumer["home"], consumer["tree"]
    tasks = []
    for task_file in sorted(tree.glob("roles/*/tasks/*.yml")):
        role = task_file.parent.parent.name
        tasks.append({"name": f"{role} {task_file.stem}",
                      "ansible.builtin.import_role": {"name": f"{FQ}.{role}", "tasks_from": task_file.stem}})
    (home / "every_role_task.yml").write_text(yaml.safe_dump([{"name": "Every role task file", "hosts": "localhost",
                                                                 "gather_facts": False, "tasks": tasks}]))
    playbooks = [f"{FQ}.{p.stem}" for p in sorted(tree.glob("playbooks/*.yml"))]
    assert f"{FQ}.migrate" in playbooks and len(tasks) > 20
    consumer["run"]("ansible-playbook", "-i", "hosts.ini", "--syntax-check", "every_role_task.yml", *playbooks)

    # The control: outside the collection the project's modules are not on the path (its ansible.cfg is not used).
    (home / "short_name.yml").write_text(yaml.safe_dump([{
        "name": "Short name", "hosts": "localhost", "gather_facts": False,
        "tasks": [{"name": "Validate", "pg_migration_validate": {"artifacts_dir": "x"}}]}]))
    result = consumer["run"]("ansible-playbook", "-i", "hosts.ini", "--syntax-check", "short_name.yml", check=False)
    assert result.returncode != 0
    assert "couldn't resolve module/action 'pg_migration_validate'" in result.stdout + result.stderr


def test_modules_filters_and_lookups_by_collection_name_against_the_embedded_servers(consumer, scratch, source_server,
                                                                                       target_server):
    home = consumer["home"]
    table = "CREATE TABLE public.item (id int PRIMARY KEY, name text NOT NULL)"
    rows = "INSERT INTO public.item SELECT g, 'item ' || g FROM generate_series(1, 200) g"
    src = scratch.create(source_server, "colsrc")
    same = scratch.create(target_server, "colsame")
    changed = scratch.create(target_server, "colchg")
    for database in (src, same, changed):
        execute(database, table, rows)
    execute(changed, "UPDATE public.item SET name = 'changed' WHERE id = 7")

    connections = {}
    for label, params in (("src", src), ("same", same), ("changed", changed)):
        secret = home / f"{label}.password"
        secret.write_text(params["password"])
        secret.chmod(0o600)
        connections[label] = {k: v for k, v in params.items() if k != "password"}
        connections[label]["password"] = "{{ lookup('ansible.builtin.file', '" + str(secret) + "') }}"
    validate = {"source": "{{ src }}", "checks": ["schema", "row_counts", "content"],
                "artifacts_dir": str(home / "artifacts"), "fail_on_difference": False}
    play = {
        "name": "Another team's play", "hosts": "localhost", "gather_facts": False, "vars": connections,
        "tasks": [
            {"name": "Validate an identical copy", f"{FQ}.pg_migration_validate": {**validate, "target": "{{ same }}"},
             "register": "identical"},
            {"name": "Validate a copy with one changed row",
             f"{FQ}.pg_migration_validate": {**validate, "target": "{{ changed }}"}, "register": "different"},
            {"name": "Keep the outcome", "ansible.builtin.copy": {
                "dest": str(home / "outcome.json"), "mode": "0600",
                "content": "{{ {'identical': identical.status, 'different': different.status,"
                           " 'different_checks': different.checks, 'bytes': 1536 | pgmigrate.migration.pgmigrate_bytes,"
                           " 'pid': lookup('pgmigrate.migration.controller_pid')} | to_json }}"}},
        ],
    }
    (home / "play.yml").write_text(yaml.safe_dump([play], sort_keys=False))
    consumer["run"]("ansible-playbook", "-i", "hosts.ini", "play.yml")

    outcome = json.loads((home / "outcome.json").read_text())
    assert outcome["identical"] == "pass"
    assert outcome["different"] == "fail"
    failing = {check["name"] for check in outcome["different_checks"] if check["status"] == "fail"}
    assert "content" in failing, outcome["different_checks"]
    assert outcome["bytes"] == human_bytes(1536)
    assert int(outcome["pid"]) > 0


def test_a_collection_playbook_runs_by_its_name_from_another_directory(consumer, scratch, source_server, target_server):
    """The phase-1 playbook as another team runs it: ansible-playbook pgmigrate.migration.assess -i their inventory
    (its pre-checks use the collection's filters, its settings come from the collection's playbooks/group_vars)."""
    src = scratch.create(source_server, "colasrc")
    dst = scratch.create(target_server, "coladst")
    execute(src, "CREATE TABLE public.gadget (id int PRIMARY KEY)", "INSERT INTO public.gadget VALUES (1), (2)")
    inventory = write_inventory(consumer["home"] / "assess", src, dst)
    consumer["run"]("ansible-playbook", "-i", str(inventory), f"{FQ}.assess")
    assessment = json.loads((consumer["home"] / "assess" / "artifacts" / "assessment.json").read_text())
    assert [table["qualname"] for table in assessment["tables"]] == ["public.gadget"]
