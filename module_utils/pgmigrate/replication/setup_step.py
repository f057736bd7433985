"""2. setup: the schema on the target, the publication on the source, the subscription on the target."""

import json
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
    """A step of logical.ZeroDowntimeRun: the run's context (connections, names, state) is the run's."""

    def setup(self):
        """Schema on the target, publication on the source, subscription on the target."""
        started = time.monotonic()
        self.state.data = {"run": self.run_name, "name": self.name, "started_at": now(), "switched": False}
        self.state.save()
        dump = os.path.join(self.state.directory, "schema.dump")
        self._dump_schema(dump)
        src = self._connect("source", autocommit=False)
        try:
            tables = self.read_tables(src)
            self._attach_roots(src, tables)
            published = self.published_tables(tables)
            identity_full, _ = self.identity_full_tables(tables)
            record = {"tool": TOOL_MARK, "run": self.run_name,
                      "replica_identity_full": {t["qualname"]: t["replica_identity"] for t in identity_full}}
            with src.cursor() as cur:
                for table in identity_full:
                    cur.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(
                        sql.Identifier(table["schema"], table["name"])))
                cur.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)")
                            .format(sql.Identifier(self.name), sql.SQL(", ").join(
                                sql.Identifier(t["schema"], t["name"]) for t in published)))
                self._comment_publication(cur, record)
            src.commit()
        finally:
            src.close()
        self.state.update(tables={t["qualname"]: t["total_bytes"] for t in published},
                          replica_identity_full=list(record["replica_identity_full"]))
        schema_started = time.monotonic()
        self._restore_schema(dump)
        schema_seconds = time.monotonic() - schema_started
        subscription_oid = self._create_subscription()
        src = self._connect("source")
        try:
            with src.cursor() as cur:
                record["subscription_oid"] = subscription_oid
                self._comment_publication(cur, record)
        finally:
            src.close()
        self.state.update(subscription_oid=subscription_oid, sync_started_at=time.time(),
                          schema_seconds=round(schema_seconds, 2), setup_seconds=round(time.monotonic() - started, 2),
                          max_lag_bytes=0)
        return {"tables": [t["qualname"] for t in published], "replica_identity_full": list(
            record["replica_identity_full"]), "schema_seconds": round(schema_seconds, 2)}

    def _comment_publication(self, cur, record):
        cur.execute(sql.SQL("COMMENT ON PUBLICATION {} IS {}").format(
            sql.Identifier(self.name), sql.Literal(json.dumps(record, sort_keys=True))))

    def _dump_schema(self, path):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        # Taken before the publication exists; the source's own publications and subscriptions stay there.
        args = [find_tool("pg_dump"), "--schema-only", "--format=custom", "--no-publications",
                "--no-subscriptions", "--file", path]
        for schema in self.include_schemas:
            args += ["--schema", schema]
        for schema in self._excluded():
            if schema not in ("pg_catalog", "information_schema", "pg_toast"):
                args += ["--exclude-schema", schema]
        run_tool(args, self.source, "pg_dump --schema-only of the source")

    def _restore_schema(self, path):
        """Pre-data and post-data in one transaction: indexes and keys are there before rows arrive, as the
        subscription needs them to apply updates and deletes."""
        args = [find_tool("pg_restore"), "--single-transaction", "--exit-on-error", "--dbname",
                self.target["dbname"]] + restore_args(self.no_owner, self.no_privileges)
        if self.target_overwrite:
            self._drop_target_tables()
            args += ["--clean", "--if-exists"]
        run_tool(args + [path], self.target, "restoring the source's schema into the target")

    def _drop_target_tables(self):
        """zero_downtime_target_overwrite: the target's tables in the migrated schemas go first (pg_restore
        --clean cannot drop a partition's inherited keys); --clean then replaces the other objects."""
        dst = self._connect("target", autocommit=False)
        try:
            tables = self.published_tables(self.read_tables(dst))
            if tables:
                with dst.cursor() as cur:
                    cur.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.SQL(", ").join(
                        sql.Identifier(t["schema"], t["name"]) for t in tables)))
            dst.commit()
        finally:
            dst.close()

    def _create_subscription(self):
        # CREATE SUBSCRIPTION creating a slot may not run inside a transaction block: session settings.
        dst = self._connect("target")
        try:
            with dst.cursor() as cur:
                quiet_statement_logging(cur, local=False)  # not a superuser: the server's own settings apply
                try:
                    cur.execute(sql.SQL(
                        "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (copy_data = true, "
                        "create_slot = true, slot_name = {}, enabled = true)").format(
                        sql.Identifier(self.name), sql.Literal(conninfo(self.source_from_target)),
                        sql.Identifier(self.name), sql.Literal(self.name)))
                except psycopg2.Error as error:
                    raise LogicalError(self.secrets.mask(
                        f"CREATE SUBSCRIPTION on the target failed: {str(error).strip()}")) from None
                cur.execute("RESET ALL")
                cur.execute(sql.SQL("COMMENT ON SUBSCRIPTION {} IS {}").format(
                    sql.Identifier(self.name), sql.Literal(f"{TOOL_MARK} run {self.run_name}")))
                cur.execute("SELECT oid FROM pg_subscription WHERE subname = %s", (self.name,))
                return cur.fetchone()[0]
        finally:
            dst.close()
