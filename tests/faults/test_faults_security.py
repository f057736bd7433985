"""Security (issue 8): secrets never in output, artifacts, server logs or any command line (sampled while
the run goes on), passwords kept in ansible-vault; TLS with sslmode=verify-full against a self-signed CA
(a wrong CA refused before anything changes); the whole migration as non-superuser roles whose grants
docs/security.md lists."""

import os
import pathlib
import subprocess
import time

import pytest
import yaml

import dbcompare
from cdp_reference import generate
from conftest import PROJECT_DIR, execute, write_inventory
from faultlib import (
    CommandLineSampler,
    ThrowawayCluster,
    database_state,
    make_ca,
    recorder,
    rows_lost,
    run_playbook,
)

pytestmark = pytest.mark.faults

ANSIBLE_VAULT = str(PROJECT_DIR / ".venv" / "bin" / "ansible-vault")


def embedded_server_logs():
    logs = []
    for name in ("source", "target"):
        datadir = subprocess.run([str(PROJECT_DIR / "scripts" / "embedded_pg.sh"), "datadir", name],
                                 capture_output=True, text=True, check=False).stdout.strip()
        log = pathlib.Path(datadir) / "server.log"
        if log.exists():
            logs.append(log)
    return logs


def tree_text(root):
    texts = []
    for path in pathlib.Path(root).rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode(errors="replace"))
    return "\n".join(texts)


def vault_inventory(tmp_path, src, dst, vault_password):
    """An inventory as production keeps one: connections refer to vault_* variables, the passwords live in
    an ansible-vault encrypted vault.yml, the vault password in a file (never argv)."""
    inventory = tmp_path / "inventory"
    group_vars = inventory / "group_vars" / "migration"
    group_vars.mkdir(parents=True)
    (inventory / "hosts.yml").write_text((PROJECT_DIR / "inventories" / "local" / "hosts.yml").read_text())
    connections = {"migration_artifacts_dir": str(tmp_path / "artifacts")}
    for name, params in (("migration_source", src), ("migration_target", dst)):
        connections[name] = {k: v for k, v in params.items() if k != "password"}
        connections[name]["password"] = "{{ vault_" + name + "_password }}"
    (group_vars / "connections.yml").write_text(yaml.safe_dump(connections))
    vault_file = group_vars / "vault.yml"
    vault_file.write_text(yaml.safe_dump({"vault_migration_source_password": src["password"],
                                          "vault_migration_target_password": dst["password"]}))
    password_file = tmp_path / "vault-pass"
    password_file.write_text(vault_password)
    password_file.chmod(0o600)
    subprocess.run([ANSIBLE_VAULT, "encrypt", "--vault-password-file", str(password_file), str(vault_file)],
                   cwd=PROJECT_DIR, check=True, capture_output=True)
    assert vault_file.read_text().startswith("$ANSIBLE_VAULT;")
    return inventory, password_file


def test_no_secret_in_output_artifacts_logs_or_any_command_line(db_pair, tmp_path, request):
    src, dst = db_pair
    generate.load(src, 0.02)
    vault_password = "vault-" + os.urandom(9).hex()
    inventory, password_file = vault_inventory(tmp_path, src, dst, vault_password)
    secrets = {"source password": src["password"], "target password": dst["password"],
               "vault password": vault_password}
    with CommandLineSampler(0.2) as sampler:
        result = run_playbook(inventory, "--vault-password-file", str(password_file))
    assert result.returncode == 0, result.stdout[-3000:]
    assert dbcompare.compare_databases(src, dst) == []
    places = {"output": result.stdout + result.stderr, "artifacts": tree_text(tmp_path / "artifacts"),
              "command lines": "\n".join(sampler.lines),
              "server logs": "\n".join(log.read_text(errors="replace") for log in embedded_server_logs())}
    leaks = [f"{secret} in {place}" for place, text in places.items() for secret, value in secrets.items()
             if value in text]
    # The sampler did see the run's own processes: the playbook, and the psql/pg_dump children.
    assert any("ansible-playbook" in line for line in sampler.lines)
    assert any("pg_dump" in line or "psql" in line for line in sampler.lines)
    recorder(request)("secrets", "known passwords searched", samples=sampler.samples,
                      command_lines=len(sampler.lines), places=sorted(places), leaks=len(leaks),
                      survived=not leaks)
    assert leaks == []


