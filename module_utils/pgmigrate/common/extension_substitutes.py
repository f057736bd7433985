"""Extensions the source uses that the target server cannot provide, done without as the application
profile says (migration_extension_substitutes).

A substitute is a mapping {extension: {function: SQL body}}: for each function of the extension that the
source's objects use, the body of an SQL function the target gets in its place, in the same schema with the
same arguments, result, volatility, parallel safety and strictness as the source's (read from its catalog).
An extension whose functions the schema does not use needs no body ({}): it is only left out (pgcrypto,
whose gen_random_uuid() is built in since PostgreSQL 13).

What the source's objects use is read from its catalog: every object outside the extension that depends on
one of its members (pg_depend: column defaults, views, constraints, indexes, triggers, columns of its types,
functions with SQL-standard bodies), and the functions whose source text calls one of its functions by name
(their bodies record no dependency). A use the substitute does not cover refuses the run, naming it.
The copy then leaves the extension's CREATE EXTENSION and COMMENT ON EXTENSION out of the schema and creates
the substitutes before the schema's objects that need them (clone/schema.py).
"""

import re

from psycopg2 import sql

from .catalog import excluded_schemas

# Members of the extensions that objects outside every extension depend on, and what depends on them.
USES_BY_DEPENDENCY = """
SELECT e.extname, m.classid = 'pg_proc'::regclass, p.proname,
       pg_describe_object(m.classid, m.objid, 0), pg_describe_object(d.classid, d.objid, d.objsubid)
FROM pg_extension e
JOIN pg_depend m ON m.refclassid = 'pg_extension'::regclass AND m.refobjid = e.oid AND m.deptype = 'e'
JOIN pg_depend d ON d.refclassid = m.classid AND d.refobjid = m.objid AND d.deptype IN ('n', 'a')
LEFT JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
WHERE e.extname = ANY(%(names)s)
  AND NOT EXISTS (SELECT FROM pg_depend x WHERE x.classid = d.classid AND x.objid = d.objid AND x.deptype = 'e')
ORDER BY 1, 4, 5
"""

# Functions of the migrated schemas whose source text calls a function of the extensions by name. A name that
# pg_catalog has with the same arguments (pgcrypto's gen_random_uuid) is left out: an unqualified call
# resolves to pg_catalog's, which every server has.
USES_BY_NAME = """
SELECT e.extname, p.proname, pg_describe_object('pg_proc'::regclass, p.oid, 0),
       pg_describe_object('pg_proc'::regclass, u.oid, 0)
FROM pg_extension e
JOIN pg_depend m ON m.refclassid = 'pg_extension'::regclass AND m.refobjid = e.oid AND m.deptype = 'e'
                AND m.classid = 'pg_proc'::regclass
JOIN pg_proc p ON p.oid = m.objid
JOIN pg_proc u ON u.prosrc ~ ('\\m' || p.proname || '\\s*\\(')
JOIN pg_namespace un ON un.oid = u.pronamespace
JOIN pg_language l ON l.oid = u.prolang AND l.lanname NOT IN ('c', 'internal')
WHERE e.extname = ANY(%(names)s) AND p.proname ~ '^[a-z_][a-z0-9_]*$'
  AND un.nspname NOT IN %(excluded)s AND un.nspname NOT LIKE 'pg_temp%%'
  AND NOT EXISTS (SELECT FROM pg_depend x WHERE x.classid = 'pg_proc'::regclass AND x.objid = u.oid
                  AND x.deptype = 'e')
  AND NOT EXISTS (SELECT FROM pg_proc c WHERE c.pronamespace = 'pg_catalog'::regnamespace
                  AND c.proname = p.proname AND c.proargtypes = p.proargtypes)
ORDER BY 1, 3, 4
"""

# What a substitute of a function must be like: the source's function's signature.
FUNCTIONS = """
SELECT e.extname, p.proname, n.nspname, pg_get_function_arguments(p.oid), pg_get_function_identity_arguments(p.oid),
       pg_get_function_result(p.oid), p.provolatile, p.proparallel, p.proisstrict,
       pg_describe_object('pg_proc'::regclass, p.oid, 0)
FROM pg_extension e
JOIN pg_depend m ON m.refclassid = 'pg_extension'::regclass AND m.refobjid = e.oid AND m.deptype = 'e'
                AND m.classid = 'pg_proc'::regclass
JOIN pg_proc p ON p.oid = m.objid JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE e.extname = ANY(%(names)s)
ORDER BY 1, 2, 5
"""

VOLATILITY = {"v": "VOLATILE", "s": "STABLE", "i": "IMMUTABLE"}
PARALLEL = {"s": "PARALLEL SAFE", "r": "PARALLEL RESTRICTED", "u": "PARALLEL UNSAFE"}
USED_BY_SHOWN = 3


def read_uses(source_conn, names, exclude_schemas=()):
    """{extension: {member description: {"function": name or None, "used_by": [descriptions]}}}: the members
    of the extensions (names) that the source's objects use."""
    uses = {name: {} for name in names}
    params = {"names": list(names), "excluded": excluded_schemas(exclude_schemas)}
    with source_conn.cursor() as cur:
        cur.execute(USES_BY_DEPENDENCY, params)
        rows = [(ext, function if is_function else None, member, used_by)
                for ext, is_function, function, member, used_by in cur.fetchall()]
        cur.execute(USES_BY_NAME, params)
        rows += [(ext, function, member, f"{used_by} (its body calls {function}())")
                 for ext, function, member, used_by in cur.fetchall()]
    for ext, function, member, used_by in rows:
        entry = uses[ext].setdefault(member, {"function": function, "used_by": []})
        if used_by not in entry["used_by"]:
            entry["used_by"].append(used_by)
    return uses


