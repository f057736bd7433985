"""playbooks/zero_downtime.yml against the embedded servers: logical replication with a concurrent writer
running during the whole run, every acknowledged write counted on the target; a stop before the switch
that leaves the source as it was; a keyless table refused before anything changes."""

import json
import os
import subprocess
import threading
import time
import uuid

import psycopg2
import pytest

import dbcompare
from cdp_reference import generate
from conftest import PROJECT_DIR, connect, write_inventory

ANSIBLE_PLAYBOOK = str(PROJECT_DIR / ".venv" / "bin" / "ansible-playbook")
WRITER_TABLES = ("zd_writer_events", "zd_writer_counter")

EXTRA_SCHEMA = """
CREATE SCHEMA extra;
-- No key: published only with REPLICA IDENTITY FULL (zero_downtime_replica_identity_full), reverted after.
CREATE TABLE extra.keyless_log (message text, n int);
INSERT INTO extra.keyless_log SELECT 'row ' || g, g FROM generate_series(1, 500) g;
-- Partitioned, with an identity column: published through its root, its sequence synced at the cutover.
CREATE TABLE extra.measurements (id bigint GENERATED ALWAYS AS IDENTITY, day date NOT NULL, value numeric,
                                 PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
CREATE TABLE extra.measurements_2025 PARTITION OF extra.measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE extra.measurements_2026 PARTITION OF extra.measurements FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO extra.measurements (day, value)
SELECT date '2025-06-01' + (g % 400), g * 1.5 FROM generate_series(1, 2000) g;
"""

WRITER_SCHEMA = """
CREATE TABLE zd_writer_events (n bigserial PRIMARY KEY, write_id uuid NOT NULL, written_at timestamptz DEFAULT now());
CREATE TABLE zd_writer_counter (id int PRIMARY KEY, n bigint NOT NULL);
INSERT INTO zd_writer_counter VALUES (1, 0);
"""


def run_sql(params, statement, args=None, fetch=False):
    conn = connect(params)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement, args)
            return cur.fetchall() if fetch else None
    finally:
        conn.close()


def zero_downtime(inventory, *args, timeout=300):
    return subprocess.run([ANSIBLE_PLAYBOOK, "playbooks/zero_downtime.yml", "-i", str(inventory), *args],
                          cwd=PROJECT_DIR, capture_output=True, text=True, timeout=timeout, check=False)


def replication_objects(src, dst):
    """What the run may leave behind: publications and slots on the source, subscriptions on the target."""
    publications = run_sql(src, "SELECT pubname FROM pg_publication", fetch=True)
    slots = run_sql(src, "SELECT slot_name FROM pg_replication_slots WHERE database = %s", (src["dbname"],),
                    fetch=True)
    subscriptions = run_sql(dst, "SELECT subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid "
                                 "WHERE d.datname = %s", (dst["dbname"],), fetch=True)
    return {"publications": publications, "slots": slots, "subscriptions": subscriptions}


def drop_replication_leftovers(src, dst):
    """No subscription, slot or publication of a run left (even when its test failed): a slot left on the
    shared source would hold its WAL forever and keep the scratch database from being dropped. Both ways:
    the reverse replication after a cutover subscribes the source to the target."""
    _drop_subscriptions_then_slots(src, dst)
    _drop_subscriptions_then_slots(dst, src)


def _drop_subscriptions_then_slots(src, dst):
    for params in (src, dst):  # a module still running after a timeout could create objects after the sweep
        run_sql(params, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                        "AND application_name LIKE 'pgmigrate zero_downtime%%'", (params["dbname"],))
    conn = connect(dst)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SET default_transaction_read_only = off")  # the old source of a cutover is read-only
            cur.execute("SELECT subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid "
                        "WHERE d.datname = %s", (dst["dbname"],))
            for name, in cur.fetchall():
                for statement in ("ALTER SUBSCRIPTION {} DISABLE", "ALTER SUBSCRIPTION {} SET (slot_name = NONE)",
                                  "DROP SUBSCRIPTION {}"):
                    cur.execute(statement.format(f'"{name}"'))
    finally:
        conn.close()
    deadline = time.time() + 30
    while time.time() < deadline:
        slots = run_sql(src, "SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = %s",
                        (src["dbname"],), fetch=True)
        if not slots:
            break
        for slot, pid in slots:
            if pid:
                run_sql(src, "SELECT pg_terminate_backend(%s)", (pid,))
            else:
                run_sql(src, "SELECT pg_drop_replication_slot(%s)", (slot,))
        time.sleep(0.2)


