"""The pre-data restore in steps, several at once, for databases of many tables.

Creating a table costs its files (heap, TOAST table and index) more than its statement: about 1.5 ms of
kernel time a table, most of a 3,000-table restore, and one session uses one core. pg_restore restores
pre-data in one session even with --jobs. Here, when the dump has PARALLEL_MIN_TABLES tables or more:

1. first: every entry before the dump's first table or sequence (schemas, extensions, types, functions...);
2. sequences, then tables, each wave in `groups` transactions at once: the plain tables (no inheritance,
   no partition, no type of a table's row) and the sequences that belong to no identity column. They depend
   on nothing the waves create but sequences (a default calling nextval() is part of CREATE TABLE);
3. last: everything else, in the dump's order (defaults, OWNED BY, comments, views, identity columns...).

The dump's order puts what an entry needs before it, so this keeps every dependency, provided nothing but
the entries step 3 may take (DEFERRABLE_TYPES, identity sequences, tables left out of the waves) lies
among the tables; otherwise the restore stays one transaction (plan() returns None).

Each step is one transaction through psql, which records the step done (the run's state) in the same
transaction: an interrupted restore resumes at its first unfinished step. The plan is written beside the
dump, so that a rerun, whatever its settings, finishes the same steps.
"""

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor

from psycopg2 import sql

from . import state
from .schema import find_tool, pin_extension_versions, restore_args, run_sql_script, run_tool, with_substitutes

PARALLEL_MIN_TABLES = 200
# Sessions creating files at once: beyond a few, they wait on the same filesystem.
MAX_GROUPS = 4
# Entries that only alter or describe an object the waves create, or that no table of the waves can need.
DEFERRABLE_TYPES = ("DEFAULT", "SEQUENCE OWNED BY", "COMMENT", "SECURITY LABEL", "ACL", "VIEW",
                    "MATERIALIZED VIEW", "TABLE", "SEQUENCE", "TABLE ATTACH")
TOC_ENTRY = re.compile(r"^\d+; \d+ (?P<oid>\d+) (?P<rest>.+)$")
STEP_PREFIX = "schema:pre-data:"

# The relations that may be created in the waves: plain tables and sequences of no identity column.
WAVE_RELATIONS = """
SELECT c.oid, c.relkind FROM pg_class c
WHERE (c.relkind = 'S' AND NOT EXISTS (
           SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'i'))
   OR (c.relkind = 'r' AND NOT c.relispartition AND c.reloftype = 0
       AND NOT EXISTS (SELECT FROM pg_inherits i WHERE i.inhrelid = c.oid OR i.inhparent = c.oid)
       AND NOT EXISTS (
           SELECT FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
           LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
           LEFT JOIN pg_type b ON b.oid = t.typbasetype
           WHERE a.attrelid = c.oid AND a.attnum > 0
             AND (t.typtype = 'c' OR e.typtype = 'c' OR b.typtype = 'c' OR t.typtype = 'd' AND b.typtype = 'd'))
       AND NOT EXISTS (  -- a default calling nextval() of another table's identity column
           SELECT FROM pg_attrdef ad
           JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                           AND d.refclassid = 'pg_class'::regclass
           JOIN pg_depend i ON i.classid = 'pg_class'::regclass AND i.objid = d.refobjid AND i.deptype = 'i'
           WHERE ad.adrelid = c.oid))
"""


def entry_type(rest):
    """The type of a `pg_restore --list` entry, from what follows its oids ("TABLE public t owner")."""
    for kind in sorted(DEFERRABLE_TYPES + ("SCHEMA", "EXTENSION", "TYPE", "DOMAIN", "FUNCTION"), key=len,
                       reverse=True):
        if rest.startswith(kind + " "):
            return kind
    return rest.split(" ", 1)[0]


