"""What every step of a zero-downtime run shares: the two databases, the options, the names of what the
run creates, the passwords to mask, the run's state, and the sessions opened under the run's name."""

from ..common.catalog import excluded_schemas
from ..common.connection import check_params, connect_or_raise
from .errors import LogicalError
from .names import OBJECT_PREFIX, Secrets, object_name
from .run_state import RunState


class ZeroDowntimeContext:
    """Built once per run by logical.ZeroDowntimeRun (which holds the options' defaults) and handed to
    every step."""

    def __init__(self, source, target, run_name, artifacts_dir, *, include_schemas, exclude_schemas,
                 replica_identity_full, source_from_target, max_lag_bytes, target_overwrite, no_owner,
                 no_privileges, switch_file, freeze_lock_timeout, freeze_attempts, freeze_catchup_seconds,
                 check_mode, reverse_window_hours=0.0, target_from_source=None, object_prefix=OBJECT_PREFIX):
        check_params(source, "migration_source")
        check_params(target, "migration_target")
        self.source = source
        self.target = target
        self.name = object_name(run_name, object_prefix)
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
        # After the cutover the old source follows the new database this long (0: retired at once).
        self.reverse_window_hours = float(reverse_window_hours or 0)
        self.target_from_source = {**target, **{k: v for k, v in (target_from_source or {}).items()
                                                if v not in (None, "")}}
        self.secrets = Secrets(source, target)
        self.state = RunState(artifacts_dir, self.name)
        self.artifacts_dir = artifacts_dir

    def connect(self, which, autocommit=True):
        """A session on "source" or "target"; a failure's message has its passwords masked."""
        params, variable = (self.source, "migration_source") if which == "source" else (
            self.target, "migration_target")
        try:
            conn = connect_or_raise(params, variable, LogicalError, f"pgmigrate zero_downtime {self.name}",
                                    autocommit=autocommit)
        except LogicalError as error:
            raise LogicalError(self.secrets.mask(str(error))) from None
        # The run's own sessions write even where the run made the database read-only for the application
        # (the old source after the switch, the new one after a switch back).
        with conn.cursor() as cur:
            cur.execute("SET default_transaction_read_only = off")
        if not autocommit:
            conn.commit()
        return conn

    def excluded(self):
        """The schemas the run leaves alone: the system's, the tool's own state schema, migration_exclude_schemas."""
        return excluded_schemas(self.exclude_schemas)
