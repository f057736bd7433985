"""Backups of a target whose login is a non-superuser owner, with tables under FORCE ROW LEVEL SECURITY.

pg_dump sets row_security off, which FORCE ROW LEVEL SECURITY refuses to the table's owner ("query would
be affected by row-level security policy"), and the backup's own row counts failed the same way, which
ended the snapshot's transaction: the user saw only pg_dump's "could not import the requested snapshot".
The backup counts each such table twice in a rolled-back transaction of the snapshot, through its
policies and with the forcing lifted inside that transaction only; when the policies show the owner
every row, pg_dump reads through them (--enable-row-security) and the backup is exact; when they hide
rows, the backup is refused before anything is written, naming the tables. A login that is not the
owner is refused the same way. Every failure names its first cause.
"""

import json
import subprocess

import pytest

from conftest import PROJECT_DIR, execute, make_role, query, write_inventory
from pgmigrate.backup import backup

ANSIBLE_PLAYBOOK = str(PROJECT_DIR / ".venv" / "bin" / "ansible-playbook")
PG_BIN = "/usr/lib/postgresql/15/bin"

# The target of an existing-schema migration: the application's schema, its tables under FORCE ROW
# LEVEL SECURITY, owned by the target's login. accounts is still empty (the copy has not run); notes
# holds rows its policy shows to their owner; plain is an ordinary table.
SCHEMA = """
CREATE SCHEMA secure;
CREATE TABLE secure.accounts (id integer PRIMARY KEY, tenant text NOT NULL);
CREATE TABLE secure.notes (id integer PRIMARY KEY, author text NOT NULL, body text);
CREATE TABLE public.plain (id integer PRIMARY KEY);
INSERT INTO secure.notes SELECT g, 'author_' || (g % 3), 'note ' || g FROM generate_series(1, 40) g;
INSERT INTO public.plain SELECT generate_series(1, 25);
ALTER TABLE secure.accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE secure.accounts FORCE ROW LEVEL SECURITY;
ALTER TABLE secure.notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE secure.notes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON secure.accounts USING (tenant = current_user);
CREATE POLICY owner_sees_all ON secure.notes USING (true);
"""


@pytest.fixture
def owned_target(db_pair, target_server):
    """The schema above in a target database owned by a non-superuser (CREATEDB, to restore it), created
    by that owner; yields (source, target as its owner, target as superuser, role)."""
    src, dst = db_pair
    role, password = make_role(target_server, "owner", "CREATEDB")
    execute(target_server, f'ALTER DATABASE "{dst["dbname"]}" OWNER TO "{role}"')
    execute(dst, f'GRANT CREATE ON SCHEMA public TO "{role}"')
    owner = {**dst, "user": role, "password": password}
    execute(owner, SCHEMA)
    try:
        yield src, owner, dst, role
    finally:
        execute(target_server, f'DROP DATABASE IF EXISTS "{dst["dbname"]}" WITH (FORCE)')
        execute(target_server, f'DROP ROLE IF EXISTS "{role}"')


def run_backup(tmp_path, src, dst):
    # The data-only backup dumped too: pg_dump itself reads the forced tables through their policies.
    inventory = write_inventory(tmp_path, src, dst,
                                {"backup_databases": ["target"], "backup_kinds": list(backup.KINDS)})
    return subprocess.run([ANSIBLE_PLAYBOOK, "playbooks/backup.yml", "-i", str(inventory)], cwd=PROJECT_DIR,
                          capture_output=True, text=True, timeout=600, check=False)


def latest(tmp_path, dst, kind):
    return tmp_path / "artifacts" / "backups" / "latest" / f"target-{dst['dbname']}@{dst['host']}-{dst['port']}" / kind


def test_the_owner_backs_up_and_restores_tables_under_forced_row_security_exactly(owned_target, tmp_path):
    src, owner, superuser, _role = owned_target
    result = run_backup(tmp_path, src, owner)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    expected = {("public", "plain"): 25, ("secure", "accounts"): 0, ("secure", "notes"): 40}
    for kind in ("data-only", "complete"):
        record = json.loads((latest(tmp_path, owner, kind) / "backup.json").read_text())
        assert {(t["schema"], t["table"]): t["rows"] for t in record["tables"]} == expected
    data = (latest(tmp_path, owner, "data-only") / "data.sql").read_text()
    assert "COPY secure.notes" in data and "note 40" in data

    # A failed migration leaves rows behind; the owner restores the complete backup, forcing included.
    execute(superuser, "INSERT INTO secure.accounts VALUES (1, 'left over')", "DELETE FROM secure.notes WHERE id < 5")
    complete = str(latest(tmp_path, owner, "complete"))
    backup.restore(owner, complete, jobs=2, pg_bin_dir=PG_BIN)
    assert backup.compare_counts(owner, complete)[0] == []
    assert query(superuser, "SELECT (SELECT count(*) FROM secure.accounts), (SELECT count(*) FROM secure.notes),"
                            " (SELECT string_agg(relname || ':' || relrowsecurity || relforcerowsecurity, ','"
                            "  ORDER BY relname) FROM pg_class WHERE relname IN ('accounts', 'notes'))") == [
        (0, 40, "accounts:truetrue,notes:truetrue")]


def test_policies_hiding_rows_from_the_owner_refuse_the_backup_naming_the_tables(owned_target, tmp_path):
    src, owner, superuser, role = owned_target
    execute(superuser, "INSERT INTO secure.accounts SELECT g, 'someone' FROM generate_series(1, 7) g")
    result = run_backup(tmp_path, src, owner)
    assert result.returncode != 0
    assert "secure.accounts (7 of its 7 rows)" in result.stdout
    assert f"hide rows from {role}" in result.stdout and "BYPASSRLS" in result.stdout
    assert "Nothing was written" in result.stdout
    assert "could not import the requested snapshot" not in result.stdout
    run_dir = tmp_path / "artifacts" / "backups"
    assert not [p for p in run_dir.rglob("*") if p.is_file()]


def test_a_login_that_reads_through_policies_it_does_not_own_is_refused_by_its_first_cause(
        owned_target, target_server, tmp_path):
    _src, owner, superuser, _role = owned_target
    reader, password = make_role(target_server, "reader")
    try:
        execute(superuser, f'GRANT USAGE ON SCHEMA secure TO "{reader}"',
                f'GRANT SELECT ON ALL TABLES IN SCHEMA secure, public TO "{reader}"')
        login = {**owner, "user": reader, "password": password}
        with pytest.raises(backup.BackupError) as refused:
            backup.create_backup(login, "target", str(tmp_path / "b"), list(backup.KINDS), 2, "r", PG_BIN)
        message = str(refused.value)
        assert "secure.accounts, secure.notes" in message and "BYPASSRLS" in message, message
        assert "snapshot" not in message, message
        assert not (tmp_path / "b").exists()
    finally:
        execute(superuser, f'DROP OWNED BY "{reader}"')
        execute(target_server, f'DROP ROLE IF EXISTS "{reader}"')
