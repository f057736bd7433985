"""The copy engine against real servers: any-database cases, both schema modes, safety checks,
resume after kill -9, snapshot consistency under concurrent writes, sequences."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import psycopg2
import pytest

import dbcompare
from conftest import PROJECT_DIR, connect, execute, query
from pgmigrate.clone import copier, state
from pgmigrate.clone.post_data_step import PostDataStep
from pgmigrate.clone.run_context import CopyRun
from pgmigrate.common import preflight
from pgmigrate.common.catalog import STATE_SCHEMA

PG_BIN = "/usr/lib/postgresql/15/bin"


def migrate(src, dst, tmp_path, **options):
    options.setdefault("workers", 4)
    options.setdefault("split_tables_larger_than", 1 << 20)
    return copier.migrate(src, dst, artifacts_dir=str(tmp_path / "artifacts"), **options)


def state_schema_exists(params):
    conn = connect(params)
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (STATE_SCHEMA,))
        found = cur.fetchone() is not None
    conn.close()
    return found


def restore_schema_only(src, dst):
    """What an application's own migrations would have made: the source's full schema."""
    dump = subprocess.run([f"{PG_BIN}/pg_dump", "--schema-only", "-h", src["host"], "-p", str(src["port"]),
                           "-U", src["user"], "-d", src["dbname"]],
                          env={**os.environ, "PGPASSWORD": src["password"]}, capture_output=True, check=True).stdout
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", dst["host"], "-p", str(dst["port"]),
                    "-U", dst["user"], "-d", dst["dbname"]], input=dump,
                   env={**os.environ, "PGPASSWORD": dst["password"]}, capture_output=True, check=True)


@pytest.fixture
def hard_pair(db_pair):
    src, dst = db_pair
    dbcompare.load_hard_cases(src)
    return src, dst


def test_copy_mode_makes_an_exact_copy_of_every_hard_case(hard_pair, tmp_path):
    src, dst = hard_pair
    summary = migrate(src, dst, tmp_path)
    assert summary["status"] == "complete"
    assert dbcompare.compare_databases(src, dst) == []
    # app.big (200k rows) was split into ctid ranges copied concurrently
    big = next(t for t in summary["tables"] if t["table"] == "app.big")
    assert big["parts"] > 1 and big["rows"] == 200_000
    assert not state_schema_exists(dst), "the tool's state schema must be gone after success"
    record = json.loads((tmp_path / "artifacts" / "runs" / summary["run_id"] / "summary.json").read_text())
    assert record["status"] == "complete" and {t["table"] for t in record["tables"]} >= {"app.big", "app.tree"}
    # Where the time went, phase by phase, within the engine's own time.
    assert list(record["phases"])[:3] == ["setup", "starting", "schema"]
    assert {"data", "post-data", "sequences"} <= set(record["phases"])
    assert 0 < sum(record["phases"].values()) <= record["seconds"] + 0.05
    # the source's own sequence defect (ident_default behind its max) is reproduced and reported
    assert any("app.ident_default_id_seq" in w for w in summary["warnings"])


def test_existing_mode_loads_into_the_application_schema_with_triggers_silent(hard_pair, tmp_path):
    src, dst = hard_pair
    restore_schema_only(src, dst)
    summary = migrate(src, dst, tmp_path, schema_mode="existing")
    assert summary["status"] == "complete"
    # includes trigger_target, whose BEFORE INSERT trigger would have rewritten every row
    assert dbcompare.compare_databases(src, dst) == []


def test_refuses_a_non_empty_target_and_changes_nothing(hard_pair, tmp_path):
    src, dst = hard_pair
    conn = connect(dst)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE public.tree (keep int); INSERT INTO public.tree VALUES (42)")
    conn.commit()
    with pytest.raises(preflight.PreflightError, match="not empty.*migration_target_overwrite"):
        migrate(src, dst, tmp_path)
    with conn.cursor() as cur:
        cur.execute("SELECT keep FROM public.tree")
        assert cur.fetchall() == [(42,)]
    conn.close()
    assert not state_schema_exists(dst)
    artifacts = tmp_path / "artifacts"
    # The schema dump a new run starts beside its catalog read is not left behind by the refusal.
    assert [p.name for p in artifacts.iterdir() if p.name.startswith(".schema-")] == []
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = artifacts / f".schema-{dead.pid}-1.dump.tmp"  # an engine killed while dumping
    orphan.write_text("half a dump")
    summary = migrate(src, dst, tmp_path, overwrite=True)
    assert dbcompare.compare_databases(src, dst) == []
    assert not orphan.exists()
    assert (artifacts / "runs" / summary["run_id"] / "schema.dump").stat().st_size > 0
    assert [p.name for p in artifacts.iterdir() if p.name.startswith(".schema-")] == []


def test_refuses_to_copy_a_database_onto_itself(hard_pair, tmp_path):
    src, _ = hard_pair
    with pytest.raises(preflight.PreflightError, match="same database"):
        migrate(src, dict(src), tmp_path)


def test_production_target_needs_its_name_confirmed(hard_pair, tmp_path):
    src, dst = hard_pair
    with pytest.raises(preflight.PreflightError, match="migration_confirm_target"):
        migrate(src, dst, tmp_path, target_is_production=True, confirm_target="wrong")
    assert not state_schema_exists(dst)


def test_check_mode_changes_nothing(hard_pair, tmp_path):
    src, dst = hard_pair
    summary = migrate(src, dst, tmp_path, check_mode=True)
    assert summary["status"] == "check" and summary["plan"]["levels"]
    conn = connect(dst)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')")
        assert cur.fetchone()[0] == 0
    conn.close()


def test_wrong_password_is_a_clear_error(hard_pair, tmp_path):
    src, dst = hard_pair
    with pytest.raises(preflight.PreflightError, match="password authentication failed.*migration_target.password"):
        migrate(src, {**dst, "password": "not-the-password"}, tmp_path)


RUNNER = """
import json, sys
sys.path.insert(0, {module_utils!r})
from pgmigrate.clone import copier
args = json.load(sys.stdin)
copier.migrate(args["src"], args["dst"], artifacts_dir=args["artifacts"], workers=3,
               split_tables_larger_than=256 * 1024, analyze=False)
