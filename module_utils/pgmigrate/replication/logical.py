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
"""

import datetime
import json
import os
import re
import subprocess
import tempfile
import time

import psycopg2
from psycopg2 import errors as pg_errors
from psycopg2 import sql

from ..clone.schema import find_tool, restore_args, run_tool
from ..common.catalog import excluded_schemas
from ..common.connection import check_params, connect, describe, friendly_connect_error
from ..common.session import quiet_statement_logging
from ..common.units import human_bytes

TOOL_MARK = "pgmigrate zero_downtime"
OBJECT_PREFIX = "pgmigrate_zd_"
MAX_IDENTIFIER = 63
# Errors of the subscription's workers after which waiting on is pointless.
MAX_SUBSCRIPTION_ERRORS = 3

TABLES_QUERY = """
SELECT c.oid, n.nspname, c.relname, format('%%I.%%I', n.nspname, c.relname) AS qualname, c.relkind,
       c.relispartition, c.relpersistence, c.relreplident,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) AS has_primary_key,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident AND i.indisvalid)
         AS has_identity_index,
       CASE WHEN c.relkind = 'p' THEN
         (SELECT COALESCE(sum(pg_total_relation_size(t.relid)), 0) FROM pg_partition_tree(c.oid) t)
       ELSE pg_total_relation_size(c.oid) END::bigint AS total_bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN %(excluded)s AND n.nspname NOT LIKE 'pg_temp%%' AND n.nspname NOT LIKE 'pg_toast%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')
ORDER BY 4
"""

SEQUENCES_QUERY = """
SELECT format('%%I.%%I', schemaname, sequencename), schemaname, last_value
FROM pg_sequences WHERE schemaname NOT IN %(excluded)s ORDER BY 1
"""

SLOT_LAG_QUERY = """
SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, active
FROM pg_replication_slots WHERE slot_name = %s
"""


class LogicalError(Exception):
    """Something stopped the run; the message says what and how to fix it."""


class FreezeAbandoned(LogicalError):
    """The cutover gave up before the switch; the source is as it was and replication goes on."""

    def __init__(self, message, retry=False):
        super().__init__(message)
        self.retry = retry


# --------------------------------------------------------------------------------------------------
# Names, secrets, state


def object_name(run_name):
    """The publication's, subscription's and slot's name: pgmigrate_zd_<run name>, a valid slot name."""
    cleaned = re.sub(r"[^a-z0-9_]", "_", str(run_name or "").lower()).strip("_")
    if not cleaned:
        raise LogicalError("zero_downtime_run_name is empty: set it to a short name for this migration")
    return (OBJECT_PREFIX + cleaned)[:MAX_IDENTIFIER]


class Secrets:
    """Masks the passwords in every message that leaves the module."""

    def __init__(self, *connections):
        self.values = [c["password"] for c in connections if c and c.get("password")]

    def mask(self, text):
        text = str(text)
        for value in self.values:
            text = text.replace(value, "********")
        return text


def conninfo(params):
    """A libpq connection string; values quoted as libpq wants (backslash and single quote escaped)."""
    parts = []
    for key in ("host", "port", "dbname", "user", "password", "sslmode", "sslrootcert", "sslcert", "sslkey"):
        value = params.get(key)
        if value in (None, ""):
            continue
        escaped = str(value).replace("\\", "\\\\").replace("'", "\\'")
        parts.append(f"{key}='{escaped}'")
    return " ".join(parts)


def _now():
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


class RunState:
    """The run's record on the controller: <artifacts_dir>/zero_downtime/<name>/state.json."""

    def __init__(self, artifacts_dir, name):
        self.directory = os.path.join(artifacts_dir, "zero_downtime", name)
        self.path = os.path.join(self.directory, "state.json")
        self.data = {}
        if os.path.exists(self.path):
            with open(self.path) as handle:
                self.data = json.load(handle)

    def update(self, **values):
        self.data.update(values)
        self.save()

    def save(self):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        write_json_atomically(self.path, self.data, mode=0o600)

    def remove(self):
        if os.path.exists(self.path):
            os.unlink(self.path)


