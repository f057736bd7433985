"""What the target must be before anything changes (empty, or holding the schema), the source's
large objects and database settings read and checked against the target login's rights, and the
overwrite that makes room."""


from ..common import database_settings, preflight
from ..common.connection import describe
from . import large_objects, overwrite


class TargetChecks:
    def __init__(self, run):
        self.run = run  # run_context.CopyRun

    def read_large_objects(self):
        """The source's large objects in the run's snapshot (none when the run is limited to some
        schemas, as with pg_dump --schema)."""
        if self.run.options["include_schemas"]:
            with self.run.snapshot_conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_largeobject_metadata")
                left = cur.fetchone()[0]
            if left:
                self.run.warnings.append(
                    f"{left} large object(s) not copied: the run is limited to the schemas "
                    f"{', '.join(self.run.options['include_schemas'])} (migration_include_schemas), and large objects "
                    "belong to no schema (as with pg_dump --schema)")
            return
        try:
            self.run.large_objects = large_objects.read_from_snapshot(self.run.source, self.run.snapshot_id)
        except LookupError as error:
            denied = error.args[0]
            shown = ", ".join(str(o) for o in denied[:8]) + (f" and {len(denied) - 8} more" if len(denied) > 8 else "")
            login = self.run.source["user"]
            raise preflight.PreflightError(
                f"The source login {login} may not read {len(denied)} large object(s) of "
                f"{describe(self.run.source)}: {shown}. GRANT SELECT ON LARGE OBJECT <oid> TO {login} "
                "for each (pg_read_all_data does not cover large objects), or connect as their owner or a "
                "superuser.") from None

    def plan_database_settings(self, target_conn):
        """The source database's settings to carry, checked against the target login's rights before
        anything changes; settings of roles the target lacks are skipped with a warning."""
        if not self.run.options["database_settings"]:
            return
        source_settings = database_settings.read_settings(self.run.snapshot_conn)
        self.run.settings_to_apply, warnings = database_settings.plan(source_settings, target_conn,
                                                                 self.run.options["database_settings_skipped"])
        self.run.warnings.extend(warnings)
        problems = database_settings.rights_problems(target_conn, self.run.settings_to_apply)
        target_conn.rollback()
        if problems:
            settings = self.run.settings_to_apply
            raise preflight.PreflightError(
                f"The source database has {len(settings)} setting(s) to carry "
                f"({', '.join(database_settings.describe_setting(s) for s in settings[:5])}), but the "
                f"target login {self.run.target['user']} may not set them on {describe(self.run.target)}: "
                f"{'; '.join(problems)}. Grant that, or set migration_copy_database_settings=false to leave them.")

    def check_target_empty(self, target_conn):
        opts = self.run.options
        colliding = large_objects.existing_oids(target_conn, [lo["oid"] for lo in self.run.large_objects])
        target_conn.rollback()
        if colliding and not opts["overwrite"]:
            raise preflight.PreflightError(
                f"The target {describe(self.run.target)} already holds {len(colliding)} large object(s) with the oids "
                f"of the source's (e.g. {', '.join(str(o) for o in colliding[:5])}). Nothing was changed. Set "
                "migration_target_overwrite=true to replace them.")
        if opts["schema_mode"] == "copy":
            present = preflight.existing_user_tables(target_conn, self.run.catalog["schemas"])
            if present and not opts["overwrite"]:
                raise preflight.PreflightError(
                    f"The target {describe(self.run.target)} is not empty: {len(present)} table(s) already exist in "
                    f"the schemas to migrate (e.g. {', '.join(present[:5])}). Nothing was changed. Set "
                    "migration_target_overwrite=true to replace them, or use migration_schema_mode=existing if the "
                    "application created the schema.")
        else:
            populated = preflight.populated_tables(target_conn, [t["table"] for t in self.run.plan["tables"]])
            if populated and not opts["overwrite"]:
                raise preflight.PreflightError(
                    f"The target {describe(self.run.target)} is not empty: {len(populated)} table(s) hold rows "
                    f"(e.g. {', '.join(populated[:5])}). Nothing was changed. Set migration_target_overwrite=true "
                    "to truncate and reload them.")

    def check_existing_schema(self, target_conn):
        missing = []
        with target_conn.cursor() as cur:
            for table in self.run.catalog["tables"]:
                cur.execute("SELECT to_regclass(%s)", (table["qualname"],))
                if cur.fetchone()[0] is None:
                    missing.append(table["qualname"])
        target_conn.rollback()
        if missing:
            raise preflight.PreflightError(
                f"migration_schema_mode=existing, but the target lacks {len(missing)} table(s) of the source: "
                f"{', '.join(missing[:10])}. Run the application's migrations on the target first, or use "
                "migration_schema_mode=copy.")
        self.run.replication_role = preflight.can_set_replication_role(target_conn)

    def clear_target(self, target_conn):
        """migration_target_overwrite=true: make room for the copy (nothing outside the source's schemas,
        and of the large objects only those whose oids the source's use)."""
        removed = large_objects.unlink(target_conn, [lo["oid"] for lo in self.run.large_objects])
        if removed:
            self.run.event(f"overwrite: removed {removed} large object(s) of the target with the source's oids")
        if self.run.options["schema_mode"] == "copy":
            dropped = [name for name in self.run.catalog["schemas"] if overwrite.drop_schema(target_conn, name)]
            self.run.event(f"overwrite: dropped schemas {', '.join(dropped) or '(none present)'} in the target")
            return
        with target_conn.cursor() as cur:
            tables = [t["table"] for t in self.run.plan["tables"]]
            if tables:
                cur.execute("TRUNCATE " + ", ".join(tables))
            self.run.event(f"overwrite: truncated {len(tables)} tables in the target")
        target_conn.commit()