def shown(used_by):
    more = len(used_by) - USED_BY_SHOWN
    return ", ".join(used_by[:USED_BY_SHOWN]) + (f" and {more} more" if more > 0 else "")


def plan(source_conn, missing, substitutes, exclude_schemas=()):
    """What the run does about the extensions the target server cannot provide (missing), with the profile's
    substitutes ({extension: {function: SQL body}}):

    {"left_out": the extensions the copy leaves out, "functions": [{"extension", "function" (its description),
     "body", "used_by", "sql" (CREATE FUNCTION and its COMMENT)}], "unsubstituted": missing extensions the
     profile says nothing of, "uncovered": [{"extension", "member", "used_by"}]: members the schema uses that no
     substitute covers}. The run may go on only when the last two are empty."""
    substitutes = substitutes or {}
    unsubstituted = [name for name in missing if name not in substitutes]
    substituted = [name for name in missing if name in substitutes]
    result = {"left_out": substituted, "functions": [], "unsubstituted": unsubstituted, "uncovered": []}
    if not substituted:
        return result
    uses = read_uses(source_conn, substituted, exclude_schemas)
    with source_conn.cursor() as cur:
        cur.execute(FUNCTIONS, {"names": substituted})
        signatures = {(row[0], row[9]): row for row in cur.fetchall()}
    for ext in substituted:
        bodies = substitutes[ext] or {}
        for member, use in sorted(uses[ext].items()):
            if use["function"] is None or use["function"] not in bodies:
                result["uncovered"].append({"extension": ext, "member": member, "used_by": use["used_by"]})
                continue
            body = str(bodies[use["function"]]).strip().rstrip(";")
            statement = function_sql(ext, signatures[(ext, member)], body).as_string(source_conn)
            result["functions"].append({"extension": ext, "function": member, "body": body,
                                        "used_by": use["used_by"], "sql": statement})
    return result


def function_sql(extension, signature, body):
    """CREATE FUNCTION of a substitute (sql.Composed): the source's function's schema, name, arguments, result,
    volatility, parallel safety and strictness, an SQL function of the profile's body; a comment says why."""
    _ext, name, schema, arguments, identity, result, volatile, parallel, strict, _member = signature
    qualified = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))
    tag = "$pgmigrate$"
    while tag in body:
        tag = tag[:-1] + "_$"
    comment = (f"In place of extension {extension}'s function, which the target server cannot provide "
               "(pgmigrate, migration_extension_substitutes).")
    return sql.SQL(
        "CREATE FUNCTION {qualified}({arguments}) RETURNS {result}\n    LANGUAGE sql {volatile} {parallel}{strict}\n"
        "    AS {tag}{body}{tag};\n\nCOMMENT ON FUNCTION {qualified}({identity}) IS {comment};\n").format(
        qualified=qualified, arguments=sql.SQL(arguments), result=sql.SQL(result),
        volatile=sql.SQL(VOLATILITY[volatile]), parallel=sql.SQL(PARALLEL[parallel]),
        strict=sql.SQL(" STRICT" if strict else ""), tag=sql.SQL(tag), body=sql.SQL(body),
        identity=sql.SQL(identity), comment=sql.Literal(comment))


def problem(result):
    """What refuses the run, in words ('' when nothing does): the extensions without a substitute, and the uses
    of a substituted extension that its substitute does not cover."""
    parts = []
    if result["unsubstituted"]:
        parts.append("no substitute (migration_extension_substitutes) for " + ", ".join(result["unsubstituted"]))
    for item in result["uncovered"]:
        parts.append(f"the schema uses {item['member']} of extension {item['extension']}, which its substitute in "
                     f"migration_extension_substitutes does not cover (used by {shown(item['used_by'])})")
    return "; ".join(parts)


def notes(result):
    """How the migrated schema differs from the source's, a line per extension left out."""
    lines = []
    for ext in result["left_out"]:
        functions = [f for f in result["functions"] if f["extension"] == ext]
        if functions:
            lines.append(f"extension {ext}: left out (the target server cannot provide it); in its place, as "
                         "migration_extension_substitutes says: " + "; ".join(
                             f"{f['function']} as an SQL function ({f['body']}), used by {shown(f['used_by'])}"
                             for f in functions))
        else:
            lines.append(f"extension {ext}: left out (the target server cannot provide it, and the schema uses "
                         "none of its functions), as migration_extension_substitutes says")
    return lines


def left_out_toc_line(line, extensions):
    """Whether a `pg_restore --list` line is the CREATE EXTENSION or the COMMENT ON EXTENSION of one of
    the extensions (names)."""
    match = re.match(r"^\d+; \d+ \d+ (?P<rest>.*)$", line)
    if not match:
        return False
    rest = match["rest"].rstrip() + " "
    for name in extensions:
        for spelling in (name, '"' + name.replace('"', '""') + '"'):
            if rest.startswith((f"EXTENSION - {spelling} ", f"COMMENT - EXTENSION {spelling} ")):
                return True
    return False
