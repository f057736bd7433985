"""What a run does with an unfinished run it finds on the target: resume it, refuse, or discard it."""

from ..common import preflight
from . import state


def describe_identity(identity):
    return f"database {identity.get('database')} at {identity.get('address')}:{identity.get('port')}"


def unfinished_to_resume(target_conn, source_key, options):
    """The target's unfinished run to resume (its state record), or None to start a new one. Refuses one
    from another source or in another schema mode unless migration_restart, which discards it (and needs
    migration_target_overwrite, since the partly copied tables are replaced)."""
    unfinished = state.unfinished_run(target_conn)
    target_conn.rollback()
    if not unfinished:
        return None
    if unfinished["source_identity"] != source_key and not options["restart"]:
        raise preflight.PreflightError(
            f"The target holds an unfinished migration run {unfinished['run_id']} from another source "
            f"({describe_identity(unfinished['source_identity'])}). Finish it with that source, or pass "
            "migration_restart=true (with migration_target_overwrite=true) to discard it."
        )
    if unfinished["schema_mode"] != options["schema_mode"] and not options["restart"]:
        raise preflight.PreflightError(
            f"The target holds an unfinished run {unfinished['run_id']} in schema mode "
            f"'{unfinished['schema_mode']}', not '{options['schema_mode']}': rerun with that mode, or "
            "migration_restart=true to discard it."
        )
    if options["restart"]:
        if not options["overwrite"]:
            raise preflight.PreflightError(
                "migration_restart=true discards a partly copied target: also set "
                "migration_target_overwrite=true to confirm that its tables may be replaced.")
        if not options["check_mode"]:
            state.drop_state(target_conn)
        return None
    return unfinished
