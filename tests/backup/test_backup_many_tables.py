"""A database of 3,000 small tables backed up by the backup role, on a server of its own.

pg_dump -j locks every table twice (its leader, then the worker dumping it); the row counts the backup
records must not add a lock on every table (and index) on top, which filled the server's lock table
("out of shared memory ... increase max_locks_per_transaction"). The server here has a smaller lock
table than the default (max_locks_per_transaction 40 instead of 64, max_connections 100), with room
for pg_dump -j2's own locks but not for a second set: the backup must succeed, and no moment of it may
hold more locks than pg_dump itself needs.
"""

import json
import subprocess
import threading
import time

import pytest

from conftest import PROJECT_DIR, connect, execute, write_inventory
from faultlib import ThrowawayCluster
from pgmigrate.backup import backup

ANSIBLE_PLAYBOOK = str(PROJECT_DIR / ".venv" / "bin" / "ansible-playbook")
TABLES = 3000
ROWS = 2
JOBS = 2


@pytest.fixture
def many_tables():
    cluster = ThrowawayCluster(settings={"max_connections": 100, "max_locks_per_transaction": 40})
    try:
        db = cluster.create_database("many")
        # 500 tables per transaction: creating them takes locks too.
        block = ("DO $$ BEGIN FOR i IN FIRST..LAST LOOP "
                 "EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, v text)', i); "
                 "EXECUTE format('INSERT INTO t%s SELECT g, ''row '' || g FROM generate_series(1, ROWS) g', i); "
                 "END LOOP; END $$").replace("ROWS", str(ROWS))
        execute(db, *[block.replace("FIRST", str(first)).replace("LAST", str(first + 499))
                      for first in range(1, TABLES + 1, 500)])
        yield db
    finally:
        cluster.destroy()


class LockSampler:
    """The most locks the other sessions of a database held at once, sampled from pg_locks."""

    def __init__(self, params):
        self.conn = connect(params)
        self.conn.autocommit = True
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        with self.conn.cursor() as cur:
            while not self._stop.is_set():
                cur.execute("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                            " WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()")
                self.peak = max(self.peak, cur.fetchone()[0])
                time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_exc):
        self._stop.set()
        self._thread.join()
        self.conn.close()


def test_3000_small_tables_are_backed_up_without_filling_the_lock_table(many_tables, tmp_path):
    db = many_tables
    # Only the source is backed up; the inventory names a target all the same, as every inventory does.
    inventory = write_inventory(tmp_path, db, {**db, "dbname": "postgres"},
                                {"backup_databases": ["source"], "backup_jobs": JOBS})
    started = time.monotonic()
    with LockSampler(db) as sampler:
        result = subprocess.run([ANSIBLE_PLAYBOOK, "playbooks/backup.yml", "-i", str(inventory)], cwd=PROJECT_DIR,
                                capture_output=True, text=True, timeout=600, check=False)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    # pg_dump -j2 itself (its leader's lock on every table, its workers' on the ones they dumped) and at
    # most one batch of counts (each table and its primary key): before, ~12,000 at once.
    assert sampler.peak <= 2 * TABLES + 2 * backup.COUNT_BATCH + 200, f"{sampler.peak} locks held at once"

    latest = tmp_path / "artifacts" / "backups" / "latest" / f"source-many@127.0.0.1-{db['port']}"
    for kind in ("complete",):  # the one backup_kinds makes by default
        record = json.loads((latest / kind / "backup.json").read_text())
        assert len(record["tables"]) == TABLES
        assert {table["rows"] for table in record["tables"]} == {ROWS}
        assert record["tables"][0] == {"schema": "public", "table": "t1", "rows": ROWS}
    complete = json.loads((latest / "complete" / "backup.json").read_text())
    print(f"backup role, {TABLES} tables: {seconds:.1f} s in all, pg_dump -j{JOBS} {complete['seconds']} s")
