"""The database connections as AWX credentials (awx/credential_types/, awx/configure.yml), the AWX notification
templates and the project's own run summaries under AWX, proven without a controller.

No AWX runs here, so the tests imitate what AWX does with a custom credential type, after AWX's own code
(awx/main/fields.py, CredentialTypeInputField and CredentialTypeInjectorField; awx/main/models/credential.py,
CredentialType.inject_credential; awx/main/utils/safe_yaml.py, safe_dump):

- it validates a type's inputs and injectors with JSON schemas (fields are strings or booleans; extra_vars
  may nest mappings, AWX 21.11+), then renders every injector template in a sandboxed Jinja2 with
  StrictUndefined, each field set to "EXAMPLE" and tower.filename.<name> set for each file injector;
- at launch it builds a namespace of the credential's inputs (empty ones left out, so they render as ""),
  renders each `template.<name>` file injector with Jinja2's ImmutableSandboxedEnvironment into a file of
  the job's private directory (env/, mode 0600) and sets tower.filename.<name> to its path, renders the
  extra_vars injectors recursively, writes them with safe_dump (every string tagged !unsafe, so Ansible
  never templates them) into another file of env/ (mode 0400), and adds `-e @<that file>` to
  ansible-playbook's arguments.

The renderer below does the same, and a real playbook then runs against the embedded servers with those
arguments and an inventory whose own connections cannot be used (wrong server, vaulted password without a
vault): the credentials alone connect it."""

import http.server
import importlib.util
import json
import os
import re
import stat
import subprocess
import tempfile
import threading
import types
import urllib.parse

import jsonschema
import pytest
import yaml
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from conftest import PROJECT_DIR, execute

AWX_DIR = PROJECT_DIR / "awx"
ANSIBLE_PLAYBOOK = str(PROJECT_DIR / ".venv" / "bin" / "ansible-playbook")
# AWX's notification kinds (awx/main/models/notifications.py, NOTIFICATION_TYPES) and, for the two kinds
# configured here, the fields its serializer requires unless they have a default (the backends'
# init_parameters), with the Python types it accepts (NotificationTemplateSerializer.type_map).
AWX_NOTIFICATION_KINDS = {"awssns", "email", "grafana", "irc", "mattermost", "pagerduty", "rocketchat", "slack",
                          "twilio", "webhook"}
AWX_NOTIFICATION_FIELDS = {
    "email": {"host": str, "port": int, "username": str, "password": str, "use_tls": bool, "use_ssl": bool,
              "sender": str, "recipients": list, "timeout": int},
    "webhook": {"url": str, "http_method": str, "disable_ssl_verification": bool, "username": str,
                "password": str, "headers": dict},
}
AWX_NOTIFICATION_DEFAULTED = {"email": {"timeout"}, "webhook": {"http_method", "disable_ssl_verification",
                                                                 "username", "password"}}


def load(path):
    return yaml.safe_load(path.read_text())


CREDENTIAL_TYPES = load(AWX_DIR / "credential_types" / "postgresql_connections.yml")
CONTROLLER = load(AWX_DIR / "vars" / "controller.yml")
TEMPLATES = load(AWX_DIR / "vars" / "job_templates.yml")
CONFIGURE_TASKS = load(AWX_DIR / "configure.yml")[0]["tasks"]


def task(name_start):
    return next(t for t in CONFIGURE_TASKS if t["name"].startswith(name_start))


# ---- AWX, imitated -----------------------------------------------------------------------------------

INPUTS_SCHEMA = {  # CredentialTypeInputField.schema
    "type": "object", "additionalProperties": False,
    "properties": {
        "required": {"type": "array", "items": {"type": "string"}},
        "fields": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["id", "label"],
            "properties": {
                "type": {"enum": ["string", "boolean"]},
                "format": {"enum": ["ssh_private_key", "url"]},
                "choices": {"type": "array", "minItems": 1, "items": {"type": "string"}, "uniqueItems": True},
                "id": {"type": "string", "pattern": "^[a-zA-Z_]+[a-zA-Z0-9_]*$"},
                "label": {"type": "string"}, "help_text": {"type": "string"}, "multiline": {"type": "boolean"},
                "secret": {"type": "boolean"}, "ask_at_runtime": {"type": "boolean"}, "default": {}}}}}}