@pytest.fixture
def replication_pair(db_pair):
    """db_pair, and afterwards no replication object left (drop_replication_leftovers)."""
    src, dst = db_pair
    yield src, dst
    drop_replication_leftovers(src, dst)


def all_artifact_text(tmp_path):
    texts = []
    for root, _dirs, files in os.walk(tmp_path):
        for name in files:
            if name.endswith(".password"):
                continue
            with open(os.path.join(root, name), "rb") as handle:
                texts.append(handle.read().decode(errors="replace"))
    return "\n".join(texts)


class ConcurrentWriter(threading.Thread):
    """Writes as an application would, during the whole run: each write inserts a row with a client-made
    unique id and increments the counter, in one transaction; it is acknowledged only once COMMIT returned.
    It connects to the database the switch file names (the source until then) and, after an error,
    reconnects there and retries the same write unless that database already has it (a COMMIT whose answer
    was lost)."""

    def __init__(self, src, dst, switch_file):
        super().__init__(daemon=True)
        self.src, self.dst, self.switch_file = src, dst, switch_file
        self.acknowledged = []
        self.errors = 0
        self.writes_on = {"source": 0, "target": 0}
        self.stop = threading.Event()
        self.conn = None
        self.conn_side = None

    def where(self):
        try:
            with open(self.switch_file) as handle:
                named = json.load(handle)
        except (OSError, ValueError):
            return "source", self.src
        assert "password" not in named
        return "target", {**self.dst, "host": named["host"], "port": named["port"], "dbname": named["dbname"]}

    def connection(self):
        side, params = self.where()
        if self.conn is None or self.conn.closed or side != self.conn_side:
            if self.conn is not None:
                self.conn.close()
            self.conn, self.conn_side = connect(params), side
        return self.conn

    def write(self, write_id):
        conn = self.connection()
        with conn.cursor() as cur:
            cur.execute("INSERT INTO zd_writer_events (write_id) VALUES (%s)", (write_id,))
            cur.execute("UPDATE zd_writer_counter SET n = n + 1 WHERE id = 1")
        conn.commit()
        self.writes_on[self.conn_side] += 1

    def already_written(self, write_id):
        conn = self.connection()
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM zd_writer_events WHERE write_id = %s", (write_id,))
            found = cur.fetchone()[0]
        conn.rollback()
        return found > 0

    def run(self):
        while not self.stop.is_set():
            write_id = str(uuid.uuid4())
            in_doubt = False
            while True:
                try:
                    if in_doubt and self.already_written(write_id):
                        break
                    self.write(write_id)
                    break
                except psycopg2.Error:
                    self.errors += 1
                    in_doubt = True
                    if self.conn is not None:
                        self.conn.close()
                    time.sleep(0.01)
            self.acknowledged.append(write_id)
            time.sleep(0.003)