"""


def run_in_subprocess(src, dst, artifacts):
    code = RUNNER.format(module_utils=str(PROJECT_DIR / "module_utils"))
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    proc.stdin.write(json.dumps({"src": src, "dst": dst, "artifacts": artifacts}).encode())
    proc.stdin.close()
    return proc


def test_resume_after_kill_9_at_random_moments(hard_pair, tmp_path):
    """kill -9 of the whole engine (its psql children included) at several moments; each rerun
    resumes the same run, and the final target is exact: nothing lost, duplicated or half-copied."""
    src, dst = hard_pair
    # The hard cases alone copy in well under a second now: a larger table keeps the run long enough to
    # be killed several times (the small tables still resume among them).
    execute(src, "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS pad FROM generate_series(1, 1200000) g",
            "ALTER TABLE bulk ADD PRIMARY KEY (id)")
    rng = random.Random(20261126)
    artifacts = str(tmp_path / "artifacts")
    run_ids = set()
    kills = 0
    for delay in [0.4, 0.9, 1.4, 2.0] + [rng.uniform(0.3, 2.5) for _ in range(2)]:
        proc = run_in_subprocess(src, dst, artifacts)
        time.sleep(delay)
        if proc.poll() is not None:
            break
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        conn = connect(dst)
        run = state.unfinished_run(conn)
        conn.close()
        if run:
            run_ids.add(run["run_id"])
    assert kills >= 2, "the copy finished before it could be interrupted twice: make the data bigger"
    assert len(run_ids) == 1, "every rerun must resume the same run, not start a new one"
    final = run_in_subprocess(src, dst, artifacts)
    assert final.wait(timeout=300) == 0, final.stderr.read().decode()  # resumes, or finds it already complete
    assert dbcompare.compare_databases(src, dst) == []
    assert not state_schema_exists(dst)


def test_one_snapshot_for_every_worker_under_concurrent_writes(db_pair, tmp_path):
    """A writer moves money between accounts and appends ledger rows in one transaction while
    the copy runs: the target must hold one consistent moment (sum unchanged, ledger matching)."""
    src, dst = db_pair
    conn = connect(src)
    with conn.cursor() as cur:
        cur.execute("""
            CREATE TABLE account (id int PRIMARY KEY, balance bigint NOT NULL, pad text);
            INSERT INTO account SELECT g, 1000, repeat('p', 300) FROM generate_series(1, 60000) g;
            CREATE TABLE ledger (id bigserial PRIMARY KEY, account int, delta bigint);
        """)
    conn.commit()
    stop = threading.Event()
    writes = [0]

    def writer():
        wconn = connect(src)
        rng = random.Random(1)
        while not stop.is_set():
            a, b = rng.randint(1, 60000), rng.randint(1, 60000)
            with wconn.cursor() as cur:
                cur.execute("UPDATE account SET balance = balance - 5 WHERE id = %s", (a,))
                cur.execute("UPDATE account SET balance = balance + 5 WHERE id = %s", (b,))
                cur.execute("INSERT INTO ledger (account, delta) VALUES (%s, -5), (%s, 5)", (a, b))
            wconn.commit()
            writes[0] += 1
        wconn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.5)
        migrate(src, dst, tmp_path, workers=4, split_tables_larger_than=1 << 20)
    finally:
        stop.set()
        thread.join()
    assert writes[0] > 10
    tconn = connect(dst)
    with tconn.cursor() as cur:
        cur.execute("SELECT sum(balance), count(*) FROM account")
        assert cur.fetchone() == (60000 * 1000, 60000)
        cur.execute("SELECT count(*) FROM ledger")
        ledger_rows = cur.fetchone()[0]
        cur.execute("SELECT a.id FROM account a LEFT JOIN (SELECT account, sum(delta) d FROM ledger GROUP BY 1) l "
                    "ON l.account = a.id WHERE a.balance <> 1000 + COALESCE(l.d, 0) LIMIT 5")
        assert cur.fetchall() == [], "balances and ledger come from different moments"
        # the sequence is at least the copied maximum
        cur.execute("SELECT last_value >= (SELECT COALESCE(max(id), 0) FROM ledger) FROM ledger_id_seq")
        assert cur.fetchone()[0]
    tconn.close()
    assert ledger_rows % 2 == 0
    conn.close()


def test_source_failure_mid_copy_leaves_no_partial_table(db_pair, tmp_path):
    """The source backend of a COPY is terminated mid-stream: the part is retried and the target
    never keeps the rows of the interrupted attempt."""
    src, dst = db_pair
    conn = connect(src)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE wide AS SELECT g AS id, repeat(md5(g::text), 40) AS pad "
                    "FROM generate_series(1, 150000) g")
    killed = []

    def killer():
        deadline = time.time() + 20
        while time.time() < deadline and not killed:
            with conn.cursor() as cur:
                cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'pgmigrate worker%%' "
                            "AND query LIKE 'COPY%%' AND datname = %s", (src["dbname"],))
                for (pid,) in cur.fetchall():
                    cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    killed.append(pid)
            time.sleep(0.01)

    thread = threading.Thread(target=killer)
    thread.start()
    summary = migrate(src, dst, tmp_path, workers=1, split_tables_larger_than=0)
    thread.join()
    conn.close()
    assert killed, "no COPY was caught in flight"
    assert any("retrying" in e for e in summary["events"])
    assert dbcompare.compare_databases(src, dst) == []


def test_sequences_get_the_source_state_exactly(db_pair, tmp_path):
    src, dst = db_pair
    conn = connect(src)
    with conn.cursor() as cur:
        cur.execute("""
            CREATE SCHEMA other;
            CREATE SEQUENCE other.shared START 100;
            CREATE TABLE s1 (id bigint DEFAULT nextval('other.shared') PRIMARY KEY);
            CREATE TABLE s2 (id bigint DEFAULT nextval('other.shared') PRIMARY KEY);
            INSERT INTO s1 DEFAULT VALUES; INSERT INTO s2 DEFAULT VALUES; INSERT INTO s1 DEFAULT VALUES;
            CREATE TABLE ident (id int GENERATED ALWAYS AS IDENTITY, v text);
            INSERT INTO ident (v) SELECT 'x' FROM generate_series(1, 7);
            CREATE SEQUENCE fresh;
            CREATE SEQUENCE rewound; SELECT setval('rewound', 5, false);
        """)
    conn.commit()
    conn.close()
    summary = migrate(src, dst, tmp_path)
    assert summary["warnings"] == []
    tconn = connect(dst)
    with tconn.cursor() as cur:
        states = {}
        for name in ("other.shared", "ident_id_seq", "fresh", "rewound"):
            cur.execute(f"SELECT last_value, is_called FROM {name}")  # noqa: S608 - fixed names
            states[name] = cur.fetchone()
        assert states == {"other.shared": (102, True), "ident_id_seq": (7, True), "fresh": (1, False),
                          "rewound": (5, False)}
        cur.execute("INSERT INTO s2 DEFAULT VALUES RETURNING id")
        assert cur.fetchone()[0] == 103
    tconn.rollback()
    tconn.close()


def test_lock_held_on_a_target_table_ends_in_a_clear_error(db_pair, tmp_path):
    src, dst = db_pair
    conn = connect(src)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE locked_one (id int PRIMARY KEY); INSERT INTO locked_one VALUES (1)")
    conn.commit()
    conn.close()
    restore_schema_only(src, dst)
    holder = connect(dst)
    with holder.cursor() as cur:
        cur.execute("LOCK TABLE locked_one IN ACCESS EXCLUSIVE MODE")
    try:
        with pytest.raises((copier.MigrationError, preflight.PreflightError), match="locked_one.*lock timeout"):
            migrate(src, dst, tmp_path, schema_mode="existing", lock_timeout="200ms", retries=1)
    finally:
        holder.rollback()
        holder.close()
    tconn = connect(dst)
    with tconn.cursor() as cur:
        cur.execute("SELECT count(*) FROM locked_one")
        assert cur.fetchone()[0] == 0
    tconn.close()
    # and the rerun resumes and completes
    migrate(src, dst, tmp_path, schema_mode="existing")
    assert dbcompare.compare_databases(src, dst) == []


def test_psycopg2_is_what_the_modules_import():
    assert psycopg2.__version__.startswith("2.9")


def test_existing_mode_as_the_schema_owner_without_superuser(hard_pair, tmp_path, target_server):
    """A target role that may not set session_replication_role: triggers are disabled inside the
    copy's own transactions, FK cycles dropped and re-added, levels loaded in order."""
    src, dst = hard_pair
    role, password = f"owner_{dst['dbname'][-10:]}", "owner-" + os.urandom(8).hex()
    admin = connect(target_server)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE ROLE "{role}" LOGIN PASSWORD %s', (password,))
        cur.execute(f'ALTER DATABASE "{dst["dbname"]}" OWNER TO "{role}"')
    owner = {**dst, "user": role, "password": password}
    try:
        dump = subprocess.run([f"{PG_BIN}/pg_dump", "--schema-only", "--no-owner", "--no-privileges",
                               "-h", src["host"], "-p", str(src["port"]), "-U", src["user"], "-d", src["dbname"]],
                              env={**os.environ, "PGPASSWORD": src["password"]}, capture_output=True,
                              check=True).stdout
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", dst["host"], "-p", str(dst["port"]),
                        "-U", role, "-d", dst["dbname"]], input=dump,
                       env={**os.environ, "PGPASSWORD": password}, capture_output=True, check=True)
        summary = migrate(src, owner, tmp_path, schema_mode="existing")
        assert summary["status"] == "complete"
        assert any("dropped cycle_" in e or "cycle: dropped" in e for e in summary["events"])
        differences = [d for d in dbcompare.compare_databases(src, dst) if "owner" not in d.lower()]
        assert differences == []
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{dst["dbname"]}" WITH (FORCE)')
            cur.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()


