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

ZeroDowntimeRun holds the run's context; each step is a module of its own: preflight_step, setup_step,
sync_step, cutover_step, cleanup_step (tables: what the run replicates; names, run_state, errors).
"""

import subprocess

import psycopg2

from ..common.catalog import excluded_schemas
from ..common.connection import check_params, connect_or_raise
from .cleanup_step import CleanupStep
from .cutover_step import CutoverStep
from .errors import FreezeAbandoned, LogicalError
from .names import Secrets, object_name
from .preflight_step import PreflightStep
from .run_state import RunState
from .setup_step import SetupStep
from .sync_step import SyncStep
from .tables import ReplicatedTables

__all__ = ["FreezeAbandoned", "LogicalError", "ZeroDowntimeRun", "run_action"]


class ZeroDowntimeRun(ReplicatedTables, PreflightStep, SetupStep, SyncStep, CutoverStep, CleanupStep):
    def __init__(self, source, target, run_name, artifacts_dir, include_schemas=(), exclude_schemas=(),
                 replica_identity_full=(), source_from_target=None, max_lag_bytes=16 * 1024 * 1024,
                 target_overwrite=False, no_owner=True, no_privileges=True, switch_file=None,
                 freeze_lock_timeout="2s", freeze_attempts=3, freeze_catchup_seconds=10.0,
                 check_mode=False):
        check_params(source, "migration_source")
        check_params(target, "migration_target")
        self.source = source
        self.target = target
        self.name = object_name(run_name)
        self.run_name = run_name
        self.include_schemas = list(include_schemas or [])
        self.exclude_schemas = list(exclude_schemas or [])
        self.replica_identity_full = list(replica_identity_full or [])
        self.source_from_target = {**source, **{k: v for k, v in (source_from_target or {}).items()
                                                if v not in (None, "")}}
        self.max_lag_bytes = int(max_lag_bytes)
        self.target_overwrite = target_overwrite
        self.no_owner = no_owner
        self.no_privileges = no_privileges
        self.switch_file = switch_file
        self.freeze_lock_timeout = freeze_lock_timeout
        self.freeze_attempts = max(1, int(freeze_attempts))
        self.freeze_catchup_seconds = float(freeze_catchup_seconds)
        self.check_mode = check_mode
        self.secrets = Secrets(source, target)
        self.state = RunState(artifacts_dir, self.name)
        self.artifacts_dir = artifacts_dir

    def _connect(self, which, autocommit=True):
        params, variable = (self.source, "migration_source") if which == "source" else (
            self.target, "migration_target")
        try:
            return connect_or_raise(params, variable, LogicalError, f"pgmigrate zero_downtime {self.name}",
                                    autocommit=autocommit)
        except LogicalError as error:
            raise LogicalError(self.secrets.mask(str(error))) from None

    def _excluded(self):
        return excluded_schemas(self.exclude_schemas)


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
        raise LogicalError(f"unknown action {action}")
    except subprocess.SubprocessError as error:
        raise LogicalError(run.secrets.mask(str(error))) from None
    except LogicalError as error:
        raise type(error)(run.secrets.mask(str(error))) from None
    except psycopg2.Error as error:
        raise LogicalError(run.secrets.mask(f"{action} failed: {str(error).strip()}")) from None
