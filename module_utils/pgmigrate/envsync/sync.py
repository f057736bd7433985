"""One sync in one target transaction: tables locked, triggers off, each table by its policy, then the
updates, checks and sequences, and every copy verified before it commits."""

import time

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from ..common import preflight, triggers
from ..common.connection import connect
from .after_sync import _sync_sequences, apply_updates, run_checks
from .errors import SyncError
from .table_steps import _cols, _delete_missing, _qual, _stage_name, _stream_table, _table_digest, _upsert, t_changes

SESSION_SETTINGS = (
    "SET TimeZone = 'UTC'", "SET datestyle = 'ISO, YMD'", "SET intervalstyle = 'postgres'",
    "SET extra_float_digits = 3", "SET bytea_output = 'hex'", "SET client_encoding = 'UTF8'",
    "SET row_security = off",
)


def _friendly(error, table, plan):
    """A database error during a table's step -> what it means for the policies."""
    text = (getattr(error, "pgerror", None) or str(error)).strip()
    diag = getattr(error, "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    if isinstance(error, psycopg2.errors.ForeignKeyViolation):
        fk = next((f for f in plan["foreign_keys"] if f["name"] == constraint), None)
        policies = {t["table"]: t["policy"] for t in plan["tables"]}
        if fk:
            return (f"{table['table']} ({table['policy']}): foreign key {constraint} from {fk['child']} "
                    f"({policies.get(fk['child'])}) to {fk['parent']} ({policies.get(fk['parent'])}) would break: "
                    f"{text}. Rows of one environment refer to rows the other does not have: give both tables the "
                    "same policy, or skip the referring table")
    if isinstance(error, psycopg2.errors.UniqueViolation):
        return (f"{table['table']} ({table['policy']}): unique constraint {constraint} would be violated: {text}. "
                "A row of the source and a different row of the target share a unique value: resolve it on "
                "one side, or change the policy")
    if isinstance(error, psycopg2.errors.LockNotAvailable):
        return (f"{table['table']}: could not lock it within the lock timeout (the application is using it): put "
                "the application in maintenance mode first, or raise the lock timeout")
    return f"{table['table']} ({table['policy']}): {text}"


class Sync:
    def __init__(self, source, target, plan, updates=(), checks=(), verify=True, lock_timeout="30s",
                 log=None):
        self.source, self.target, self.plan = source, target, plan
        self.updates, self.checks, self.verify = updates, checks, verify
        self.lock_timeout = lock_timeout
        self.log = log or (lambda _text: None)

    def run(self):
        started = time.monotonic()
        source_conn = connect(self.source, application_name="pgmigrate sync (read)")
        target_conn = connect(self.target, application_name="pgmigrate sync")
        try:
            source_conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with source_conn.cursor() as source_cur, target_conn.cursor() as target_cur:
                for statement in SESSION_SETTINGS:
                    source_cur.execute(statement)
                    target_cur.execute(statement)
                identities = preflight.server_identity(source_conn), preflight.server_identity(target_conn)
                if preflight.same_database(*identities):
                    raise SyncError("the source and the target are the same database; check the inventory")
                target_cur.execute("SET LOCAL lock_timeout = %s", (self.lock_timeout,))
                target_cur.execute("SET CONSTRAINTS ALL DEFERRED")
                report = self._run(source_cur, target_cur)
                if report["failures"]:
                    target_conn.rollback()
                    raise SyncError("The sync did not prove its result, so it was rolled back; the target is "
                                    "unchanged:\n- " + "\n- ".join(report["failures"]))
            target_conn.commit()
            report["status"] = "committed"
            report["seconds"] = round(time.monotonic() - started, 3)
            return report
        finally:
            for conn in (source_conn, target_conn):
                try:
                    conn.rollback()
                finally:
                    conn.close()

    def _run(self, source_cur, target_cur):
        tables, report_tables, failures = self.plan["tables"], [], []
        changing = [t for t in tables if t["mode"] != "keep" or t["verify_unchanged"]]
        # Dropping a foreign key locks both its tables ACCESS EXCLUSIVE: taken first, never upgraded.
        cycle_keys = self.plan.get("cycle_foreign_keys", [])
        dropping = {fk[end] for fk in cycle_keys for end in ("child", "parent")}
        for table in sorted(changing, key=lambda t: t["table"]):
            mode = "ACCESS EXCLUSIVE" if table["table"] in dropping else "EXCLUSIVE" if t_changes(table) else "SHARE"
            target_cur.execute(sql.SQL("LOCK TABLE {} IN {} MODE").format(_qual(table["table"]), sql.SQL(mode)))
        disabled_triggers = [trigger for t in tables if t_changes(t)
                             for trigger in triggers.disable_user_triggers_locally(target_cur, t["table"])]
        for fk in cycle_keys:
            target_cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                _qual(fk["child"]), sql.Identifier(fk["name"])))
        before = {}
        for table in tables:
            if table["verify_unchanged"]:
                before[table["table"]] = _table_digest(target_cur, table, table["columns"])
            elif table["policy"] == "merge":
                target_cur.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {}").format(
                    _stage_name(table, "before"), _cols(table["key"]), _qual(table["table"])))
        reload = [t for t in tables if t["mode"] == "reload"]
        if reload:
            target_cur.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(
                sql.SQL(("" if t["partitioned"] else "ONLY ") + t["table"]) for t in reload)))
            self.log(f"truncated {len(reload)} tables to reload")
        upserted = []
        for table in tables:
            entry = {"table": table["table"], "policy": table["policy"], "mode": table["mode"],
                     "masked": sorted(table["masks"])}
            t0 = time.monotonic()
            try:
                target_cur.execute("SAVEPOINT table_step")
                if table["mode"] == "reload":
                    entry["rows"], entry["bytes"] = _stream_table(source_cur.connection, target_cur, table,
                                                                  _qual(table["table"]))
                elif table["mode"] == "upsert":
                    stage = _stage_name(table, "source")
                    target_cur.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA")
                                       .format(stage, _cols(table["columns"]), _qual(table["table"])))
                    entry["rows"], entry["bytes"] = _stream_table(source_cur.connection, target_cur, table, stage)
                    entry["inserted"], entry["updated"] = _upsert(target_cur, table, stage)
                    upserted.append(table)
                target_cur.execute("RELEASE SAVEPOINT table_step")
            except psycopg2.Error as error:
                raise SyncError(_friendly(error, table, self.plan) + "; the target is unchanged") from None
            entry["seconds"] = round(time.monotonic() - t0, 3)
            if table["mode"] != "keep":
                self.log(f"{table['table']}: {entry.get('rows', 0)} rows ({table['mode']})")
            report_tables.append(entry)
        entries = {e["table"]: e for e in report_tables}
        # Rows the source lacks leave copied, upserted tables children first, once every upsert is in.
        for table in reversed(upserted):
            if table["policy"] == "copy":
                try:
                    entries[table["table"]]["deleted"] = _delete_missing(target_cur, table,
                                                                         _stage_name(table, "source"))
                except psycopg2.Error as error:
                    raise SyncError(_friendly(error, table, self.plan) + "; the target is unchanged") from None
        self._add_back(target_cur, cycle_keys)
        try:
            target_cur.execute("SET CONSTRAINTS ALL IMMEDIATE")
        except psycopg2.Error as error:
            raise SyncError(f"deferred constraints do not hold after the sync: {str(error).strip()}; the target is "
                            "unchanged") from None
        if self.verify:
            failures += self._verify_copies(source_cur, target_cur, entries)
        for table in tables:
            if table["verify_unchanged"]:
                after = _table_digest(target_cur, table, table["columns"])
                if after != before[table["table"]]:
                    reaching = [f"{fk['name']} from {fk['parent']}" for fk in self.plan["foreign_keys"]
                                if fk["child"] == table["table"]]
                    failures.append(f"{table['table']} ({table['policy']}) would change ({before[table['table']][0]} "
                                    f"rows before, {after[0]} after)" + (
                                        f", through {', '.join(reaching)} (ON DELETE actions)" if reaching else "")
                                    + ": give it the policy of the table it refers to, or keep that table")
                entries[table["table"]]["verified_unchanged"] = after == before[table["table"]]
            elif table["policy"] == "merge":
                match = sql.SQL(" AND ").join(sql.SQL("b.{0} = t.{0}").format(sql.Identifier(c)) for c in table["key"])
                target_cur.execute(sql.SQL("SELECT count(*) FROM {} b WHERE NOT EXISTS (SELECT 1 FROM {} t WHERE {})")
                                   .format(_stage_name(table, "before"), _qual(table["table"]), match))
                lost = target_cur.fetchone()[0]
                if lost:
                    failures.append(f"{table['table']} (merge) would lose {lost} of its own rows (a cascade from a "
                                    "copied table): give it the policy of the table it refers to")
        triggers.restore_triggers_locally(target_cur, disabled_triggers)
        sequences = _sync_sequences(source_cur, target_cur, self.plan)
        try:
            updates = apply_updates(target_cur, self.plan, self.updates)
            checks, check_failures = run_checks(target_cur, self.plan, self.checks)
        except psycopg2.Error as error:
            raise SyncError(f"post-sync updates or checks failed: {str(error).strip()}; the target is unchanged") \
                from None
        failures += check_failures
        return {"tables": report_tables, "sequences": sequences, "updates": updates, "checks": checks,
                "failures": failures}

    def _add_back(self, cur, cycle_keys):
        """The cycle's foreign keys dropped for the load, added back: ADD CONSTRAINT validates every row."""
        by_name = {t["table"]: t for t in self.plan["tables"]}
        for fk in cycle_keys:
            try:
                cur.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    _qual(fk["child"]), sql.Identifier(fk["name"]), sql.SQL(fk["definition"])))
            except psycopg2.Error as error:
                raise SyncError(_friendly(error, by_name[fk["child"]], self.plan) + "; the target is unchanged") \
                    from None
            self.log(f"foreign key {fk['name']} of the cycle added back and validated")

    def _verify_copies(self, source_cur, target_cur, entries):
        failures = []
        for table in self.plan["tables"]:
            if table["policy"] != "copy":
                continue
            columns = [c for c in table["columns"] if c not in table["masks"] or table["masks"][c].rule == "keep"]
            source_digest = _table_digest(source_cur, table, columns)
            target_digest = _table_digest(target_cur, table, columns)
            entries[table["table"]]["verified_equal"] = source_digest == target_digest
            if source_digest != target_digest:
                failures.append(f"{table['table']} (copy) differs from the source after the sync: "
                                f"{source_digest[0]} rows there, {target_digest[0]} here")
        return failures
