"""One table part copied in one target transaction, recorded done in it."""

import time

import psycopg2
from psycopg2 import sql

from ..common import triggers
from ..common.connection import rollback_quietly
from . import schema, source_sessions, state
from .transfers import InProcessTransfer, StreamingTransfer

# A whole table below this size is loaded without COPY FREEZE when it is empty: FREEZE needs a TRUNCATE
# in the same transaction, and a TRUNCATE (new files for the table, its TOAST table and its index, the old
# ones removed at commit) costs more than a small table's freezing saves: about 1.7 ms a table, 5 s of a
# 3,000-table copy.
FREEZE_MIN_BYTES = 1 << 20


def _terminated(statement):
    """statement ending with its semicolon: statements joined into one round trip stay apart."""
    statement = statement.rstrip()
    return statement if statement.endswith(";") else statement + ";"


def is_small(table_plan):
    """A table copied whole through a worker's source session, with its post-data in the same transaction."""
    return len(table_plan["parts"]) == 1 and table_plan["bytes"] <= source_sessions.IN_PROCESS_MAX_BYTES


def _quote_columns(columns):
    return sql.SQL(", ").join(sql.Identifier(c) for c in columns)


class TableCopy:
    def __init__(self, run):
        self.run = run  # run_context.CopyRun

    def copy_out_sql(self, table, part, fmt):
        """COPY TO STDOUT of a whole table (part None or without pages) or of a page range."""
        quoting_conn = self.run.snapshot_conn
        column_sql = ", ".join(psycopg2.extensions.quote_ident(c, quoting_conn) for c in table["copy_columns"])
        qual = table["qualname"]
        if part is None or part["start_page"] is None:
            return f"COPY (SELECT {column_sql} FROM ONLY {qual}) TO STDOUT (FORMAT {fmt})"
        where = f"ctid >= '({part['start_page']},0)'::tid"
        if part["end_page"] is not None:
            where += f" AND ctid < '({part['end_page']},0)'::tid"
        return f"COPY (SELECT {column_sql} FROM ONLY {qual} WHERE {where}) TO STDOUT (FORMAT {fmt})"

    def source_command(self, table, part, fmt):
        commands = ["BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"]
        if self.run.snapshot_id:
            commands.append(f"SET TRANSACTION SNAPSHOT '{self.run.snapshot_id}'")
        commands += [*source_sessions.READ_SETTINGS, *source_sessions.TIMEOUTS_OFF,
                     self.copy_out_sql(table, part, fmt), "COMMIT"]
        args = [schema.find_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        for command in commands:
            args += ["-c", command]
        return args

    def copy_part(self, worker, target_conn, table_plan, part, then=None):
        """One part (a whole table, or a page range of a split one) in one target transaction, recorded done
        in it. A small whole table goes through the worker's own source session (source_sessions), a larger
        one streams from a psql process. then(cur, worker), when given, does more in the same transaction
        (a small table's indexes, keys and ANALYZE) and returns the steps it recorded done."""
        table = self.run.table(table_plan["table"])
        fmt = "binary" if (table["binary_copy"] and self.run.binary_ok) else "text"
        whole = part["start_page"] is None
        in_process = whole and is_small(table_plan)
        t0 = time.monotonic()
        transfer = InProcessTransfer(self.run, worker, table_plan["table"], self.copy_out_sql(table, None, fmt)) \
            if in_process else StreamingTransfer(self.run, worker, table_plan["table"], table["qualname"],
                                                 self.source_command(table, part, fmt), fmt)
        try:
            with target_conn.cursor() as cur:
                # A small table's copy is a few round trips: the transaction's settings go with the first
                # statement, and everything after the COPY with one more (see _after_copy).
                settings = self._transaction_settings(target_conn, fmt)
                disabled_triggers, unvalidated = [], []
                freeze = False
                if whole and self.run.options["schema_mode"] == "copy":
                    freeze = self._truncate_to_freeze(cur, table, table_plan, settings)
                else:
                    cur.execute(settings)
                if self.run.options["schema_mode"] == "existing":
                    disabled_triggers = self._disable_triggers_locally(cur, table)
                    unvalidated = self._drop_unvalidated_constraints_locally(cur, table)
                    forced_rls = self._unforce_row_security_locally(cur, table)
                options = f"FORMAT {fmt}" + (", FREEZE" if freeze else "")
                column_list = (sql.SQL(" ({})").format(_quote_columns(table["copy_columns"]))
                               if table["copy_columns"] else sql.SQL(""))
                copy_sql = sql.SQL("COPY {}{} FROM STDIN ({})").format(
                    sql.SQL(table["qualname"]), column_list, sql.SQL(options))
                streamed = transfer.run(cur, copy_sql.as_string(target_conn))
                rows = cur.rowcount
                triggers.restore_triggers_locally(cur, disabled_triggers)
                if self.run.options["schema_mode"] == "existing" and forced_rls:
                    cur.execute(sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(sql.SQL(table["qualname"])))
                for name, definition in unvalidated:
                    cur.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                        sql.SQL(table["qualname"]), sql.Identifier(name), sql.SQL(definition)))
                seconds = round(time.monotonic() - t0, 3)
                bundled = self._after_copy(cur, worker, part, rows, streamed, seconds, then)
            target_conn.commit()
            return {"rows": rows, "bytes": streamed, "seconds": seconds, "worker": worker, "format": fmt,
                    "bundled": bundled}
        except BaseException:
            rollback_quietly(target_conn)
            transfer.failed()
            if self.run.progress:
                self.run.progress.part_failed(table_plan["table"], transfer.streamed)
            raise
        finally:
            transfer.close()

    def _transaction_settings(self, conn, fmt):
        """SET LOCAL of the copy's transaction: its lock_timeout, no wait for the WAL flush, and for text
        COPY the settings its text depends on (its encoding, UTF8, is every session's: connection.connect)."""
        return sql.SQL("SET LOCAL lock_timeout = {}; SET LOCAL synchronous_commit = off").format(
            sql.Literal(self.run.options["lock_timeout"])).as_string(conn) + (
            "; SET LOCAL datestyle = ISO, YMD; SET LOCAL intervalstyle = postgres" if fmt == "text" else "")

    def _after_copy(self, cur, worker, part, rows, streamed, seconds, then):
        """The part recorded done and, for a small table, then(cur, worker)'s statements (its indexes, keys
        and ANALYZE, with their own records): one round trip. Returns the steps then recorded."""
        statements = [state.done_statement(cur, self.run.run_id, [(f"data:{part['id']}", rows, streamed)], seconds,
                                           worker)]
        bundled = []
        if then:
            more, bundled = then(cur, worker)
            statements += more
        cur.execute("\n".join(_terminated(statement) for statement in statements))
        return bundled

    @staticmethod
    def _truncate_to_freeze(cur, table, table_plan, settings):
        """Copy mode, a whole table: the transaction's settings, then TRUNCATE it in the copy's transaction,
        so that COPY FREEZE writes its rows frozen. A small empty table (pre-data just created it) is loaded
        as it is (FREEZE_MIN_BYTES); one that holds rows is truncated all the same. Returns whether the
        copy may FREEZE."""
        qualname = table["qualname"]
        if table_plan["bytes"] < FREEZE_MIN_BYTES:
            cur.execute(f"{settings}; SELECT EXISTS (SELECT FROM ONLY {qualname})")
            if not cur.fetchone()[0]:
                return False
            cur.execute(f"TRUNCATE ONLY {qualname}")
            return True
        cur.execute(f"{settings}; TRUNCATE ONLY {qualname}")
        return True

    def _disable_triggers_locally(self, cur, table):
        """Existing schema: copied rows must not fire the target's triggers. session_replication_role
        where the role may; otherwise the table's enabled user triggers are disabled inside this
        transaction only (no other session ever sees them disabled)."""
        if self.run.replication_role:
            cur.execute("SET LOCAL session_replication_role = replica")
            return []
        return triggers.disable_user_triggers_locally(cur, table["qualname"])

    def _unforce_row_security_locally(self, cur, table):
        """FORCE ROW LEVEL SECURITY subjects even the owner to the policies, and copied rows must not be
        filtered or refused: lift it inside this transaction only, and put it back before commit."""
        cur.execute("SELECT relforcerowsecurity FROM pg_class WHERE oid = %s::regclass", (table["qualname"],))
        forced = cur.fetchone()[0]
        if forced:
            cur.execute(sql.SQL("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY").format(sql.SQL(table["qualname"])))
        return forced

    def _drop_unvalidated_constraints_locally(self, cur, table):
        """NOT VALID constraints hold for new rows only, and the source's old rows may break them: drop
        them for this transaction's COPY and add them back NOT VALID before it commits."""
        cur.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
                    "AND NOT convalidated AND contype IN ('c', 'f') ORDER BY conname", (table["qualname"],))
        constraints = cur.fetchall()
        for name, _definition in constraints:
            cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.SQL(table["qualname"]), sql.Identifier(name)))
        return constraints
