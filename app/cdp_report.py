#!/usr/bin/env python3
"""The CDP stand-in scheduled report: counts of the CDP's main tables through DATABASE_URL, as JSON.

Run by cdp-report.service (started by cdp-report.timer, or by the cron entry that starts that unit).
Reads only. Writes CDP_REPORT_DIR/report-<UTC time>.json and keeps the newest CDP_REPORT_KEEP reports.
Exits 1 when the database cannot be read, so a failed run shows in `systemctl status cdp-report`.

  python3 cdp_report.py [--env-file PATH]
"""

import argparse
import json
import os
import sys
import time

import psycopg2
from cdp_env import connect, load_config, redact

TABLES = ("team", "segments", "cohorts", "campaigns", "scheduled_reports", "report_executions")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", help="KEY=VALUE file with DATABASE_URL and CDP_* settings")
    args = parser.parse_args()
    settings = load_config(args.env_file)
    report_dir = settings["CDP_REPORT_DIR"]
    started = time.time()
    try:
        conn = connect(settings, "cdp-report")
        conn.set_session(readonly=True)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT current_database(), inet_server_port()")
            database, port = cur.fetchone()
            counts = {}
            for table in TABLES:
                cur.execute(f"SELECT count(*) FROM public.{table}")  # fixed names from TABLES
                counts[table] = cur.fetchone()[0]
        conn.close()
    except psycopg2.Error as error:
        sys.exit(f"report failed on {redact(settings['DATABASE_URL'])}: {' '.join(str(error).split())}")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    report = {"generated_at": stamp, "database": database, "server_port": port, "row_counts": counts,
              "seconds": round(time.time() - started, 3)}
    os.makedirs(report_dir, exist_ok=True)
    path = os.path.join(report_dir, f"report-{stamp}.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    reports = sorted(name for name in os.listdir(report_dir) if name.startswith("report-"))
    for old in reports[:-int(settings["CDP_REPORT_KEEP"])]:
        os.remove(os.path.join(report_dir, old))
    print(f"report {path}: {json.dumps(counts)}")


if __name__ == "__main__":
    main()
