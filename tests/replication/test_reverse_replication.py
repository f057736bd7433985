"""The reverse window after a zero-downtime cutover (zero_downtime_reverse_window_hours), from PostgreSQL 15 to
15 and to 18, and from 14 to 15: a writer runs through the cutover, the window and the rollback
(playbooks/rollback.yml), which switches back to the old source with every write made on the new database;
and a window that ends (by zero_downtime_finalize, or by its time) drops the reverse replication and leaves the
old source retired."""

import json
import subprocess
import time

import psycopg2
import pytest
from psycopg2 import errors as pg_errors
from test_zero_downtime import (
    ANSIBLE_PLAYBOOK,
    EXTRA_SCHEMA,
    WRITER_SCHEMA,
    WRITER_TABLES,
    ConcurrentWriter,
    drop_replication_leftovers,
    run_sql,
    zero_downtime,
)

import independent_compare
from conftest import PROJECT_DIR, connect, wheel_bin, write_inventory


def rollback(inventory, *args, timeout=300):
    return subprocess.run([ANSIBLE_PLAYBOOK, "playbooks/rollback.yml", "-i", str(inventory), *args],
                          cwd=PROJECT_DIR, capture_output=True, text=True, timeout=timeout, check=False)


def every_replication_object(src, dst):
    """Publications, slots and subscriptions on both databases."""
    found = {}
    for side, params in (("source", src), ("target", dst)):
        found[side] = {
            "publications": run_sql(params, "SELECT pubname FROM pg_publication ORDER BY 1", fetch=True),
            "slots": run_sql(params, "SELECT slot_name FROM pg_replication_slots WHERE database = %s",
                             (params["dbname"],), fetch=True),
            "subscriptions": run_sql(params, "SELECT subname FROM pg_subscription s JOIN pg_database d ON "
                                             "d.oid = s.subdbid WHERE d.datname = %s", (params["dbname"],), fetch=True)}
    return found


def refuses_writes(params):
    """A new application session may not write there (default_transaction_read_only)."""
    conn = connect(params)
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO zd_writer_counter VALUES (2, 0)")
        conn.commit()
        return False
    except pg_errors.ReadOnlySqlTransaction:
        return True
    finally:
        conn.close()


class RoundTripWriter(ConcurrentWriter):
    """ConcurrentWriter that follows the switch file there and back: "source" is the old database whatever
    the file says; the order of the sides written is kept."""

    def __init__(self, src, dst, switch_file):
        super().__init__(src, dst, switch_file)
        self.sides = []

    def where(self):
        side, params = super().where()
        if side == "target" and (params["port"], params["dbname"]) == (self.src["port"], self.src["dbname"]):
            return "source", self.src
        return side, params

    def write(self, write_id):
        super().write(write_id)
        if not self.sides or self.sides[-1] != self.conn_side:
            self.sides.append(self.conn_side)


def rows_and_sequences_differ(src, dst):
    source, target = (independent_compare._read(p, False, False) for p in (src, dst))
    return (independent_compare._diff_rows(source["rows"], target["rows"])
            + independent_compare._diff_mapping("sequence", source["sequence"], target["sequence"]))


@pytest.fixture(params=[(15, 15), (15, 18), (14, 15)], ids=["15-to-15", "15-to-18", "14-to-15"])
def pair(request, scratch):
    source_major, major = request.param
    source_server = request.getfixturevalue("source14_server" if source_major == 14 else "source_server")
    server = request.getfixturevalue("target18_server" if major == 18 else "target_server")
    src, dst = scratch.create(source_server, f"src{source_major}"), scratch.create(server, f"dst{major}")
    yield src, dst, major
    drop_replication_leftovers(src, dst)


