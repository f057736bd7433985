"""4. cutover: the write freeze, the catch-up, the sequences and the switch, or the freeze given up
with the source as it was."""

import json
import time

import psycopg2
from psycopg2 import errors as pg_errors
from psycopg2 import sql

from ..common.sequences import set_sequence_states
from ..common.units import human_bytes
from .errors import FreezeAbandoned, LogicalError
from .run_state import now
from .switch_file import write_switch_file

SEQUENCES_QUERY = """
SELECT format('%%I.%%I', schemaname, sequencename), schemaname, last_value
FROM pg_sequences WHERE schemaname NOT IN %(excluded)s ORDER BY 1
"""


class CutoverStep:
    """The switch from the source to the target, under a write freeze kept as short as it can be."""

    def __init__(self, context, replicated_tables, sync, source_read_only, hooks=None):
        self.context = context
        self.replicated_tables = replicated_tables
        self.sync = sync
        self.source_read_only = source_read_only
        # before_freeze(src, dst, prepared); at_switch(src, dst, prepared), inside the freeze just before the
        # switch; undo(src, dst, prepared) when the freeze gives up: the forward run's (logical.ForwardHooks)
        # or the switch back's (switch_back.py).
        self.hooks = hooks

    def run(self, switch="file", lag_wait_seconds=60.0):
        """The write freeze, the catch-up, the sequences, the switch. Raises FreezeAbandoned when it gave up
        before the switch (the source is then as it was and replication goes on)."""
        if self.context.state.data.get("switched"):
            return {"already_switched": True, **self.context.state.data.get("freeze", {})}
        self.sync.ensure_state()
        if switch == "file" and not self.context.switch_file:
            raise LogicalError("zero_downtime_switch_file is empty and the run has no application hosts to switch "
                               "(switch=external): set one of them")
        src = self.context.connect("source")
        dst = self.context.connect("target")
        lock_conn = self.context.connect("source", autocommit=False)
        try:
            prepared = self._before_freeze(src, dst, lag_wait_seconds)
            attempts = []
            for attempt in range(1, self.context.freeze_attempts + 1):
                try:
                    result = self._freeze_and_switch(src, dst, lock_conn, prepared, switch)
                    result["failed_attempts"] = attempts
                    break
                except FreezeAbandoned as error:
                    attempts.append({"attempt": attempt, "reason": str(error)})
                    if attempt == self.context.freeze_attempts or not error.retry:
                        raise FreezeAbandoned(
                            f"the write freeze was given up after {attempt} attempt(s): {error}. The source was "
                            "released and is as it was") from None
                    time.sleep(min(5.0, 1.0 * attempt))
        finally:
            for conn in (lock_conn, src, dst):
                conn.close()
        self.context.state.update(freeze=result, switched=True)
        return result

    def _before_freeze(self, src, dst, lag_wait_seconds):
        """Everything slow or fallible that can run while writes go on."""
        status = self.sync.status(src, dst)
        if not status["total"] or len(status["ready"]) != status["total"]:
            raise FreezeAbandoned("the initial sync is not finished: wait for it before the cutover")
        tables = self.replicated_tables.read_tables(src)
        with src.cursor() as cur:
            cur.execute("SELECT format('%%I.%%I', schemaname, tablename) FROM pg_publication_tables "
                        "WHERE pubname = %s", (self.context.name,))
            published = {row[0] for row in cur.fetchall()}
        added = [t["qualname"] for t in self.replicated_tables.published_tables(tables)
                 if t["qualname"] not in published]
        if added:
            raise FreezeAbandoned("tables were created on the source after the publication and would not be "
                                  "replicated: " + ", ".join(added) + ". Abort and start again")
        # The apply worker then reports a position as soon as it committed it: the catch-up is seen at once.
        with dst.cursor() as cur:
            cur.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (synchronous_commit = 'on')").format(
                sql.Identifier(self.context.name)))
        deadline = time.monotonic() + lag_wait_seconds
        while status["lag_bytes"] > self.context.max_lag_bytes:
            if time.monotonic() > deadline:
                raise FreezeAbandoned(f"the lag stayed above {human_bytes(self.context.max_lag_bytes)} "
                                      f"({human_bytes(status['lag_bytes'])})")
            time.sleep(0.2)
            status = self.sync.status(src, dst)
            self.sync.record_status(status)
        self._refresh_materialized_views(src, dst)
        with src.cursor() as cur:
            cur.execute(SEQUENCES_QUERY, {"excluded": self.context.excluded()})
            sequences = [q for q, schema, _ in cur.fetchall()
                         if not self.context.include_schemas or schema in self.context.include_schemas]
            cur.execute("SELECT setconfig FROM pg_db_role_setting WHERE setrole = 0 AND setdatabase = "
                        "(SELECT oid FROM pg_database WHERE datname = current_database())")
            row = cur.fetchone()
            previous_read_only = next((s.split("=", 1)[1] for s in (row[0] if row else []) or []
                                       if s.startswith("default_transaction_read_only=")), None)
            cur.execute("SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = %s",
                        (self.context.name,))
            record = json.loads(cur.fetchone()[0] or "{}")
        with dst.cursor() as cur:
            cur.execute("SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences")
            on_target = {row[0] for row in cur.fetchall()}
        missing = [s for s in sequences if s not in on_target]
        if missing:
            raise FreezeAbandoned("sequences missing on the target: " + ", ".join(missing))
        lock = sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(sql.SQL(", ").join(
            sql.Identifier(t["schema"], t["name"]) for t in self.replicated_tables.published_tables(tables)))
        prepared = {"lock": lock, "sequences": set(sequences), "previous_read_only": previous_read_only,
                    "record": record, "lag_before_bytes": status["lag_bytes"]}
        if self.hooks:
            self.hooks.before_freeze(src, dst, prepared)
        return prepared

    def _refresh_materialized_views(self, src, dst):
        """Logical replication carries no materialized view: fill on the target those the source has filled."""
        with src.cursor() as cur:
            cur.execute("SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE c.relkind = 'm' AND c.relispopulated "
                        "AND n.nspname NOT IN %(excluded)s", {"excluded": self.context.excluded()})
            populated = [row[0] for row in cur.fetchall()]
        refreshed = []
        with dst.cursor() as cur:
            for qualname in populated:
                cur.execute(f"REFRESH MATERIALIZED VIEW {qualname}")
                refreshed.append(qualname)
        if refreshed:
            self.context.state.update(materialized_views_refreshed=refreshed)

    def _freeze_and_switch(self, src, dst, lock_conn, prepared, switch):
        timings = {}
        with lock_conn.cursor() as cur:
            requested, requested_at = self._lock_published_tables(lock_conn, cur, prepared["lock"])
            locked = time.monotonic()
            timings["lock_seconds"] = locked - requested
            cur.execute("SELECT pg_current_wal_lsn(), pg_backend_pid()")
            freeze_lsn, lock_pid = cur.fetchone()
            # Every write committed before the lock is at or before freeze_lsn; none can follow it.
            if not self._wait_for_catch_up(src, freeze_lsn):
                lock_conn.rollback()
                raise FreezeAbandoned(f"the target did not catch up with {freeze_lsn} within "
                                      f"{self.context.freeze_catchup_seconds} s")
            caught_up = time.monotonic()
            timings["catch_up_seconds"] = caught_up - locked
            cur.execute("SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences "
                        "WHERE last_value IS NOT NULL")
            values = [(q, v) for q, v in cur.fetchall() if q in prepared["sequences"]]
        try:
            with dst.cursor() as cur:
                set_sequence_states(cur, [(qualname, value, True) for qualname, value in values])
            sequences_done = time.monotonic()
            timings["sequences_seconds"] = sequences_done - caught_up
            self.source_read_only.make_read_only(src, prepared)
            terminated = self.source_read_only.end_older_sessions(src, lock_pid, prepared)
            read_only_done = time.monotonic()
            timings["read_only_seconds"] = read_only_done - sequences_done
            if self.hooks:
                self.hooks.at_switch(src, dst, prepared)
                timings["hook_seconds"] = time.monotonic() - read_only_done
                read_only_done = time.monotonic()
            if self.context.switch_file:
                write_switch_file(self.context.switch_file, self.context.target, self.context.run_name)
            # The point of no return: from here on nothing may make the old source writable again.
            self.context.state.update(switched=True, switched_at=now())
        except Exception as error:
            # Before the switch: undo the read-only setting, release the lock, the source is as it was.
            if self.hooks:
                self.hooks.undo(src, dst, prepared)
            self.source_read_only.undo(src, prepared, lock_pid)
            lock_conn.rollback()
            raise FreezeAbandoned(self.context.secrets.mask(f"the cutover failed before the switch: {error}")) from None
        try:
            lock_conn.commit()
        except psycopg2.Error:
            pass  # the session is gone, and its locks with it: released either way
        released = time.monotonic()
        timings["switch_seconds"] = released - read_only_done
        return {"freeze_window_seconds": round(released - requested, 3), "freeze_lsn": freeze_lsn,
                "freeze_started_at": requested_at, "released_at": now(),
                "released_epoch": time.time(), "sequences_synced": len(values),
                "sessions_terminated": terminated, "switch": switch,
                **{k: round(v, 3) for k, v in timings.items()}}

    def _lock_published_tables(self, lock_conn, cur, lock, nowait_seconds=1.0):
        """Lock every published table IN EXCLUSIVE MODE; returns when the successful attempt began.

        First NOWAIT, again and again for a moment: a LOCK that waits while it holds the tables locked before
        can deadlock with a writer, and the deadlock is only found after deadlock_timeout (1 s). A NOWAIT that
        fails holds the writers back for microseconds. A source never quiet that long gets one waiting attempt,
        bounded by the freeze's lock timeout."""
        nowait_until = time.monotonic() + nowait_seconds
        while time.monotonic() < nowait_until:
            requested, requested_at = time.monotonic(), now()
            try:
                cur.execute(lock + sql.SQL(" NOWAIT"))
                return requested, requested_at
            except pg_errors.LockNotAvailable:
                lock_conn.rollback()
                time.sleep(0.002)
        requested, requested_at = time.monotonic(), now()
        try:
            cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(self.context.freeze_lock_timeout)))
            cur.execute(lock)
            return requested, requested_at
        except (pg_errors.LockNotAvailable, pg_errors.DeadlockDetected) as error:
            lock_conn.rollback()
            raise FreezeAbandoned(f"the tables could not be locked within {self.context.freeze_lock_timeout} "
                                  f"({str(error).strip().splitlines()[0]}): a long transaction holds them",
                                  retry=True) from None

    def _wait_for_catch_up(self, src, freeze_lsn):
        deadline = time.monotonic() + self.context.freeze_catchup_seconds
        with src.cursor() as cur:
            while True:
                cur.execute("SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots "
                            "WHERE slot_name = %s", (freeze_lsn, self.context.name))
                row = cur.fetchone()
                if row and row[0]:
                    return True
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.005)