KEYS_SCHEMA = """
CREATE SCHEMA keys;
CREATE TABLE keys."Orders" (
    "Order Id" bigint, code text, ref integer, note text, label text,
    CONSTRAINT "Orders PK" PRIMARY KEY ("Order Id") WITH (fillfactor = 80),
    CONSTRAINT orders_code_key UNIQUE (code) INCLUDE (label) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT orders_ref_key UNIQUE (ref) DEFERRABLE,
    CONSTRAINT orders_note_key UNIQUE NULLS NOT DISTINCT (note)
);
CREATE INDEX orders_label_idx ON keys."Orders" (label);
INSERT INTO keys."Orders" SELECT g, 'c' || g, g, CASE WHEN g > 1 THEN 'n' || g END, 'l' || (g % 7)
FROM generate_series(1, 20000) g;
CREATE TABLE keys.parted (id integer, k integer, PRIMARY KEY (id, k), UNIQUE (k, id)) PARTITION BY RANGE (k);
CREATE TABLE keys.parted_low PARTITION OF keys.parted FOR VALUES FROM (0) TO (100);
CREATE TABLE keys.parted_high PARTITION OF keys.parted FOR VALUES FROM (100) TO (200);
INSERT INTO keys.parted SELECT g, g % 200 FROM generate_series(1, 5000) g;
CREATE TABLE keys.child (id integer PRIMARY KEY, order_id bigint REFERENCES keys."Orders");
INSERT INTO keys.child SELECT g, g FROM generate_series(1, 1000) g;
"""

