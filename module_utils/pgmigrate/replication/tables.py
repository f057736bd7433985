"""The tables a run replicates, and what exists of its publication, slots and subscription."""

import json

from .names import TOOL_MARK

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


class ReplicatedTables:
    """A step of logical.ZeroDowntimeRun: the run's context (connections, names, state) is the run's."""

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
