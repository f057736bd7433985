"""The entry playbooks as users start them: -i production from the project root, an empty or mistyped
inventory, bad settings, a vault file without its password, the demo inventory's ports and overwrite.
Everything here is refused (or accepted) by playbooks/checks/inventory.yml before anything changes."""

import json
import os
import subprocess
import time

import pytest
import yaml

from conftest import PROJECT_DIR, connect, execute, query, write_inventory

BIN = PROJECT_DIR / ".venv" / "bin"
ENTRY_PLAYBOOKS = ["migrate.yml"] + [
    f"playbooks/{name}.yml" for name in (
        "assess", "backup", "backup_derive", "copy", "environment_sync", "outcome", "post_checks", "prepare_target",
        "rollback", "schedule_staging_sync", "staging_sync", "staging_to_production", "validate", "zero_downtime")]


def clean_environment(**overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGM_")}
    env.update({k: str(v) for k, v in overrides.items()})
    return env


def ansible(tool, *args, env=None, timeout=120):
    result = subprocess.run([str(BIN / tool), *args], cwd=PROJECT_DIR, capture_output=True, text=True,
                            timeout=timeout, check=False, env=env or clean_environment())
    result.output = result.stdout + result.stderr
    return result


def one_line(text):
    return " ".join(text.split())


@pytest.mark.parametrize("environment", ["production", "staging", "development"])
def test_the_environment_from_the_project_root_is_parsed_and_reaches_the_pre_check(environment):
    """`-i production` as users type it: parsed, its group_vars read, then refused at the pre-check because
    there is no vault.yml (what to create and pass is said), before any connection is tried."""
    result = ansible("ansible-playbook", "migrate.yml", "-i", environment)
    assert result.returncode != 0, result.output[-2000:]
    assert "Unable to parse" not in result.output
    assert "PLAY [[Pre-Check] The settings, the connections and the overwrite]" in result.stdout
    message = one_line(result.stdout)
    assert "'vault_migration_source_password' is undefined" in message
    assert f"create {PROJECT_DIR}/{environment}/group_vars/migration/vault.yml from vault.yml.example" in message
    assert "--ask-vault-pass" in message and "Vault credential" in message
    assert "ASSESS" not in result.stdout


def test_the_environments_group_vars_are_those_of_its_inventory():
    result = ansible("ansible-inventory", "-i", "production", "--host", "localhost")
    assert result.returncode == 0, result.output[-2000:]
    variables = json.loads(result.stdout)
    assert variables["migration_target_is_production"] is True
    assert variables["migration_target"]["host"] == "cdp-db.prod.example.com"


def empty_controller_inventory(tmp_path):
    inventory = tmp_path / "empty"
    inventory.mkdir()
    hosts = yaml.safe_load((PROJECT_DIR / "inventories" / "local" / "hosts.yml").read_text())
    hosts["all"]["children"]["migration"]["children"]["migration_controller"] = {"hosts": {}}
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    return inventory


def test_every_entry_playbook_imports_the_checks_first():
    for entry in ENTRY_PLAYBOOKS:
        plays = yaml.safe_load((PROJECT_DIR / entry).read_text())
        first = plays[0].get("ansible.builtin.import_playbook", "")
        assert first.endswith("checks/inventory.yml"), f"{entry} starts with {plays[0]}"
        assert (PROJECT_DIR / entry).parent.joinpath(first).resolve() == PROJECT_DIR / "playbooks/checks/inventory.yml"


@pytest.mark.parametrize("entry", ["migrate.yml", "playbooks/rollback.yml", "playbooks/staging_sync.yml",
                                   "playbooks/zero_downtime.yml"])
def test_an_entry_playbook_fails_on_an_empty_controller_group_naming_the_groups(tmp_path, entry):
    result = ansible("ansible-playbook", entry, "-i", str(empty_controller_inventory(tmp_path)))
    assert result.returncode != 0, result.output[-2000:]
    message = one_line(result.stdout)
    assert "has no host in the group migration_controller" in message
    assert "app_servers and monitoring_hosts" in message
    assert "Inventories here" in message and "development, local, production, staging" in message


def test_a_mistyped_inventory_fails_naming_the_inventories_that_exist():
    result = ansible("ansible-playbook", "migrate.yml", "-i", "inventories/typo")
    assert result.returncode != 0, result.output[-2000:]
    message = one_line(result.stdout)
    assert f"The inventory {PROJECT_DIR}/inventories/typo does not exist" in message
    assert "development, local, production, staging" in message and "-i production" in message


@pytest.mark.parametrize("settings", [
    {"migration_workers": ("0", "a whole number from 1 to 256")},
    {"migration_workers": ("abc", "a whole number from 1 to 256")},
    {"migration_split_tables_larger_than": ("lots", "a size: a number of bytes, or a number with kB, MB, GB or TB"),
     "migration_schema_mode": ("fast", "one of copy, existing"),
     "migration_lock_timeout": ("soon", "a PostgreSQL duration")},
], ids=["workers=0", "workers=abc", "split=lots+mode+timeout"])
def test_a_bad_setting_is_refused_within_seconds_before_anything_changes(db_pair, tmp_path, settings):
    src, dst = db_pair
    execute(dst, "CREATE TABLE kept (id int PRIMARY KEY)", "INSERT INTO kept SELECT generate_series(1, 5)")
    inventory = write_inventory(tmp_path, src, dst, {"migration_target_overwrite": True})
    extra = [arg for name, (value, _) in settings.items() for arg in ("-e", f"{name}={value}")]
    started = time.monotonic()
    result = ansible("ansible-playbook", "migrate.yml", "-i", str(inventory), *extra)
    elapsed = time.monotonic() - started
    assert result.returncode != 0, result.output[-2000:]
    for name, (value, accepted) in settings.items():
        assert f"{name}='{value}' is not accepted: it must be {accepted}" in result.stdout, result.stdout[-2000:]
    assert elapsed < 30
    assert "BACKUP" not in result.stdout and "ASSESS" not in result.stdout
    assert query(dst, "SELECT count(*) FROM kept") == [(5,)]
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").rglob("*backup*"))


def vaulted_inventory(tmp_path, password):
    inventory = write_inventory(tmp_path, {"host": "127.0.0.1", "port": 1, "dbname": "x", "user": "x",
                                           "password": "unused"})
    secrets = inventory / "group_vars" / "migration" / "vault.yml"
    secrets.write_text("vault_migration_target_password: not-a-real-one\n")
    password_file = tmp_path / "vault-pass"
    password_file.write_text(password)
    encrypted = ansible("ansible-vault", "encrypt", "--vault-password-file", str(password_file), str(secrets))
    assert encrypted.returncode == 0, encrypted.output
    return inventory, secrets


def test_a_vault_file_without_its_password_says_what_to_pass(tmp_path):
    inventory, secrets = vaulted_inventory(tmp_path, "right")
    result = ansible("ansible-playbook", "migrate.yml", "-i", str(inventory))
    assert result.returncode != 0
    message = one_line(result.output)
    assert f"{secrets} is encrypted with ansible-vault and no vault password was given" in message
    assert "--ask-vault-pass" in message and "--vault-password-file" in message and "Vault credential" in message
    wrong = tmp_path / "wrong-pass"
    wrong.write_text("wrong")
    result = ansible("ansible-playbook", "migrate.yml", "-i", str(inventory), "--vault-password-file", str(wrong))
    assert result.returncode != 0
    assert f"The vault password given does not open {secrets}" in one_line(result.output)


def test_the_demo_inventory_uses_the_ports_of_the_embedded_scripts(tmp_path):
    show = tmp_path / "show.yml"
    show.write_text(yaml.safe_dump([{
        "name": "Show the ports", "hosts": "migration_controller", "gather_facts": False,
        "tasks": [{"name": "Ports", "ansible.builtin.debug": {
            "msg": "ports {{ migration_source.port }} {{ migration_target.port }}"}}]}]))
    env = clean_environment(PGM_SOURCE_PORT=6101, PGM_TARGET_PORT=6102, ANSIBLE_STDOUT_CALLBACK="default")
    result = ansible("ansible-playbook", str(show), "-i", "inventories/local", env=env)
    assert result.returncode == 0, result.output[-2000:]
    assert "ports 6101 6102" in result.stdout
    result = ansible("ansible-playbook", str(show), "-i", "inventories/local",
                     env=clean_environment(ANSIBLE_STDOUT_CALLBACK="default"))
    assert "ports 55432 55433" in result.stdout


def embedded_dir(tmp_path, source_server, target_server, target_password):
    """A PGM_EMBEDDED_DIR like scripts/embedded_pg.sh makes: secrets, and the target's recorded identity."""
    directory = tmp_path / "embedded"
    (directory / "secrets").mkdir(parents=True)
    (directory / "identity").mkdir()
    (directory / "secrets" / "source.password").write_text(source_server["password"])
    (directory / "secrets" / "target.password").write_text(target_password)
    conn = connect(target_server)
    with conn.cursor() as cur:
        cur.execute("SELECT system_identifier::text, current_setting('data_directory') FROM pg_control_system()")
        identifier, data_directory = cur.fetchone()
    conn.close()
    (directory / "identity" / "target").write_text(
        f"system_identifier={identifier}\ndata_directory={data_directory}\n")
    return directory


def test_the_demo_overwrite_applies_to_the_embedded_target_only(tmp_path, source_server, target_server):
    # --check and --tags nothing: only the pre-checks (tags always) run; nothing could change either way.
    directory = embedded_dir(tmp_path, source_server, target_server, target_server["password"])
    env = clean_environment(PGM_EMBEDDED_DIR=directory, PGM_SOURCE_PORT=source_server["port"],
                            PGM_TARGET_PORT=target_server["port"])
    args = ("ansible-playbook", "migrate.yml", "-i", "inventories/local", "--check", "--tags", "nothing")
    accepted = ansible(*args, env=env)
    assert accepted.returncode == 0, accepted.output[-2000:]
    assert "TASK [[Pre-Check] The demo's overwrite replaces only the project's own embedded target]" \
        in accepted.stdout

    # The "target" port now reaches the source server (its password too): another server, refused.
    other = embedded_dir(tmp_path / "other", source_server, target_server, source_server["password"])
    env.update(PGM_EMBEDDED_DIR=str(other), PGM_TARGET_PORT=str(source_server["port"]))
    refused = ansible(*args, env=env)
    assert refused.returncode != 0
    message = one_line(refused.stdout)
    assert "migration_target_overwrite=true replaces what" in message
    assert f"the server at 127.0.0.1:{source_server['port']} is not that server" in message
    assert "Nothing was changed" in message


def test_every_role_has_an_argument_spec_its_defaults_pass(tmp_path):
    roles = sorted(path.name for path in (PROJECT_DIR / "roles").iterdir() if (path / "tasks").is_dir())
    tasks = []
    for role in roles:
        spec_file = PROJECT_DIR / "roles" / role / "meta" / "argument_specs.yml"
        assert spec_file.exists(), f"{role} has no meta/argument_specs.yml"
        options = yaml.safe_load(spec_file.read_text())["argument_specs"]["main"]["options"]
        defaults = yaml.safe_load((PROJECT_DIR / "roles" / role / "defaults" / "main.yml").read_text()) or {}
        # Templated defaults are checked where they are set; here, the literal ones against their types.
        spec = {name: option for name, option in options.items() if "{{" not in json.dumps(option)}
        provided = {name: defaults[name] for name in spec
                    if name in defaults and "{{" not in json.dumps(defaults[name])}
        tasks.append({"name": f"Defaults of {role}", "ansible.builtin.validate_argument_spec": {
            "argument_spec": spec, "provided_arguments": provided}})
    check = tmp_path / "specs.yml"
    check.write_text(yaml.safe_dump([{"name": "Role specs", "hosts": "localhost", "gather_facts": False,
                                      "tasks": tasks}]))
    result = ansible("ansible-playbook", str(check), "-i", "localhost,", "-c", "local")
    assert result.returncode == 0, result.output[-3000:]


def test_settings_are_read_as_ansible_reads_them_and_refused_with_what_is_accepted():
    from pgmigrate.common.settings import problems
    spec = yaml.safe_load((PROJECT_DIR / "playbooks" / "checks" / "settings_spec.yml").read_text())[
        "precheck_settings_spec"]
    good = {"migration_workers": "8", "migration_target_overwrite": "yes", "migration_restart": False,
            "migration_split_tables_larger_than": "512 MB", "migration_lock_timeout": "1min",
            "migration_maintenance_work_mem": "64MB", "migration_include_schemas": ["public"],
            "migration_documented_order": [{"table": "users", "level": 0}], "migration_profile": ""}
    assert problems(good, spec) == []
    bad = {"migration_workers": True, "migration_retries": -1, "migration_analyze": "maybe",
           "migration_maintenance_work_mem": "10kB", "migration_include_schemas": "public",
           "migration_documented_order": [{"level": 0}]}
    assert problems(bad, spec) == [
        "migration_workers=True is not accepted: it must be a whole number from 1 to 256.",
        "migration_include_schemas='public' is not accepted: it must be a list of names (e.g. [public, sales]).",
        "migration_analyze='maybe' is not accepted: it must be true or false.",
        "migration_retries=-1 is not accepted: it must be a whole number from 0 to 100.",
        "migration_maintenance_work_mem='10kB' is not accepted: it must be a size of at least 1MB (a number with "
        "kB, MB, GB or TB, e.g. 512MB).",
        "migration_documented_order=[{'level': 0}] is not accepted: it must be a list of {table: name, level: "
        "number}.",
    ]


def test_a_mistyped_setting_name_is_refused_naming_the_setting_it_resembles(db_pair, tmp_path):
    """`-e migration_wokers=8` would be ignored and the default used; a name close to a setting's is
    refused before anything changes. The inventory's own variables (far from every setting) and
    application profiles (migration_profile_<name>) are not."""
    src, dst = db_pair
    inventory = write_inventory(tmp_path, src, dst, {"migration_ticket": "OPS-1234",
                                                     "migration_profile_shop": {"extensions_required": []}})
    result = ansible("ansible-playbook", "migrate.yml", "-i", str(inventory),
                     "-e", "migration_wokers=8", "-e", "migration_no_owners=false")
    assert result.returncode != 0, result.output[-2000:]
    text = one_line(result.stdout)
    assert "migration_wokers is not a setting of this project: did you mean migration_workers?" in text, text[-2000:]
    assert "migration_no_owners is not a setting of this project: did you mean migration_no_owner?" in text
    assert "ASSESS" not in result.stdout
    checks_only = ansible("ansible-playbook", "playbooks/checks/inventory.yml", "-i", str(inventory))
    assert checks_only.returncode == 0, checks_only.output[-2000:]


@pytest.mark.parametrize("args, words", [
    (["--tags", "assess"], "Run ended without validating the target (phases chosen: assess): the migration is not "
                           "finished until a run validates it."),
    (["--check"], "Check mode: the plan only, nothing was changed."),
], ids=["tags-assess", "check"])
def test_the_last_words_say_what_the_run_did(db_pair, tmp_path, args, words):
    src, dst = db_pair
    execute(src, "CREATE TABLE t (id int PRIMARY KEY)")
    inventory = write_inventory(tmp_path, src, dst)
    result = ansible("ansible-playbook", "migrate.yml", "-i", str(inventory), *args, timeout=300)
    assert result.returncode == 0, result.output[-3000:]
    assert words in one_line(result.stdout)
    assert "Migration finished" not in result.stdout


def test_application_hosts_under_the_old_group_name_reach_the_application_plays(db_pair, tmp_path):
    """The application hosts' group is app_servers; an inventory that still calls it cdp_app_servers (its name
    when the engine knew only the CDP) keeps working: the pre-check joins its hosts to app_servers and says so."""
    src, dst = db_pair
    inventory = write_inventory(tmp_path, src, dst)
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
    groups = hosts["all"]["children"]["migration"]["children"]
    assert "app_servers" in groups and "cdp_app_servers" not in groups  # the project's inventories: the new name
    groups.pop("app_servers")
    groups["cdp_app_servers"] = {"hosts": {"app-1": {"ansible_connection": "local",
                                                     "ansible_python_interpreter": str(BIN / "python")}}}
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    playbook = PROJECT_DIR / "playbooks" / f".test-app-servers-{os.getpid()}.yml"
    playbook.write_text(yaml.safe_dump([
        {"name": "Checks", "ansible.builtin.import_playbook": "checks/inventory.yml"},
        {"name": "On the application hosts", "hosts": "app_servers", "gather_facts": False,
         "tasks": [{"name": "Name the host",
                    "ansible.builtin.debug": {"msg": "application host {{ inventory_hostname }}"}}]},
    ]))
    try:
        result = ansible("ansible-playbook", str(playbook), "-i", str(inventory))
    finally:
        playbook.unlink()
    assert result.returncode == 0, result.output[-3000:]
    text = one_line(result.stdout)
    assert "application host app-1" in text, text[-3000:]
    assert "Deprecated: the inventory names its application hosts' group cdp_app_servers" in text