INDEX_FLAGS = """
SELECT c.relname, i.indisprimary, i.indisunique, i.indimmediate, i.indisvalid, con.conname, con.contype,
       con.condeferrable, con.condeferred
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.contype IN ('p', 'u')
WHERE n.nspname = 'keys' ORDER BY 1
"""


def test_primary_and_unique_keys_are_built_index_first_then_attached(db_pair, tmp_path):
    """Keys of ordinary tables are built as CREATE UNIQUE INDEX beside the table's other indexes and
    attached with ADD CONSTRAINT ... USING INDEX: same names, deferrability, INCLUDE and storage options
    as the source; keys that cannot be attached that way (NULLS NOT DISTINCT, partitioned tables) are
    built as the dump says. Foreign keys onto attached keys work."""
    src, dst = db_pair
    conn = connect(src)
    with conn.cursor() as cur:
        cur.execute(KEYS_SCHEMA)
    conn.commit()
    conn.close()
    summary = migrate(src, dst, tmp_path)
    assert summary["status"] == "complete"
    assert dbcompare.compare_databases(src, dst) == []
    flags = []
    for params in (src, dst):
        conn = connect(params)
        with conn.cursor() as cur:
            cur.execute(INDEX_FLAGS)
            flags.append(cur.fetchall())
        conn.close()
    assert flags[0] == flags[1]
    assert ("Orders PK", True, True, True, True, "Orders PK", "p", False, False) in flags[1]
    assert ("orders_code_key", False, True, False, True, "orders_code_key", "u", True, True) in flags[1]
    log = "".join(p.read_text() for p in (tmp_path / "artifacts" / "runs").glob("*/progress.log"))
    assert 'attached 3 key(s) of keys."Orders" to their indexes' in log
    assert "attached 1 key(s) of keys.child" in log
    assert not re.search(r"attached .* of keys\.parted", log)


