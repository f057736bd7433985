"""The target held read-only for the application while the blue-green waves move hosts to it before the
write freeze (playbooks/zero_downtime.yml, zero_downtime_waves).

Hosts moved in a wave read from the target, which follows the source by logical replication; their writes
must not land there before the freeze, or the two databases would both take writes. So the target database
is made read-only for new sessions (default_transaction_read_only, which the subscription's apply worker does
not obey) before the first wave, recorded in the run's publication comment; inside the freeze, once the
reverse replication's slot exists and just before the switch, it becomes writable again and its sessions of
the held time end (they reconnect writable). The hosts still on the source write there until the freeze.
"""

from psycopg2 import sql

from .errors import LogicalError
from .source_read_only import restore_read_only


class TargetHold:
    """default_transaction_read_only on the target database during the waves, and its release."""

    def __init__(self, context, replication_objects):
        self.context = context
        self.replication_objects = replication_objects

    def hold(self):
        """The target read-only for the application's new sessions (idempotent). Returns the setting before."""
        src = self.context.connect("source")
        dst = self.context.connect("target")
        try:
            publication = self.replication_objects.publication(src)
            if publication is None:
                raise LogicalError("no replication of this run to hold the target for: run the playbook without "
                                   "zero_downtime_waves, or let it set the replication up first")
            record = publication["record"]
            if record.get("target_read_only_set"):
                return record.get("target_previous_read_only")
            previous = self._setting(dst)
            with src.cursor() as cur:
                self.replication_objects.comment_publication(cur, {
                    **record, "target_read_only_set": True, "target_previous_read_only": previous})
            with dst.cursor() as cur:
                cur.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(
                    sql.Identifier(self.context.target["dbname"])))
            return previous
        finally:
            src.close()
            dst.close()

    def release(self, dst, record):
        """The target writable as before the hold; the sessions opened during it end and reconnect writable."""
        if not record.get("target_read_only_set"):
            return False
        with dst.cursor() as cur:
            self._restore(cur, record.get("target_previous_read_only"))
            cur.execute("SELECT pg_terminate_backend(pid, 1000) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()")
        return True

    def hold_again(self, dst, record):
        """The freeze gave up after the release: the target read-only again before the source is writable."""
        if record.get("target_read_only_set"):
            with dst.cursor() as cur:
                cur.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(
                    sql.Identifier(self.context.target["dbname"])))
                cur.execute("SELECT pg_terminate_backend(pid, 1000) FROM pg_stat_activity WHERE datname = "
                            "current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()")

    def release_after_abort(self, record):
        """The run stopped before the switch and every wave host is back on the source: the target as it was."""
        if not record.get("target_read_only_set"):
            return []
        dst = self.context.connect("target")
        try:
            with dst.cursor() as cur:
                self._restore(cur, record.get("target_previous_read_only"))
        finally:
            dst.close()
        return ["the target database is writable again (default_transaction_read_only restored)"]

    def _setting(self, dst):
        with dst.cursor() as cur:
            cur.execute("SELECT setconfig FROM pg_db_role_setting WHERE setrole = 0 AND setdatabase = "
                        "(SELECT oid FROM pg_database WHERE datname = current_database())")
            row = cur.fetchone()
        return next((s.split("=", 1)[1] for s in (row[0] if row else []) or []
                     if s.startswith("default_transaction_read_only=")), None)

    def _restore(self, cur, previous):
        restore_read_only(cur, self.context.target["dbname"], previous)
