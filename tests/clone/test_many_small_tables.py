"""Thousands of small tables cost per table, not per byte: each small table is copied through the worker's
own source session (no psql process, no new connection) with its indexes, keys and ANALYZE in the same
transaction; validation digests small tables in batches; the catalog reads sequence states in batches.
These tests hold the outcomes of those paths: exact copies, resumable after kill -9, every step recorded,
a difference still pinpointed to its table, every sequence's state read right."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import dbcompare
from conftest import PROJECT_DIR, connect, execute, make_role, query
from pgmigrate.clone import copier, source_sessions
from pgmigrate.common import catalog
from pgmigrate.common.catalog import STATE_SCHEMA
from pgmigrate.validation.validate import DIGEST_BATCH_TABLES, ValidationError, Validator

TABLES = 240


@pytest.fixture
def small_tables(db_pair):
    """TABLES small tables in three schemas: a serial key, a unique key built index first, a foreign key to
    the schema's first table, a few rows each (one table empty); and a 12 MB table beside them, copied by
    streaming."""
    src, dst = db_pair
    statements = ["CREATE SCHEMA s0", "CREATE SCHEMA s1", 'CREATE SCHEMA "S 2"']
    for i in range(TABLES):
        schema = ("s0", "s1", '"S 2"')[i % 3]
        statements.append(f"CREATE TABLE {schema}.t{i} (id serial PRIMARY KEY, code text UNIQUE, "
                          f"parent int{f' REFERENCES {schema}.t{i % 3}' if i >= 3 else ''}, note jsonb)")
        if i != 7:
            statements.append(f"INSERT INTO {schema}.t{i} (code, parent, note) SELECT 'c' || g, "
                              f"{'1' if i >= 3 else 'NULL'}, jsonb_build_object('t', {i}, 'g', g) "
                              f"FROM generate_series(1, {1 + i % 5}) g")
    statements.append("CREATE TABLE big AS SELECT g AS id, md5(g::text) || repeat('x', 200) AS pad "
                      "FROM generate_series(1, 50000) g")
    execute(src, *statements)
    return src, dst


def migrate(src, dst, tmp_path, **options):
    options.setdefault("workers", 3)
    return copier.migrate(src, dst, artifacts_dir=str(tmp_path / "artifacts"), **options)


def test_small_tables_are_copied_exactly_with_their_keys_and_statistics_in_one_step_each(small_tables, tmp_path):
    src, dst = small_tables
    summary = migrate(src, dst, tmp_path)
    assert summary["status"] == "complete"
    assert dbcompare.compare_databases(src, dst) == []
    # ANALYZE ran on every table (in the copy's transaction for the small ones)
    unanalyzed = query(dst, "SELECT relid::regclass::text FROM pg_stat_user_tables "
                            "WHERE last_analyze IS NULL AND last_autoanalyze IS NULL")
    assert unanalyzed == []
    # the unique keys were built index first and attached, as for large tables
    assert query(dst, "SELECT count(*) FROM pg_constraint WHERE contype = 'u' AND conindid <> 0 "
                      "AND connamespace::regnamespace::text IN ('s0', 's1', '\"S 2\"')")[0][0] == TABLES
    log = "".join(p.read_text() for p in (tmp_path / "artifacts" / "runs").glob("*/progress.log"))
    assert "attached 2 key(s) of s1.t4 to their indexes" in log


def test_kill_9_among_the_small_tables_then_rerun_is_exact(small_tables, tmp_path):
    """Each small table's data, indexes, keys and ANALYZE commit together, recorded done together: a kill
    between or inside them leaves nothing half-done that the rerun would skip."""
    src, dst = small_tables
    runner = ("import json, sys; sys.path.insert(0, {!r}); from pgmigrate.clone import copier; "
              "a = json.loads(sys.stdin.read()); copier.migrate(a['src'], a['dst'], artifacts_dir=a['dir'], workers=2)"
              ).format(str(PROJECT_DIR / "module_utils"))
    proc = subprocess.Popen([sys.executable, "-c", runner], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    proc.stdin.write(json.dumps({"src": src, "dst": dst, "dir": str(tmp_path / "artifacts")}).encode())
    proc.stdin.close()
    deadline, done = time.monotonic() + 120, 0
    while time.monotonic() < deadline and proc.poll() is None and done < TABLES // 3:
        try:
            done = query(dst, f"SELECT count(*) FROM {STATE_SCHEMA}.done WHERE step LIKE 'data:%%'")[0][0]  # noqa: S608
        except Exception:  # noqa: BLE001 - the state schema is not there yet
            done = 0
        time.sleep(0.02)
    assert proc.poll() is None, f"the copy ended before it could be killed: {proc.stderr.read()[-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    steps = dict(query(dst, f"SELECT split_part(step, ':', 1), count(*) FROM {STATE_SCHEMA}.done GROUP BY 1"))  # noqa: S608
    assert 0 < steps["data"] < TABLES + 1
    summary = migrate(src, dst, tmp_path)
    assert summary["status"] == "complete" and summary["resumed"]
    assert dbcompare.compare_databases(src, dst) == []


def test_a_table_larger_than_planned_spills_to_disk_and_is_copied_whole(db_pair):
    """copy_through_spool keeps at most SPOOL_MEMORY_BYTES in memory: a table that grew past the plan's
    size since (it was planned small) goes through a temporary file, rows intact."""
    src, dst = db_pair
    rows = (source_sessions.SPOOL_MEMORY_BYTES // 500) * 2
    execute(src, "CREATE TABLE grown AS SELECT g AS id, repeat(md5(g::text), 15) AS pad "
                 f"FROM generate_series(1, {rows}) g")
    execute(dst, "CREATE TABLE grown (id int, pad text)")
    sessions = source_sessions.SourceSessions(src, None)
    target = connect(dst)
    try:
        with target.cursor() as cur:
            moved = source_sessions.copy_through_spool(
                sessions.get(1), "COPY (SELECT id, pad FROM grown) TO STDOUT", cur, "COPY grown FROM STDIN")
        target.commit()
    finally:
        sessions.close_all()
        target.close()
    assert moved > source_sessions.SPOOL_MEMORY_BYTES
    assert dbcompare.compare_databases(src, dst) == []


def test_validation_pinpoints_a_difference_inside_a_batch_of_small_tables(small_tables, tmp_path):
    src, dst = small_tables
    migrate(src, dst, tmp_path)
    assert TABLES > 2 * DIGEST_BATCH_TABLES  # several batches, the changed table in the middle of one
    execute(dst, "UPDATE s1.t151 SET code = 'changed' WHERE id = 2")
    result = Validator(src, dst, workers=2, checks=["row_counts", "content"]).run()
    content = next(c for c in result["checks"] if c["name"] == "content")
    failed = [i for i in content["items"] if i["status"] == "fail"]
    assert [i["table"] for i in failed] == ["s1.t151"], failed
    assert "2" in json.dumps(failed[0])
    counts = next(c for c in result["checks"] if c["name"] == "row_counts")
    assert counts["status"] == "pass" and len(counts["items"]) == TABLES + 1


def test_sequence_states_are_read_right_across_batches(db_pair):
    """More sequences than one batch reads (catalog.SEQUENCE_STATE_BATCH), each in its own state."""
    src, _dst = db_pair
    count = catalog.SEQUENCE_STATE_BATCH + 37
    statements = [f"CREATE SEQUENCE q{i} START {i + 1}" for i in range(count)]
    statements += [f"SELECT setval('q{i}', {i * 7 + 3}, {str(i % 2 == 0).lower()})" for i in range(0, count, 5)]
    execute(src, *statements)
    conn = connect(src)
    try:
        read = {s["qualname"]: (s["last_value"], s["is_called"]) for s in catalog.read_catalog(conn)["sequences"]}
    finally:
        conn.close()
    expected = {f"public.q{i}": tuple(query(src, f"SELECT last_value, is_called FROM q{i}")[0])  # noqa: S608
                for i in range(count)}
    assert read == expected


def test_the_sources_own_timeouts_do_not_end_the_runs_idle_sessions(db_pair, tmp_path):
    """A source database with idle_in_transaction_session_timeout and statement_timeout (common on
    production servers): the snapshot holder and the workers' sessions idle in their transactions while a
    large table streams, and must neither be ended nor need a retry."""
    src, dst = db_pair
    execute(src, "CREATE TABLE small_a (id int PRIMARY KEY)", "INSERT INTO small_a SELECT generate_series(1, 10)",
            "CREATE TABLE small_b (id int PRIMARY KEY)", "INSERT INTO small_b SELECT generate_series(1, 10)",
            "CREATE TABLE large AS SELECT g AS id, repeat(md5(g::text), 8) AS pad FROM generate_series(1, 400000) g",
            f'''ALTER DATABASE "{src['dbname']}" SET idle_in_transaction_session_timeout = '300ms\'''',
            f'''ALTER DATABASE "{src['dbname']}" SET statement_timeout = '400ms\'''')
    summary = migrate(src, dst, tmp_path, workers=1, database_settings=False)
    assert summary["status"] == "complete"
    assert not [e for e in summary["events"] if "retrying" in e], summary["events"]
    assert dbcompare.compare_databases(src, dst) == []


def test_a_sequence_behind_its_column_is_named_among_batches_of_small_tables(small_tables, tmp_path):
    """The columns sequences feed are read DIGEST_BATCH_TABLES at a time: a collision in the middle of a
    batch is still reported on its own sequence, and only there."""
    src, dst = small_tables
    migrate(src, dst, tmp_path)
    execute(dst, "SELECT setval('s1.t151_id_seq', 1, false)")
    result = Validator(src, dst, workers=2, checks=["sequences"]).run()
    sequences = next(c for c in result["checks"] if c["name"] == "sequences")
    failed = [i for i in sequences["items"] if i["status"] == "fail"]
    assert [i["table"] for i in failed] == ["s1.t151_id_seq"], failed
    assert "collides with s1.t151.id" in failed[0]["detail"]
    assert len(sequences["items"]) == TABLES


@pytest.mark.parametrize("checks", [["row_counts", "content"], ["sequences"]])
def test_a_table_the_validator_cannot_read_is_named_not_its_batch(small_tables, tmp_path, target_server, checks):
    """A statement of a batch of small tables fails as a whole: the batch is read again table by table, so
    the error names the table that cannot be read, not the first of its batch."""
    src, dst = small_tables
    migrate(src, dst, tmp_path)
    role, password = make_role(target_server, "reader")
    try:
        execute(dst, f'GRANT USAGE ON SCHEMA s0, s1, "S 2" TO "{role}"',
                f'GRANT SELECT ON ALL TABLES IN SCHEMA s0, s1, "S 2" TO "{role}"',
                f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"',
                f'GRANT SELECT ON ALL SEQUENCES IN SCHEMA s0, s1, "S 2" TO "{role}"',
                f'REVOKE SELECT ON s1.t151 FROM "{role}"')
        reader = {**dst, "user": role, "password": password}
        with pytest.raises(ValidationError) as failure:
            Validator(src, reader, workers=2, checks=checks).run()
        assert "s1.t151" in str(failure.value) and "permission denied" in str(failure.value)
        assert "other" not in str(failure.value), str(failure.value)
    finally:
        execute(dst, f'DROP OWNED BY "{role}"')
        execute(target_server, f'DROP ROLE IF EXISTS "{role}"')


def test_a_workers_source_session_holds_few_locks_and_stays_in_the_snapshot(db_pair):
    """A worker's source session begins its transaction again every TABLES_PER_TRANSACTION tables: it never
    holds the locks of thousands of tables at once, and every transaction reads the same snapshot."""
    src, _dst = db_pair
    count = source_sessions.TABLES_PER_TRANSACTION * 2 + 50
    execute(src, *[f"CREATE TABLE t{i} (id int)" for i in range(count)], "INSERT INTO t0 VALUES (1)")
    holder = connect(src)
    sessions = None
    try:
        with holder.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur.execute("SELECT pg_export_snapshot()")
            snapshot = cur.fetchone()[0]
        execute(src, "INSERT INTO t0 VALUES (2)")  # after the snapshot: never seen
        sessions = source_sessions.SourceSessions(src, snapshot)
        most, seen = 0, []
        for i in range(count):
            conn = sessions.get(1)
            with conn.cursor() as cur:
                cur.execute(f"SELECT count(*) FROM t{i}")  # noqa: S608
                rows = cur.fetchone()[0]
                cur.execute("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'relation'")
                most = max(most, cur.fetchone()[0])
                if i % source_sessions.TABLES_PER_TRANSACTION == 0:
                    cur.execute("SELECT count(*) FROM t0")
                    seen.append(cur.fetchone()[0])
            assert rows == (1 if i == 0 else 0)
        assert most <= source_sessions.TABLES_PER_TRANSACTION + 5, most
        assert seen == [1, 1, 1]
    finally:
        if sessions:
            sessions.close_all()
        holder.close()


def test_overwrite_drops_a_target_of_thousands_of_tables(db_pair, tmp_path):
    """migration_target_overwrite on a target that already holds thousands of tables in the source's schemas
    (a staging target synced again): one DROP SCHEMA ... CASCADE per schema locked every table, index, TOAST
    table and sequence at once and ran out of shared memory. The tables go in batches first."""
    src, dst = db_pair
    schemas = [f"s{i}" for i in range(10)]
    execute(src, *[f"CREATE SCHEMA {s}" for s in schemas],
            *[f"CREATE TABLE {s}.kept (id serial PRIMARY KEY, code text UNIQUE)" for s in schemas],
            *[f"INSERT INTO {s}.kept (code) VALUES ('a'), ('b')" for s in schemas])
    for s in schemas:  # 2,000 tables of about 6 locks each: above the 6,400 of the default lock table
        execute(dst, f"CREATE SCHEMA {s}",
                *[f"CREATE TABLE {s}.old{i} (id serial PRIMARY KEY, code text UNIQUE)" for i in range(200)])
    summary = migrate(src, dst, tmp_path, overwrite=True)
    assert summary["status"] == "complete"
    assert dbcompare.compare_databases(src, dst) == []


def test_overwrite_drops_a_schema_holding_an_extensions_own_table(db_pair, tmp_path):
    """A table that belongs to an extension cannot be dropped alone: it goes with the extension when its
    schema is dropped."""
    src, dst = db_pair
    execute(src, "CREATE SCHEMA s0", "CREATE TABLE s0.kept (id int PRIMARY KEY)", "INSERT INTO s0.kept VALUES (1)")
    execute(dst, "CREATE SCHEMA s0", "CREATE EXTENSION isn SCHEMA s0", "CREATE TABLE s0.isn_config (k text)",
            "ALTER EXTENSION isn ADD TABLE s0.isn_config", "CREATE TABLE s0.old (id int)")
    summary = migrate(src, dst, tmp_path, overwrite=True)
    assert summary["status"] == "complete"
    assert dbcompare.compare_databases(src, dst) == []
    assert query(dst, "SELECT count(*) FROM pg_extension WHERE extname = 'isn'") == [(0,)]


LATIN1 = "ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"


def test_a_latin1_database_keeps_its_accented_names_through_the_steps_records(scratch, source_server,
                                                                               target_server, tmp_path):
    """LATIN1 databases: the schema dump, the catalog, a small table's records and statements and the
    validator's queries all carry its accented names (every session in UTF8, whatever the database's)."""
    src = scratch.create(source_server, "src", LATIN1)
    dst = scratch.create(target_server, "dst", LATIN1)
    execute(src, 'CREATE TABLE "café" (id int PRIMARY KEY, "crème" text UNIQUE)',
            """INSERT INTO "café" VALUES (1, 'brûlée'), (2, 'à la carte')""")
    summary = migrate(src, dst, tmp_path)
    assert summary["status"] == "complete"
    assert query(dst, 'SELECT id, "crème" FROM "café" ORDER BY id') == [(1, "brûlée"), (2, "à la carte")]
    assert dbcompare.compare_databases(src, dst) == []
    result = Validator(src, dst).run()
    assert result["status"] == "pass", [c for c in result["checks"] if c["status"] != "pass"]
    execute(dst, """UPDATE "café" SET "crème" = 'brulee' WHERE id = 1""")
    changed = {c["name"]: c for c in Validator(src, dst).run()["checks"]}["content"]
    assert changed["status"] == "fail" and "café" in str(changed["items"])


def test_a_latin1_source_into_a_utf8_target_is_validated_by_what_the_copy_carried(scratch, source_server,
                                                                                 target_server, tmp_path):
    """Across encodings the copy converts text (text COPY in UTF8), and the validator digests text by its UTF8
    bytes: in each server's own encoding equal text would hash differently and fail a faithful copy."""
    src = scratch.create(source_server, "src", LATIN1)
    dst = scratch.create(target_server, "dst")
    execute(src, "CREATE DOMAIN libellé AS text CHECK (VALUE <> '')",
            'CREATE TABLE "société" (id int PRIMARY KEY, nom text, code char(3), étiquettes text[], '
            "doc jsonb, titre libellé, ville varchar(20))",
            """INSERT INTO "société" VALUES (1, 'Crème brûlée', 'été', ARRAY['à', 'ç'], '{"clé": "valeur é"}',
               'Élan', 'Orléans'), (2, NULL, NULL, NULL, NULL, NULL, NULL)""",
            'CREATE TABLE "sans clé" (texte text)', """INSERT INTO "sans clé" VALUES ('noël'), ('noël')""")
    summary = migrate(src, dst, tmp_path)
    assert summary["status"] == "complete"
    statement = 'SELECT * FROM "société" ORDER BY id'
    assert query(dst, statement) == query(src, statement)
    result = Validator(src, dst).run()
    assert result["status"] == "pass", [c for c in result["checks"] if c["status"] != "pass"]
    execute(dst, """UPDATE "société" SET ville = 'Orleans' WHERE id = 1""", """DELETE FROM "sans clé" WHERE ctid IN
            (SELECT ctid FROM "sans clé" LIMIT 1)""")
    items = {item["table"]: item for c in Validator(src, dst).run()["checks"] if c["name"] == "content"
             for item in c["items"]}
    assert items['public."société"']["changed"] == [["1"]]
    assert items['public."sans clé"']["status"] == "fail"
