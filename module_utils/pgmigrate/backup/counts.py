"""Exact row counts inside the backup's snapshot, in short transactions that import it."""


from psycopg2 import sql

from ..common.connection import describe
from .base import BackupError, _connect

# Tables whose rows a dump holds: ordinary tables and partitions in user schemas, extension members
# excepted (CREATE EXTENSION makes those). FROM ONLY keeps inheritance children out of a parent's count.
# row_security_active: the login reads the table only through its row-level security policies (neither
# superuser nor BYPASSRLS, and not its owner or the table is under FORCE ROW LEVEL SECURITY).
USER_TABLES_SQL = """
    SELECT n.nspname, c.relname, format('%I.%I', n.nspname, c.relname), row_security_active(c.oid),
           pg_has_role(c.relowner, 'USAGE')
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind = 'r'
       AND n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
       AND NOT EXISTS (SELECT 1 FROM pg_depend d
                        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
     ORDER BY 1, 2
"""
# Tables counted per transaction. A count locks its table and the table's indexes until its
# transaction ends: counting every table in one transaction, beside pg_dump -j (whose leader and
# workers lock every table too), exhausts the server's lock table (max_locks_per_transaction) on a
# database of thousands of tables. One statement per batch also saves a round trip per table.
COUNT_BATCH = 200
# How long the count of a table under FORCE ROW LEVEL SECURITY waits for its lock (see _count_through_policies).
POLICY_LOCK_TIMEOUT = "60s"


def _begin_in_snapshot(cur, snapshot, readonly=True):
    """Open a REPEATABLE READ transaction that sees the exported snapshot (the connection is in autocommit)."""
    cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ" + (" READ ONLY" if readonly else ""))
    cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot,))


def _counter(params, label):
    """A session that counts rows: every count in a short transaction importing the backup's snapshot."""
    conn = _connect(params, label, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0; SET row_security = off")
    return conn


def list_tables(conn, snapshot):
    """The user tables in the snapshot: [{schema, table, qualname, policies, owned}] (see USER_TABLES_SQL)."""
    with conn.cursor() as cur:
        _begin_in_snapshot(cur, snapshot)
        cur.execute(USER_TABLES_SQL)
        rows = cur.fetchall()
        cur.execute("COMMIT")
    return [{"schema": schema, "table": name, "qualname": qualname, "policies": policies, "owned": owned}
            for schema, name, qualname, policies, owned in rows]


def _count_statement(tables):
    return "SELECT " + ", ".join(f"(SELECT count(*) FROM ONLY {table['qualname']})" for table in tables)


def count_tables(conn, snapshot, tables):
    """Exact row counts of tables in the snapshot, COUNT_BATCH tables per transaction: [{schema, table, rows}]."""
    counts = []
    if not tables:
        return counts
    with conn.cursor() as cur:
        for start in range(0, len(tables), COUNT_BATCH):
            batch = tables[start:start + COUNT_BATCH]
            _begin_in_snapshot(cur, snapshot)
            cur.execute(_count_statement(batch))
            rows = cur.fetchone()
            cur.execute("COMMIT")
            counts += [{"schema": table["schema"], "table": table["table"], "rows": count}
                       for table, count in zip(batch, rows, strict=True)]
    return counts


def _not_readable(tables, params):
    """Tables under row-level security that the login does not own: it reads them only through their policies."""
    if not tables:
        return None
    names = ", ".join(table["qualname"] for table in tables)
    return (f"{params.get('user')} reads {names} on {describe(params)} only through its row-level security "
            f"policies (it is neither the owner, a superuser nor a role with BYPASSRLS), so a backup could miss "
            "rows: back up as the tables' owner, a superuser or a role with BYPASSRLS")


def count_through_policies(conn, snapshot, tables, params):
    """Tables the login owns but reads through their policies (FORCE ROW LEVEL SECURITY), counted twice in
    one transaction in the snapshot, rolled back: the rows the policies show (what pg_dump
    --enable-row-security dumps) and every row, FORCE being lifted inside that transaction only (no
    other session ever sees it lifted). Returns [{schema, table, rows, visible}]. It takes each table's
    ACCESS EXCLUSIVE lock for a moment: run it before any dump, whose locks it would wait for."""
    problem = _not_readable([table for table in tables if not table["owned"]], params)
    if problem:
        raise BackupError(problem)
    counts = []
    if not tables:
        return counts
    with conn.cursor() as cur:
        for start in range(0, len(tables), COUNT_BATCH):
            batch = tables[start:start + COUNT_BATCH]
            _begin_in_snapshot(cur, snapshot, readonly=False)
            try:
                cur.execute("SET LOCAL lock_timeout = %s", (POLICY_LOCK_TIMEOUT,))
                cur.execute("SET LOCAL row_security = on")
                cur.execute(_count_statement(batch))
                visible = cur.fetchone()
                for table in batch:
                    cur.execute(sql.SQL("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY").format(
                        sql.SQL(table["qualname"])))
                cur.execute("SET LOCAL row_security = off")
                cur.execute(_count_statement(batch))
                every = cur.fetchone()
            finally:
                cur.execute("ROLLBACK")
            counts += [{"schema": table["schema"], "table": table["table"], "rows": count, "visible": shown}
                       for table, count, shown in zip(batch, every, visible, strict=True)]
    return counts


def _hidden_rows_problem(counts, params):
    hidden = [f"{table['schema']}.{table['table']} ({table['rows'] - table['visible']} of its {table['rows']} rows)"
              for table in counts if table["visible"] != table["rows"]]
    if not hidden:
        return None
    return (f"the row-level security policies of {', '.join(hidden)} hide rows from {params.get('user')}, the "
            f"tables' owner, under FORCE ROW LEVEL SECURITY on {describe(params)}: pg_dump reads a table "
            "through its policies, so the backup would miss them. Back up as a superuser or a role with "
            "BYPASSRLS, or give the owner a policy that shows it every row. Nothing was written")