INJECTORS_SCHEMA = {  # CredentialTypeInjectorField.schema
    "type": "object", "additionalProperties": False,
    "properties": {
        "file": {"type": "object", "additionalProperties": False,
                 "patternProperties": {r"^template(\.[a-zA-Z_]+[a-zA-Z0-9_]*)?$": {"type": "string"}}},
        "env": {"type": "object", "additionalProperties": False,
                "patternProperties": {"^[a-zA-Z_]+[a-zA-Z0-9_]*$": {"type": "string", "pattern": "^[\x00-\x7F]*$"}}},
        "extra_vars": {"type": "object", "additionalProperties": False, "patternProperties": {
            r"^[a-zA-Z_\{\}]+[a-zA-Z0-9_\{\}]*$": {
                "anyOf": [{"type": "string"}, {"type": "array"}, {"$ref": "#/properties/extra_vars"}]}}}}}


def awx_validate_credential_type(credential_type):
    """What AWX checks when the type is created: the schemas, the inputs' own rules, and every injector
    rendering with StrictUndefined against the defined fields and file names."""
    inputs, injectors = credential_type["inputs"], credential_type["injectors"]
    jsonschema.Draft4Validator(INPUTS_SCHEMA).validate(inputs)
    jsonschema.Draft4Validator(INJECTORS_SCHEMA).validate(injectors)
    ids = [f["id"] for f in inputs["fields"]]
    assert len(ids) == len(set(ids)) and "tower" not in ids
    for field in inputs["fields"]:
        kind = field.get("type", "string")
        if "default" in field:
            assert type(field["default"]) is {"string": str, "boolean": bool}[kind], field
        if kind != "string":
            assert not {"choices", "multiline", "format", "secret"} & set(field), field
    assert set(inputs.get("required", [])) <= set(ids)
    files = types.SimpleNamespace()
    names = [k.split(".", 1)[1] for k in injectors.get("file", {}) if "." in k]
    assert "template" not in injectors.get("file", {}) or not names, "single and multi-file syntax mixed"
    for name in names:
        setattr(files, name, "EXAMPLE_FILENAME")
    namespace = {**{i: "EXAMPLE" for i in ids}, "tower": types.SimpleNamespace(filename=files)}
    strict = ImmutableSandboxedEnvironment(undefined=StrictUndefined)

    def render_all(node):
        if isinstance(node, dict):
            for key, value in node.items():
                strict.from_string(key).render(namespace)
                render_all(value)
        elif isinstance(node, list):
            for value in node:
                render_all(value)
        else:
            strict.from_string(node).render(namespace)

    for kind, injector in injectors.items():
        render_all(injector) if kind == "extra_vars" else [render_all(v) for v in injector.values()]


class UnsafeDumper(yaml.SafeDumper):
    """awx/main/utils/safe_yaml.py's SafeStringDumper: every string is written as !unsafe."""

    def represent_data(self, data):
        if isinstance(data, str):
            return self.represent_scalar("!unsafe", data)
        return super().represent_data(data)


