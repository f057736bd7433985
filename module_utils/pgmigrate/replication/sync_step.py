"""3. wait: the initial sync, then the lag under its bound; the run's state and progress line."""

import time

from ..common.units import human_bytes
from .errors import LogicalError
from .run_state import now

SLOT_LAG_QUERY = """
SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, active
FROM pg_replication_slots WHERE slot_name = %s
"""

# Errors of the subscription's workers after which waiting on is pointless.
MAX_SUBSCRIPTION_ERRORS = 3


def subscription_errors(cur, name):
    """(apply errors, table sync errors) of a subscription; (0, 0) before PostgreSQL 15, which does not count
    them (pg_stat_subscription_stats): the worker errors are then in the server's log only."""
    cur.execute("SELECT to_regclass('pg_catalog.pg_stat_subscription_stats') IS NOT NULL")
    if not cur.fetchone()[0]:
        return 0, 0
    cur.execute("SELECT apply_error_count, sync_error_count FROM pg_stat_subscription_stats WHERE subname = %s",
                (name,))
    return cur.fetchone() or (0, 0)


class SyncStep:
    """The subscription's progress, recorded in the run's state and told in one line. The cutover reads
    the status through it too, and has it rebuild the state of a run resumed elsewhere."""

    def __init__(self, context, replicated_tables, replication_objects, deferred_checks):
        self.context = context
        self.replicated_tables = replicated_tables
        self.replication_objects = replication_objects
        self.deferred_checks = deferred_checks  # deferred_checks.DeferredChecks: added once every table is synced

    def status(self, src, dst):
        name = self.context.name
        with dst.cursor() as cur:
            cur.execute("SELECT sr.srsubstate, format('%%I.%%I', n.nspname, c.relname) FROM pg_subscription_rel sr "
                        "JOIN pg_class c ON c.oid = sr.srrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "JOIN pg_subscription s ON s.oid = sr.srsubid WHERE s.subname = %s ORDER BY 2", (name,))
            relations = cur.fetchall()
            errors = subscription_errors(cur, name)
        with src.cursor() as cur:
            cur.execute(SLOT_LAG_QUERY, (name,))
            slot = cur.fetchone()
        if slot is None:
            raise LogicalError(f"the replication slot {name} is gone from the source: the run cannot go on; "
                               "clean up with -e zero_downtime_abort=true and start again")
        return {"ready": [q for s, q in relations if s == "r"], "copying": [q for s, q in relations if s in "dfs"],
                "waiting": [q for s, q in relations if s == "i"], "total": len(relations),
                "lag_bytes": max(0, slot[0] or 0), "slot_active": slot[1],
                "apply_errors": errors[0], "sync_errors": errors[1]}

    def wait(self, wait_seconds=5.0, poll_seconds=0.5):
        """Wait up to wait_seconds for the initial sync to end and the lag to fall under the bound."""
        self.ensure_state()
        deadline = time.monotonic() + wait_seconds
        src = self.context.connect("source")
        dst = self.context.connect("target")
        try:
            while True:
                status = self.status(src, dst)
                self.record_status(status)
                if status["apply_errors"] + status["sync_errors"] >= MAX_SUBSCRIPTION_ERRORS:
                    raise LogicalError(
                        f"the subscription's workers failed {status['apply_errors']} (apply) and "
                        f"{status['sync_errors']} (table sync) times: see the target server's log")
                synced = status["total"] > 0 and len(status["ready"]) == status["total"]
                finished = synced and status["lag_bytes"] <= self.context.max_lag_bytes
                if finished or time.monotonic() >= deadline:
                    break
                time.sleep(poll_seconds)
        finally:
            src.close()
            dst.close()
        if synced:
            self.deferred_checks.add()
        state = self.context.state
        return {"finished": finished, "synced": synced, "progress_line": self.progress_line(status), **status,
                "initial_sync_seconds": state.data.get("initial_sync_seconds"),
                "max_lag_bytes": state.data.get("max_lag_bytes", 0)}

    def ensure_state(self):
        """A run resumed from another controller (or after its state file was lost): rebuilt from the catalog."""
        context = self.context
        if context.state.data.get("subscription_oid"):
            return
        src = context.connect("source")
        dst = context.connect("target")
        try:
            subscription = self.replication_objects.subscription(dst)
            if not subscription:
                raise LogicalError(f"no subscription {context.name} on the target: this run has not started")
            published = self.replicated_tables.published_tables(self.replicated_tables.read_tables(src))
            with src.cursor() as cur:
                cur.execute("SELECT format('%%I.%%I', schemaname, tablename) FROM pg_publication_tables "
                            "WHERE pubname = %s", (context.name,))
                names = {row[0] for row in cur.fetchall()}
        finally:
            src.close()
            dst.close()
        context.state.update(run=context.run_name, name=context.name, switched=False,
                             subscription_oid=subscription["oid"], sync_started_at=time.time(), max_lag_bytes=0,
                             resumed_at=now(),
                             tables={t["qualname"]: t["total_bytes"] for t in published if t["qualname"] in names})

    def record_status(self, status):
        state = self.context.state
        changes = {"max_lag_bytes": max(state.data.get("max_lag_bytes", 0), status["lag_bytes"])}
        if (status["total"] and len(status["ready"]) == status["total"]
                and state.data.get("initial_sync_seconds") is None):
            changes["initial_sync_seconds"] = round(time.time() - state.data["sync_started_at"], 2)
        if changes != {k: state.data.get(k) for k in changes}:
            state.update(**changes)

    def progress_line(self, status):
        state = self.context.state
        sizes = state.data.get("tables", {})
        total_bytes = sum(sizes.values()) or 1
        ready_bytes = sum(sizes.get(q, 0) for q in status["ready"])
        elapsed = time.time() - state.data.get("sync_started_at", time.time())
        if status["total"] and len(status["ready"]) == status["total"]:
            head = f"[replicating] initial sync done in {state.data.get('initial_sync_seconds')} s"
        else:
            head = (f"[initial sync] {100.0 * ready_bytes / total_bytes:5.1f}% tables {len(status['ready'])}/"
                    f"{status['total']} ready ({human_bytes(ready_bytes)} of {human_bytes(total_bytes)})")
        bound = human_bytes(self.context.max_lag_bytes)
        line = f"{head}; lag {human_bytes(status['lag_bytes'])} (bound {bound}); {elapsed:.0f} s"
        if status["copying"]:
            line += "; copying " + ", ".join(status["copying"][:4])
        if status["apply_errors"] or status["sync_errors"]:
            line += f"; worker errors: apply {status['apply_errors']}, sync {status['sync_errors']}"
        return line
