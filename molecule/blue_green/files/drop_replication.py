#!/usr/bin/env python3
"""Drop the logical replication a run of playbooks/zero_downtime.yml may leave in the scenario's database on
the embedded servers (cleanup.yml): a failed step's subscription, or the reverse replication set up after the
cutover (the old source subscribed to the new database). Subscriptions and slots keep a database from being
dropped, and a slot holds WAL on the shared server; publications go with the database.

    drop_replication.py DBNAME HOST:PORT:PASSWORD_FILE...

Prints one line per object dropped; a server without the database is skipped. Exits 0 when nothing is left.
"""

import sys
import time

import psycopg2
from psycopg2 import sql


def connect(server, dbname):
    host, port, password_file = server.split(":", 2)
    with open(password_file, encoding="utf-8") as handle:
        password = handle.read().strip()
    conn = psycopg2.connect(host=host, port=int(port), dbname=dbname, user="postgres", password=password,
                            connect_timeout=10, application_name="molecule blue_green cleanup")
    conn.autocommit = True
    return conn


def rows(conn, query, args=None):
    with conn.cursor() as cur:
        cur.execute(query, args)
        return cur.fetchall()


def drop_subscriptions(server, dbname):
    admin = connect(server, "postgres")
    try:
        if not rows(admin, "SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)):
            return
        # The old source of a cutover is read-only for new sessions: DDL there needs it undone.
        with admin.cursor() as cur:
            cur.execute(sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(sql.Identifier(dbname)))
            # A module of a run still going could create objects after the sweep.
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                        "AND application_name LIKE 'pgmigrate%%'", (dbname,))
    finally:
        admin.close()
    conn = connect(server, dbname)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid "
                        "WHERE d.datname = %s", (dbname,))
            for (name,) in cur.fetchall():
                # Detached from its slot first: dropping it then needs no connection to the publisher.
                for statement in ("ALTER SUBSCRIPTION {} DISABLE", "ALTER SUBSCRIPTION {} SET (slot_name = NONE)",
                                  "DROP SUBSCRIPTION {}"):
                    cur.execute(sql.SQL(statement).format(sql.Identifier(name)))
                print(f"{server.rsplit(':', 1)[0]}/{dbname}: subscription {name} dropped")
    finally:
        conn.close()


def drop_slots(server, dbname):
    admin = connect(server, "postgres")
    try:
        deadline = time.time() + 30
        while True:
            slots = rows(admin, "SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = %s", (dbname,))
            if not slots:
                return True
            if time.time() > deadline:
                print(f"{server.rsplit(':', 1)[0]}: slots still there: {slots}", file=sys.stderr)
                return False
            for slot, pid in slots:
                if pid:
                    rows(admin, "SELECT pg_terminate_backend(%s)", (pid,))
                else:
                    rows(admin, "SELECT pg_drop_replication_slot(%s)", (slot,))
                    print(f"{server.rsplit(':', 1)[0]}: slot {slot} dropped")
            time.sleep(0.2)
    finally:
        admin.close()


def main(dbname, *servers):
    for server in servers:
        drop_subscriptions(server, dbname)
    return 0 if all([drop_slots(server, dbname) for server in servers]) else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
