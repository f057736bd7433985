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

from ..clone.schema import find_tool, restore_args, run_tool
from .errors import LogicalError

NOT_VALID_CHECKS = "SELECT oid FROM pg_constraint WHERE contype = 'c' AND NOT convalidated"
TOC_ENTRY = re.compile(r"^\d+; \d+ (?P<oid>\d+) ")


class DeferredChecks:
    def __init__(self, context):
        self.context = context  # context.ZeroDowntimeContext

    def split_listing(self, dump_path):
        """The dump's restore list without the source's NOT VALID checks (written beside the dump, for
        pg_restore -L), or None when it has none; their SQL is kept in the run's state for add()."""
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
            self.context.state.update(deferred_checks_sql=None)
            return None
        paths = {"now": dump_path + ".now.list", "later": dump_path + ".later.list"}
        with open(paths["now"], "w", encoding="utf-8") as handle:
            handle.write("\n".join(line for line in listing if line not in later) + "\n")
        with open(paths["later"], "w", encoding="utf-8") as handle:
            handle.write("\n".join(later) + "\n")
        script = run_tool([find_tool("pg_restore"), "--file", "-", "--use-list", paths["later"]]
                          + restore_args(self.context.no_owner, self.context.no_privileges) + [dump_path],
                          self.context.target, "reading the NOT VALID checks of the schema dump").decode()
        # psql meta-commands (\restrict and the like) are for psql, not for the server.
        statements = "\n".join(line for line in script.splitlines() if not line.startswith("\\"))
        self.context.state.update(deferred_checks_sql=statements, deferred_checks=len(later))
        return paths["now"]

    def add(self):
        """Add the deferred checks, once (the run's state records it). Returns how many were added now."""
        state = self.context.state
        statements = state.data.get("deferred_checks_sql")
        if not statements or state.data.get("deferred_checks_added"):
            return 0
        dst = self.context.connect("target", autocommit=False)
        try:
            with dst.cursor() as cur:
                cur.execute(statements)
            dst.commit()
        except psycopg2.Error as error:
            raise LogicalError(f"adding the source's NOT VALID check constraints on the target failed: "
                               f"{str(error).strip()}") from None
        finally:
            dst.close()
        state.update(deferred_checks_added=True)
        return state.data.get("deferred_checks", 0)