def test_the_inventories_keep_production_passwords_in_ansible_vault():
    for environment in ("staging", "production"):
        directory = PROJECT_DIR / "inventories" / environment / "group_vars" / "migration"
        connections = yaml.safe_load((directory / "connections.yml").read_text())
        for name in ("migration_source", "migration_target"):
            if name in connections:
                assert connections[name]["password"].replace(" ", "") == "{{vault_" + name + "_password}}"
        assert (directory / "vault.yml.example").exists()
        vault = directory / "vault.yml"
        assert not vault.exists() or vault.read_text().startswith("$ANSIBLE_VAULT;"), f"{vault} is not encrypted"


@pytest.fixture
def tls_server(tmp_path):
    """A throwaway server with TLS only (hostssl): a server certificate for 127.0.0.1 signed by CA 'good'."""
    good_ca = make_ca(tmp_path / "good", "good")
    cluster = ThrowawayCluster(ssl_dir=tmp_path / "good")
    hba = cluster.data / "pg_hba.conf"
    hba.write_text("local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n")
    cluster.restart()
    yield cluster, good_ca
    cluster.destroy()


def test_tls_verify_full_works_and_a_wrong_ca_is_refused(tls_server, tmp_path, request):
    cluster, good_ca = tls_server
    wrong_ca = make_ca(tmp_path / "wrong", "wrong")
    src, dst = cluster.create_database("cdp_source"), cluster.create_database("cdp_target")
    generate.load(src, 0.02)
    before = (database_state(src), database_state(dst))

    def inventory(ca, where):
        tls = {"sslmode": "verify-full", "sslrootcert": str(ca)}
        return write_tls_inventory(tmp_path / where, {**src, **tls}, {**dst, **tls})

    refused = run_playbook(inventory(wrong_ca, "wrong"), timeout=120)
    assert refused.returncode != 0
    assert "certificate verify failed" in refused.stdout, refused.stdout[-3000:]
    assert "check migration_source.sslmode and migration_source.sslrootcert" in refused.stdout
    assert refused.seconds < 30
    assert (database_state(src), database_state(dst)) == before
    accepted = run_playbook(inventory(good_ca, "good"))
    differences = dbcompare.compare_databases(src, dst)
    recorder(request)("tls", "sslmode=verify-full with a self-signed CA; wrong CA refused",
                      refused_seconds=refused.seconds, survived=accepted.returncode == 0 and not differences,
                      rows_lost=rows_lost(src, dst))
    assert accepted.returncode == 0, accepted.stdout[-3000:]
    assert differences == []


def write_tls_inventory(directory, src, dst):
    directory.mkdir(parents=True, exist_ok=True)
    return write_inventory(directory, src, dst)


@pytest.mark.slow
def test_the_migration_works_with_least_privilege_roles(db_pair, source_server, target_server, tmp_path, request):
    """The grants of docs/security.md, "Least privilege": a source reader with pg_read_all_data and CONNECT,
    a target login that owns the target database. Neither is a superuser."""
    src, dst = db_pair
    generate.load(src, 0.02)
    suffix = os.urandom(4).hex()
    reader, owner = f"pgm_reader_{suffix}", f"pgm_owner_{suffix}"
    reader_password, owner_password = "r-" + os.urandom(8).hex(), "o-" + os.urandom(8).hex()
    source_admin, target_admin = {**source_server}, {**target_server}
    execute(source_admin, f"CREATE ROLE {reader} LOGIN PASSWORD '{reader_password}'",
            f'GRANT CONNECT ON DATABASE "{src["dbname"]}" TO {reader}', f"GRANT pg_read_all_data TO {reader}")
    execute(target_admin, f"CREATE ROLE {owner} LOGIN PASSWORD '{owner_password}'",
            f'ALTER DATABASE "{dst["dbname"]}" OWNER TO {owner}')

    def drop_roles():
        execute(source_admin, f'DROP DATABASE IF EXISTS "{src["dbname"]}" WITH (FORCE)', f"DROP ROLE {reader}")
        execute(target_admin, f'DROP DATABASE IF EXISTS "{dst["dbname"]}" WITH (FORCE)', f"DROP ROLE {owner}")
    request.addfinalizer(drop_roles)
    run_src = {**src, "user": reader, "password": reader_password}
    run_dst = {**dst, "user": owner, "password": owner_password}
    started = time.monotonic()
    result = run_playbook(write_inventory(tmp_path, run_src, run_dst))
    differences = dbcompare.compare_databases(src, dst)
    recorder(request)("least_privilege", "non-superuser source reader and target owner",
                      seconds=round(time.monotonic() - started, 1), rows_lost=rows_lost(src, dst),
                      survived=result.returncode == 0 and not differences)
    assert result.returncode == 0, result.stdout[-4000:]
    assert differences == []
