"""NOT VALID check constraints, added on the target once the initial sync is over.

A NOT VALID CHECK exempts the rows that were there when it was added, and only those: the subscription's
initial copy inserts them again, the target would check them, and a row the source exempts would fail the
table's sync again and again. So the schema is restored without these constraints, and they are added,
NOT VALID as on the source, once every table is synced; the source enforces them on every new row, so
what replication brings afterwards passes them. (A NOT VALID foreign key needs no such care: the
subscription's workers do not fire foreign-key triggers.)
"""

import re

import psycopg2
from psycopg2 import sql

from ..clone.schema import find_tool, run_tool
from .errors import LogicalError

NOT_VALID_CHECKS = "SELECT oid FROM pg_constraint WHERE contype = 'c' AND NOT convalidated"
TOC_ENTRY = re.compile(r"^\d+; \d+ (?P<oid>\d+) ")

# The source's NOT VALID checks as ALTER statements: a table's own (an inherited one comes with its parent's),
# a domain's. Read from the catalog when they are added, so a run resumed from another controller adds them too.
NOT_VALID_CHECK_DEFINITIONS = """
SELECT CASE WHEN con.contypid <> 0 THEN 'DOMAIN' ELSE 'TABLE' END,
       CASE WHEN con.contypid <> 0 THEN format('%%I.%%I', tn.nspname, t.typname)
            ELSE format('%%I.%%I', cn.nspname, c.relname) END,
       con.conname, pg_get_constraintdef(con.oid), COALESCE(tn.nspname, cn.nspname)
FROM pg_constraint con
LEFT JOIN pg_class c ON c.oid = con.conrelid LEFT JOIN pg_namespace cn ON cn.oid = c.relnamespace
LEFT JOIN pg_type t ON t.oid = con.contypid LEFT JOIN pg_namespace tn ON tn.oid = t.typnamespace
WHERE con.contype = 'c' AND NOT con.convalidated AND con.conislocal
  AND COALESCE(tn.nspname, cn.nspname) NOT IN %(excluded)s
ORDER BY 1 DESC, 2, 3
"""


class DeferredChecks:
    def __init__(self, context):
        self.context = context  # context.ZeroDowntimeContext

    def split_listing(self, dump_path):
        """The dump's restore list without the source's NOT VALID checks (written beside the dump, for
        pg_restore -L), or None when it has none."""
        src = self.context.connect("source")
        try:
            with src.cursor() as cur:
                cur.execute(NOT_VALID_CHECKS)
                deferred = {str(row[0]) for row in cur.fetchall()}
        finally:
            src.close()
        listing = run_tool([find_tool("pg_restore"), "--list", dump_path], self.context.target,
                           "listing the schema dump").decode().splitlines()
        later = [line for line in listing if (m := TOC_ENTRY.match(line)) and m["oid"] in deferred]
        if not later:
            return None
        path = dump_path + ".now.list"
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(line for line in listing if line not in later) + "\n")
        return path

    def add(self):
        """Add, NOT VALID, the source's NOT VALID checks the target lacks, once (the run's state records it).
        Returns how many were added now."""
        state = self.context.state
        if state.data.get("deferred_checks_added"):
            return 0
        missing = self._missing()
        if missing:
            dst = self.context.connect("target", autocommit=False)
            try:
                with dst.cursor() as cur:
                    for kind, owner, name, definition in missing:
                        cur.execute(sql.SQL("ALTER {} {} ADD CONSTRAINT {} ").format(
                            sql.SQL(kind), sql.SQL(owner), sql.Identifier(name)) + sql.SQL(definition))
                dst.commit()
            except psycopg2.Error as error:
                raise LogicalError(f"adding the source's NOT VALID check constraints on the target failed: "
                                   f"{str(error).strip()}") from None
            finally:
                dst.close()
        state.update(deferred_checks_added=True, deferred_checks=len(missing))
        return len(missing)

    def _missing(self):
        """The source's NOT VALID checks (kind, owner, name, definition) that the target does not have."""
        found = {}
        for which in ("source", "target"):
            conn = self.context.connect(which)
            try:
                with conn.cursor() as cur:
                    cur.execute(NOT_VALID_CHECK_DEFINITIONS if which == "source" else
                                NOT_VALID_CHECK_DEFINITIONS.replace("AND NOT con.convalidated ", ""),
                                {"excluded": self.context.excluded()})
                    found[which] = cur.fetchall()
            finally:
                conn.close()
        included = self.context.include_schemas
        on_target = {(kind, owner, name) for kind, owner, name, _definition, _schema in found["target"]}
        return [(kind, owner, name, definition) for kind, owner, name, definition, schema in found["source"]
                if (kind, owner, name) not in on_target and (not included or schema in included)]