def test_post_data_statements_keep_the_runs_lock_timeout(db_pair):
    """pg_dump's preamble (run before every post-data statement) sets lock_timeout = 0; the run's own
    lock_timeout must still apply, so an index build on a table another session holds ends in a
    retryable error instead of waiting without limit."""
    src, dst = db_pair
    conn = connect(dst)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE public.locked (id integer)")
    conn.commit()
    holder = connect(dst)
    holder.cursor().execute("LOCK TABLE public.locked IN ACCESS EXCLUSIVE MODE")
    release = threading.Timer(10, holder.rollback)
    release.start()
    run = CopyRun(src, dst, {**copier.DEFAULTS, "lock_timeout": "300ms"})
    run.post_settings = "SET lock_timeout = 0;\nSELECT pg_catalog.set_config('search_path', '', false);"
    run.run_id = "lock-test"
    job = PostDataStep(run).entry_job({"key": "INDEX:public:locked_id",
                                       "sql": "CREATE INDEX locked_id ON public.locked (id);"})
    started = time.monotonic()
    try:
        with pytest.raises(psycopg2.errors.LockNotAvailable):
            job(1, conn)
        assert time.monotonic() - started < 5
    finally:
        release.cancel()
        holder.rollback()
        holder.close()
        conn.close()


def test_the_databases_ddl_triggers_do_not_record_the_tools_own_ddl(db_pair, tmp_path):
    """An application that logs its DDL (event triggers on ddl_command_end and sql_drop): the copy's own
    DROP SCHEMA of its state, the last statement of a run, must not show up in the target's log."""
    src, dst = db_pair
    execute(src, """
        CREATE TABLE ddl_log (id serial PRIMARY KEY, event text, tag text, object text);
        CREATE FUNCTION log_drops() RETURNS event_trigger LANGUAGE plpgsql AS $$
        DECLARE o record;
        BEGIN
            FOR o IN SELECT * FROM pg_event_trigger_dropped_objects() LOOP
                INSERT INTO ddl_log (event, tag, object) VALUES (TG_EVENT, TG_TAG, o.object_identity);
            END LOOP;
        END $$;
        CREATE FUNCTION log_commands() RETURNS event_trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO ddl_log (event, tag) VALUES (TG_EVENT, TG_TAG);
        END $$;
        CREATE EVENT TRIGGER log_drops ON sql_drop EXECUTE FUNCTION log_drops();
        CREATE EVENT TRIGGER log_commands ON ddl_command_end EXECUTE FUNCTION log_commands();
        CREATE TABLE scratch (id int);
        DROP TABLE scratch;
    """)
    assert query(src, "SELECT count(*) FROM ddl_log WHERE event = 'sql_drop'")[0][0] > 0
    summary = migrate(src, dst, tmp_path)
    assert summary["status"] == "complete"
    assert query(dst, "SELECT event, tag, object FROM ddl_log ORDER BY id") == \
        query(src, "SELECT event, tag, object FROM ddl_log ORDER BY id")
    assert query(dst, "SELECT evtname FROM pg_event_trigger ORDER BY 1") == [("log_commands",), ("log_drops",)]
    assert dbcompare.compare_databases(src, dst) == []
