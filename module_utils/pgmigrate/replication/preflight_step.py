"""1. preflight: every check that could make the run fail or harm the source, before anything changes."""


import psycopg2
from psycopg2 import sql

from ..common import client_tools
from ..common.connection import describe
from ..common.session import quiet_statement_logging
from .errors import LogicalError
from .names import MAX_IDENTIFIER, conninfo


class PreflightStep:
    """Read-only checks of both servers, the tables and what an earlier run left, and the run's plan."""

    def __init__(self, context, replicated_tables, replication_objects, reverse):
        self.context = context
        self.replicated_tables = replicated_tables
        self.replication_objects = replication_objects
        self.reverse = reverse  # reverse_replication.ReverseReplication: its own checks

    def run(self):
        """Read-only checks. Returns {"problems": [...], "notes": [...], "resume": bool, "plan": {...}}."""
        context = self.context
        source, target = context.source, context.target
        if (str(source["host"]), int(source["port"]), source["dbname"]) == (
                str(target["host"]), int(target["port"]), target["dbname"]):
            raise LogicalError("migration_source and migration_target are the same database: fix the inventory")
        if context.state.data.get("switched") and not context.state.data.get("finished"):
            # The switch was made and the run stopped before its cleanup: only finish remains to do.
            return self._after_switch()
        problems, warnings = [], []
        src = context.connect("source")
        dst = context.connect("target")
        try:
            source_info = self._source_checks(src, problems)
            target_info = self._target_checks(dst, problems)
            self._client_check(source_info["version"], target_info["version"], problems)
            tables = self.replicated_tables.read_tables(src)
            self.replicated_tables.attach_roots(src, tables)
            publication = self.replication_objects.publication(src)
            subscription = self.replication_objects.subscription(dst)
            slots = self.replication_objects.slots(src, subscription["oid"] if subscription else None)
            resume = bool(publication and subscription and subscription["ours"]
                          and any(s["name"] == context.name for s in slots)
                          and context.state.data.get("switched") is not True)
            self._leftover_checks(publication, subscription, slots, resume, problems)
            self._table_checks(tables, problems, warnings)
            if not resume:
                self._capacity_checks(source_info, target_info, problems)
                self._target_empty_check(dst, problems)
                if not problems:
                    self._probe_from_target(dst, problems)
                self.reverse.check(src, dst, problems)
            self._large_objects_check(src, warnings)
        finally:
            src.close()
            dst.close()
        return {"problems": problems, "notes": warnings, "resume": resume, "switched": False,
                "plan": self._plan(tables)}

    def _after_switch(self):
        context = self.context
        tables = context.state.data.get("tables", {})
        return {"problems": [], "notes": [], "resume": True, "switched": True, "plan": {
            "run": context.run_name, "publication": context.name, "source": describe(context.source),
            "target": describe(context.target), "table_count": len(tables), "total_bytes": sum(tables.values()),
            "source_from_target": self._source_address_from_target()}}

    def _plan(self, tables):
        context = self.context
        published = self.replicated_tables.published_tables(tables)
        identity_full, _unknown = self.replicated_tables.identity_full_tables(tables)
        return {
            "run": context.run_name, "publication": context.name, "subscription": context.name,
            "slot": context.name, "source": describe(context.source), "target": describe(context.target),
            "source_from_target": self._source_address_from_target(),
            "tables": [t["qualname"] for t in published], "table_count": len(published),
            "total_bytes": sum(t["total_bytes"] for t in published),
            "replica_identity_full": [t["qualname"] for t in identity_full],
            "max_lag_bytes": context.max_lag_bytes, "switch_file": context.switch_file,
            "reverse_window_hours": context.reverse_window_hours,
        }

    def _source_address_from_target(self):
        reach = self.context.source_from_target
        return f"{reach['host']}:{reach['port']}"

    def _source_checks(self, src, problems):
        with src.cursor() as cur:
            cur.execute("""
                SELECT current_setting('wal_level'), current_setting('max_replication_slots')::int,
                       current_setting('max_wal_senders')::int,
                       (SELECT count(*) FROM pg_replication_slots)::int,
                       (SELECT count(*) FROM pg_stat_replication)::int,
                       r.rolsuper, r.rolreplication, current_user,
                       has_database_privilege(current_database(), 'CREATE'),
                       pg_has_role(current_user, 'pg_signal_backend', 'MEMBER'),
                       (SELECT pg_get_userbyid(datdba) = current_user FROM pg_database
                        WHERE datname = current_database()),
                       current_setting('server_version_num')::int
                FROM pg_roles r WHERE r.rolname = current_user""")
            (wal_level, max_slots, max_senders, used_slots, used_senders, superuser, replication, user,
             can_create, can_signal, owns_database, version) = cur.fetchone()
        if wal_level != "logical":
            problems.append(f"the source's wal_level is {wal_level}: set wal_level = logical in its postgresql.conf "
                            "(ALTER SYSTEM SET wal_level = logical) and restart the source server")
        if version < 100000:
            problems.append("the source server is older than PostgreSQL 10 and has no logical replication")
        if not (superuser or replication):
            problems.append(f"the source login {user} may not replicate: ALTER ROLE {user} REPLICATION "
                            "(or use a superuser)")
        if not superuser:
            if not can_create:
                problems.append(f"the source login {user} may not create the publication: GRANT CREATE ON DATABASE "
                                f"{self.context.source['dbname']} TO {user}")
            if not can_signal:
                problems.append(f"the source login {user} may not end the sessions that wait during the write "
                                f"freeze: GRANT pg_signal_backend TO {user}")
            if not owns_database:
                problems.append(f"the source login {user} may not make the old database read-only after the switch "
                                "(ALTER DATABASE needs its owner or a superuser)")
        return {"max_slots": max_slots, "max_senders": max_senders, "used_slots": used_slots,
                "used_senders": used_senders, "superuser": superuser, "version": version}

    def _target_checks(self, dst, problems):
        with dst.cursor() as cur:
            cur.execute("SELECT r.rolsuper, current_user, current_setting('max_logical_replication_workers')::int, "
                        "current_setting('max_sync_workers_per_subscription')::int, "
                        "current_setting('server_version_num')::int FROM pg_roles r WHERE r.rolname = current_user")
            superuser, user, max_workers, sync_workers, version = cur.fetchone()
        if not superuser:
            problems.append(f"the target login {user} may not create a subscription: on PostgreSQL {version // 10000} "
                            "that needs a superuser (use one for migration_target during this run)")
        if max_workers < 2:
            problems.append(f"the target's max_logical_replication_workers is {max_workers}: set it to at least 2 "
                            "(one apply worker, one table sync worker) and restart the target server")
        return {"sync_workers": max(1, min(sync_workers, max_workers - 1)), "version": version}

    @staticmethod
    def _client_check(source_version, target_version, problems):
        """The schema is copied with pg_dump and pg_restore of the newer server's major version or newer."""
        try:
            client_tools.check_fits(source_version, target_version)
        except client_tools.ToolError as error:
            problems.append(str(error))

    def _capacity_checks(self, source_info, target_info, problems):
        # One slot and one WAL sender for the subscription, one more of each per table sync worker.
        needed = 1 + target_info["sync_workers"]
        free_slots = source_info["max_slots"] - source_info["used_slots"]
        free_senders = source_info["max_senders"] - source_info["used_senders"]
        if free_slots < needed:
            problems.append(f"the source has {free_slots} free replication slots of {source_info['max_slots']} and "
                            f"the run needs {needed}: drop unused slots (SELECT slot_name, active FROM "
                            "pg_replication_slots) or raise max_replication_slots (restart)")
        if free_senders < needed:
            problems.append(f"the source has {free_senders} free WAL senders of {source_info['max_senders']} and "
                            f"the run needs {needed}: raise max_wal_senders (restart)")

    def _leftover_checks(self, publication, subscription, slots, resume, problems):
        if resume:
            return
        name = self.context.name
        leftovers = []
        if publication:
            leftovers.append(f"publication {name} on the source")
        if slots:
            leftovers.append("replication slot(s) " + ", ".join(s["name"] for s in slots) + " on the source")
        if subscription:
            leftovers.append(f"subscription {name} on the target")
        if subscription and not subscription["ours"]:
            problems.append(f"the target already has a subscription named {name} that this tool did not "
                            "create: choose another zero_downtime_run_name")
        elif leftovers:
            problems.append("an earlier run left " + "; ".join(leftovers) + ": remove them with "
                            "-e zero_downtime_abort=true (same zero_downtime_run_name), then rerun")

    def _table_checks(self, tables, problems, warnings):
        if not self.replicated_tables.published_tables(tables):
            problems.append("the source has no table to replicate in the included schemas")
        identity_full, unknown = self.replicated_tables.identity_full_tables(tables)
        if unknown:
            problems.append("zero_downtime_replica_identity_full names tables the source does not have: "
                            + ", ".join(unknown))
        fixed = {t["qualname"] for t in identity_full}
        unusable = [t["qualname"] for t in tables
                    if not self.replicated_tables.identity_usable(t) and t["qualname"] not in fixed]
        if unusable:
            problems.append(
                "these tables have no primary key and no usable replica identity, so once published every "
                "UPDATE and DELETE on them would FAIL on the source: " + ", ".join(unusable) + ". Add a primary "
                "key, or list them in zero_downtime_replica_identity_full (the run sets REPLICA IDENTITY FULL "
                "and reverts it afterwards)")
        unlogged = [t["qualname"] for t in tables if t["unlogged"]]
        if unlogged:
            problems.append("unlogged tables cannot be replicated: " + ", ".join(unlogged) + ". ALTER TABLE ... "
                            "SET LOGGED on the source, or leave their schema out (migration_exclude_schemas)")
        if fixed:
            warnings.append("REPLICA IDENTITY FULL during the run on: " + ", ".join(sorted(fixed))
                            + " (updates and deletes there write whole rows to the WAL and the target finds "
                            "rows by scanning)")

    def _target_empty_check(self, dst, problems):
        with dst.cursor() as cur:
            cur.execute("SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
                        "AND n.nspname NOT IN %(excluded)s AND n.nspname NOT LIKE 'pg_temp%%' "
                        "AND n.nspname NOT LIKE 'pg_toast%%' ORDER BY 1 LIMIT 6",
                        {"excluded": self.context.excluded()})
            existing = [row[0] for row in cur.fetchall()]
        if existing and not self.context.target_overwrite:
            problems.append(
                f"the target {describe(self.context.target)} already holds tables ({', '.join(existing[:5])}"
                f"{', ...' if len(existing) > 5 else ''}): migrate into an empty database, or set "
                "zero_downtime_target_overwrite=true to replace what the source's schema defines")

    def _probe_from_target(self, dst, problems):
        """The target server connects to the source as the subscription will, in a transaction rolled back:
        a wrong zero_downtime_source_host_from_target, pg_hba.conf or password shows now, changing nothing."""
        name = self.context.name
        probe = f"{name}_probe"[:MAX_IDENTIFIER]
        try:
            with dst.cursor() as cur:
                cur.execute("BEGIN")
                quiet_statement_logging(cur)
                cur.execute(sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (connect = true, "
                                    "enabled = false, create_slot = false, slot_name = NONE, copy_data = false)")
                            .format(sql.Identifier(probe), sql.Literal(conninfo(self.context.source_from_target)),
                                    sql.Identifier(name)))
        except psycopg2.Error as error:
            where = self._source_address_from_target()
            problems.append(self.context.secrets.mask(
                f"the target server cannot reach the source as {where}: {str(error).strip().splitlines()[0]}. "
                "Set zero_downtime_source_host_from_target/_port_from_target to the source's address as the "
                "target server sees it, and allow it in the source's pg_hba.conf"))
        finally:
            with dst.cursor() as cur:
                cur.execute("ROLLBACK")

    @staticmethod
    def _large_objects_check(src, warnings):
        with src.cursor() as cur:
            cur.execute("SELECT EXISTS (SELECT 1 FROM pg_largeobject_metadata)")
            if cur.fetchone()[0]:
                warnings.append("the source holds large objects, which logical replication does not carry: "
                                "copy them separately")
