"""The run's state, kept in the target database itself, in the schema _pgmigrate.

Each unit of work (a table part, a post-data statement, the sequences, a large object) is recorded as done in the
same transaction that does it, so after a crash at any moment the state says exactly what is in
the target: a part is either complete and recorded, or absent. The schema is dropped when the
run completes, so nothing of the tool is left behind.
"""

import json

from psycopg2 import sql
from psycopg2.extensions import encodings

from ..common.catalog import STATE_SCHEMA

STATE_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {STATE_SCHEMA};
COMMENT ON SCHEMA {STATE_SCHEMA} IS 'pgmigrate: state of an unfinished migration run; dropped when it completes';
CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.run (
    run_id text PRIMARY KEY,
    source_identity jsonb NOT NULL,
    schema_mode text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    attempts int NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.done (
    run_id text NOT NULL,
    step text NOT NULL,
    rows bigint,
    bytes bigint,
    seconds double precision,
    worker int,
    finished_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.dropped_constraint (
    run_id text NOT NULL,
    table_name text NOT NULL,
    constraint_name text NOT NULL,
    definition text NOT NULL,
    PRIMARY KEY (run_id, table_name, constraint_name)
);
"""


def state_exists(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{STATE_SCHEMA}.run",))
        return cur.fetchone()[0]


def unfinished_run(conn):
    """The unfinished run recorded in the target, or None."""
    if not state_exists(conn):
        return None
    with conn.cursor() as cur:
        cur.execute(f"SELECT run_id, source_identity, schema_mode, started_at::text, attempts "
                    f"FROM {STATE_SCHEMA}.run ORDER BY started_at DESC LIMIT 1")
        row = cur.fetchone()
    if not row:
        return None
    return {"run_id": row[0], "source_identity": row[1], "schema_mode": row[2], "started_at": row[3],
            "attempts": row[4]}


def create_run(conn, run_id, source_identity, schema_mode):
    with conn.cursor() as cur:
        cur.execute(STATE_DDL)
        cur.execute(f"INSERT INTO {STATE_SCHEMA}.run (run_id, source_identity, schema_mode) VALUES (%s, %s, %s)",
                    (run_id, json.dumps(source_identity), schema_mode))
    conn.commit()


def count_attempt(conn, run_id):
    with conn.cursor() as cur:
        cur.execute(f"UPDATE {STATE_SCHEMA}.run SET attempts = attempts + 1 WHERE run_id = %s", (run_id,))
    conn.commit()


def done_steps(conn, run_id):
    with conn.cursor() as cur:
        cur.execute(f"SELECT step, rows, bytes, seconds, worker FROM {STATE_SCHEMA}.done WHERE run_id = %s",
                    (run_id,))
        return {r[0]: {"rows": r[1], "bytes": r[2], "seconds": r[3], "worker": r[4]} for r in cur.fetchall()}


def mark_done(cur, run_id, step, rows=None, bytes_=None, seconds=None, worker=None):
    """Record a step as done: call inside the transaction that did the work."""
    cur.execute(
        f"INSERT INTO {STATE_SCHEMA}.done (run_id, step, rows, bytes, seconds, worker) VALUES (%s, %s, %s, %s, %s, %s)",
        (run_id, step, rows, bytes_, seconds, worker),
    )


def mark_many_done(cur, run_id, steps, seconds=None, worker=None):
    """Record several steps as done in one statement: steps is a list of (step, rows, bytes)."""
    if steps:
        cur.execute(done_statement(cur, run_id, steps, seconds, worker))


def done_statement(cur, run_id, steps, seconds=None, worker=None):
    """The INSERT that records steps, [(step, rows, bytes)], as done: for a caller that sends it in one round
    trip with other statements of the same transaction."""
    names, rows, sizes = (list(column) for column in zip(*steps, strict=True))
    return cur.mogrify(
        f"INSERT INTO {STATE_SCHEMA}.done (run_id, step, rows, bytes, seconds, worker) "
        "SELECT %s, s.step, s.rows, s.bytes, %s, %s FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) "
        "AS s(step, rows, bytes)",
        (run_id, seconds, worker, names, rows, sizes)).decode(encodings[cur.connection.encoding])


def drop_state_in(cur):
    """Drop the run's state inside the caller's transaction."""
    cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(STATE_SCHEMA)))


def drop_state(conn):
    with conn.cursor() as cur:
        drop_state_in(cur)
    conn.commit()
