"""The rollback within the reverse window (playbooks/rollback.yml): the application goes back to the old source
with every write made on the new database.

It is the cutover the other way, by the same CutoverStep on a reversed context (source: the new database,
target: the old source, objects pgmigrate_zr_<run>): a write freeze on the new database's tables, the old
source applies up to it, the sequences are copied back, the new database turns read-only for new sessions and
its older sessions end, the old source turns writable again (its setting from before the run), the switch
file names it, the freeze is released. finish() then drops the reverse replication and writes the report.
"""

import os

from ..common.connection import describe
from .context import ZeroDowntimeContext
from .cutover_step import CutoverStep
from .errors import LogicalError
from .names import REVERSE_PREFIX
from .replication_objects import ReplicationObjects
from .run_state import now, write_json_atomically
from .source_read_only import SourceReadOnly
from .sync_step import SyncStep
from .tables import ReplicatedTables


class SwitchBack:
    """The write freeze on the new database, the switch back to the old source, and the cleanup after it."""

    def __init__(self, forward, reverse):
        self.forward = forward  # the forward run's context: source = the old database, target = the new one
        self.reverse = reverse  # reverse_replication.ReverseReplication
        self.context = ZeroDowntimeContext(
            forward.target, forward.source, forward.run_name, forward.artifacts_dir,
            include_schemas=forward.include_schemas, exclude_schemas=forward.exclude_schemas,
            replica_identity_full=[], source_from_target=forward.target_from_source,
            max_lag_bytes=forward.max_lag_bytes, target_overwrite=False, no_owner=forward.no_owner,
            no_privileges=forward.no_privileges, switch_file=forward.switch_file,
            freeze_lock_timeout=forward.freeze_lock_timeout, freeze_attempts=forward.freeze_attempts,
            freeze_catchup_seconds=forward.freeze_catchup_seconds, check_mode=forward.check_mode,
            object_prefix=REVERSE_PREFIX)
        tables = ReplicatedTables(self.context)
        objects = ReplicationObjects(self.context)
        sync = SyncStep(self.context, tables, objects, deferred_checks=None)
        self._cutover = CutoverStep(self.context, tables, sync, SourceReadOnly(self.context, objects), hooks=self)

    def run(self, switch="file", lag_wait_seconds=60.0):
        if self.context.state.data.get("switched"):
            return {"already_switched": True, **self.context.state.data.get("freeze", {})}
        status = self.reverse.status()
        if not status["active"] or not status["subscribed"]:
            raise LogicalError(f"no reverse replication {self.reverse.name} to switch back with: "
                               + self.reverse.describe(status))
        if status["apply_errors"]:
            raise LogicalError(f"the old source's reverse subscription failed {status['apply_errors']} times: it "
                               "may lack writes of the new database; see the old source's server log")
        self.context.state.update(run=self.context.run_name, name=self.context.name, started_at=now())
        return self._cutover.run(switch=switch, lag_wait_seconds=lag_wait_seconds)

    # The cutover's hooks.
    def before_freeze(self, src, dst, prepared):
        """Nothing to prepare: the reverse replication was set up at the forward cutover."""

    def undo(self, _src, _dst, _prepared):
        """Nothing of the hooks' to undo: the old source is made writable only by the last step before the switch."""

    def at_switch(self, _src, dst, prepared):
        """Inside the freeze, the old source caught up: writable again as before the run, and its sessions
        opened while it was read-only end (they reconnect writable)."""
        with dst.cursor() as cur:
            SourceReadOnly(self.forward, None).restore_setting(cur, prepared["record"].get("old_source_read_only"))
            cur.execute("SELECT pg_terminate_backend(pid, 1000) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()")

    def finish(self):
        """After the switch back: the reverse replication dropped, the report written."""
        state = self.context.state
        if not state.data.get("switched"):
            raise LogicalError("the switch back has not happened: run playbooks/rollback.yml")
        cleanup = self.reverse.drop()
        freeze = state.data.get("freeze", {})
        report = {"run": self.context.run_name, "status": "switched back", "to": describe(self.forward.source),
                  "from": describe(self.forward.target), "freeze": freeze,
                  "freeze_window_seconds": freeze.get("freeze_window_seconds"),
                  "sequences_synced": freeze.get("sequences_synced"), "cleanup": cleanup, "finished_at": now(),
                  "new_database_left": "read-only for new sessions (default_transaction_read_only = on)"}
        report_file = os.path.join(state.directory, "report.json")
        write_json_atomically(report_file, report, mode=0o600)
        state.update(finished=True, report_file=report_file)
        return {**report, "report_file": report_file}
