"""Validation and row-level security (issue 14), and errors reported by their first cause.

A non-superuser owns the target and tables are under FORCE ROW LEVEL SECURITY with policies that hide
rows from their owner: the copy engine copies every row, and validation must read every row too (the
forcing lifted inside its own rolled-back transactions, never seen by another session). A login that
the policies would filter is refused before any check, naming the table and BYPASSRLS. A connection
lost in the middle of a read is reported as such, not as the failure of the rollback that follows.
"""

import threading
import time

import pytest

from conftest import connect, execute, make_role, query
from pgmigrate.clone import copier
from pgmigrate.validation import pool as validation_pool
from pgmigrate.validation.validate import ValidationError, validate

MY_CHECKS = ("schema", "row_counts", "content", "orphans", "sequences")

SCHEMA = """
CREATE SCHEMA secure;
CREATE TABLE secure.accounts (id integer PRIMARY KEY, tenant text NOT NULL, balance numeric NOT NULL);
CREATE TABLE secure.entries (id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                             account_id integer NOT NULL REFERENCES secure.accounts, amount numeric);
INSERT INTO secure.accounts SELECT g, 'tenant_' || (g % 3), g * 10.5 FROM generate_series(1, 30) g;
INSERT INTO secure.entries (account_id, amount) SELECT 1 + g % 30, g FROM generate_series(1, 90) g;
ALTER TABLE secure.accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE secure.accounts FORCE ROW LEVEL SECURITY;
ALTER TABLE secure.entries ENABLE ROW LEVEL SECURITY;
ALTER TABLE secure.entries FORCE ROW LEVEL SECURITY;
-- Nobody but a role bypassing row-level security sees a row: not even the tables' owner.
CREATE POLICY tenant_rows ON secure.accounts USING (tenant = current_user);
CREATE POLICY no_rows ON secure.entries USING (false);
"""


def drop_role(server, role):
    execute(server, f'DROP ROLE IF EXISTS "{role}"')


@pytest.fixture
def owned_target(db_pair, target_server, tmp_path):
    """The RLS schema in the source, copied by the engine into a target database owned by a
    non-superuser, which logs in to both the copy and the validation."""
    src, dst = db_pair
    execute(src, SCHEMA)
    role, password = make_role(target_server, "owner")
    execute(target_server, f'ALTER DATABASE "{dst["dbname"]}" OWNER TO "{role}"')
    owner = {**dst, "user": role, "password": password}
    try:
        summary = copier.migrate(src, owner, artifacts_dir=str(tmp_path / "artifacts"), workers=2)
        assert summary["status"] == "complete"
        yield src, dst, owner
    finally:
        execute(target_server, f'DROP DATABASE IF EXISTS "{dst["dbname"]}" WITH (FORCE)')
        drop_role(target_server, role)


def mine(result):
    return {c["name"]: c for c in result["checks"] if c["name"] in MY_CHECKS}


def forced(params):
    return query(params, "SELECT relname, relforcerowsecurity FROM pg_class WHERE relnamespace = "
                         "'secure'::regnamespace AND relkind = 'r' ORDER BY 1")


def test_forced_row_security_tables_owned_by_the_target_login_validate(owned_target):
    src, dst, owner = owned_target
    assert query(owner, "SELECT count(*) FROM secure.accounts")[0][0] < 30  # the policies do hide rows
    checks = mine(validate(src, owner))
    assert {name: c["status"] for name, c in checks.items()} == dict.fromkeys(MY_CHECKS, "pass"), \
        {name: c["summary"] for name, c in checks.items()}
    counts = {i["table"]: i["target_rows"] for i in checks["row_counts"]["items"]}
    assert counts == {"secure.accounts": 30, "secure.entries": 90}
    assert forced(dst) == [("accounts", True), ("entries", True)]  # never lifted for anyone else