def test_rollback_in_the_reverse_window_keeps_every_write_of_the_new_database(pair, tmp_path):
    src, dst, major = pair
    run_sql(src, EXTRA_SCHEMA + WRITER_SCHEMA)
    switch_file = tmp_path / "switch" / "database.json"
    inventory = write_inventory(tmp_path, src, dst, {
        "migration_pg_bin_dir": "" if major == 15 else wheel_bin(),
        "zero_downtime_switch_file": str(switch_file),
        "zero_downtime_replica_identity_full": ["extra.keyless_log"],
        "zero_downtime_progress_poll_seconds": 1,
        "zero_downtime_reverse_window_hours": 1,
    })
    writer = RoundTripWriter(src, dst, switch_file)
    writer.start()
    try:
        migrated = zero_downtime(inventory)
        assert migrated.returncode == 0, migrated.stdout[-4000:] + migrated.stderr[-2000:]
        assert "Reverse replication: the old source follows the new database since" in migrated.stdout
        time.sleep(1.5)
        # During the window: the application writes on the new database, the old one follows but refuses
        # the application's writes; the keyless table (REPLICA IDENTITY FULL there too) and the partitioned
        # one, with its identity sequence, change on the new database as well.
        assert refuses_writes(src)
        run_sql(dst, "UPDATE extra.keyless_log SET n = n + 1000 WHERE n <= 10; "
                     "DELETE FROM extra.keyless_log WHERE n = 20; "
                     "INSERT INTO extra.measurements (day, value) SELECT date '2026-03-01', g FROM "
                     "generate_series(1, 50) g")
        reported = zero_downtime(inventory)
        assert reported.returncode == 0, reported.stdout[-4000:]
        assert "Write freeze:" not in reported.stdout and "Zero-downtime migration done" not in reported.stdout
        assert "window until" in reported.stdout and "Plan: replicate" not in reported.stdout
        rolled_back = rollback(inventory)
        assert rolled_back.returncode == 0, rolled_back.stdout[-4000:] + rolled_back.stderr[-2000:]
        assert "Switched back to the old source with every write of the new database" in rolled_back.stdout
        time.sleep(1.5)
    finally:
        writer.stop.set()
        writer.join(30)
    assert writer.sides == ["source", "target", "source"], (writer.sides, writer.writes_on)

    on_old = dict(run_sql(src, "SELECT write_id::text, count(*) FROM zd_writer_events GROUP BY 1", fetch=True))
    assert sorted(on_old) == sorted(writer.acknowledged)
    assert all(count == 1 for count in on_old.values())
    assert run_sql(src, "SELECT n FROM zd_writer_counter WHERE id = 1", fetch=True)[0][0] == len(writer.acknowledged)

    # The rest equals the new database, the writes of the window included; the sequences came back (the
    # next identity on the old source follows the new database's last), and nothing of the runs is left.
    differences = [d for d in rows_and_sequences_differ(src, dst) if not any(t in d for t in WRITER_TABLES)]
    assert differences == [], "\n".join(differences)
    run_sql(src, "INSERT INTO extra.measurements (day, value) VALUES ('2026-04-01', 1)")
    assert run_sql(src, "SELECT count(*) FROM extra.keyless_log WHERE n > 1000", fetch=True) == [(10,)]
    assert not refuses_writes(src) and refuses_writes(dst)
    assert every_replication_object(src, dst) == {
        side: {"publications": [], "slots": [], "subscriptions": []} for side in ("source", "target")}
    assert run_sql(dst, "SELECT relreplident FROM pg_class WHERE oid = 'extra.keyless_log'::regclass",
                   fetch=True) == [("d",)]
    report = json.loads(next((tmp_path / "artifacts" / "zero_downtime").glob("pgmigrate_zr_*/report.json"))
                        .read_text())
    forward = json.loads(next((tmp_path / "artifacts" / "zero_downtime").glob("pgmigrate_zd_*/report.json"))
                         .read_text())
    source_major = run_sql(src, "SELECT current_setting('server_version_num')::int / 10000", fetch=True)[0][0]
    print(f"{source_major} -> {major} and back: write freezes {forward['freeze_window_seconds']:.3f} s and "
          f"{report['freeze_window_seconds']:.3f} s; writes {writer.writes_on}")
    assert report["status"] == "switched back"


def test_the_reverse_window_ends_by_finalize_or_by_its_time(scratch, source_server, target_server, tmp_path):
    src, dst = scratch.create(source_server, "src"), scratch.create(target_server, "dst")
    try:
        run_sql(src, WRITER_SCHEMA)
        inventory = write_inventory(tmp_path, src, dst, {
            "zero_downtime_switch_file": str(tmp_path / "db.json"), "zero_downtime_progress_poll_seconds": 1,
            "zero_downtime_reverse_window_hours": 1})
        assert zero_downtime(inventory).returncode == 0
        assert every_replication_object(src, dst)["target"]["slots"] == [("pgmigrate_zr_" + src["dbname"],)]
        finalized = zero_downtime(inventory, "-e", "zero_downtime_finalize=true")
        assert finalized.returncode == 0, finalized.stdout[-3000:]
        assert "the migration is final" in finalized.stdout
        # Nothing after the finalize: no cutover, no second finish.
        assert "Write freeze:" not in finalized.stdout and "Zero-downtime migration done" not in finalized.stdout
        assert every_replication_object(src, dst) == {
            side: {"publications": [], "slots": [], "subscriptions": []} for side in ("source", "target")}
        assert refuses_writes(src) and not refuses_writes(dst)
        # Nothing to switch back with now: rollback.yml says so, and does not touch the databases.
        again = rollback(inventory, "-e", "rollback_mode=immediate")
        assert again.returncode == 0 and "Switched back" not in again.stdout

        # A window of about a second: the next run finds it over and drops it by itself.
        run_sql(dst, "DROP TABLE zd_writer_events, zd_writer_counter")
        run_sql(src, f"BEGIN READ WRITE; ALTER DATABASE {src['dbname']} RESET default_transaction_read_only; COMMIT")
        (tmp_path / "artifacts").rename(tmp_path / "artifacts.first")
        inventory = write_inventory(tmp_path, src, dst, {
            "zero_downtime_switch_file": str(tmp_path / "db.json"), "zero_downtime_progress_poll_seconds": 1,
            "zero_downtime_reverse_window_hours": 0.0003})
        assert zero_downtime(inventory).returncode == 0
        time.sleep(1.5)
        expired = zero_downtime(inventory)
        assert expired.returncode == 0, expired.stdout[-3000:]
        assert "the migration is final" in expired.stdout
        assert every_replication_object(src, dst) == {
            side: {"publications": [], "slots": [], "subscriptions": []} for side in ("source", "target")}
    finally:
        drop_replication_leftovers(src, dst)
        for params in (src, dst):
            try:
                run_sql(params, "BEGIN READ WRITE; ALTER DATABASE " + params["dbname"]
                        + " RESET default_transaction_read_only; COMMIT")
            except psycopg2.Error:
                pass
