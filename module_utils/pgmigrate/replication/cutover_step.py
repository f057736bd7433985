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
from .run_state import now, write_json_atomically

SEQUENCES_QUERY = """
SELECT format('%%I.%%I', schemaname, sequencename), schemaname, last_value
FROM pg_sequences WHERE schemaname NOT IN %(excluded)s ORDER BY 1
"""


class CutoverStep:
    """A step of logical.ZeroDowntimeRun: the run's context (connections, names, state) is the run's."""

    def cutover(self, switch="file", lag_wait_seconds=60.0):
        """The write freeze, the catch-up, the sequences, the switch. Raises FreezeAbandoned when it gave up
        before the switch (the source is then as it was and replication goes on)."""
        if self.state.data.get("switched"):
            return {"already_switched": True, **self.state.data.get("freeze", {})}
        self._ensure_state()
        if switch == "file" and not self.switch_file:
            raise LogicalError("zero_downtime_switch_file is empty and the run has no application hosts to switch "
                               "(switch=external): set one of them")
        src = self._connect("source")
        dst = self._connect("target")
        lock_conn = self._connect("source", autocommit=False)
        try:
            prepared = self._before_freeze(src, dst, lag_wait_seconds)
            attempts = []
            for attempt in range(1, self.freeze_attempts + 1):
                try:
                    result = self._freeze_and_switch(src, dst, lock_conn, prepared, switch)
                    result["failed_attempts"] = attempts
                    break
                except FreezeAbandoned as error:
                    attempts.append({"attempt": attempt, "reason": str(error)})
                    if attempt == self.freeze_attempts or not error.retry:
                        raise FreezeAbandoned(
                            f"the write freeze was given up after {attempt} attempt(s): {error}. The source was "
                            "released and is as it was") from None
                    time.sleep(min(5.0, 1.0 * attempt))
        finally:
            for conn in (lock_conn, src, dst):
                conn.close()
        self.state.update(freeze=result, switched=True)
        return result

    def _before_freeze(self, src, dst, lag_wait_seconds):
        """Everything slow or fallible that can run while writes go on."""
        status = self.status(src, dst)
        if not status["total"] or len(status["ready"]) != status["total"]:
            raise FreezeAbandoned("the initial sync is not finished: wait for it before the cutover")
        tables = self.read_tables(src)
        with src.cursor() as cur:
            cur.execute("SELECT format('%%I.%%I', schemaname, tablename) FROM pg_publication_tables "
                        "WHERE pubname = %s", (self.name,))
            published = {row[0] for row in cur.fetchall()}
        added = [t["qualname"] for t in self.published_tables(tables) if t["qualname"] not in published]
        if added:
            raise FreezeAbandoned("tables were created on the source after the publication and would not be "
                                  "replicated: " + ", ".join(added) + ". Abort and start again")
        # The apply worker then reports a position as soon as it committed it: the catch-up is seen at once.
        with dst.cursor() as cur:
            cur.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (synchronous_commit = 'on')").format(
                sql.Identifier(self.name)))
        deadline = time.monotonic() + lag_wait_seconds
        while status["lag_bytes"] > self.max_lag_bytes:
            if time.monotonic() > deadline:
                raise FreezeAbandoned(f"the lag stayed above {human_bytes(self.max_lag_bytes)} "
                                      f"({human_bytes(status['lag_bytes'])})")
            time.sleep(0.2)
            status = self.status(src, dst)
            self._record_status(status)
        self._refresh_materialized_views(src, dst)
        with src.cursor() as cur:
            cur.execute(SEQUENCES_QUERY, {"excluded": self._excluded()})
            sequences = [q for q, schema, _ in cur.fetchall()
                         if not self.include_schemas or schema in self.include_schemas]
            cur.execute("SELECT setconfig FROM pg_db_role_setting WHERE setrole = 0 AND setdatabase = "
                        "(SELECT oid FROM pg_database WHERE datname = current_database())")
            row = cur.fetchone()
            previous_read_only = next((s.split("=", 1)[1] for s in (row[0] if row else []) or []
                                       if s.startswith("default_transaction_read_only=")), None)
            cur.execute("SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = %s",
                        (self.name,))
            record = json.loads(cur.fetchone()[0] or "{}")
        with dst.cursor() as cur:
            cur.execute("SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences")
            on_target = {row[0] for row in cur.fetchall()}
        missing = [s for s in sequences if s not in on_target]
        if missing:
            raise FreezeAbandoned("sequences missing on the target: " + ", ".join(missing))
        lock = sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(sql.SQL(", ").join(
            sql.Identifier(t["schema"], t["name"]) for t in self.published_tables(tables)))
        return {"lock": lock, "sequences": set(sequences), "previous_read_only": previous_read_only,
                "record": record, "lag_before_bytes": status["lag_bytes"]}

    def _refresh_materialized_views(self, src, dst):
        """Logical replication carries no materialized view: fill on the target those the source has filled."""
        with src.cursor() as cur:
            cur.execute("SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE c.relkind = 'm' AND c.relispopulated "
                        "AND n.nspname NOT IN %(excluded)s", {"excluded": self._excluded()})
            populated = [row[0] for row in cur.fetchall()]
        refreshed = []
        with dst.cursor() as cur:
            for qualname in populated:
                cur.execute(f"REFRESH MATERIALIZED VIEW {qualname}")
                refreshed.append(qualname)
        if refreshed:
            self.state.update(materialized_views_refreshed=refreshed)

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
                                      f"{self.freeze_catchup_seconds} s")
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
            self._make_source_read_only(src, prepared)
            terminated = self._end_older_sessions(src, lock_pid, prepared)
            read_only_done = time.monotonic()
            timings["read_only_seconds"] = read_only_done - sequences_done
            if self.switch_file:
                self.write_switch_file()
            # The point of no return: from here on nothing may make the old source writable again.
            self.state.update(switched=True, switched_at=now())
        except Exception as error:
            # Before the switch: undo the read-only setting, release the lock, the source is as it was.
            self._undo_read_only(src, prepared, lock_pid)
            lock_conn.rollback()
            raise FreezeAbandoned(self.secrets.mask(f"the cutover failed before the switch: {error}")) from None
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
            cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(self.freeze_lock_timeout)))
            cur.execute(lock)
            return requested, requested_at
        except (pg_errors.LockNotAvailable, pg_errors.DeadlockDetected) as error:
            lock_conn.rollback()
            raise FreezeAbandoned(f"the tables could not be locked within {self.freeze_lock_timeout} "
                                  f"({str(error).strip().splitlines()[0]}): a long transaction holds them",
                                  retry=True) from None

    def _wait_for_catch_up(self, src, freeze_lsn):
        deadline = time.monotonic() + self.freeze_catchup_seconds
        with src.cursor() as cur:
            while True:
                cur.execute("SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots "
                            "WHERE slot_name = %s", (freeze_lsn, self.name))
                row = cur.fetchone()
                if row and row[0]:
                    return True
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.005)

    def _make_source_read_only(self, src, prepared):
        """New sessions on the old source are read-only from now on: no write can land there any more."""
        record = {**prepared["record"], "read_only_set": True, "previous_read_only": prepared["previous_read_only"]}
        with src.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(
                sql.Identifier(self.source["dbname"])))
            self._comment_publication(cur, record)
            cur.execute("COMMIT")
        prepared["record"] = record

    def _end_older_sessions(self, src, lock_pid, prepared):
        """Terminate every session that started before the database turned read-only: the writes waiting on
        the freeze fail (not acknowledged; the client retries on the new database) instead of committing to
        the old source when the lock is released. Later sessions are read-only."""
        terminated = set()
        with src.cursor() as cur:
            cur.execute("SELECT clock_timestamp()")
            read_only_at = prepared["read_only_at"] = cur.fetchone()[0]
            for _ in range(50):
                cur.execute("SELECT pid, pg_terminate_backend(pid, 1000) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND backend_type = 'client backend' "
                            "AND pid NOT IN (pg_backend_pid(), %s) AND backend_start <= %s",
                            (lock_pid, read_only_at))
                rows = cur.fetchall()
                if not rows:
                    break
                terminated.update(pid for pid, _ in rows)
            else:
                raise LogicalError("sessions on the source could not be terminated")
        return len(terminated)

    def _undo_read_only(self, src, prepared, lock_pid):
        """The source writable again; sessions opened while it was read-only reconnect to get it."""
        with src.cursor() as cur:
            cur.execute("ROLLBACK")  # a statement of the failed step may have left the session's transaction
            record = prepared["record"]
            if not record.get("read_only_set"):
                return
            cur.execute("BEGIN")
            self._restore_read_only_setting(cur, record.get("previous_read_only"))
            self._comment_publication(cur, {**record, "read_only_set": False})
            cur.execute("COMMIT")
            prepared["record"] = {**record, "read_only_set": False}
            if prepared.get("read_only_at"):
                cur.execute("SELECT pg_terminate_backend(pid, 1000) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND backend_type = 'client backend' "
                            "AND pid NOT IN (pg_backend_pid(), %s) AND backend_start >= %s",
                            (lock_pid, prepared["read_only_at"]))

    def _restore_read_only_setting(self, cur, previous):
        database = sql.Identifier(self.source["dbname"])
        if previous is None:
            cur.execute(sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(database))
        else:
            cur.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = {}").format(
                database, sql.Literal(previous)))

    def switch_description(self):
        """Where the application goes: the target's connection without its password."""
        return {k: v for k, v in self.target.items() if k in ("host", "port", "dbname", "user", "sslmode")}

    def write_switch_file(self):
        write_json_atomically(self.switch_file, {**self.switch_description(), "run": self.run_name,
                                                 "switched_at": now()}, mode=0o644)