def test_a_change_under_forced_row_security_is_named(owned_target):
    src, dst, owner = owned_target
    execute(dst, "UPDATE secure.accounts SET balance = balance + 1 WHERE id = 7",
            "SET session_replication_role = replica", "INSERT INTO secure.entries (account_id, amount) "
            "OVERRIDING SYSTEM VALUE VALUES (9999, 1)")
    checks = mine(validate(src, owner))
    content = {i["table"]: i for i in checks["content"]["items"] if i["status"] == "fail"}
    assert content["secure.accounts"]["changed"] == [["7"]]
    orphans = [i for i in checks["orphans"]["items"] if i["status"] == "fail"]
    assert [(i["table"], i["sample"]) for i in orphans] == [("secure.entries", [["9999"]])]


def test_a_lock_held_on_a_forced_table_ends_in_a_clear_error(owned_target, monkeypatch):
    src, dst, owner = owned_target
    monkeypatch.setattr(validation_pool, "LIFT_LOCK_TIMEOUT", "300ms")
    holder = connect(dst)
    with holder.cursor() as cur:
        cur.execute("SELECT count(*) FROM secure.accounts")  # holds its ACCESS SHARE lock until rollback
    try:
        with pytest.raises(ValidationError) as raised:
            validate(src, owner, checks=("row_counts",))
    finally:
        holder.close()
    message = str(raised.value)
    assert message.startswith("secure.accounts on the target is under FORCE ROW LEVEL SECURITY") and \
        "another session held a lock on it for 300ms" in message, message


def test_a_login_the_policies_would_filter_is_refused_naming_the_table_and_bypassrls(db_pair, source_server):
    src, dst = db_pair
    for params in (src, dst):
        execute(params, SCHEMA)
    role, password = make_role(source_server, "reader")
    try:
        execute(src, f'GRANT USAGE ON SCHEMA secure TO "{role}"',
                f'GRANT SELECT ON ALL TABLES IN SCHEMA secure TO "{role}"',
                f'GRANT SELECT ON ALL SEQUENCES IN SCHEMA secure TO "{role}"')
        reader = {**src, "user": role, "password": password}
        with pytest.raises(ValidationError) as raised:
            validate(reader, dst)
        message = str(raised.value)
        assert "secure.accounts on the source" in message and "secure.entries on the source" in message
        assert f"ALTER ROLE {role} BYPASSRLS on the source" in message
        execute(source_server, f'ALTER ROLE "{role}" BYPASSRLS')
        assert validate(reader, dst)["status"] == "pass"
    finally:
        execute(src, f'DROP OWNED BY "{role}"')
        drop_role(source_server, role)


def test_a_connection_lost_mid_read_is_reported_not_the_failed_rollback(db_pair):
    """The target's reader waits on a lock; its backend is terminated: the error names what was read, the
    side and the server's reason, not 'connection already closed' from the cleanup."""
    src, dst = db_pair
    for params in (src, dst):
        execute(params, "CREATE TABLE public.t (id integer PRIMARY KEY, v text)",
                "INSERT INTO public.t SELECT g, md5(g::text) FROM generate_series(1, 100) g")
    locker = connect(dst)
    with locker.cursor() as cur:
        cur.execute("LOCK TABLE public.t IN ACCESS EXCLUSIVE MODE")
    done = threading.Event()

    def kill_the_waiting_reader():
        admin = connect(dst)
        admin.autocommit = True
        with admin.cursor() as cur:
            while not done.is_set():
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                            "AND application_name = 'pgmigrate validate' AND wait_event_type = 'Lock'",
                            (dst["dbname"],))
                if cur.fetchall():
                    break
                time.sleep(0.05)
        admin.close()
        locker.rollback()

    killer = threading.Thread(target=kill_the_waiting_reader)
    killer.start()
    try:
        with pytest.raises(ValidationError) as raised:
            validate(src, dst, checks=("row_counts",))
    finally:
        done.set()
        killer.join()
        locker.close()
    message = str(raised.value)  # the catalog's size functions are what wait on the lock
    assert message.startswith("reading the catalog on the target failed: "), message
    assert "server closed the connection" in message or "terminating connection" in message, message
