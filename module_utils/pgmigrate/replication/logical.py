"""Zero-downtime migration between two live databases with PostgreSQL logical replication.

The run, in the order playbooks/zero_downtime.yml calls it:

1. preflight(): everything that could make the run fail or harm the source is checked before anything
   changes (wal_level, rights, free slots and WAL senders, replica identities, an empty target, the
   target server reaching the source, leftovers of an earlier run).
2. setup(): the source's schema is dumped and restored on the target (pre-data and post-data), replica
   identity FULL set where asked, a publication FOR TABLE every table created on the source and a
   subscription (copy_data) on the target. The source password goes only into CREATE SUBSCRIPTION.
3. wait(): the initial sync (every table 'r' in pg_subscription_rel) and then the lag (source WAL
   position minus the slot's confirmed_flush_lsn) under a bound; a call waits at most wait_seconds and
   returns a progress line, so the playbook loops on it.
4. cutover(): the write freeze, as short as it can be. Every slow check runs before it. In one source
   transaction every published table is locked IN EXCLUSIVE MODE (reads go on, writes wait) under a
   short lock_timeout; the WAL position is noted; the subscription applies up to it; every sequence is
   copied to the target; the source database turns read-only for new sessions
   (default_transaction_read_only) and every older session is terminated, so the writes that waited
   fail instead of landing on the old source; the switch file names the target; the lock is released.
   When the lock cannot be had or the target does not catch up in time, the freeze is given up and the
   source is left exactly as it was.
5. finish(): subscription, slot and publication dropped, replica identity changes reverted, report.
   abort(): the same cleanup before the switch, plus the source made writable again if the freeze had
   made it read-only: the source is left as it was.

What the run changed on the source is recorded in the publication's comment (dropped with it), so the
cleanup works even from another controller; the controller's state file holds timings and the switch.

ZeroDowntimeRun builds the run's context once (context.ZeroDowntimeContext: connection parameters,
options, names, secrets, state, sessions) and hands each action to its step, a class in a module of its
own that is given the context and, explicitly, what else it uses: preflight_step, setup_step, sync_step
(the cutover reads the same status through it), cutover_step, cleanup_step. What several steps share:
tables (what the run replicates), replication_objects (its publication, slots and subscription, and the
record in the publication's comment), source_read_only (the old source read-only at the switch, writable
again when the run stops before it), switch_file; names, run_state, errors.
"""

import subprocess

import psycopg2

from .cleanup_step import CleanupStep
from .context import ZeroDowntimeContext
from .cutover_step import CutoverStep
from .deferred_checks import DeferredChecks
from .errors import FreezeAbandoned, LogicalError
from .preflight_step import PreflightStep
from .replication_objects import ReplicationObjects
from .reverse_replication import ReverseReplication
from .setup_step import SetupStep
from .source_read_only import SourceReadOnly
from .switch_back import SwitchBack
from .sync_step import SyncStep
from .tables import ReplicatedTables
from .target_hold import TargetHold

__all__ = ["FreezeAbandoned", "LogicalError", "ZeroDowntimeRun", "run_action"]


