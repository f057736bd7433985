"""Faults of the servers during `migrate.yml` (issue 8): the source's COPY backend terminated, the target
server restarted, a lock held on a target table, the target's disk full. Each ends in a retry or a clear
error, never in a silent partial copy; after a clear error the rerun completes and the target equals
the source. Restarts and a full disk happen to throwaway servers of the test's own, never to the shared
embedded ones."""

import json
import os
import pathlib
import subprocess
import tempfile
import threading
import time

import pytest

import dbcompare
from cdp_reference import generate
from conftest import connect, execute, query, write_inventory
from faultlib import PG_BIN, ThrowawayCluster, recorder, rows_lost, run_playbook
from pgmigrate.common.catalog import STATE_SCHEMA

pytestmark = pytest.mark.faults

SKIP = ("--skip-tags", "backup,validate")
# About 15 MB of CDP data: enough for a COPY to be caught in flight and to overflow the 6 MB disk.
FAULT_CDP_SCALE = 0.15
RESTART_CDP_SCALE = 2  # about 200 MB: tables large enough to stream (not copied in-process)

def wait_for_streaming(progress_file, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            progress = json.loads(progress_file.read_text())
        except (OSError, ValueError):
            progress = {}
        if progress.get("phase") == "data" and progress.get("bytes_streamed", 0) > 0:
            return progress
        time.sleep(0.01)
    return None

def run_log(tmp_path):
    return "".join(p.read_text() for p in (tmp_path / "artifacts" / "runs").glob("*/progress.log"))

def unfinished_run_recorded(params):
    return bool(query(params, "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (STATE_SCHEMA,))[0][0]) and \
        query(params, f"SELECT count(*) FROM {STATE_SCHEMA}.run")[0][0] > 0  # noqa: S608 - constant

def test_source_backend_terminated_mid_copy_is_retried(source_server, scratch, target_server, tmp_path, request):
    src, dst = scratch.create(source_server, "src"), scratch.create(target_server, "dst")
    generate.load(src, FAULT_CDP_SCALE)
    inventory = write_inventory(tmp_path, src, dst, {"migration_workers": 2})
    terminated = []

    def terminator():
        deadline = time.time() + 120
        while time.time() < deadline and not terminated:
            rows = query(source_server, "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                                        "datname = %s AND application_name LIKE 'pgmigrate worker%%' "
                                        "AND query LIKE 'COPY%%' AND state = 'active' LIMIT 1", (src["dbname"],))
            terminated.extend(pid for pid, ok in rows if ok)
            time.sleep(0.02)

    thread = threading.Thread(target=terminator)
    thread.start()
    result = run_playbook(inventory, *SKIP)
    thread.join()
    assert terminated, "no COPY was caught in flight on the source"
    outcome = "retried" if result.returncode == 0 else "clear error"
    if result.returncode != 0:
        assert "terminat" in result.stdout, result.stdout[-3000:]
        assert unfinished_run_recorded(dst)
        result = run_playbook(inventory, *SKIP)
    differences = dbcompare.compare_databases(src, dst)
    lost = rows_lost(src, dst)
    recorder(request)("fault", "source connection terminated mid-COPY", outcome=outcome,
                      survived=result.returncode == 0 and not differences, rows_lost=lost)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "retrying" in run_log(tmp_path) or outcome == "clear error"
    assert differences == [] and lost == 0

@pytest.fixture
def own_target():
    cluster = ThrowawayCluster()
    yield cluster
    cluster.destroy()

def test_target_server_restarted_mid_run(source_server, scratch, own_target, tmp_path, request):
    src = scratch.create(source_server, "src")
    # The own target (fsync off) takes FAULT_CDP_SCALE's data in well under the progress file's 1 s
    # interval: a larger load, so that the copy is seen streaming before it ends.
    generate.load(src, RESTART_CDP_SCALE)
    dst = own_target.create_database("cdp")
    inventory = write_inventory(tmp_path, src, dst, {"migration_workers": 2, "migration_retries": 3})
    restarted = []

    def restarter():
        if wait_for_streaming(tmp_path / "artifacts" / "progress.json"):
            own_target.restart()
            restarted.append(time.time())

    thread = threading.Thread(target=restarter)
    thread.start()
    first = run_playbook(inventory, *SKIP)
    thread.join()
    assert restarted, "the copy was never seen streaming"
    outcome = "retried" if first.returncode == 0 else "clear error"
    result = first
    if first.returncode != 0:
        # A clear error names the lost connection; the rerun finishes the job.
        assert any(text in first.stdout for text in ("terminating connection", "server closed the connection",
                                                     "connection", "shutdown")), first.stdout[-3000:]
        result = run_playbook(inventory, *SKIP)
    differences = dbcompare.compare_databases(src, dst)
    lost = rows_lost(src, dst)
    recorder(request)("fault", "target server restarted mid-run", outcome=outcome,
                      survived=result.returncode == 0 and not differences, rows_lost=lost,
                      first_error=None if first.returncode == 0 else first.stdout.split("msg", 1)[-1][:300])
    assert result.returncode == 0, result.stdout[-3000:]
    assert differences == [] and lost == 0

def test_lock_held_on_a_target_table_is_a_clear_error_then_the_rerun_completes(source_server, target_server,
                                                                              scratch, tmp_path, request):
    src, dst = scratch.create(source_server, "src"), scratch.create(target_server, "dst")
    generate.load(src, 0.02)
    # The application's own migrations made the schema (schema mode existing): its tables exist to be locked.
    dump = subprocess.run([str(PG_BIN / "pg_dump"), "--schema-only", "-h", src["host"], "-p", str(src["port"]),
                           "-U", src["user"], "-d", src["dbname"]], env={**os.environ, "PGPASSWORD": src["password"]},
                          capture_output=True, check=True).stdout
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", dst["host"], "-p", str(dst["port"]),
                    "-U", dst["user"], "-d", dst["dbname"]], input=dump,
                   env={**os.environ, "PGPASSWORD": dst["password"]}, capture_output=True, check=True)
    inventory = write_inventory(tmp_path, src, dst, {"migration_schema_mode": "existing",
                                                     "migration_lock_timeout": "1s", "migration_retries": 1})
    holder = connect(dst)
    with holder.cursor() as cur:
        cur.execute("LOCK TABLE public.users IN ACCESS EXCLUSIVE MODE")
    try:
        locked = run_playbook(inventory, *SKIP)
    finally:
        holder.rollback()
        holder.close()
    clear = locked.returncode != 0 and "lock" in locked.stdout and "users" in locked.stdout
    assert locked.returncode != 0, locked.stdout[-3000:]
    assert "public.users" in locked.stdout and "lock timeout" in locked.stdout, locked.stdout[-3000:]
    assert query(dst, "SELECT count(*) FROM public.users")[0][0] == 0, "a locked table got rows"
    rerun = run_playbook(inventory, *SKIP)
    differences = dbcompare.compare_databases(src, dst)
    lost = rows_lost(src, dst)
    recorder(request)("fault", "lock held on a target table", outcome="clear error" if clear else "unclear",
                      survived=clear and rerun.returncode == 0 and not differences, rows_lost=lost,
                      seconds_to_error=locked.seconds)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert differences == [] and lost == 0

@pytest.fixture
def small_disk():
    """A 6 MB tmpfs for the target's tablespace (as root, which CI is)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mountpoint = pathlib.Path(tempfile.mkdtemp(prefix="pgm-disk-"))
    mountpoint.chmod(0o755)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(mountpoint)], check=True)
    subprocess.run(["chown", "postgres:", str(mountpoint)], check=True)
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)
    mountpoint.rmdir()

def test_target_disk_full_is_a_clear_error_never_a_partial_copy(source_server, scratch, own_target, small_disk,
                                                                 tmp_path, request):
    src = scratch.create(source_server, "src")
    generate.load(src, FAULT_CDP_SCALE)
    execute(own_target.params, f"CREATE TABLESPACE small LOCATION '{small_disk}'")
    dst = own_target.create_database("cdp", tablespace="small")
    inventory = write_inventory(tmp_path, src, dst, {"migration_workers": 2})
    full = run_playbook(inventory, *SKIP)
    assert full.returncode != 0, full.stdout[-3000:]
    assert "No space left on device" in full.stdout, full.stdout[-3000:]
    # Never a partial table that looks complete: the run is recorded unfinished and validation would fail.
    assert unfinished_run_recorded(dst)
    progress = json.loads((tmp_path / "artifacts" / "progress.json").read_text())
    assert progress["state"] == "failed"
    assert dbcompare.compare_databases(src, dst) != []
    # Space freed: the same command resumes and completes.
    subprocess.run(["mount", "-o", "remount,size=512m", str(small_disk)], check=True)
    rerun = run_playbook(inventory, *SKIP)
    differences = dbcompare.compare_databases(src, dst)
    lost = rows_lost(src, dst)
    recorder(request)("fault", "target disk full", outcome="clear error", seconds_to_error=full.seconds,
                      survived=rerun.returncode == 0 and not differences, rows_lost=lost)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert "resumed run" in rerun.stdout
    assert differences == [] and lost == 0