def plan(listing, wave_relations, groups, min_tables=None):
    """The steps of the pre-data restore ({"first", "sequences", "tables", "last"}: lists of TOC lines; the
    waves as `groups` lists each), or None when it is to stay one transaction: fewer than min_tables
    tables, or an entry among the tables that a table of the waves might need.

    listing: `pg_restore --list --section=pre-data` lines; wave_relations: {oid: relkind} (WAVE_RELATIONS)."""
    entries = []
    for line in listing:
        match = TOC_ENTRY.match(line)
        if match:
            entries.append((line, entry_type(match["rest"]), int(match["oid"])))
    waves = {"S": [], "r": []}
    first, last, blocking = [], [], None
    for line, kind, oid in entries:
        relkind = wave_relations.get(oid) if kind in ("TABLE", "SEQUENCE") else None
        if relkind:
            if blocking:
                return None  # a function, type... among the tables: the waves might need it
            waves[relkind].append(line)
        elif not waves["S"] and not waves["r"]:
            first.append(line)
        else:
            last.append(line)
            blocking = blocking or kind not in DEFERRABLE_TYPES
    if groups < 2 or len(waves["r"]) < (PARALLEL_MIN_TABLES if min_tables is None else min_tables):
        return None
    return {"first": first, "sequences": _deal(waves["S"], groups), "tables": _deal(waves["r"], groups),
            "last": last}


def _deal(lines, groups):
    """lines in `groups` lists of about equal length, each in the dump's order."""
    return [lines[i::groups] for i in range(groups) if lines[i::groups]]


def steps(restore_plan):
    """[(wave, [(step name, TOC lines)])] in the order they run; the steps of a wave run at once."""
    return [[("first", restore_plan["first"])]] + [
        [(f"{wave}-{i + 1}", lines) for i, lines in enumerate(restore_plan[wave])]
        for wave in ("sequences", "tables")] + [[("last", restore_plan["last"])]]


def load_or_make(path, make):
    """The plan saved at path, or make()'s (None included: one transaction), saved there first."""
    if os.path.exists(path):
        with open(path) as handle:
            return json.load(handle)["plan"]
    made = make()
    with open(path + ".tmp", "w") as handle:
        json.dump({"plan": made}, handle)
    os.replace(path + ".tmp", path)
    return made


class StepRestore:
    """Runs the plan's steps not yet done, each one transaction recording itself done."""

    def __init__(self, target, dump_path, run_id, no_owner=True, no_privileges=True, extension_versions=None,
                 quote=None, substitutes_sql=""):
        self.target, self.dump_path, self.run_id = target, dump_path, run_id
        # The substitutes of the extensions left out (the plan's TOC lines lack them), created in step "first".
        self.substitutes_sql = substitutes_sql
        self.options = restore_args(no_owner, no_privileges)
        self.extension_versions = extension_versions or {}
        self.quote = quote  # sql.Composable -> str, from a connection (the state's values)

    def run(self, restore_plan, done):
        for wave in steps(restore_plan):
            todo = [(name, lines) for name, lines in wave if STEP_PREFIX + name not in done and lines]
            if not todo:
                continue
            with ThreadPoolExecutor(len(todo)) as pool:
                for future in [pool.submit(self._step, name, lines) for name, lines in todo]:
                    future.result()

    def _step(self, name, lines):
        listing = f"{self.dump_path}.{name}.list"
        with open(listing, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        script = run_tool([find_tool("pg_restore"), "--section=pre-data", "--file", "-", "--use-list", listing]
                          + self.options + [self.dump_path], self.target,
                          f"reading the pre-data step {name} of the schema dump").decode()
        if name == "first":
            script = with_substitutes(pin_extension_versions(script, self.extension_versions), self.substitutes_sql)
        script += "\n" + self.quote(sql.SQL("INSERT INTO {}.done (run_id, step) VALUES ({}, {});\n").format(
            sql.Identifier(state.STATE_SCHEMA), sql.Literal(self.run_id), sql.Literal(STEP_PREFIX + name)))
        run_sql_script(self.target, script, f"restoring the source's schema (pre-data, step {name}) into the target")