def awx_inject(credential_type, inputs, private_data_dir):
    """CredentialType.inject_credential for a custom type: the files it writes, and the ansible-playbook
    arguments it adds."""
    env_dir = private_data_dir / "env"
    env_dir.mkdir(exist_ok=True)
    namespace = {"tower": types.SimpleNamespace()}
    for name, value in inputs.items():
        if isinstance(value, bool) or len(value):
            namespace[name] = value
    sandbox = ImmutableSandboxedEnvironment()
    for label, template in credential_type["injectors"].get("file", {}).items():
        data = sandbox.from_string(template).render(**namespace)
        handle, path = tempfile.mkstemp(dir=env_dir)
        with os.fdopen(handle, "w") as stream:
            stream.write(data)
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
        if "." not in label:
            namespace["tower"].filename = path
        else:
            if not hasattr(namespace["tower"], "filename"):
                namespace["tower"].filename = types.SimpleNamespace()
            setattr(namespace["tower"].filename, label.split(".", 1)[1], path)

    def build(node):
        if isinstance(node, dict):
            return {build(k): build(v) for k, v in node.items()}
        if isinstance(node, list):
            return [build(x) for x in node]
        return sandbox.from_string(node).render(**namespace)

    extra_vars = build(credential_type["injectors"].get("extra_vars", {}))
    if not extra_vars:
        return []
    handle, path = tempfile.mkstemp(dir=env_dir)
    with os.fdopen(handle, "w") as stream:
        stream.write("".join(yaml.dump_all([{k: v}], None, Dumper=UnsafeDumper, default_flow_style=False)
                             for k, v in extra_vars.items()))
    os.chmod(path, stat.S_IRUSR)
    return ["-e", f"@{path}"]


def credential_type_of(variable):
    return next(t for t in CREDENTIAL_TYPES if t["variable"] == variable)


def inputs_for(server, dbname, sslmode="disable", **files):
    """A credential's inputs, as awx/configure.yml sends them (every value a string)."""
    return {"host": server["host"], "port": str(server["port"]), "database": dbname, "username": server["user"],
            "password": server["password"], "sslmode": sslmode, **files}


# ---- the credential types ------------------------------------------------------------------------------

@pytest.mark.parametrize("credential_type", CREDENTIAL_TYPES, ids=lambda t: t["variable"])
def test_each_credential_type_is_one_awx_accepts(credential_type):
    awx_validate_credential_type(credential_type)
    assert credential_type["kind"] == "cloud"  # a kind a job template may carry (not scm, registry, ...)
    assert credential_type["name"] == f"pgmigrate PostgreSQL {credential_type['variable']}"
    assert list(credential_type["injectors"]["extra_vars"]) == [credential_type["variable"]]
    fields = {f["id"]: f for f in credential_type["inputs"]["fields"]}
    assert fields["password"]["secret"] is True and fields["sslkey"]["secret"] is True
    assert set(fields["sslmode"]["choices"]) == {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}


def test_one_type_per_connection_variable_as_awx_allows_one_credential_per_type_on_a_template():
    """JobTemplateCredentialsList refuses a second credential with the same unique_hash (the type's id, or
    Vault type + vault id): source and target need types of their own."""
    variables = [t["variable"] for t in CREDENTIAL_TYPES]
    assert len(set(variables)) == len(variables) == len({t["name"] for t in CREDENTIAL_TYPES})
    assert {"migration_source", "migration_target", "staging_sync_source"} == set(variables)


def test_the_injected_mapping_has_exactly_the_keys_the_playbooks_accept():
    """module_utils/pgmigrate/common/connection.py refuses unknown keys; the TLS files arrive as paths."""
    text = (PROJECT_DIR / "module_utils" / "pgmigrate" / "common" / "connection.py").read_text()
    accepted = set(re.findall(r'"(\w+)"', re.search(r"REQUIRED_KEYS = \((.*?)\)\nOPTIONAL_KEYS = \((.*?)\)",
                                                     text, re.S).group(0)))
    for credential_type in CREDENTIAL_TYPES:
        mapping = credential_type["injectors"]["extra_vars"][credential_type["variable"]]
        assert {"host", "port", "dbname", "user", "password"} <= set(mapping) <= accepted


