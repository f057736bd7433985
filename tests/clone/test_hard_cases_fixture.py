"""The torture fixture (tests/fixtures/hard_cases.sql) and the comparison helper (tests/dbcompare.py).

* the fixture loads into an empty database (psycopg2 in one go, and psql -v ON_ERROR_STOP=1), and two
  loads are equal (the fixture is deterministic);
* a pg_dump | pg_restore copy of a loaded database compares equal;
* compare_databases notices each of a set of small changes made to that copy, and compares equal
  again once the change is undone.
"""

import dataclasses
import os
import pathlib
import subprocess

import psycopg2
import pytest

import dbcompare
from conftest import ScratchDatabases, connect

PG_BIN = pathlib.Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def _libpq_env(params):
    """Connection settings for a client program: the password travels in PGPASSWORD, never argv."""
    env = dict(os.environ)
    env.update(
        PGHOST=str(params["host"]),
        PGPORT=str(params["port"]),
        PGUSER=params["user"],
        PGPASSWORD=params["password"],
        PGDATABASE=params["dbname"],
        PGCLIENTENCODING="UTF8",
    )
    return env


def _run(argv, params):
    result = subprocess.run(argv, env=_libpq_env(params), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{argv[0]} exited {result.returncode}:\n{result.stderr}"
    return result


def dump_and_restore(src, dst, workdir):
    dump = pathlib.Path(workdir) / "hard_cases.dump"
    _run([str(PG_BIN / "pg_dump"), "--format=custom", f"--file={dump}"], src)
    _run([str(PG_BIN / "pg_restore"), "--exit-on-error", f"--dbname={dst['dbname']}", str(dump)], dst)


def _differences_text(differences):
    return "\n".join(differences)


def test_fixture_loads(scratch, source_server):
    params = scratch.create(source_server, "hc")
    dbcompare.load_hard_cases(params)

    conn = connect(params)
    try:
        with conn.cursor() as cur:

            def one(query):
                cur.execute(query)
                return cur.fetchone()[0]

            assert one("SELECT count(*) FROM app.big") == 200000
            for partition in (
                "app.measurements_2023",
                "app.measurements_2024",
                "app.measurements_default",
                "app.customers_eu",
                "audit.customers_na",
                '"MixedCase"."Customers APAC"',
            ):
                assert one(f"SELECT count(*) FROM {partition}") > 0, partition
            assert one("SELECT count(*) FROM app.empty_table") == 0
            assert one("SELECT count(*) FROM app.zero_columns") == 3
            distinct_rows = one("SELECT count(*) FROM (SELECT DISTINCT * FROM app.nopk_log) AS d")
            assert one("SELECT count(*) FROM app.nopk_log") > distinct_rows
            assert one("SELECT is_called FROM audit.ticket_no_seq") is False
            # the identity sequence lags behind max(id): a copy must not "fix" it
            identity_state = one("SELECT last_value FROM app.ident_default_id_seq")
            assert identity_state < one("SELECT max(id) FROM app.ident_default")
            assert one("SELECT relforcerowsecurity FROM pg_class WHERE oid = 'app.secrets'::regclass")
            assert one("SELECT relispopulated FROM pg_class WHERE oid = 'app.mv_event_kinds'::regclass")
            assert not one("SELECT relispopulated FROM pg_class WHERE oid = 'app.mv_unpopulated'::regclass")
            assert one("SELECT 'info' < 'notice'::audit.level AND 'notice' < 'warn'::audit.level")
            assert one("SELECT total FROM app.order_lines WHERE id = 3") == one(
                "SELECT price * qty FROM app.order_lines WHERE id = 3"
            )

            # The triggers are live: a copy that fires them changes or loses rows.
            cur.execute("INSERT INTO app.trigger_target VALUES (99, 'copied') RETURNING note")
            assert cur.fetchone()[0] == "TRIGGER FIRED"
            audit_rows = one("SELECT count(*) FROM audit.events")
            cur.execute("INSERT INTO app.events VALUES (9999, 'copied', NULL, '2024-01-01 00:00:00+00')")
            assert one("SELECT count(*) FROM audit.events") == audit_rows + 1
            with pytest.raises(psycopg2.Error, match="TRIGGER FIRED"):
                cur.execute("INSERT INTO app.reject_target VALUES (99, 'copied')")
        conn.rollback()
    finally:
        conn.close()

    digests = dbcompare.table_digests(params)
    quoted = {'"MixedCase"."Order Items"', '"MixedCase"."it\'s a ""table"""'}
    assert {"app.events", "audit.events", *quoted} <= set(digests)
    assert "app.measurements" not in digests  # a partitioned parent holds no rows itself
    assert digests["app.measurements_default"].rows > 0
    assert digests["app.base_items"].rows == 5  # FROM ONLY: the inheritance child's rows are not counted
    assert digests["app.zero_columns"].rows == 3
    assert digests["app.empty_table"] == dbcompare.TableDigest(0, "0")


def test_fixture_is_deterministic_and_loads_with_psql(scratch, source_server, target_server):
    by_psycopg2 = scratch.create(source_server, "hc_py")
    by_psql = scratch.create(target_server, "hc_psql")
    dbcompare.load_hard_cases(by_psycopg2)
    psql = [str(PG_BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(dbcompare.HARD_CASES_SQL)]
    _run(psql, by_psql)

    differences = dbcompare.compare_databases(by_psycopg2, by_psql)
    assert differences == [], _differences_text(differences)


@pytest.fixture(scope="module")
def restored_pair(source_server, target_server, tmp_path_factory):
    """The fixture loaded on the source server and a pg_dump | pg_restore copy of it on the target."""
    databases = ScratchDatabases()
    try:
        src = databases.create(source_server, "hc_src")
        dst = databases.create(target_server, "hc_dst")
        dbcompare.load_hard_cases(src)
        dump_and_restore(src, dst, tmp_path_factory.mktemp("hard_cases_dump"))
        yield src, dst
    finally:
        databases.drop_all()


def test_dump_restore_copy_compares_equal(restored_pair):
    src, dst = restored_pair
    differences = dbcompare.compare_databases(src, dst)
    assert differences == [], _differences_text(differences)


@dataclasses.dataclass(frozen=True)
class Mutation:
    change: str  # SQL run on the copy
    undo: str  # SQL that restores it; %(name)s placeholders are filled from the `capture` row
    expect: str  # a fragment of the difference it must cause
    capture: str = "SELECT 1 AS unused"  # run before `change`


MUTATIONS = {
    "update one cell": Mutation(
        "UPDATE app.big SET payload = payload || '!' WHERE id = 123456",
        "UPDATE app.big SET payload = left(payload, -1) WHERE id = 123456",
        "rows app.big: contents (same row count) differ",
    ),
    "empty string becomes NULL": Mutation(
        "UPDATE app.text_cases SET val = NULL WHERE id = 2",
        "UPDATE app.text_cases SET val = '' WHERE id = 2",
        "rows app.text_cases:",
    ),
    "update a cell next to a column named like the row alias": Mutation(
        "UPDATE app.type_zoo SET flag = NOT flag WHERE id = 1",
        "UPDATE app.type_zoo SET flag = NOT flag WHERE id = 1",
        "rows app.type_zoo:",
    ),
    "update a cell in a quoted table": Mutation(
        'UPDATE "MixedCase"."Order Items" SET "Qty ""quoted""" = "Qty ""quoted""" + 1 WHERE "Item ID" = 7',
        'UPDATE "MixedCase"."Order Items" SET "Qty ""quoted""" = "Qty ""quoted""" - 1 WHERE "Item ID" = 7',
        'rows "MixedCase"."Order Items":',
    ),
    "update a cell in a default partition": Mutation(
        "UPDATE app.measurements SET reading = -1 WHERE id = 10",
        "UPDATE app.measurements SET reading = %(reading)s WHERE id = 10",
        "rows app.measurements_default:",
        "SELECT reading FROM app.measurements WHERE id = 10",
    ),
    "delete one row": Mutation(
        "DELETE FROM app.tree WHERE id = 200",
        "INSERT INTO app.tree VALUES (200, 10, 'great-grandchild')",
        "rows app.tree: row counts differ",
    ),
    "delete one of two identical rows": Mutation(
        "DELETE FROM app.dup_only WHERE ctid = (SELECT min(ctid) FROM app.dup_only WHERE v = 2)",
        "INSERT INTO app.dup_only VALUES (2, NULL)",
        "rows app.dup_only: row counts differ",
    ),
    "insert a duplicate row into a keyless table": Mutation(
        "INSERT INTO app.nopk_log VALUES ('2024-01-01 01:00:00+00', 'info', 'message 1', 1)",
        "DELETE FROM app.nopk_log WHERE ctid = (SELECT max(ctid) FROM app.nopk_log"
        " WHERE ts = '2024-01-01 01:00:00+00' AND level = 'info' AND message = 'message 1' AND n = 1)",
        "rows app.nopk_log: row counts differ",
    ),
    "setval back on a sequence": Mutation(
        "SELECT setval('app.shared_seq', 100)",
        "SELECT setval('app.shared_seq', %(last_value)s, %(is_called)s)",
        "sequence app.shared_seq:",
        "SELECT last_value, is_called FROM app.shared_seq",
    ),
    "is_called flipped on a sequence": Mutation(
        "SELECT setval('audit.ticket_no_seq', last_value, NOT is_called) FROM audit.ticket_no_seq",
        "SELECT setval('audit.ticket_no_seq', %(last_value)s, %(is_called)s)",
        "sequence audit.ticket_no_seq:",
        "SELECT last_value, is_called FROM audit.ticket_no_seq",
    ),
    "drop an index": Mutation(
        "DROP INDEX app.big_grp_idx",
        "CREATE INDEX big_grp_idx ON app.big USING btree (grp)",
        "index app.big index big_grp_idx: missing in target",
    ),
    "drop a NOT VALID constraint": Mutation(
        "ALTER TABLE app.legacy DROP CONSTRAINT legacy_val_positive",
        "ALTER TABLE app.legacy ADD CONSTRAINT legacy_val_positive CHECK (val > 0) NOT VALID",
        "constraint app.legacy constraint legacy_val_positive: missing in target",
    ),
    "disable a trigger": Mutation(
        "ALTER TABLE app.events DISABLE TRIGGER audit_event",
        "ALTER TABLE app.events ENABLE TRIGGER audit_event",
        "trigger app.events trigger audit_event:",
    ),
    "row level security no longer forced": Mutation(
        "ALTER TABLE app.secrets NO FORCE ROW LEVEL SECURITY",
        "ALTER TABLE app.secrets FORCE ROW LEVEL SECURITY",
        "relation app.secrets:",
    ),
}


def _execute(params, query, args=None):
    conn = connect(params)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query, args)
            if cur.description is None:
                return None
            columns = [column.name for column in cur.description]
            row = cur.fetchone()
            return dict(zip(columns, row, strict=True)) if row is not None else None
    finally:
        conn.close()


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_compare_reports_a_change(restored_pair, name):
    src, dst = restored_pair
    mutation = MUTATIONS[name]
    captured = _execute(dst, mutation.capture)

    _execute(dst, mutation.change)
    try:
        differences = dbcompare.compare_databases(src, dst)
        assert differences, f"{name}: no difference reported"
        assert any(mutation.expect in d for d in differences), _differences_text(differences)
    finally:
        _execute(dst, mutation.undo, captured)

    differences = dbcompare.compare_databases(src, dst)
    assert differences == [], f"after undoing {name}:\n" + _differences_text(differences)
