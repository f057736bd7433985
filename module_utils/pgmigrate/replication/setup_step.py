"""2. setup: the schema on the target, the publication on the source, the subscription on the target."""

import os
import time

import psycopg2
from psycopg2 import sql

from ..clone.schema import find_tool, restore_args, run_tool
from ..common.session import quiet_statement_logging
from .errors import LogicalError
from .names import TOOL_MARK, conninfo
from .run_state import now


class SetupStep:
    """Creates what the run needs: the schema on the target, the publication, the subscription."""

    def __init__(self, context, replicated_tables, replication_objects, deferred_checks):
        self.context = context
        self.replicated_tables = replicated_tables
        self.replication_objects = replication_objects
        self.deferred_checks = deferred_checks  # deferred_checks.DeferredChecks: NOT VALID checks, after the sync

    def run(self):
        """Schema on the target, publication on the source, subscription on the target."""
        context = self.context
        started = time.monotonic()
        context.state.data = {"run": context.run_name, "name": context.name, "started_at": now(), "switched": False}
        context.state.save()
        dump = os.path.join(context.state.directory, "schema.dump")
        self._dump_schema(dump)
        published, record = self._create_publication()
        context.state.update(tables={t["qualname"]: t["total_bytes"] for t in published},
                             replica_identity_full=list(record["replica_identity_full"]))
        schema_started = time.monotonic()
        self._restore_schema(dump)
        schema_seconds = time.monotonic() - schema_started
        subscription_oid = self._create_subscription()
        record["subscription_oid"] = subscription_oid
        self._note_in_publication(record)
        context.state.update(subscription_oid=subscription_oid, sync_started_at=time.time(),
                             schema_seconds=round(schema_seconds, 2),
                             setup_seconds=round(time.monotonic() - started, 2), max_lag_bytes=0)
        return {"tables": [t["qualname"] for t in published], "replica_identity_full": list(
            record["replica_identity_full"]), "schema_seconds": round(schema_seconds, 2)}

    def _create_publication(self):
        """REPLICA IDENTITY FULL where asked and the publication, in one source transaction with the record
        of what was changed. Returns the published tables and that record."""
        context = self.context
        src = context.connect("source", autocommit=False)
        try:
            tables = self.replicated_tables.read_tables(src)
            self.replicated_tables.attach_roots(src, tables)
            published = self.replicated_tables.published_tables(tables)
            identity_full, _ = self.replicated_tables.identity_full_tables(tables)
            record = {"tool": TOOL_MARK, "run": context.run_name,
                      "replica_identity_full": {t["qualname"]: t["replica_identity"] for t in identity_full}}
            with src.cursor() as cur:
                for table in identity_full:
                    cur.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(
                        sql.Identifier(table["schema"], table["name"])))
                cur.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)")
                            .format(sql.Identifier(context.name), sql.SQL(", ").join(
                                sql.Identifier(t["schema"], t["name"]) for t in published)))
                self.replication_objects.comment_publication(cur, record)
            src.commit()
        finally:
            src.close()
        return published, record

    def _note_in_publication(self, record):
        src = self.context.connect("source")
        try:
            with src.cursor() as cur:
                self.replication_objects.comment_publication(cur, record)
        finally:
            src.close()

    def _dump_schema(self, path):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        # Taken before the run's publication exists: the source's own publications are carried as the rest
        # of the schema (a consumer of the new primary needs them), its subscriptions never (on the target
        # they would start replicating into it).
        args = [find_tool("pg_dump"), "--schema-only", "--format=custom", "--no-subscriptions", "--file", path]
        for schema in self.context.include_schemas:
            args += ["--schema", schema]
        for schema in self.context.excluded():
            if schema not in ("pg_catalog", "information_schema", "pg_toast"):
                args += ["--exclude-schema", schema]
        run_tool(args, self.context.source, "pg_dump --schema-only of the source")

    def _restore_schema(self, path):
        """Pre-data and post-data in one transaction: indexes and keys are there before rows arrive, as the
        subscription needs them to apply updates and deletes. NOT VALID checks come after the sync."""
        args = [find_tool("pg_restore"), "--single-transaction", "--exit-on-error", "--dbname",
                self.context.target["dbname"]] + restore_args(self.context.no_owner, self.context.no_privileges)
        listing = self.deferred_checks.split_listing(path)
        if listing:
            args += ["--use-list", listing]
        if self.context.target_overwrite:
            self._drop_target_tables()
            args += ["--clean", "--if-exists"]
        run_tool(args + [path], self.context.target, "restoring the source's schema into the target")

    def _drop_target_tables(self):
        """zero_downtime_target_overwrite: the target's tables in the migrated schemas go first (pg_restore
        --clean cannot drop a partition's inherited keys); --clean then replaces the other objects."""
        dst = self.context.connect("target", autocommit=False)
        try:
            tables = self.replicated_tables.published_tables(self.replicated_tables.read_tables(dst))
            if tables:
                with dst.cursor() as cur:
                    cur.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.SQL(", ").join(
                        sql.Identifier(t["schema"], t["name"]) for t in tables)))
            dst.commit()
        finally:
            dst.close()

    def _create_subscription(self):
        # CREATE SUBSCRIPTION creating a slot may not run inside a transaction block: session settings.
        context = self.context
        dst = context.connect("target")
        try:
            with dst.cursor() as cur:
                quiet_statement_logging(cur, local=False)  # not a superuser: the server's own settings apply
                try:
                    cur.execute(sql.SQL(
                        "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (copy_data = true, "
                        "create_slot = true, slot_name = {}, enabled = true)").format(
                        sql.Identifier(context.name), sql.Literal(conninfo(context.source_from_target)),
                        sql.Identifier(context.name), sql.Literal(context.name)))
                except psycopg2.Error as error:
                    raise LogicalError(context.secrets.mask(
                        f"CREATE SUBSCRIPTION on the target failed: {str(error).strip()}")) from None
                cur.execute("RESET ALL")
                cur.execute(sql.SQL("COMMENT ON SUBSCRIPTION {} IS {}").format(
                    sql.Identifier(context.name), sql.Literal(f"{TOOL_MARK} run {context.run_name}")))
                cur.execute("SELECT oid FROM pg_subscription WHERE subname = %s", (context.name,))
                return cur.fetchone()[0]
        finally:
            dst.close()