def test_tls_files_are_written_by_the_file_injectors_and_empty_ones_stay_unset(tmp_path):
    ca = "-----BEGIN CERTIFICATE-----\nMIIB-test-ca\n-----END CERTIFICATE-----\n"
    key = "-----BEGIN PRIVATE KEY-----\nMIIE-test-key\n-----END PRIVATE KEY-----\n"
    inputs = {"host": "db", "port": "5432", "database": "cdp", "username": "m", "password": "pw",
              "sslmode": "verify-full", "sslrootcert": ca, "sslcert": "", "sslkey": key}
    args = awx_inject(credential_type_of("migration_target"), inputs, tmp_path)
    text = open(args[1][1:]).read()
    assert "!unsafe" in text  # Ansible will not template what the credential holds
    loader = type("UnsafeLoader", (yaml.SafeLoader,), {})
    loader.add_constructor("!unsafe", lambda self, node: self.construct_scalar(node))
    injected = yaml.load(text, Loader=loader)["migration_target"]
    assert open(injected["sslrootcert"]).read() == ca and open(injected["sslkey"]).read() == key
    assert stat.S_IMODE(os.stat(injected["sslkey"]).st_mode) == 0o600  # libpq refuses a readable key
    assert injected["sslcert"] == "" and injected["sslmode"] == "verify-full" and injected["port"] == "5432"
    assert stat.S_IMODE(os.stat(args[1][1:]).st_mode) == 0o400


# ---- a real playbook with the credentials' extra variables ------------------------------------------------

