"""Schema transfer with pg_dump and pg_restore.

The source's schema is dumped once (custom format, from the run's snapshot). Its pre-data part
(types, tables, functions, views, ...) is restored before the data in one transaction (on databases of
many tables, in steps: pre_data.py). Its
post-data part is split into its entries: indexes and primary/unique keys are built per table as
soon as the table's data is in, everything else follows in the dump's order, foreign keys last.
"""

import re
import subprocess

from ..common import extension_substitutes
from ..common.client_tools import ToolError, find_tool  # noqa: F401 - the engine's names for them
from ..common.connection import libpq_environment

HEADER = re.compile(
    r"^--\n-- Name: (?P<name>.*?); Type: (?P<type>[A-Z ]+); Schema: (?P<schema>.*?)(?:; Owner: (?P<owner>.*?))?"
    r"(?:; Tablespace: .*?)?\n--\n",
    re.MULTILINE,
)
TABLE_LEVEL_TYPES = ("INDEX", "CONSTRAINT")
FOREIGN_KEY_TYPE = "FK CONSTRAINT"
# The entry that switches a table's row-level security on (ALTER TABLE ... ENABLE ROW LEVEL SECURITY).
ROW_SECURITY_TYPE = "ROW SECURITY"
EVENT_TRIGGER_TYPE = "EVENT TRIGGER"
ALTER_TABLE = re.compile(r"^ALTER TABLE (?:ONLY )?(?P<table>.+?)\n", re.MULTILINE)


def run_tool(args, params, what, stdin=None, timeout=None):
    """Run a libpq client with the password in its environment; raise ToolError on failure."""
    result = subprocess.run(args, env=libpq_environment(params, "pgmigrate"), input=stdin,
                            capture_output=True, timeout=timeout, check=False)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip()
        raise ToolError(f"{what} failed: {message[-2000:]}")
    return result.stdout


def dump_schema(source, path, snapshot=None, schemas=(), exclude_schemas=()):
    args = [find_tool("pg_dump"), "--schema-only", "--format=custom", "--encoding=UTF8", "--file", path]
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


EXTENSION_STATEMENT = re.compile(r"^CREATE EXTENSION IF NOT EXISTS (?P<name>\S+)(?P<rest> WITH SCHEMA [^\n]+?);$",
                                 re.MULTILINE)


def pin_extension_versions(script, versions):
    """pg_dump never writes an extension's version: add the source's ({name: version}) to the
    CREATE EXTENSION statements of a pre-data script, so what the restore creates is at that version."""
    def pin(match):
        version = versions.get(match["name"].strip('"').replace('""', '"'))
        if version is None:
            return match.group(0)
        literal = "'" + version.replace("'", "''") + "'"
        return f"CREATE EXTENSION IF NOT EXISTS {match['name']}{match['rest']} VERSION {literal};"
    return EXTENSION_STATEMENT.sub(pin, script)


SCHEMA_TOC_ENTRY = re.compile(r"^\d+; \d+ \d+ SCHEMA - (?P<name>\S+) ")


def toc_lines(target, dump_path, existing_schemas=(), left_out_extensions=()):
    """The dump's table of contents (pg_restore --list), a line each, without the CREATE SCHEMA entries of
    schemas the target already has: a dump limited with --schema public holds CREATE SCHEMA public, which
    every database already has; and without the CREATE EXTENSION and COMMENT ON EXTENSION entries of the
    extensions left out (the target server cannot provide them: extension_substitutes)."""
    listing = run_tool([find_tool("pg_restore"), "--list", dump_path], target, "listing the schema dump").decode()
    return _without_schemas(listing.splitlines(), existing_schemas, left_out_extensions)


def _without_schemas(lines, existing_schemas, left_out_extensions=()):
    return [line for line in lines
            if not ((match := SCHEMA_TOC_ENTRY.match(line)) and match["name"] in existing_schemas)
            and not (left_out_extensions and extension_substitutes.left_out_toc_line(line, left_out_extensions))]


def with_substitutes(script, substitutes_sql):
    """A pre-data script with the substitutes of the extensions left out (CREATE FUNCTION ...) written before
    its first entry that is not a schema (or a schema's comment): where pg_dump puts extensions, after the
    schemas they live in and before everything that may use them."""
    if not substitutes_sql:
        return script
    block = "\n--\n-- pgmigrate: in place of extensions the target server cannot provide\n--\n\n" \
        + substitutes_sql + "\n\n"
    for match in HEADER.finditer(script):
        if match["type"] == "SCHEMA" or (match["type"] in ("COMMENT", "ACL") and match["name"].startswith("SCHEMA ")):
            continue
        return script[:match.start()] + block + script[match.start():]
    return script + block


