"""Schema transfer with pg_dump and pg_restore.

The source's schema is dumped once (custom format, from the run's snapshot). Its pre-data part
(types, tables, functions, views, ...) is restored before the data in one transaction. Its
post-data part is split into its entries: indexes and primary/unique keys are built per table as
soon as the table's data is in, everything else follows in the dump's order, foreign keys last.
"""

import os
import re
import shutil
import subprocess

from .connection import libpq_environment

HEADER = re.compile(
    r"^--\n-- Name: (?P<name>.*?); Type: (?P<type>[A-Z ]+); Schema: (?P<schema>.*?)(?:; Owner: (?P<owner>.*?))?"
    r"(?:; Tablespace: .*?)?\n--\n",
    re.MULTILINE,
)
TABLE_LEVEL_TYPES = ("INDEX", "CONSTRAINT")
FOREIGN_KEY_TYPE = "FK CONSTRAINT"
ALTER_TABLE = re.compile(r"^ALTER TABLE (?:ONLY )?(?P<table>.+?)\n", re.MULTILINE)


class ToolError(Exception):
    pass


def find_tool(name, server_version_num=None):
    """Locate pg_dump/pg_restore/psql; prefer the newest installed major version."""
    candidates = []
    root = "/usr/lib/postgresql"
    if os.path.isdir(root):
        for version in sorted(os.listdir(root), key=lambda v: float(v) if v.replace(".", "").isdigit() else 0,
                              reverse=True):
            path = os.path.join(root, version, "bin", name)
            if os.access(path, os.X_OK):
                candidates.append(path)
    found = shutil.which(name)
    if found:
        candidates.append(found)
    if not candidates:
        raise ToolError(f"{name} is not installed: install the PostgreSQL client (postgresql-client-15 or newer)")
    return candidates[0]


def run_tool(args, params, what, stdin=None, timeout=None):
    """Run a libpq client with the password in its environment; raise ToolError on failure."""
    result = subprocess.run(args, env=libpq_environment(params, "pgmigrate"), input=stdin,
                            capture_output=True, timeout=timeout, check=False)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip()
        raise ToolError(f"{what} failed: {message[-2000:]}")
    return result.stdout


def dump_schema(source, path, snapshot=None, schemas=(), exclude_schemas=()):
    args = [find_tool("pg_dump"), "--schema-only", "--format=custom", "--file", path]
    if snapshot:
        args += ["--snapshot", snapshot]
    for schema in schemas:
        args += ["--schema", schema]
    for schema in exclude_schemas:
        args += ["--exclude-schema", schema]
    run_tool(args, source, "pg_dump --schema-only of the source")


def restore_args(no_owner=True, no_privileges=True):
    args = []
    if no_owner:
        args.append("--no-owner")
    if no_privileges:
        args.append("--no-privileges")
    return args


def restore_pre_data(target, dump_path, no_owner=True, no_privileges=True):
    """Restore the pre-data section in one transaction: all of it or nothing."""
    args = [find_tool("pg_restore"), "--section=pre-data", "--single-transaction", "--exit-on-error",
            "--dbname", target["dbname"]] + restore_args(no_owner, no_privileges) + [dump_path]
    run_tool(args, target, "restoring the source's schema (pre-data) into the target")


def post_data_sql(dump_path, target, no_owner=True, no_privileges=True):
    args = [find_tool("pg_restore"), "--section=post-data", "--file", "-"] + restore_args(
        no_owner, no_privileges) + [dump_path]
    return run_tool(args, target, "reading the post-data section of the schema dump").decode()


def split_post_data(text, index_tables):
    """Split pg_restore's post-data script into entries.

    index_tables: {(schema, index name): table qualname} from the source catalog.
    Returns a list of {"key", "type", "schema", "name", "table", "sql"} in the dump's order.
    """
    preamble_end = None
    matches = list(HEADER.finditer(text))
    entries = []
    for i, match in enumerate(matches):
        if preamble_end is None:
            preamble_end = match.start()
        body_end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end():body_end].split("\n--\n-- PostgreSQL database dump complete")[0]
        # psql meta-commands (\\restrict and the like) are for psql, not for the server.
        body = "\n".join(line for line in body.splitlines() if not line.startswith("\\")).strip()
        if not body:
            continue
        kind, schema, name = match["type"], match["schema"], match["name"]
        table = None
        if kind == "INDEX":
            table = index_tables.get((schema, name))
        elif kind in ("CONSTRAINT", FOREIGN_KEY_TYPE):
            alter = ALTER_TABLE.search(body)
            table = alter["table"].strip() if alter else None
        entries.append({"key": f"{kind}:{schema}:{name}", "type": kind, "schema": schema, "name": name,
                        "table": table, "sql": body})
    preamble = text[:preamble_end] if preamble_end is not None else ""
    settings = [line for line in preamble.splitlines() if line.startswith(("SET ", "SELECT pg_catalog.set_config"))]
    return entries, "\n".join(settings)
