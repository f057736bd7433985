"""The tables a run replicates: what the publication lists and the checks look at."""

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
    """The user tables of the run's schemas (the source's; the target's before an overwrite), read through
    the caller's session, and which of them the publication lists or the run sets REPLICA IDENTITY FULL on."""

    def __init__(self, context):
        self.context = context

    def read_tables(self, conn):
        """Every user table of the included schemas, with what the publication and the checks need."""
        with conn.cursor() as cur:
            cur.execute(TABLES_QUERY, {"excluded": self.context.excluded()})
            rows = cur.fetchall()
        tables = []
        for (oid, schema, name, qualname, relkind, is_partition, persistence, replident, has_pk,
             has_identity_index, total_bytes) in rows:
            if self.context.include_schemas and schema not in self.context.include_schemas:
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
        found, unknown = self._match_tables(tables, self.context.replica_identity_full)
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

    def attach_roots(self, conn, tables):
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