def test_zero_downtime_migration_with_a_concurrent_writer_loses_and_duplicates_no_write(replication_pair,
                                                                                         tmp_path):
    src, dst = replication_pair
    generate.load(src, 0.05)
    run_sql(src, EXTRA_SCHEMA + WRITER_SCHEMA)
    switch_file = tmp_path / "switch" / "database.json"
    inventory = write_inventory(tmp_path, src, dst, {
        "zero_downtime_switch_file": str(switch_file),
        "zero_downtime_replica_identity_full": ["extra.keyless_log"],
        "zero_downtime_progress_poll_seconds": 1,
    })
    writer = ConcurrentWriter(src, dst, switch_file)
    writer.start()
    time.sleep(1)
    try:
        result = zero_downtime(inventory)
        time.sleep(1)  # the writer goes on on the target after the run
    finally:
        writer.stop.set()
        writer.join(30)
    output = result.stdout + result.stderr
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert writer.writes_on["source"] > 0 and writer.writes_on["target"] > 0, writer.writes_on

    # Every acknowledged write is on the target exactly once, nothing else is, and the counter agrees.
    rows = run_sql(dst, "SELECT write_id::text, count(*) FROM zd_writer_events GROUP BY 1", fetch=True)
    on_target = dict(rows)
    assert sorted(on_target) == sorted(writer.acknowledged)
    assert all(count == 1 for count in on_target.values())
    assert run_sql(dst, "SELECT n FROM zd_writer_counter WHERE id = 1", fetch=True)[0][0] == len(writer.acknowledged)

    # The CDP and the extra tables equal the source's (the writer's tables went on on the target).
    differences = [d for d in dbcompare.compare_databases(src, dst) if not any(t in d for t in WRITER_TABLES)]
    assert differences == [], "\n".join(differences)
    sequences = "SELECT schemaname || '.' || sequencename, COALESCE(last_value, 0) FROM pg_sequences"
    source_sequences = dict(run_sql(src, sequences, fetch=True))
    target_sequences = dict(run_sql(dst, sequences, fetch=True))
    assert source_sequences and all(target_sequences[name] >= value for name, value in source_sequences.items())

    # Nothing of the replication is left; the keyless table's replica identity is back; the source is read-only.
    assert replication_objects(src, dst) == {"publications": [], "slots": [], "subscriptions": []}
    assert run_sql(src, "SELECT relreplident FROM pg_class WHERE oid = 'extra.keyless_log'::regclass",
                   fetch=True) == [("d",)]
    with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
        run_sql(src, "INSERT INTO zd_writer_counter VALUES (2, 0)")

    report_files = list((tmp_path / "artifacts" / "zero_downtime").glob("*/report.json"))
    assert len(report_files) == 1
    report = json.loads(report_files[0].read_text())
    assert isinstance(report["freeze_window_seconds"], float)
    assert report["tables"] == 21 + 2 + 2 and report["sequences_synced"] >= 3
    assert "Write freeze:" in result.stdout and "Zero-downtime migration done" in result.stdout
    assert json.loads(switch_file.read_text())["dbname"] == dst["dbname"]
    for secret in (src["password"], dst["password"]):
        assert secret not in output
        assert secret not in all_artifact_text(tmp_path)


def test_stopping_before_the_switch_leaves_the_source_as_it_was(replication_pair, tmp_path):
    src, dst = replication_pair
    run_sql(src, EXTRA_SCHEMA + WRITER_SCHEMA)
    switch_file = tmp_path / "database.json"
    settings = {"zero_downtime_switch_file": str(switch_file), "zero_downtime_progress_poll_seconds": 1,
                "zero_downtime_replica_identity_full": ["extra.keyless_log"]}

    def source_is_as_it_was():
        assert replication_objects(src, dst) == {"publications": [], "slots": [], "subscriptions": []}
        assert run_sql(src, "SELECT relreplident FROM pg_class WHERE oid = 'extra.keyless_log'::regclass",
                       fetch=True) == [("d",)]
        assert run_sql(src, "SELECT setconfig FROM pg_db_role_setting WHERE setdatabase = "
                            "(SELECT oid FROM pg_database WHERE datname = current_database())", fetch=True) == []
        run_sql(src, "UPDATE zd_writer_counter SET n = n + 1 WHERE id = 1")  # writable
        assert not switch_file.exists()

    # Replicating, stopped before the cutover (a rehearsal), then the explicit stop.
    inventory = write_inventory(tmp_path, src, dst, {**settings, "zero_downtime_cutover": False})
    rehearsal = zero_downtime(inventory)
    assert rehearsal.returncode == 0, rehearsal.stdout[-4000:]
    assert "Replicating, not cut over" in rehearsal.stdout
    assert replication_objects(src, dst)["slots"]
    assert run_sql(src, "SELECT relreplident FROM pg_class WHERE oid = 'extra.keyless_log'::regclass",
                   fetch=True) == [("f",)]
    # The stop with the inventory of a real run (zero_downtime_cutover left true): it must not cut over.
    inventory = write_inventory(tmp_path, src, dst, settings)
    stopped = zero_downtime(inventory, "-e", "zero_downtime_abort=true")
    assert "Write freeze:" not in stopped.stdout and "Zero-downtime migration done" not in stopped.stdout
    assert stopped.returncode == 0, stopped.stdout[-4000:]
    assert "Stopped before the switch; the source is as it was." in stopped.stdout
    source_is_as_it_was()

    # Replicating again (the target is replaced), then a cutover that cannot freeze: a long transaction holds
    # a write lock on a published table, every attempt's lock_timeout expires, and the run stops by itself.
    inventory = write_inventory(tmp_path, src, dst, {**settings, "zero_downtime_cutover": False,
                                                     "zero_downtime_target_overwrite": True})
    again = zero_downtime(inventory)
    assert again.returncode == 0, again.stdout[-4000:]
    inventory = write_inventory(tmp_path, src, dst, {**settings, "zero_downtime_freeze_lock_timeout": "300ms",
                                                     "zero_downtime_freeze_attempts": 2})
    blocker = connect(src)
    with blocker.cursor() as cur:
        cur.execute("UPDATE zd_writer_counter SET n = n + 1 WHERE id = 1")
    try:
        failed = zero_downtime(inventory)
    finally:
        blocker.rollback()
        blocker.close()
    assert failed.returncode != 0
    assert "Resuming the replication" in failed.stdout
    assert "Cutover abandoned before the switch" in failed.stdout and "could not be locked" in failed.stdout
    assert "Stopped before the switch" in failed.stdout and "The source is as it was" in failed.stdout
    source_is_as_it_was()
    for secret in (src["password"], dst["password"]):
        assert secret not in rehearsal.stdout + stopped.stdout + again.stdout + failed.stdout
        assert secret not in all_artifact_text(tmp_path)