def write_json_atomically(path, data, mode=0o644):
    """Write then rename: a reader sees the old file or the new one, never half of one."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(data, stream, indent=2, sort_keys=True, default=str)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


# --------------------------------------------------------------------------------------------------
# The run


class ZeroDowntimeRun:
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

    # -- connections ---------------------------------------------------------------------------------

    def _connect(self, which, autocommit=True):
        params, variable = (self.source, "migration_source") if which == "source" else (
            self.target, "migration_target")
        try:
            return connect(params, application_name=f"pgmigrate zero_downtime {self.name}", autocommit=autocommit)
        except psycopg2.Error as error:
            raise LogicalError(self.secrets.mask(friendly_connect_error(error, params, variable))) from None

    def _excluded(self):
        return excluded_schemas(self.exclude_schemas)

    # -- catalog -------------------------------------------------------------------------------------

    def read_tables(self, conn):
        """Every user table of the included schemas, with what the publication and the checks need."""
        with conn.cursor() as cur:
            cur.execute(TABLES_QUERY, {"excluded": self._excluded()})
            rows = cur.fetchall()
        tables = []
        for (oid, schema, name, qualname, relkind, is_partition, persistence, replident, has_pk,
             has_identity_index, total_bytes) in rows:
            if self.include_schemas and schema not in self.include_schemas:
                continue
            tables.append({"oid": oid, "schema": schema, "name": name, "qualname": qualname,
                           "partitioned": relkind == "p", "is_partition": is_partition,
                           "unlogged": persistence == "u", "replica_identity": replident,
                           "has_primary_key": has_pk, "has_identity_index": has_identity_index,
                           "total_bytes": total_bytes})
        return tables

    @staticmethod
    def published_tables(tables):
        """The publication's list: top-level tables (a partitioned table brings its partitions)."""
        return [t for t in tables if not t["is_partition"]]

    @staticmethod
    def identity_usable(table):
        """UPDATE and DELETE of a published table need a replica identity, or they fail on the source."""
        if table["partitioned"]:
            return True  # its partitions are checked, they hold the rows
        identity = table["replica_identity"]
        return identity == "f" or (identity == "d" and table["has_primary_key"]) or (
            identity == "i" and table["has_identity_index"])

    def _match_tables(self, tables, names):
        """Resolve zero_downtime_replica_identity_full entries (schema.table, or table in public)."""
        by_name = {}
        for table in tables:
            by_name[f"{table['schema']}.{table['name']}"] = table
            by_name[table["qualname"]] = table
        found, unknown = [], []
        for entry in names:
            key = entry if "." in entry else f"public.{entry}"
            if key in by_name:
                found.append(by_name[key])
            else:
                unknown.append(entry)
        return found, unknown

    def identity_full_tables(self, tables):
        """The leaf tables to set REPLICA IDENTITY FULL on (a partitioned table's partitions included)."""
        found, unknown = self._match_tables(tables, self.replica_identity_full)
        leaves = {}
        for table in found:
            if table["partitioned"]:
                prefix = table["qualname"]
                for other in tables:
                    if other["is_partition"] and not other["partitioned"] and other.get("root") == prefix:
                        leaves[other["qualname"]] = other
            else:
                leaves[table["qualname"]] = table
        return list(leaves.values()), unknown

    def _attach_roots(self, conn, tables):
        """Each partition's partitioned root, so that a root in replica_identity_full reaches its leaves."""
        partitions = [t for t in tables if t["is_partition"]]
        if not partitions:
            return
        with conn.cursor() as cur:
            cur.execute("SELECT c.oid, format('%%I.%%I', n.nspname, r.relname) FROM unnest(%s::oid[]) c(oid) "
                        "JOIN pg_class r ON r.oid = pg_partition_root(c.oid) JOIN pg_namespace n "
                        "ON n.oid = r.relnamespace", ([t["oid"] for t in partitions],))
            roots = dict(cur.fetchall())
        for table in partitions:
            table["root"] = roots.get(table["oid"])

    # -- what exists ---------------------------------------------------------------------------------

    def _publication(self, src):
        with src.cursor() as cur:
            cur.execute("SELECT p.oid, obj_description(p.oid, 'pg_publication') FROM pg_publication p "
                        "WHERE p.pubname = %s", (self.name,))
            row = cur.fetchone()
        if not row:
            return None
        try:
            record = json.loads(row[1] or "{}")
        except ValueError:
            record = {}
        return {"oid": row[0], "record": record}

    def _slots(self, src, subscription_oid=None):
        """Our slot and, while the initial sync runs, the table sync slots of our subscription."""
        patterns = [self.name]
        with src.cursor() as cur:
            cur.execute("SELECT slot_name, active, active_pid FROM pg_replication_slots "
                        "WHERE slot_name = %s OR (%s::oid IS NOT NULL AND slot_name LIKE %s)",
                        (patterns[0], subscription_oid, f"pg\\_{subscription_oid}\\_sync\\_%"))
            return [{"name": n, "active": a, "pid": p} for n, a, p in cur.fetchall()]

    def _subscription(self, dst):
        with dst.cursor() as cur:
            cur.execute("SELECT s.oid, s.subenabled, s.subslotname, obj_description(s.oid, 'pg_subscription') "
                        "FROM pg_subscription s WHERE s.subname = %s AND s.subdbid = "
                        "(SELECT oid FROM pg_database WHERE datname = current_database())", (self.name,))
            row = cur.fetchone()
        if not row:
            return None
        return {"oid": row[0], "enabled": row[1], "slot": row[2], "ours": TOOL_MARK in (row[3] or "")}

    # -- 1. preflight --------------------------------------------------------------------------------

    def preflight(self):
        """Read-only checks. Returns {"problems": [...], "notes": [...], "resume": bool, "plan": {...}}."""
        if (str(self.source["host"]), int(self.source["port"]), self.source["dbname"]) == (
                str(self.target["host"]), int(self.target["port"]), self.target["dbname"]):
            raise LogicalError("migration_source and migration_target are the same database: fix the inventory")
        if self.state.data.get("switched") and not self.state.data.get("finished"):
            # The switch was made and the run stopped before its cleanup: only finish remains to do.
            tables = self.state.data.get("tables", {})
            return {"problems": [], "notes": [], "resume": True, "switched": True, "plan": {
                "run": self.run_name, "publication": self.name, "source": describe(self.source),
                "target": describe(self.target), "table_count": len(tables), "total_bytes": sum(tables.values()),
                "source_from_target": f"{self.source_from_target['host']}:{self.source_from_target['port']}"}}
        problems, warnings = [], []
        src = self._connect("source")
        dst = self._connect("target")
        try:
            source_info = self._source_checks(src, problems)
            target_info = self._target_checks(dst, problems)
            tables = self.read_tables(src)
            self._attach_roots(src, tables)
            publication = self._publication(src)
            subscription = self._subscription(dst)
            slots = self._slots(src, subscription["oid"] if subscription else None)
            resume = bool(publication and subscription and subscription["ours"]
                          and any(s["name"] == self.name for s in slots)
                          and self.state.data.get("switched") is not True)
            self._leftover_checks(publication, subscription, slots, resume, problems)
            self._table_checks(tables, problems, warnings)
            if not resume:
                self._capacity_checks(source_info, target_info, problems)
                self._target_empty_check(dst, problems)
                if not problems:
                    self._probe_from_target(dst, problems)
            with src.cursor() as cur:
                cur.execute("SELECT EXISTS (SELECT 1 FROM pg_largeobject_metadata)")
                if cur.fetchone()[0]:
                    warnings.append("the source holds large objects, which logical replication does not carry: "
                                    "copy them separately")
        finally:
            src.close()
            dst.close()
        published = self.published_tables(tables)
        identity_full, _unknown = self.identity_full_tables(tables)
        plan = {
            "run": self.run_name, "publication": self.name, "subscription": self.name, "slot": self.name,
            "source": describe(self.source), "target": describe(self.target),
            "source_from_target": f"{self.source_from_target['host']}:{self.source_from_target['port']}",
            "tables": [t["qualname"] for t in published], "table_count": len(published),
            "total_bytes": sum(t["total_bytes"] for t in published),
            "replica_identity_full": [t["qualname"] for t in identity_full],
            "max_lag_bytes": self.max_lag_bytes, "switch_file": self.switch_file,
        }
        return {"problems": problems, "notes": warnings, "resume": resume, "switched": False, "plan": plan}

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
                                f"{self.source['dbname']} TO {user}")
            if not can_signal:
                problems.append(f"the source login {user} may not end the sessions that wait during the write "
                                f"freeze: GRANT pg_signal_backend TO {user}")
            if not owns_database:
                problems.append(f"the source login {user} may not make the old database read-only after the switch "
                                "(ALTER DATABASE needs its owner or a superuser)")
        return {"max_slots": max_slots, "max_senders": max_senders, "used_slots": used_slots,
                "used_senders": used_senders, "superuser": superuser}

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
        return {"sync_workers": max(1, min(sync_workers, max_workers - 1))}

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
        leftovers = []
        if publication:
            leftovers.append(f"publication {self.name} on the source")
        if slots:
            leftovers.append("replication slot(s) " + ", ".join(s["name"] for s in slots) + " on the source")
        if subscription:
            leftovers.append(f"subscription {self.name} on the target")
        if subscription and not subscription["ours"]:
            problems.append(f"the target already has a subscription named {self.name} that this tool did not "
                            "create: choose another zero_downtime_run_name")
        elif leftovers:
            problems.append("an earlier run left " + "; ".join(leftovers) + ": remove them with "
                            "-e zero_downtime_abort=true (same zero_downtime_run_name), then rerun")

    def _table_checks(self, tables, problems, warnings):
        if not self.published_tables(tables):
            problems.append("the source has no table to replicate in the included schemas")
        identity_full, unknown = self.identity_full_tables(tables)
        if unknown:
            problems.append("zero_downtime_replica_identity_full names tables the source does not have: "
                            + ", ".join(unknown))
        fixed = {t["qualname"] for t in identity_full}
        unusable = [t["qualname"] for t in tables if not self.identity_usable(t) and t["qualname"] not in fixed]
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
                        {"excluded": self._excluded()})
            existing = [row[0] for row in cur.fetchall()]
        if existing and not self.target_overwrite:
            problems.append(
                f"the target {describe(self.target)} already holds tables ({', '.join(existing[:5])}"
                f"{', ...' if len(existing) > 5 else ''}): migrate into an empty database, or set "
                "zero_downtime_target_overwrite=true to replace what the source's schema defines")

    def _probe_from_target(self, dst, problems):
        """The target server connects to the source as the subscription will, in a transaction rolled back:
        a wrong zero_downtime_source_host_from_target, pg_hba.conf or password shows now, changing nothing."""
        probe = f"{self.name}_probe"[:MAX_IDENTIFIER]
        try:
            with dst.cursor() as cur:
                cur.execute("BEGIN")
                quiet_statement_logging(cur)
                cur.execute(sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (connect = true, "
                                    "enabled = false, create_slot = false, slot_name = NONE, copy_data = false)")
                            .format(sql.Identifier(probe), sql.Literal(conninfo(self.source_from_target)),
                                    sql.Identifier(self.name)))
        except psycopg2.Error as error:
            where = f"{self.source_from_target['host']}:{self.source_from_target['port']}"
            problems.append(self.secrets.mask(
                f"the target server cannot reach the source as {where}: {str(error).strip().splitlines()[0]}. "
                "Set zero_downtime_source_host_from_target/_port_from_target to the source's address as the "
                "target server sees it, and allow it in the source's pg_hba.conf"))
        finally:
            with dst.cursor() as cur:
                cur.execute("ROLLBACK")

    # -- 2. setup ------------------------------------------------------------------------------------

    def setup(self):
        """Schema on the target, publication on the source, subscription on the target."""
        started = time.monotonic()
        self.state.data = {"run": self.run_name, "name": self.name, "started_at": _now(), "switched": False}
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

    # -- 3. wait -------------------------------------------------------------------------------------

    def status(self, src, dst):
        with dst.cursor() as cur:
            cur.execute("SELECT sr.srsubstate, format('%%I.%%I', n.nspname, c.relname) FROM pg_subscription_rel sr "
                        "JOIN pg_class c ON c.oid = sr.srrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "JOIN pg_subscription s ON s.oid = sr.srsubid WHERE s.subname = %s ORDER BY 2", (self.name,))
            relations = cur.fetchall()
            cur.execute("SELECT apply_error_count, sync_error_count FROM pg_stat_subscription_stats "
                        "WHERE subname = %s", (self.name,))
            errors = cur.fetchone() or (0, 0)
        with src.cursor() as cur:
            cur.execute(SLOT_LAG_QUERY, (self.name,))
            slot = cur.fetchone()
        if slot is None:
            raise LogicalError(f"the replication slot {self.name} is gone from the source: the run cannot go on; "
                               "clean up with -e zero_downtime_abort=true and start again")
        return {"ready": [q for s, q in relations if s == "r"], "copying": [q for s, q in relations if s in "dfs"],
                "waiting": [q for s, q in relations if s == "i"], "total": len(relations),
                "lag_bytes": max(0, slot[0] or 0), "slot_active": slot[1],
                "apply_errors": errors[0], "sync_errors": errors[1]}

    def wait(self, wait_seconds=5.0, poll_seconds=0.5):
        """Wait up to wait_seconds for the initial sync to end and the lag to fall under the bound."""
        self._ensure_state()
        deadline = time.monotonic() + wait_seconds
        src = self._connect("source")
        dst = self._connect("target")
        try:
            while True:
                status = self.status(src, dst)
                self._record_status(status)
                if status["apply_errors"] + status["sync_errors"] >= MAX_SUBSCRIPTION_ERRORS:
                    raise LogicalError(
                        f"the subscription's workers failed {status['apply_errors']} (apply) and "
                        f"{status['sync_errors']} (table sync) times: see the target server's log")
                synced = status["total"] > 0 and len(status["ready"]) == status["total"]
                finished = synced and status["lag_bytes"] <= self.max_lag_bytes
                if finished or time.monotonic() >= deadline:
                    break
                time.sleep(poll_seconds)
        finally:
            src.close()
            dst.close()
        return {"finished": finished, "synced": synced, "progress_line": self.progress_line(status), **status,
                "initial_sync_seconds": self.state.data.get("initial_sync_seconds"),
                "max_lag_bytes": self.state.data.get("max_lag_bytes", 0)}

    def _ensure_state(self):
        """A run resumed from another controller (or after its state file was lost): rebuilt from the catalog."""
        if self.state.data.get("subscription_oid"):
            return
        src = self._connect("source")
        dst = self._connect("target")
        try:
            subscription = self._subscription(dst)
            if not subscription:
                raise LogicalError(f"no subscription {self.name} on the target: this run has not started")
            published = self.published_tables(self.read_tables(src))
            with src.cursor() as cur:
                cur.execute("SELECT format('%%I.%%I', schemaname, tablename) FROM pg_publication_tables "
                            "WHERE pubname = %s", (self.name,))
                names = {row[0] for row in cur.fetchall()}
        finally:
            src.close()
            dst.close()
        self.state.update(run=self.run_name, name=self.name, switched=False, subscription_oid=subscription["oid"],
                          sync_started_at=time.time(), max_lag_bytes=0, resumed_at=_now(),
                          tables={t["qualname"]: t["total_bytes"] for t in published if t["qualname"] in names})

    def _record_status(self, status):
        changes = {"max_lag_bytes": max(self.state.data.get("max_lag_bytes", 0), status["lag_bytes"])}
        if (status["total"] and len(status["ready"]) == status["total"]
                and self.state.data.get("initial_sync_seconds") is None):
            changes["initial_sync_seconds"] = round(time.time() - self.state.data["sync_started_at"], 2)
        if changes != {k: self.state.data.get(k) for k in changes}:
            self.state.update(**changes)

    def progress_line(self, status):
        sizes = self.state.data.get("tables", {})
        total_bytes = sum(sizes.values()) or 1
        ready_bytes = sum(sizes.get(q, 0) for q in status["ready"])
        elapsed = time.time() - self.state.data.get("sync_started_at", time.time())
        if status["total"] and len(status["ready"]) == status["total"]:
            head = f"[replicating] initial sync done in {self.state.data.get('initial_sync_seconds')} s"
        else:
            head = (f"[initial sync] {100.0 * ready_bytes / total_bytes:5.1f}% tables {len(status['ready'])}/"
                    f"{status['total']} ready ({human_bytes(ready_bytes)} of {human_bytes(total_bytes)})")
        line = (f"{head}; lag {human_bytes(status['lag_bytes'])} (bound {human_bytes(self.max_lag_bytes)}); "
                f"{elapsed:.0f} s")
        if status["copying"]:
            line += "; copying " + ", ".join(status["copying"][:4])
        if status["apply_errors"] or status["sync_errors"]:
            line += f"; worker errors: apply {status['apply_errors']}, sync {status['sync_errors']}"
        return line

    # -- 4. cutover ----------------------------------------------------------------------------------

    def cutover(self, switch="file", lag_wait_seconds=60.0):
        """The write freeze, the catch-up, the sequences, the switch. Raises FreezeAbandoned when it gave up
        before the switch (the source is then as it was and replication goes on)."""
        if self.state.data.get("switched"):
            return {"already_switched": True, **self.state.data.get("freeze", {})}
        self._ensure_state()
        if switch == "file" and not self.switch_file:
            raise LogicalError("zero_downtime_switch_file is empty and there are no cdp_app_servers to switch: "
                               "set one of them")
        src = self._connect("source")
        dst = self._connect("target")
        lock_conn = self._connect("source", autocommit=False)
        try:
            prepared = self._before_freeze(src, dst, lag_wait_seconds)
            attempts = []
            for attempt in range(1, self.freeze_attempts + 1):
                try:
                    result = self._freeze_and_switch(src, dst, lock_conn, prepared, switch)
                    result["failed_attempts"] = attempts
                    break
                except FreezeAbandoned as error:
                    attempts.append({"attempt": attempt, "reason": str(error)})
                    if attempt == self.freeze_attempts or not error.retry:
                        raise FreezeAbandoned(
                            f"the write freeze was given up after {attempt} attempt(s): {error}. The source was "
                            "released and is as it was") from None
                    time.sleep(min(5.0, 1.0 * attempt))
        finally:
            for conn in (lock_conn, src, dst):
                conn.close()
        self.state.update(freeze=result, switched=True)
        return result

    def _before_freeze(self, src, dst, lag_wait_seconds):
        """Everything slow or fallible that can run while writes go on."""
        status = self.status(src, dst)
        if not status["total"] or len(status["ready"]) != status["total"]:
            raise FreezeAbandoned("the initial sync is not finished: wait for it before the cutover")
        tables = self.read_tables(src)
        with src.cursor() as cur:
            cur.execute("SELECT format('%%I.%%I', schemaname, tablename) FROM pg_publication_tables "
                        "WHERE pubname = %s", (self.name,))
            published = {row[0] for row in cur.fetchall()}
        added = [t["qualname"] for t in self.published_tables(tables) if t["qualname"] not in published]
        if added:
            raise FreezeAbandoned("tables were created on the source after the publication and would not be "
                                  "replicated: " + ", ".join(added) + ". Abort and start again")
        # The apply worker then reports a position as soon as it committed it: the catch-up is seen at once.
        with dst.cursor() as cur:
            cur.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (synchronous_commit = 'on')").format(
                sql.Identifier(self.name)))
        deadline = time.monotonic() + lag_wait_seconds
        while status["lag_bytes"] > self.max_lag_bytes:
            if time.monotonic() > deadline:
                raise FreezeAbandoned(f"the lag stayed above {human_bytes(self.max_lag_bytes)} "
                                      f"({human_bytes(status['lag_bytes'])})")
            time.sleep(0.2)
            status = self.status(src, dst)
            self._record_status(status)
        self._refresh_materialized_views(src, dst)
        with src.cursor() as cur:
            cur.execute(SEQUENCES_QUERY, {"excluded": self._excluded()})
            sequences = [q for q, schema, _ in cur.fetchall()
                         if not self.include_schemas or schema in self.include_schemas]
            cur.execute("SELECT setconfig FROM pg_db_role_setting WHERE setrole = 0 AND setdatabase = "
                        "(SELECT oid FROM pg_database WHERE datname = current_database())")
            row = cur.fetchone()
            previous_read_only = next((s.split("=", 1)[1] for s in (row[0] if row else []) or []
                                       if s.startswith("default_transaction_read_only=")), None)
            cur.execute("SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = %s",
                        (self.name,))
            record = json.loads(cur.fetchone()[0] or "{}")
        with dst.cursor() as cur:
            cur.execute("SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences")
            on_target = {row[0] for row in cur.fetchall()}
        missing = [s for s in sequences if s not in on_target]
        if missing:
            raise FreezeAbandoned("sequences missing on the target: " + ", ".join(missing))
        lock = sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(sql.SQL(", ").join(
            sql.Identifier(t["schema"], t["name"]) for t in self.published_tables(tables)))
        return {"lock": lock, "sequences": set(sequences), "previous_read_only": previous_read_only,
                "record": record, "lag_before_bytes": status["lag_bytes"]}

    def _refresh_materialized_views(self, src, dst):
        """Logical replication carries no materialized view: fill on the target those the source has filled."""
        with src.cursor() as cur:
            cur.execute("SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE c.relkind = 'm' AND c.relispopulated "
                        "AND n.nspname NOT IN %(excluded)s", {"excluded": self._excluded()})
            populated = [row[0] for row in cur.fetchall()]
        refreshed = []
        with dst.cursor() as cur:
            for qualname in populated:
                cur.execute(f"REFRESH MATERIALIZED VIEW {qualname}")
                refreshed.append(qualname)
        if refreshed:
            self.state.update(materialized_views_refreshed=refreshed)

    def _freeze_and_switch(self, src, dst, lock_conn, prepared, switch):
        timings = {}
        with lock_conn.cursor() as cur:
            requested, requested_at = self._lock_published_tables(lock_conn, cur, prepared["lock"])
            locked = time.monotonic()
            timings["lock_seconds"] = locked - requested
            cur.execute("SELECT pg_current_wal_lsn(), pg_backend_pid()")
            freeze_lsn, lock_pid = cur.fetchone()
            # Every write committed before the lock is at or before freeze_lsn; none can follow it.
            if not self._wait_for_catch_up(src, freeze_lsn):
                lock_conn.rollback()
                raise FreezeAbandoned(f"the target did not catch up with {freeze_lsn} within "
                                      f"{self.freeze_catchup_seconds} s")
            caught_up = time.monotonic()
            timings["catch_up_seconds"] = caught_up - locked
            cur.execute("SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences "
                        "WHERE last_value IS NOT NULL")
            values = [(q, v) for q, v in cur.fetchall() if q in prepared["sequences"]]
        try:
            if values:
                with dst.cursor() as cur:
                    cur.execute(sql.SQL("SELECT {}").format(sql.SQL(", ").join(
                        sql.SQL("setval({}::regclass, {}, true)").format(sql.Literal(q), sql.Literal(v))
                        for q, v in values)))
            sequences_done = time.monotonic()
            timings["sequences_seconds"] = sequences_done - caught_up
            self._make_source_read_only(src, prepared)
            terminated = self._end_older_sessions(src, lock_pid, prepared)
            read_only_done = time.monotonic()
            timings["read_only_seconds"] = read_only_done - sequences_done
            if self.switch_file:
                self.write_switch_file()
            # The point of no return: from here on nothing may make the old source writable again.
            self.state.update(switched=True, switched_at=_now())
        except Exception as error:
            # Before the switch: undo the read-only setting, release the lock, the source is as it was.
            self._undo_read_only(src, prepared, lock_pid)
            lock_conn.rollback()
            raise FreezeAbandoned(self.secrets.mask(f"the cutover failed before the switch: {error}")) from None
        try:
            lock_conn.commit()
        except psycopg2.Error:
            pass  # the session is gone, and its locks with it: released either way
        released = time.monotonic()
        timings["switch_seconds"] = released - read_only_done
        return {"freeze_window_seconds": round(released - requested, 3), "freeze_lsn": freeze_lsn,
                "freeze_started_at": requested_at, "released_at": _now(),
                "released_epoch": time.time(), "sequences_synced": len(values),
                "sessions_terminated": terminated, "switch": switch,
                **{k: round(v, 3) for k, v in timings.items()}}

    def _lock_published_tables(self, lock_conn, cur, lock, nowait_seconds=1.0):
        """Lock every published table IN EXCLUSIVE MODE; returns when the successful attempt began.

        First NOWAIT, again and again for a moment: a LOCK that waits while it holds the tables locked before
        can deadlock with a writer, and the deadlock is only found after deadlock_timeout (1 s). A NOWAIT that
        fails holds the writers back for microseconds. A source never quiet that long gets one waiting attempt,
        bounded by the freeze's lock timeout."""
        nowait_until = time.monotonic() + nowait_seconds
        while time.monotonic() < nowait_until:
            requested, requested_at = time.monotonic(), _now()
            try:
                cur.execute(lock + sql.SQL(" NOWAIT"))
                return requested, requested_at
            except pg_errors.LockNotAvailable:
                lock_conn.rollback()
                time.sleep(0.002)
        requested, requested_at = time.monotonic(), _now()
        try:
            cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(self.freeze_lock_timeout)))
            cur.execute(lock)
            return requested, requested_at
        except (pg_errors.LockNotAvailable, pg_errors.DeadlockDetected) as error:
            lock_conn.rollback()
            raise FreezeAbandoned(f"the tables could not be locked within {self.freeze_lock_timeout} "
                                  f"({str(error).strip().splitlines()[0]}): a long transaction holds them",
                                  retry=True) from None

    def _wait_for_catch_up(self, src, freeze_lsn):
        deadline = time.monotonic() + self.freeze_catchup_seconds
        with src.cursor() as cur:
            while True:
                cur.execute("SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots "
                            "WHERE slot_name = %s", (freeze_lsn, self.name))
                row = cur.fetchone()
                if row and row[0]:
                    return True
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.005)

    def _make_source_read_only(self, src, prepared):
        """New sessions on the old source are read-only from now on: no write can land there any more."""
        record = {**prepared["record"], "read_only_set": True, "previous_read_only": prepared["previous_read_only"]}
        with src.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(
                sql.Identifier(self.source["dbname"])))
            self._comment_publication(cur, record)
            cur.execute("COMMIT")
        prepared["record"] = record

    def _end_older_sessions(self, src, lock_pid, prepared):
        """Terminate every session that started before the database turned read-only: the writes waiting on
        the freeze fail (not acknowledged; the client retries on the new database) instead of committing to
        the old source when the lock is released. Later sessions are read-only."""
        terminated = set()
        with src.cursor() as cur:
            cur.execute("SELECT clock_timestamp()")
            read_only_at = prepared["read_only_at"] = cur.fetchone()[0]
            for _ in range(50):
                cur.execute("SELECT pid, pg_terminate_backend(pid, 1000) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND backend_type = 'client backend' "
                            "AND pid NOT IN (pg_backend_pid(), %s) AND backend_start <= %s",
                            (lock_pid, read_only_at))
                rows = cur.fetchall()
                if not rows:
                    break
                terminated.update(pid for pid, _ in rows)
            else:
                raise LogicalError("sessions on the source could not be terminated")
        return len(terminated)

    def _undo_read_only(self, src, prepared, lock_pid):
        """The source writable again; sessions opened while it was read-only reconnect to get it."""
        with src.cursor() as cur:
            cur.execute("ROLLBACK")  # a statement of the failed step may have left the session's transaction
            record = prepared["record"]
            if not record.get("read_only_set"):
                return
            cur.execute("BEGIN")
            self._restore_read_only_setting(cur, record.get("previous_read_only"))
            self._comment_publication(cur, {**record, "read_only_set": False})
            cur.execute("COMMIT")
            prepared["record"] = {**record, "read_only_set": False}
            if prepared.get("read_only_at"):
                cur.execute("SELECT pg_terminate_backend(pid, 1000) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND backend_type = 'client backend' "
                            "AND pid NOT IN (pg_backend_pid(), %s) AND backend_start >= %s",
                            (lock_pid, prepared["read_only_at"]))

    def _restore_read_only_setting(self, cur, previous):
        database = sql.Identifier(self.source["dbname"])
        if previous is None:
            cur.execute(sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(database))
        else:
            cur.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = {}").format(
                database, sql.Literal(previous)))

    def switch_description(self):
        """Where the application goes: the target's connection without its password."""
        return {k: v for k, v in self.target.items() if k in ("host", "port", "dbname", "user", "sslmode")}

    def write_switch_file(self):
        write_json_atomically(self.switch_file, {**self.switch_description(), "run": self.run_name,
                                                 "switched_at": _now()}, mode=0o644)

    # -- 5. finish and abort -------------------------------------------------------------------------

    def finish(self):
        """After the switch: replication objects dropped, replica identities reverted, report written."""
        if not self.state.data.get("switched"):
            raise LogicalError("the switch has not happened: finish runs after the cutover (to stop before the "
                               "switch use -e zero_downtime_abort=true)")
        cleanup = self._drop_replication(revert_read_only=False)
        freeze = dict(self.state.data.get("freeze", {}))
        if freeze.get("switch") == "external" and "switched_after_seconds" not in freeze:
            # The application hosts' play switched after the freeze: writes failed until it ended.
            freeze["switched_after_seconds"] = round(time.time() - freeze["released_epoch"], 3)
            freeze["freeze_window_seconds"] = round(freeze["freeze_window_seconds"]
                                                    + freeze["switched_after_seconds"], 3)
            self.state.update(freeze=freeze)
        report = {
            "run": self.run_name, "status": "switched", "source": describe(self.source),
            "target": describe(self.target), "tables": len(self.state.data.get("tables", {})),
            "table_names": sorted(self.state.data.get("tables", {})),
            "schema_seconds": self.state.data.get("schema_seconds"),
            "initial_sync_seconds": self.state.data.get("initial_sync_seconds"),
            "max_lag_bytes": self.state.data.get("max_lag_bytes", 0),
            "freeze_window_seconds": freeze.get("freeze_window_seconds"),
            "freeze": freeze, "sequences_synced": freeze.get("sequences_synced"),
            "materialized_views_refreshed": self.state.data.get("materialized_views_refreshed", []),
            "switched_to": self.switch_description(), "switch_file": self.switch_file,
            "cleanup": cleanup, "finished_at": _now(),
            "source_left": "read-only for new sessions (default_transaction_read_only = on); "
                           f"ALTER DATABASE {self.source['dbname']} RESET default_transaction_read_only to reuse it",
        }
        report_file = os.path.join(self.state.directory, "report.json")
        write_json_atomically(report_file, report, mode=0o600)
        self.state.update(finished=True, report_file=report_file)
        report["report_file"] = report_file
        return report

    def abort(self):
        """Stop before the switch: the source as it was, the replication objects gone. Idempotent."""
        if self.state.data.get("switched") and not self.state.data.get("finished"):
            raise LogicalError("the switch was made: the application writes to the target now, so going back "
                               "would lose writes. Run the playbook again without zero_downtime_abort to finish")
        cleanup = self._drop_replication(revert_read_only=True)
        if not self.state.data.get("switched"):
            self.state.update(aborted_at=_now(), cleanup=cleanup)
        return cleanup

    def _drop_replication(self, revert_read_only):
        """Subscription (its slot detached first, so this works even when the target cannot reach the
        source), every slot of the run, the publication, the replica identity changes."""
        done = []
        subscription_oid = self.state.data.get("subscription_oid")
        if self.check_mode:
            return ["nothing (check mode)"]
        dst = self._connect("target")
        try:
            subscription = self._subscription(dst)
            if subscription:
                subscription_oid = subscription["oid"]
                name = sql.Identifier(self.name)
                with dst.cursor() as cur:
                    if subscription["enabled"]:
                        cur.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(name))
                    if subscription["slot"]:
                        cur.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(name))
                    cur.execute(sql.SQL("DROP SUBSCRIPTION {}").format(name))
                done.append(f"subscription {self.name} dropped on the target")
        finally:
            dst.close()
        src = self._connect("source")
        try:
            with src.cursor() as cur:
                # The old source is read-only for new sessions after the switch; this session still writes.
                cur.execute("SET default_transaction_read_only = off")
            publication = self._publication(src)
            record = publication["record"] if publication else {}
            subscription_oid = subscription_oid or record.get("subscription_oid")
            for slot in self._drop_slots(src, subscription_oid):
                done.append(f"replication slot {slot} dropped on the source")
            with src.cursor() as cur:
                if revert_read_only and record.get("read_only_set"):
                    self._restore_read_only_setting(cur, record.get("previous_read_only"))
                    done.append("the source database is writable again (default_transaction_read_only restored)")
                cur.execute("SET lock_timeout = '10s'")
                for qualname, identity in sorted(record.get("replica_identity_full", {}).items()):
                    clause = {"d": "DEFAULT", "n": "NOTHING", "f": "FULL"}.get(identity)
                    if clause is None:
                        continue  # USING INDEX: never changed by the run (such tables have a usable identity)
                    try:
                        cur.execute(f"ALTER TABLE {qualname} REPLICA IDENTITY {clause}")
                        done.append(f"replica identity of {qualname} back to {clause}")
                    except psycopg2.Error as error:
                        done.append(f"WARNING: replica identity of {qualname} not reverted: "
                                    f"{str(error).strip().splitlines()[0]}")
                if publication:
                    cur.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(self.name)))
                    done.append(f"publication {self.name} dropped on the source")
        finally:
            src.close()
        return done or ["nothing to clean up: no publication, slot or subscription of this run"]

    def _drop_slots(self, src, subscription_oid):
        dropped = []
        deadline = time.monotonic() + 30
        while True:
            slots = self._slots(src, subscription_oid)
            if not slots:
                return dropped
            with src.cursor() as cur:
                for slot in slots:
                    if slot["active"]:
                        # The WAL sender of a subscription that is going away: it holds the slot a moment longer.
                        cur.execute("SELECT pg_terminate_backend(%s, 1000)", (slot["pid"],))
                        continue
                    try:
                        cur.execute("SELECT pg_drop_replication_slot(%s)", (slot["name"],))
                        dropped.append(slot["name"])
                    except (pg_errors.ObjectInUse, pg_errors.UndefinedObject):
                        pass
            if time.monotonic() > deadline:
                raise LogicalError("replication slots still in use on the source: "
                                   + ", ".join(s["name"] for s in self._slots(src, subscription_oid)))
            time.sleep(0.2)


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