class Receiver(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.posts = []


class ReceiverHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - the name http.server calls
        self.server.posts.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def serving(server):
    """A fixture's body: the HTTP server answering on its own thread for the test, then closed."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def receiver():
    yield from serving(Receiver())


def awx_like_inventory(tmp_path, webhook_url):
    """An environment's inventory as AWX imports it: its connections name the vault, whose password the job
    does not have, and a server that does not exist. Its notify settings send a summary of every run."""
    inventory = tmp_path / "inventory"
    group_vars = inventory / "group_vars" / "migration"
    group_vars.mkdir(parents=True)
    (inventory / "hosts.yml").write_text((PROJECT_DIR / "inventories" / "local" / "hosts.yml").read_text())
    unusable = {"host": "cdp-db.invalid", "port": 5432, "dbname": "cdp", "user": "migrator"}
    (group_vars / "connections.yml").write_text(yaml.safe_dump({
        "migration_source": {**unusable, "password": "{{ vault_migration_source_password }}"},
        "migration_target": {**unusable, "password": "{{ vault_migration_target_password }}"},
        "notify_webhook_url": webhook_url, "notify_webhook_on": "both", "notify_environment": "awx-test"}))
    return inventory


def template_extra_vars(artifacts_dir):
    """The job template's extra_vars as awx/configure.yml builds them (awx_project_run_summaries false)."""
    job_template = task("Job templates with their surveys")
    assert CONTROLLER["awx_project_run_summaries"] is False
    return {"migration_artifacts_dir": str(artifacts_dir), **job_template["vars"]["__awx_run_summaries_off"]}


def run_assess(tmp_path, inventory, *extra_args):
    return subprocess.run([ANSIBLE_PLAYBOOK, "playbooks/assess.yml", "-i", str(inventory), "-v", *extra_args],
                          cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300, check=False)


def test_a_playbook_connects_with_the_credentials_alone_and_never_shows_the_passwords(
        scratch, source_server, target_server, tmp_path, receiver):
    source = scratch.create(source_server, "awxsrc")
    target = scratch.create(target_server, "awxdst")
    table = f"awx_probe_{os.urandom(3).hex()}"
    execute(source, f"CREATE TABLE {table} (id int PRIMARY KEY)", f"INSERT INTO {table} SELECT generate_series(1, 7)")
    inventory = awx_like_inventory(tmp_path, f"http://127.0.0.1:{receiver.server_address[1]}/hook")
    private = tmp_path / "private_data_dir"
    private.mkdir()
    credentials = (awx_inject(credential_type_of("migration_source"), inputs_for(source_server, source["dbname"]),
                              private)
                   + awx_inject(credential_type_of("migration_target"), inputs_for(target_server, target["dbname"]),
                                private))
    job_vars = tmp_path / "job_extra_vars.json"
    job_vars.write_text(json.dumps(template_extra_vars(tmp_path / "artifacts")))

    # As AWX launches it: the template's extra_vars, then each credential's -e @file.
    result = run_assess(tmp_path, inventory, "-e", f"@{job_vars}", *credentials)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert table in output and "cdp-db.invalid" not in output  # it read the source through the credential
    assert source_server["password"] not in output and target_server["password"] not in output
    assert receiver.posts == []  # the project's own summary is off under AWX: AWX's notifications report it
    for path in (tmp_path / "artifacts").rglob("*"):
        if path.is_file():
            assert source_server["password"] not in path.read_text(errors="replace"), path

    # The same run from the command line (no template extra_vars): the project's summary is sent, and it
    # carries no password either.
    result = run_assess(tmp_path, inventory, "-e", f"migration_artifacts_dir={tmp_path / 'cli-artifacts'}",
                        *credentials)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert len(receiver.posts) == 1 and json.loads(receiver.posts[0])["status"] == "success"
    assert source_server["password"] not in receiver.posts[0]


def test_without_the_credentials_the_same_job_fails_on_the_vault_it_lacks(tmp_path):
    """The control: the inventory's own connections cannot be used, so the success above is the credentials'."""
    inventory = awx_like_inventory(tmp_path, "http://127.0.0.1:9/unused")
    job_vars = tmp_path / "job_extra_vars.json"
    job_vars.write_text(json.dumps(template_extra_vars(tmp_path / "artifacts")))
    result = run_assess(tmp_path, inventory, "-e", f"@{job_vars}")
    assert result.returncode != 0
    assert "vault_migration_source_password" in result.stdout


# ---- awx/configure.yml: the job templates, the credentials, the notifications ------------------------------

def template_connections(template):
    return template.get("connections", CONTROLLER["awx_job_template_connections"])


@pytest.mark.parametrize("template", TEMPLATES["awx_job_templates"], ids=lambda t: t["name"])
def test_every_job_template_attaches_the_connections_its_playbook_reads(template):
    """Every entry playbook pre-checks migration_source and migration_target (playbooks/checks/inventory.yml);
    a playbook that reads staging_sync_source gets that one too. One credential per type: no repeats."""
    from test_awx import playbook_closure, uses_variable

    connections = template_connections(template)
    assert len(connections) == len(set(connections))
    assert {"migration_source", "migration_target"} <= set(connections)
    closure = playbook_closure(template["playbook"])
    assert any(p.name == "inventory.yml" and p.parent.name == "checks" for p in closure)
    for variable in {t["variable"] for t in CREDENTIAL_TYPES}:
        if uses_variable(closure, variable):
            assert variable in connections, f"{template['playbook']} reads {variable}"


def test_configure_yml_attaches_vault_machine_and_each_connection_credential_by_its_name():
    job_template = task("Job templates with their surveys")["awx.awx.job_template"]
    credentials = " ".join(job_template["credentials"].split())
    assert "__awx_environment.vault_credential, __awx_environment.machine_credential" in credentials
    assert "item.0.connections | default(awx_job_template_connections)" in credentials
    assert "'pgmigrate ' ~ item.1.name ~ ' '" in credentials
    created = task("Database connection credentials")
    assert created["awx.awx.credential"]["name"] == "pgmigrate {{ item.0 }} {{ item.1 }}"
    assert created["awx.awx.credential"]["credential_type"] == "pgmigrate PostgreSQL {{ item.1 }}"
    assert created["loop"] == "{{ __awx_needed_connections }}"
    for name in ("Database connection credentials", "Notification templates", "Vault credentials"):
        assert task(name).get("no_log") is True, name


@pytest.mark.parametrize("notification", CONTROLLER["awx_notification_templates"], ids=lambda n: n["name"])
def test_notification_templates_are_of_kinds_and_configurations_awx_accepts(notification):
    kind = notification["notification_type"]
    assert kind in AWX_NOTIFICATION_KINDS
    assert notification["events"] and set(notification["events"]) <= {"started", "success", "error"}
    configuration = {**notification["configuration"], **{key: "<secret>" for key in notification["secrets"]}}
    expected = AWX_NOTIFICATION_FIELDS[kind]
    assert set(configuration) <= set(expected)
    assert set(expected) - AWX_NOTIFICATION_DEFAULTED[kind] <= set(configuration), "a required field is missing"
    for key, value in configuration.items():
        assert type(value) is expected[key], key
    assert not {"password", "url", "token"} & set(notification["configuration"]), "secrets come from the vault"


def test_every_job_template_reports_started_success_and_error_through_awx():
    events = {event for n in CONTROLLER["awx_notification_templates"] for event in n["events"]}
    assert events == {"started", "success", "error"}
    job_template = task("Job templates with their surveys")["awx.awx.job_template"]
    for event in ("started", "success", "error"):
        assert f"awx_notifications_on('{event}', awx_notification_templates_{event})" in \
               job_template[f"notification_templates_{event}"]


# ---- awx/configure.yml's pre-checks, run --------------------------------------------------------------------

def run_configure(tmp_path, secrets):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTROLLER_", "TOWER_"))}
    env.update(HOME=str(tmp_path), CONTROLLER_HOST="https://awx.invalid", CONTROLLER_OAUTH_TOKEN="tok-not-shown-1")
    secrets_file = tmp_path / "secrets.json"  # a test's stand-in for the vault-encrypted secrets file
    secrets_file.write_text(json.dumps(secrets))
    return subprocess.run([ANSIBLE_PLAYBOOK, "awx/configure.yml", "--check", "-e", f"@{secrets_file}"],
                          cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=120, check=False)


def full_secrets():
    connection = {"host": "db.example.com", "database": "cdp", "username": "migrator", "password": "db-not-shown-2"}
    needed = {(e["name"], v) for t in TEMPLATES["awx_job_templates"] for e in t["environments"]
              for v in template_connections(t)}
    connections = {}
    for environment, variable in needed:
        connections.setdefault(environment, {})[variable] = dict(connection)
    return {"awx_vault_passwords": {e["name"]: "vault-not-shown-3" for e in CONTROLLER["awx_environments"]},
            "awx_database_connections": connections,
            "awx_notification_secrets": {n["name"]: {k: "notify-not-shown-4" for k in n["secrets"]}
                                         for n in CONTROLLER["awx_notification_templates"]}}


def test_configure_yml_refuses_missing_or_bad_connections_naming_the_setting(tmp_path):
    secrets = full_secrets()
    del secrets["awx_database_connections"]["staging"]["staging_sync_source"]
    secrets["awx_database_connections"]["production"]["migration_target"]["port"] = "54x"
    secrets["awx_database_connections"]["development"]["migration_source"]["sslmode"] = "on"
    secrets["awx_database_connections"]["development"]["migration_target"]["sslrootcert"] = "/etc/ssl/ca.pem"
    result = run_configure(tmp_path, secrets)
    text = " ".join(result.stdout.split())
    assert result.returncode != 0
    assert "awx_database_connections.staging.staging_sync_source is not set" in text
    assert "awx_database_connections.production.migration_target.port must be a number from 1 to 65535" in text
    assert "awx_database_connections.development.migration_source.sslmode must be one of disable" in text
    assert "awx_database_connections.development.migration_target.sslrootcert must be the PEM contents" in text
    assert "Nothing was changed on the controller" in text
    assert "db-not-shown-2" not in result.stdout + result.stderr


def test_the_notification_pre_check_names_a_missing_secret_an_unknown_kind_and_a_bad_event():
    spec = importlib.util.spec_from_file_location("pgmigrate_awx", AWX_DIR / "filter_plugins" / "pgmigrate_awx.py")
    filters = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(filters)
    templates = CONTROLLER["awx_notification_templates"] + [
        {"name": "pager", "notification_type": "pager", "events": ["failure"], "secrets": []}]
    secrets = full_secrets()["awx_notification_secrets"]
    del secrets["pgmigrate ops webhook"]
    problems = " ".join(filters.awx_notification_problems(templates, secrets, sorted(AWX_NOTIFICATION_KINDS)))
    assert "awx_notification_secrets['pgmigrate ops webhook'] lacks url" in problems
    assert "awx_notification_templates pager: notification_type must be one of awssns, email" in problems
    assert "awx_notification_templates pager: events must list some of started, success, error" in problems
    assert "pgmigrate ops email" not in problems
    assert filters.awx_notifications_on(templates, "started", ["cdp-ops-chat"]) == ["pgmigrate ops email",
                                                                                    "cdp-ops-chat"]


def test_configure_yml_passes_its_pre_checks_with_complete_secrets_and_prints_none(tmp_path):
    """Past every pre-check it reaches the controller (awx.invalid does not exist): no secret printed."""
    result = run_configure(tmp_path, full_secrets())
    output = result.stdout + result.stderr
    assert "TASK [Organization]" in output and "awx.invalid" in output, output[-3000:]
    assert "Pre-Check" not in output.split("TASK [Organization]")[1]
    assert not re.search(r"not-shown-\d", output)


# ---- awx/configure.yml against a stand-in for the controller's REST API --------------------------------------

class FakeController(http.server.ThreadingHTTPServer):
    """The part of AWX's /api/v2/ the awx.awx modules use: lists filtered by name, create (POST), read, update
    (PATCH), and the sub-lists a template associates (credentials, notification templates, survey). It
    keeps what the modules send, as AWX would store it."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), FakeControllerHandler)
        # resource -> {id: object}; AWX's own (managed) credential types are there from the start.
        self.objects = {"credential_types": {1: {"id": 1, "name": "Machine", "kind": "ssh", "managed": True},
                                             2: {"id": 2, "name": "Vault", "kind": "vault", "managed": True}}}
        self.associations = {}  # (resource, id, sub) -> [ids]
        self.next_id = 3
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def named(self, resource, name):
        return next(o for o in self.objects.get(resource, {}).values() if o.get("name") == name)


class FakeControllerHandler(http.server.BaseHTTPRequestHandler):
    def reply(self, status, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def parts(self):
        path, _sep, query = self.path.partition("?")
        return [p for p in path.split("/") if p][2:], dict(urllib.parse.parse_qsl(query))

    def body(self):
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")

    def do_GET(self):  # noqa: N802 - the name http.server calls
        server, (parts, query) = self.server, self.parts()
        if len(parts) == 1:
            resources = (["job_templates", "projects", "inventory_sources"] if parts[0] == "unified_job_templates"
                         else [parts[0]])
            found = [o for r in resources for o in server.objects.get(r, {}).values()
                     if o.get("name") == query.get("name", query.get("or__name", o.get("name")))]
            return self.reply(200, {"count": len(found), "next": None, "results": found})
        resource, ident = parts[0], int(parts[1])
        if len(parts) == 2:
            return self.reply(200, server.objects[resource][ident])
        if parts[2] == "survey_spec":
            return self.reply(200, server.objects[resource][ident].get("__survey", {}))
        ids = server.associations.get((resource, ident, parts[2]), [])
        return self.reply(200, {"count": len(ids), "next": None, "results": [{"id": i} for i in ids]})

    def do_POST(self):  # noqa: N802
        server, (parts, _query) = self.server, self.parts()
        data = self.body()
        if len(parts) == 1:
            ident, server.next_id = server.next_id, server.next_id + 1
            url = f"/api/v2/{parts[0]}/{ident}/"
            item = {**data, "id": ident, "url": url, "summary_fields": {}, "scm_revision": "",
                    "related": {sub: f"{url}{sub}/" for sub in ("survey_spec", "credentials", "update")}}
            server.objects.setdefault(parts[0], {})[ident] = item
            return self.reply(201, item)
        resource, ident, sub = parts[0], int(parts[1]), parts[2]
        if sub == "survey_spec":
            server.objects[resource][ident]["__survey"] = data
            return self.reply(200, {})
        ids = server.associations.setdefault((resource, ident, sub), [])
        if data.get("disassociate"):
            ids.remove(data["id"])
        elif data["id"] not in ids:
            ids.append(data["id"])
        return self.reply(204)

    def do_DELETE(self):  # noqa: N802 - an empty survey is deleted
        parts, _query = self.parts()
        self.server.objects[parts[0]][int(parts[1])].pop("__survey", None)
        return self.reply(204)

    def do_PATCH(self):  # noqa: N802
        parts, _query = self.parts()
        item = self.server.objects[parts[0]][int(parts[1])]
        item.update(self.body())
        return self.reply(200, item)

    def log_message(self, *args):
        pass


@pytest.fixture
def controller():
    yield from serving(FakeController())


@pytest.mark.slow
def test_configure_yml_creates_the_types_credentials_and_notifications_and_attaches_them(tmp_path, controller):
    """The real configure.yml, for the staging environment and two of its templates (each awx.awx module run
    costs about a second, the whole configuration minutes): what it sends is what AWX would store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTROLLER_", "TOWER_"))}
    env.update(HOME=str(tmp_path), CONTROLLER_HOST=controller.url, CONTROLLER_OAUTH_TOKEN="tok-not-shown-1")
    secrets = full_secrets()
    secrets["awx_database_connections"]["staging"]["migration_target"].update(
        port=5433, sslrootcert="-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n")
    chosen = [dict(t, environments=[e for e in t["environments"] if e["name"] == "staging"])
              for t in TEMPLATES["awx_job_templates"] if t["name"] in ("CDP migrate (full plan)", "CDP staging sync")]
    secrets |= {"awx_environments": [e for e in CONTROLLER["awx_environments"] if e["name"] == "staging"],
                "awx_job_templates": chosen}
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(json.dumps(secrets))
    result = subprocess.run([ANSIBLE_PLAYBOOK, "awx/configure.yml", "-e", f"@{secrets_file}"], cwd=PROJECT_DIR,
                            env=env, capture_output=True, text=True, timeout=600, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert not re.search(r"not-shown-\d", output)

    # The credential types, exactly as the file defines them.
    for credential_type in CREDENTIAL_TYPES:
        created = controller.named("credential_types", credential_type["name"])
        assert created["inputs"] == credential_type["inputs"] and created["injectors"] == credential_type["injectors"]
        assert created["kind"] == "cloud"
    # The credentials: of their type, with string inputs and the type's defaults.
    target = controller.named("credentials", "pgmigrate staging migration_target")
    target_type = controller.named("credential_types", "pgmigrate PostgreSQL migration_target")
    assert target["credential_type"] == target_type["id"]
    assert target["inputs"]["port"] == "5433" and target["inputs"]["sslmode"] == "verify-full"
    assert target["inputs"]["sslrootcert"].startswith("-----BEGIN CERTIFICATE-----")
    assert controller.named("credentials", "pgmigrate staging staging_sync_source")["inputs"]["port"] == "5432"
    # The notification templates: their configuration with the secrets merged in.
    email = controller.named("notification_templates", "pgmigrate ops email")
    assert email["notification_type"] == "email" and email["notification_configuration"]["password"]
    webhook = controller.named("notification_templates", "pgmigrate ops webhook")
    assert webhook["notification_configuration"]["url"] == "notify-not-shown-4"

    ids = {o["id"]: o["name"] for r in ("credentials", "notification_templates")
           for o in controller.objects.get(r, {}).values()}
    for template, environment in [(t, e) for t in chosen for e in t["environments"]]:
        name = f"{template['name']} - {environment['name']}"
        job_template = controller.named("job_templates", name)
        attached = {ids[i] for i in controller.associations[("job_templates", job_template["id"], "credentials")]}
        expected = {f"pgmigrate {environment['name']} {v}" for v in template_connections(template)}
        settings = next(e for e in CONTROLLER["awx_environments"] if e["name"] == environment["name"])
        assert attached == expected | {settings["vault_credential"], settings["machine_credential"]}, name
        for event in ("started", "success", "error"):
            notified = {ids[i] for i in controller.associations.get(
                ("job_templates", job_template["id"], f"notification_templates_{event}"), [])}
            assert notified == {n["name"] for n in CONTROLLER["awx_notification_templates"] if event in n["events"]}
            assert notified, event
        extra_vars = job_template["extra_vars"]
        extra_vars = yaml.safe_load(extra_vars) if isinstance(extra_vars, str) else extra_vars
        assert extra_vars == {"migration_artifacts_dir": settings["artifacts_dir"], "notify_on": "never",
                              "notify_email_on": "never", "notify_webhook_on": "never"}, name
