#!/usr/bin/env python3
"""Zero-downtime benchmark: playbooks/zero_downtime.yml on the CDP database with a concurrent writer.

Loads the CDP reference database at --scale (10 is about 1 GB) into a fresh database on the embedded
source server, creates a fresh empty database on the embedded target server, starts the writer of
tests/replication/test_zero_downtime.py (a row with a client-made id and a counter increment per transaction,
acknowledged once COMMIT returned, retried after an error on whatever database the switch file names)
and runs the playbook while it writes. Reports the initial sync, the lag, the write-freeze window and
the writes acknowledged, lost and duplicated.

    .venv/bin/python benchmarks/zero_downtime_benchmark.py [--scale 10] [--keep]

Passwords never reach a command line or the inventory: Ansible reads them from files with a lookup.
Results: a table on stdout and JSON in benchmarks/results/zero_downtime-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

PROJECT = pathlib.Path(__file__).resolve().parent.parent
RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(PROJECT / "tests"))
sys.path.insert(0, str(PROJECT / "module_utils"))
sys.path.insert(0, str(PROJECT))

from test_zero_downtime import WRITER_SCHEMA, ConcurrentWriter, run_sql  # noqa: E402

from cdp_reference import generate  # noqa: E402
from conftest import ScratchDatabases, _server, write_inventory  # noqa: E402

ANSIBLE_PLAYBOOK = str(PROJECT / ".venv" / "bin" / "ansible-playbook")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def drop_replication_leftovers(src: dict, dst: dict) -> None:
    """Whatever happened, no subscription or slot of the benchmark's databases survives it."""
    for name, in run_sql(dst, "SELECT subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid "
                              "WHERE d.datname = %s", (dst["dbname"],), fetch=True):
        for statement in ("ALTER SUBSCRIPTION {} DISABLE", "ALTER SUBSCRIPTION {} SET (slot_name = NONE)",
                          "DROP SUBSCRIPTION {}"):
            run_sql(dst, statement.format(f'"{name}"'))
    for _ in range(100):
        slots = run_sql(src, "SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = %s",
                        (src["dbname"],), fetch=True)
        if not slots:
            return
        for slot, pid in slots:
            run_sql(src, "SELECT pg_terminate_backend(%s)" if pid else "SELECT pg_drop_replication_slot(%s)",
                    (pid or slot,))
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=10.0, help="CDP scale (1 is about 100 MB, 10 about 1 GB)")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark's databases afterwards")
    args = parser.parse_args()

    scratch = ScratchDatabases()
    src = scratch.create(_server("source", 55432), "zdbench_src")
    dst = scratch.create(_server("target", 55433), "zdbench_dst")
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="zero_downtime_benchmark-"))
    result = {"scale": args.scale, "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
                          "python": platform.python_version()}}
    try:
        log(f"loading the CDP at scale {args.scale} into {src['dbname']}")
        started = time.monotonic()
        generate.load(src, args.scale)
        run_sql(src, WRITER_SCHEMA)
        result["load_seconds"] = round(time.monotonic() - started, 1)
        result["source_bytes"] = run_sql(src, "SELECT pg_database_size(current_database())", fetch=True)[0][0]
        log(f"loaded {result['source_bytes'] / 1024 ** 2:.0f} MB in {result['load_seconds']} s")

        switch_file = workdir / "database.json"
        inventory = write_inventory(workdir, src, dst, {"zero_downtime_switch_file": str(switch_file),
                                                        "zero_downtime_progress_poll_seconds": 5})
        writer = ConcurrentWriter(src, dst, switch_file)
        writer.start()
        time.sleep(2)
        log("running playbooks/zero_downtime.yml with the writer running")
        started = time.monotonic()
        run = subprocess.run([ANSIBLE_PLAYBOOK, "playbooks/zero_downtime.yml", "-i", str(inventory)], cwd=PROJECT,
                             capture_output=True, text=True, check=False)
        result["playbook_seconds"] = round(time.monotonic() - started, 1)
        time.sleep(2)
        writer.stop.set()
        writer.join(30)
        (workdir / "playbook.log").write_text(run.stdout + run.stderr)
        if run.returncode != 0:
            print(run.stdout[-5000:] + run.stderr[-2000:])
            raise SystemExit(f"the playbook failed (log: {workdir / 'playbook.log'})")

        report = json.loads(next((workdir / "artifacts" / "zero_downtime").glob("*/report.json")).read_text())
        counts = dict(run_sql(dst, "SELECT write_id::text, count(*) FROM zd_writer_events GROUP BY 1", fetch=True))
        acknowledged = set(writer.acknowledged)
        counter = run_sql(dst, "SELECT n FROM zd_writer_counter WHERE id = 1", fetch=True)[0][0]
        result.update({
            "tables": report["tables"], "schema_seconds": report["schema_seconds"],
            "initial_sync_seconds": report["initial_sync_seconds"], "max_lag_bytes": report["max_lag_bytes"],
            "freeze_window_seconds": report["freeze_window_seconds"], "freeze": report["freeze"],
            "sequences_synced": report["sequences_synced"],
            "writes_acknowledged": len(writer.acknowledged), "writes_on_source": writer.writes_on["source"],
            "writes_on_target": writer.writes_on["target"], "writer_errors_retried": writer.errors,
            "writes_lost": len(acknowledged - set(counts)),
            "writes_duplicated": sum(1 for count in counts.values() if count > 1),
            "writes_unacknowledged_on_target": len(set(counts) - acknowledged),
            "counter_matches": counter == len(writer.acknowledged),
        })
    finally:
        drop_replication_leftovers(src, dst)
        if not args.keep:
            scratch.drop_all()

    rows = [
        ("CDP scale / source size", f"{args.scale} / {result['source_bytes'] / 1024 ** 2:.0f} MB"),
        ("tables", result["tables"]),
        ("playbook wall time", f"{result['playbook_seconds']} s"),
        ("schema copy", f"{result['schema_seconds']} s"),
        ("initial sync", f"{result['initial_sync_seconds']} s"),
        ("max lag seen", f"{result['max_lag_bytes'] / 1024 ** 2:.1f} MB"),
        ("write-freeze window", f"{result['freeze_window_seconds']} s"),
        ("  locks / catch-up", f"{result['freeze']['lock_seconds']} s / {result['freeze']['catch_up_seconds']} s"),
        ("sequences synced", result["sequences_synced"]),
        ("writes acknowledged", f"{result['writes_acknowledged']} ({result['writes_on_source']} on the source, "
                                f"{result['writes_on_target']} on the target)"),
        ("writes lost / duplicated", f"{result['writes_lost']} / {result['writes_duplicated']}"),
        ("counter equals acknowledged", result["counter_matches"]),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    RESULTS_DIR.mkdir(exist_ok=True)
    output = RESULTS_DIR / f"zero_downtime-{time.strftime('%Y%m%dT%H%M%S')}.json"
    output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nJSON: {output}")
    return 0 if result["writes_lost"] == 0 and result["writes_duplicated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