def run_sql_script(target, script, what):
    """A script (pg_restore --file output) through psql in one transaction, stopping at the first error."""
    run_tool([find_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction",
              "--dbname", target["dbname"], "--file", "-"], target, what, stdin=script.encode())


def toc_without_schemas(target, dump_path, existing_schemas, left_out_extensions=()):
    """toc_lines written beside the dump, for --use-list; None when nothing is left out."""
    listing = toc_lines(target, dump_path)
    kept = _without_schemas(listing, existing_schemas, left_out_extensions)
    if len(kept) == len(listing):
        return None
    path = dump_path + ".pre-data.list"
    with open(path, "w") as handle:
        handle.write("\n".join(kept) + "\n")
    return path


def restore_pre_data(target, dump_path, no_owner=True, no_privileges=True, extension_versions=None,
                     existing_schemas=(), left_out_extensions=(), substitutes_sql=""):
    """Restore the pre-data section in one transaction: all of it or nothing.

    extension_versions ({name: version}): extensions the restore itself creates (their schema did not
    exist before it) at the source's version instead of the target's default: the script then goes
    through psql with those versions written into it. existing_schemas: schemas the target has already,
    whose CREATE SCHEMA is left out. left_out_extensions: extensions whose CREATE EXTENSION and COMMENT ON
    EXTENSION are left out, substitutes_sql (their substitutes, CREATE FUNCTION ...) written in their place
    (with_substitutes)."""
    toc = toc_without_schemas(target, dump_path, set(existing_schemas), left_out_extensions) \
        if existing_schemas or left_out_extensions else None
    selection = ["--use-list", toc] if toc else []
    if not extension_versions and not substitutes_sql:
        args = [find_tool("pg_restore"), "--section=pre-data", "--single-transaction", "--exit-on-error",
                "--dbname", target["dbname"]] + restore_args(no_owner, no_privileges) + selection + [dump_path]
        run_tool(args, target, "restoring the source's schema (pre-data) into the target")
        return
    args = [find_tool("pg_restore"), "--section=pre-data", "--file", "-"] + restore_args(
        no_owner, no_privileges) + selection + [dump_path]
    script = run_tool(args, target, "reading the pre-data section of the schema dump").decode()
    run_sql_script(target, with_substitutes(pin_extension_versions(script, extension_versions or {}), substitutes_sql),
                   "restoring the source's schema (pre-data) into the target")


def post_data_sql(dump_path, target, no_owner=True, no_privileges=True):
    args = [find_tool("pg_restore"), "--section=post-data", "--file", "-"] + restore_args(
        no_owner, no_privileges) + [dump_path]
    return run_tool(args, target, "reading the post-data section of the schema dump").decode()


KEY_CONSTRAINT = re.compile(
    r"^ALTER TABLE ONLY (?P<table>[^\n]+)\n\s+ADD CONSTRAINT (?P<name>.+?) (?P<type>PRIMARY KEY|UNIQUE) [^;]*;$")


def build_keys_index_first(entries, key_indexes):
    """Primary and unique keys as an index build plus a quick attach (USING INDEX), as pgcopydb does.

    ALTER TABLE ... ADD CONSTRAINT ... PRIMARY KEY builds its index under an ACCESS EXCLUSIVE lock, so
    the table's other index builds wait for it. CREATE UNIQUE INDEX takes a SHARE lock and runs beside
    them; the constraint is then attached to the finished index in a moment. Each converted entry gets
    "sql" (the index build) and "attach_sql"; entries that do not match exactly are left as they are.
    key_indexes: the catalog's "key_indexes".
    """
    by_key = {(k["table"], k["quoted_name"]): k for k in key_indexes}
    for entry in entries:
        if entry["type"] != "CONSTRAINT":
            continue
        match = KEY_CONSTRAINT.match(entry["sql"])
        key = by_key.get((match["table"], match["name"])) if match else None
        if not key or key["type"] != match["type"] or "NULLS NOT DISTINCT" in key["index_definition"]:
            continue
        attach = (f"ALTER TABLE ONLY {key['table']} ADD CONSTRAINT {key['quoted_name']} {key['type']} "
                  f"USING INDEX {key['quoted_name']}")
        if key["deferrable"]:
            attach += " DEFERRABLE INITIALLY DEFERRED" if key["deferred"] else " DEFERRABLE"
        entry["sql"] = key["index_definition"] + ";"
        entry["attach_sql"] = attach + ";"
        entry["constraint_name"] = key["name"]
    return entries


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