def test_a_table_without_a_key_is_refused_before_anything_changes(replication_pair, tmp_path):
    src, dst = replication_pair
    run_sql(src, EXTRA_SCHEMA + WRITER_SCHEMA)
    inventory = write_inventory(tmp_path, src, dst, {"zero_downtime_switch_file": str(tmp_path / "db.json")})
    result = zero_downtime(inventory, timeout=120)
    assert result.returncode != 0
    assert "nothing was changed" in result.stdout
    assert "these tables have no primary key and no usable replica identity" in result.stdout
    assert "extra.keyless_log" in result.stdout and "zero_downtime_replica_identity_full" in result.stdout
    assert replication_objects(src, dst) == {"publications": [], "slots": [], "subscriptions": []}
    assert run_sql(dst, "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
                   fetch=True) == [(0,)]


def test_a_subscription_that_keeps_failing_stops_the_run_at_once(replication_pair, tmp_path):
    """The target refuses every row of a table (a trigger the apply workers fire): the wait stops after the
    workers' repeated errors, not after zero_downtime_sync_timeout_seconds, and the source is as it was."""
    src, dst = replication_pair
    run_sql(src, WRITER_SCHEMA + """
CREATE FUNCTION refuse_replicated_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('session_replication_role') = 'replica' THEN
    RAISE EXCEPTION 'rows refused on the replica';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER refuse_replicated_rows BEFORE INSERT ON zd_writer_counter
  FOR EACH ROW EXECUTE FUNCTION refuse_replicated_rows();
ALTER TABLE zd_writer_counter ENABLE ALWAYS TRIGGER refuse_replicated_rows;
""")
    inventory = write_inventory(tmp_path, src, dst, {"zero_downtime_switch_file": str(tmp_path / "db.json"),
                                                     "zero_downtime_progress_poll_seconds": 1})
    started = time.monotonic()
    result = zero_downtime(inventory, timeout=240)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert "the subscription's workers failed" in result.stdout, result.stdout[-3000:]
    assert "Stopped before the switch" in result.stdout and "The source is as it was" in result.stdout
    assert "RETRYING" not in result.stdout, result.stdout[-3000:]
    assert replication_objects(src, dst) == {"publications": [], "slots": [], "subscriptions": []}
    print(f"stopped {elapsed:.1f} s after the start, on the workers' errors")