class ZeroDowntimeRun:
    """The run's entry point: the context and the steps built once, each action handed to its step."""

    def __init__(self, source, target, run_name, artifacts_dir, include_schemas=(), exclude_schemas=(),
                 replica_identity_full=(), source_from_target=None, max_lag_bytes=16 * 1024 * 1024,
                 target_overwrite=False, no_owner=True, no_privileges=True, switch_file=None,
                 freeze_lock_timeout="2s", freeze_attempts=3, freeze_catchup_seconds=10.0,
                 reverse_window_hours=0.0, target_from_source=None, check_mode=False):
        self.context = ZeroDowntimeContext(
            source, target, run_name, artifacts_dir, include_schemas=include_schemas,
            exclude_schemas=exclude_schemas, replica_identity_full=replica_identity_full,
            source_from_target=source_from_target, max_lag_bytes=max_lag_bytes, target_overwrite=target_overwrite,
            no_owner=no_owner, no_privileges=no_privileges, switch_file=switch_file,
            freeze_lock_timeout=freeze_lock_timeout, freeze_attempts=freeze_attempts,
            freeze_catchup_seconds=freeze_catchup_seconds, reverse_window_hours=reverse_window_hours,
            target_from_source=target_from_source, check_mode=check_mode)
        replicated_tables = ReplicatedTables(self.context)
        replication_objects = ReplicationObjects(self.context)
        source_read_only = SourceReadOnly(self.context, replication_objects)
        deferred_checks = DeferredChecks(self.context)
        self.reverse = ReverseReplication(self.context, replicated_tables)
        self.target_hold = TargetHold(self.context, replication_objects)
        self._preflight = PreflightStep(self.context, replicated_tables, replication_objects, self.reverse)
        self._setup = SetupStep(self.context, replicated_tables, replication_objects, deferred_checks)
        self._sync = SyncStep(self.context, replicated_tables, replication_objects, deferred_checks)
        self._cutover = CutoverStep(self.context, replicated_tables, self._sync, source_read_only,
                                    hooks=ForwardHooks(self.reverse, self.target_hold))
        self._cleanup = CleanupStep(self.context, replication_objects, source_read_only, self.reverse,
                                    self.target_hold)

    def preflight(self):
        return self._preflight.run()

    def setup(self):
        return self._setup.run()

    def wait(self, wait_seconds=5.0, poll_seconds=0.5):
        return self._sync.wait(wait_seconds, poll_seconds)

    def cutover(self, switch="file", lag_wait_seconds=60.0):
        return self._cutover.run(switch=switch, lag_wait_seconds=lag_wait_seconds)

    def finish(self):
        return self._cleanup.finish()

    def abort(self):
        return self._cleanup.abort()

    def hold_target(self):
        return {"previous_read_only": self.target_hold.hold()}

    def abort_check(self):
        """Refuses as abort does once the switch was made; changes nothing."""
        return self._cleanup.abort_check()

    def reverse_status(self):
        return self.reverse.status()

    def finalize(self):
        """The end of the reverse window: the reverse replication dropped; the old source stays retired."""
        dropped = self.reverse.drop()
        if not dropped:
            return [f"no reverse replication {self.reverse.name}: nothing to drop"]
        return dropped + ["the migration is final: the old source stays read-only for new sessions (retired)"]

    def switch_back(self, switch="file", lag_wait_seconds=60.0):
        return SwitchBack(self.context, self.reverse).run(switch=switch, lag_wait_seconds=lag_wait_seconds)

    def switch_back_finish(self):
        return SwitchBack(self.context, self.reverse).finish()


class ForwardHooks:
    """The forward cutover's hooks: the reverse replication prepared and its slot made; the target held
    read-only for the waves released last, once that slot exists (no application write before it)."""

    def __init__(self, reverse, target_hold):
        self.reverse = reverse
        self.target_hold = target_hold

    def before_freeze(self, src, dst, prepared):
        self.reverse.before_freeze(src, dst, prepared)

    def at_switch(self, src, dst, prepared):
        self.reverse.at_switch(src, dst, prepared)
        prepared["target_released"] = self.target_hold.release(dst, prepared["record"])

    def undo(self, _src, dst, prepared):
        if prepared.get("target_released"):
            self.target_hold.hold_again(dst, prepared["record"])


def run_action(action, source, target, options, wait_seconds=5.0, switch="file", lag_wait_seconds=60.0):
    """The module's entry point: one action, a JSON-serialisable result."""
    run = ZeroDowntimeRun(source, target, **options)
    try:
        if action == "preflight":
            return run.preflight()
        if action == "setup":
            return run.setup()
        if action == "wait":
            return run.wait(wait_seconds)
        if action == "cutover":
            return run.cutover(switch=switch, lag_wait_seconds=lag_wait_seconds)
        if action == "finish":
            return run.finish()
        if action == "abort":
            return {"cleanup": run.abort()}
        if action == "hold_target":
            return run.hold_target()
        if action == "abort_check":
            return run.abort_check()
        if action == "reverse_status":
            return run.reverse_status()
        if action == "finalize":
            return {"cleanup": run.finalize()}
        if action == "switch_back":
            return run.switch_back(switch=switch, lag_wait_seconds=lag_wait_seconds)
        if action == "switch_back_finish":
            return run.switch_back_finish()
        raise LogicalError(f"unknown action {action}")
    except subprocess.SubprocessError as error:
        raise LogicalError(run.context.secrets.mask(str(error))) from None
    except LogicalError as error:
        raise type(error)(run.context.secrets.mask(str(error))) from None
    except psycopg2.Error as error:
        raise LogicalError(run.context.secrets.mask(f"{action} failed: {str(error).strip()}")) from None
