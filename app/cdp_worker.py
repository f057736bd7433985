#!/usr/bin/env python3
"""The CDP stand-in background worker: a heartbeat through DATABASE_URL every CDP_WORKER_INTERVAL seconds.

Each beat opens a new session, reads which database and server it reached and whether the session is
read-only, and appends one line to CDP_WORKER_LOG:

  2025-06-17T10:00:00Z heartbeat ok database=cdp server_port=5432 read_only=off
  2025-06-17T10:00:10Z heartbeat error could not connect to server: Connection refused

It writes nothing to the database, so it never disturbs a migration's validation; a stopped worker is
visible as a log that stops growing. SIGTERM ends it after the current beat.

  python3 cdp_worker.py [--env-file PATH] [--once]
"""

import argparse
import os
import signal
import sys
import threading
import time

import psycopg2
from cdp_env import connect, load_config, redact

HEARTBEAT_SQL = "SELECT current_database(), inet_server_port(), current_setting('transaction_read_only')"


def beat(settings):
    try:
        conn = connect(settings, "cdp-worker")
    except psycopg2.OperationalError as error:
        return f"heartbeat error {one_line(error)}"
    try:
        with conn.cursor() as cur:
            cur.execute(HEARTBEAT_SQL)
            database, port, read_only = cur.fetchone()
        return f"heartbeat ok database={database} server_port={port} read_only={read_only}"
    except psycopg2.Error as error:
        return f"heartbeat error {one_line(error)}"
    finally:
        conn.close()


def one_line(error):
    return " ".join(str(error).split()) or type(error).__name__


def write_line(path, text):
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {text}\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
    sys.stdout.write(line)
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", help="KEY=VALUE file with DATABASE_URL and CDP_* settings")
    parser.add_argument("--once", action="store_true", help="one heartbeat, then exit")
    args = parser.parse_args()
    settings = load_config(args.env_file)
    log_path = settings["CDP_WORKER_LOG"]
    interval = float(settings["CDP_WORKER_INTERVAL"])
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    write_line(log_path, f"worker started, database {redact(settings['DATABASE_URL'])}, every {interval:g} s")
    while not stopping.is_set():
        write_line(log_path, beat(settings))
        if args.once:
            break
        stopping.wait(interval)
    write_line(log_path, "worker stopped")


if __name__ == "__main__":
    main()