def test_a_run_resumed_from_another_controller_adds_the_not_valid_checks(replication_pair, tmp_path):
    """The NOT VALID checks wait for the end of the initial sync; a controller that did not set the run up
    (AWX runs each job where it likes) reads them from the source's catalog and adds them, NOT VALID."""
    from pgmigrate.replication.logical import ZeroDowntimeRun

    src, dst = replication_pair
    run_sql(src, """
CREATE DOMAIN positive_int AS int;
CREATE TABLE checked (id int PRIMARY KEY, n positive_int, m int);
INSERT INTO checked VALUES (1, -1, -5), (2, 3, 4);
ALTER DOMAIN positive_int ADD CONSTRAINT positive_int_check CHECK (VALUE > 0) NOT VALID;
ALTER TABLE checked ADD CONSTRAINT m_positive CHECK (m > 0) NOT VALID;
""")
    options = {"run_name": "resumed", "switch_file": str(tmp_path / "db.json")}
    first = ZeroDowntimeRun(src, dst, artifacts_dir=str(tmp_path / "controller_a"), **options)
    assert first.preflight()["problems"] == []
    first.setup()
    other = ZeroDowntimeRun(src, dst, artifacts_dir=str(tmp_path / "controller_b"), **options)
    deadline = time.monotonic() + 120
    while not other.wait(wait_seconds=5)["finished"]:
        assert time.monotonic() < deadline, "the initial sync did not end"
    try:
        assert run_sql(dst, "SELECT conname, convalidated, pg_get_constraintdef(oid) FROM pg_constraint "
                            "WHERE conname IN ('positive_int_check', 'm_positive') ORDER BY 1", fetch=True) == [
            ("m_positive", False, "CHECK ((m > 0)) NOT VALID"),
            ("positive_int_check", False, "CHECK ((VALUE > 0)) NOT VALID")]
        assert run_sql(dst, "SELECT id, n, m FROM checked ORDER BY 1", fetch=True) == [(1, -1, -5), (2, 3, 4)]
    finally:
        other.abort()


@pytest.mark.parametrize(("waves", "expected"), [
    (["half"], "is not a wave"),
    ([1], "needs application hosts (app_servers) to move"),
])
def test_waves_that_cannot_be_made_are_refused_before_anything_changes(replication_pair, tmp_path, waves, expected):
    src, dst = replication_pair
    run_sql(src, WRITER_SCHEMA)
    inventory = write_inventory(tmp_path, src, dst, {"zero_downtime_switch_file": str(tmp_path / "db.json"),
                                                     "zero_downtime_waves": waves})
    result = zero_downtime(inventory, timeout=120)
    assert result.returncode != 0
    assert expected in result.stdout and "zero_downtime_waves" in result.stdout, result.stdout[-3000:]
    assert replication_objects(src, dst) == {"publications": [], "slots": [], "subscriptions": []}
    assert run_sql(dst, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", fetch=True) == [(0,)]


def test_the_target_held_for_the_waves_takes_no_application_write_until_the_freeze(replication_pair, tmp_path):
    """hold_target (before the blue-green waves): new sessions on the target are read-only while replication
    still applies the source's writes; the cutover makes it writable inside the freeze; an abort instead
    leaves it as it was."""
    from pgmigrate.replication.logical import ZeroDowntimeRun

    src, dst = replication_pair
    run_sql(src, WRITER_SCHEMA)
    options = {"run_name": "held", "switch_file": str(tmp_path / "db.json"), "reverse_window_hours": 1}

    def writable(params):
        conn = connect(params)
        try:
            with conn.cursor() as cur:
                cur.execute("UPDATE zd_writer_counter SET n = n + 1 WHERE id = 1")
            conn.commit()
            return True
        except psycopg2.errors.ReadOnlySqlTransaction:
            return False
        finally:
            conn.close()

    def replicate(run):
        deadline = time.monotonic() + 120
        while not run.wait(wait_seconds=5)["finished"]:
            assert time.monotonic() < deadline, "the initial sync did not end"

    for ending in ("abort", "cutover"):
        run = ZeroDowntimeRun(src, dst, artifacts_dir=str(tmp_path / ending), target_overwrite=ending == "cutover",
                              **options)
        assert run.preflight()["problems"] == []
        run.setup()
        replicate(run)
        run.hold_target()
        assert not writable(dst) and writable(src)
        run_sql(src, "INSERT INTO zd_writer_events (write_id) VALUES (gen_random_uuid())")
        deadline = time.monotonic() + 30
        while run_sql(dst, "SELECT count(*) FROM zd_writer_events", fetch=True) != [(1,)]:
            assert time.monotonic() < deadline, "replication stopped while the target was held"
            time.sleep(0.2)
        if ending == "abort":
            run.abort()
            assert writable(dst) and writable(src)
            run_sql(dst, "DELETE FROM zd_writer_events")
            run_sql(src, "DELETE FROM zd_writer_events")
        else:
            result = run.cutover(switch="file")
            assert result["freeze_window_seconds"] < 10
            assert writable(dst) and not writable(src)
            run.finish()
            run.finalize()
