"""Sync an environment's database from another one, table by table, by policy (the plan's "Environment
paths": staging -> production with the target's integrations and API keys preserved, and production ->
staging with personal data masked).

Both databases already have the application's schema. Each table has a policy:

* ``copy``: the target's table ends equal to the source's (masked where rules say so);
* ``merge``: the source's rows are upserted by the table's key, the target's other rows stay;
* ``preserve``: the target's rows stay exactly as they are (verified);
* ``skip``: not part of the sync.

Everything happens in ONE target transaction, read from ONE source snapshot: the target either gets the
whole sync, verified, or nothing at all. Before the commit the sync proves what it promises: every copied
table equals the source (row count and digest of every unmasked column), no preserved table changed (a
foreign key's ON DELETE CASCADE from a copied table would be caught here), no merged table lost a row,
the environment's post-sync updates ran, and the environment's checks (report recipients, SMTP
settings, ...) hold. Any failure rolls back and says what to change.

Copied tables that only copied tables reference are truncated and reloaded with COPY (fast); copied
tables that a kept table references are upserted by their key and then stripped of the rows the source
lacks, so the kept rows' references stay valid.
"""

import json
import os
import threading
import time

import psycopg2
import psycopg2.extensions
from psycopg2 import sql
from psycopg2.extras import Json

from ..common import catalog as catalog_module
from ..common import planner, preflight, triggers
from ..common.connection import connect, describe
from . import masking

POLICIES = ("copy", "merge", "preserve", "skip")
SESSION_SETTINGS = (
    "SET TimeZone = 'UTC'", "SET datestyle = 'ISO, YMD'", "SET intervalstyle = 'postgres'",
    "SET extra_float_digits = 3", "SET bytea_output = 'hex'", "SET client_encoding = 'UTF8'",
    "SET row_security = off",
)
CHUNK = 1 << 20
SAMPLE_VALUES = 3


class SyncError(Exception):
    """The sync cannot be done as configured, or did not prove its result; nothing was changed."""


# --------------------------------------------------------------------------------------------- plan

def _tables_by_name(cat):
    """Qualified name -> table, for the tables a sync acts on (partitions go with their parent)."""
    return {t["qualname"]: t for t in cat["tables"] if not t["is_partition"]}


def resolve_name(name, tables, where):
    """'users', 'public.users' or a quoted qualified name -> the qualified name in tables."""
    if name in tables:
        return name
    matches = [q for q, t in tables.items() if t["name"] == name or f"{t['schema']}.{t['name']}" == name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise SyncError(f"{where}: {name!r} names several tables ({', '.join(sorted(matches))}); "
                        "write it schema-qualified")
    return None


def _key_of(table):
    """The columns an upsert matches rows by: the primary key, else a unique key of NOT NULL columns."""
    if table["primary_key"]:
        return table["primary_key"]["columns"]
    not_null = {c["name"] for c in table["columns"] if c["not_null"]}
    for unique in table["unique_keys"]:
        if set(unique["columns"]) <= not_null:
            return unique["columns"]
    return None


def _unique_columns(table):
    columns = set(table["primary_key"]["columns"] if table["primary_key"] else [])
    for unique in table["unique_keys"]:
        columns.update(unique["columns"])
    return columns


def build_plan(source_cat, target_cat, policies=None, default_policy="copy", masking_rules=(),
               masking_key="", masking_email_domain=None):
    """Resolve every table's policy and check that the sync can be done; raise SyncError listing every
    problem and how to fix it, before anything changes."""
    errors = []
    if default_policy not in POLICIES:
        raise SyncError(f"default policy {default_policy!r} is not one of {', '.join(POLICIES)}")
    source_tables, target_tables = _tables_by_name(source_cat), _tables_by_name(target_cat)
    partitions = {t["qualname"]: t for t in target_cat["tables"] if t["is_partition"]}

    chosen = {}
    for name, policy in (policies or {}).items():
        if policy not in POLICIES:
            errors.append(f"table policy {name}: {policy!r} is not one of {', '.join(POLICIES)}")
            continue
        qualname = resolve_name(name, target_tables, "table policy") or resolve_name(name, source_tables,
                                                                                       "table policy")
        if qualname is None:
            partition = resolve_name(name, partitions, "table policy")
            if partition:
                errors.append(f"table policy {name}: a partition; set the policy on its parent "
                              f"{partitions[partition]['parent']}")
            else:
                errors.append(f"table policy {name}: no such table in the source or the target; fix the name "
                              "or remove the entry")
            continue
        chosen[qualname] = policy

    tables = []
    for qualname in sorted(set(source_tables) | set(target_tables)):
        policy = chosen.get(qualname, default_policy)
        src, dst = source_tables.get(qualname), target_tables.get(qualname)
        if policy in ("copy", "merge"):
            if dst is None:
                errors.append(f"{qualname} ({policy}): not in the target; create it there first (the application's "
                              "migrations or migrate.yml), or set its policy to skip")
                continue
            if src is None:
                errors.append(f"{qualname} ({policy}): only in the target; set its policy to preserve or skip")
                continue
            source_columns, target_columns = set(src["copy_columns"]), set(dst["copy_columns"])
            if source_columns != target_columns:
                missing = sorted(target_columns - source_columns)
                extra = sorted(source_columns - target_columns)
                errors.append(
                    f"{qualname} ({policy}): the schemas differ"
                    + (f"; only the target has {', '.join(missing)}" if missing else "")
                    + (f"; only the source has {', '.join(extra)}" if extra else "")
                    + ": bring both to the same application version first")
                continue
        elif dst is None:
            continue  # preserve/skip of a table the target does not have: nothing to keep
        tables.append({"table": qualname, "schema": dst["schema"], "name": dst["name"], "policy": policy,
                       "columns": list(dst["copy_columns"]),
                       "partitioned": dst["partitioned"], "key": _key_of(dst), "masks": {},
                       "identity_always": [c["name"] for c in dst["columns"] if c["identity"] == "always"],
                       "types": {c["name"]: c["type"] for c in dst["columns"]},
                       "array_columns": {c["name"] for c in dst["columns"] if c["typcategory"] == "A"},
                       "unique_columns": _unique_columns(dst),
                       "not_null": {c["name"] for c in dst["columns"] if c["not_null"]}})
    by_name = {t["table"]: t for t in tables}

    refused = (set(source_tables) | set(target_tables)) - set(by_name)  # already named in an error above
    errors += _attach_masks(by_name, masking_rules, masking_key, masking_email_domain, refused)

    foreign_keys = [fk for fk in target_cat["foreign_keys"] if fk["child"] in by_name and fk["parent"] in by_name]
    errors += _check_masked_foreign_keys(by_name, foreign_keys)

    # Which copied tables can be truncated: those referenced only by tables truncated with them.
    copy_tables = {t["table"] for t in tables if t["policy"] == "copy"}
    staged = set()
    changed = True
    while changed:
        changed = False
        for fk in foreign_keys:
            parent, child = fk["parent"], fk["child"]
            if parent in copy_tables and parent not in staged and parent != child and \
                    (child not in copy_tables or child in staged):
                staged.add(parent)
                changed = True
    for table in tables:
        if table["policy"] == "merge" or table["table"] in staged:
            table["mode"] = "upsert"
            if not table["key"]:
                why = ("merge upserts by a key" if table["policy"] == "merge" else
                       "it is referenced by " + ", ".join(sorted(
                           f"{fk['child']} ({by_name[fk['child']]['policy']})" for fk in foreign_keys
                           if fk["parent"] == table["table"] and fk["child"] not in copy_tables - staged))
                       + ", so it is upserted by its key")
                errors.append(f"{table['table']} ({table['policy']}): no primary key or NOT NULL unique key, and "
                              f"{why}; add a key, or change the policies")
        elif table["policy"] == "copy":
            table["mode"] = "reload"
        else:
            table["mode"] = "keep"
    # Kept tables a cascade from a changed table could reach are verified unchanged.
    changed_tables = {t["table"] for t in tables if t["mode"] in ("upsert", "reload")}
    for table in tables:
        table["verify_unchanged"] = table["policy"] == "preserve" or (
            table["policy"] == "skip" and any(fk["child"] == table["table"] and fk["parent"] in changed_tables
                                              for fk in foreign_keys))
    if errors:
        raise SyncError("The sync cannot run as configured; nothing was changed:\n- " + "\n- ".join(errors))

    levels = planner.dependency_levels([t["table"] for t in tables], foreign_keys)
    tables.sort(key=lambda t: (levels["level_of"][t["table"]], t["table"]))
    for number, table in enumerate(tables):
        table["number"] = number
    return {"tables": tables, "foreign_keys": foreign_keys, "cycles": levels["cycles"],
            "cycle_foreign_keys": _cycle_foreign_keys(levels["cycles"], foreign_keys, by_name),
            "sequences": _sequences_to_sync(target_cat, by_name)}


def _cycle_foreign_keys(cycles, foreign_keys, by_name):
    """Foreign keys of a cycle whose tables both change: whichever table is loaded first refers to rows
    of the other that are not there yet. Deferrable ones wait for the commit (SET CONSTRAINTS ALL
    DEFERRED); the others are dropped inside the sync's transaction before the load and added back,
    validated, before it commits, as the existing-schema copy does (no other session sees them missing)."""
    cycle_of = {name: number for number, cycle in enumerate(cycles) for name in cycle["tables"]}
    return [fk for fk in foreign_keys
            if not fk["deferrable"] and not fk["self_reference"] and fk["child"] in cycle_of
            and cycle_of[fk["child"]] == cycle_of.get(fk["parent"])
            and t_changes(by_name[fk["child"]]) and t_changes(by_name[fk["parent"]])]


def _attach_masks(by_name, masking_rules, masking_key, email_domain, refused=()):
    errors = []
    refused_names = {name for q in refused for name in (q, q.split(".", 1)[-1].strip('"'))}
    for index, rule in enumerate(masking_rules or ()):
        where = f"masking rule {index + 1} ({rule.get('table')}.{rule.get('column')})"
        qualname = resolve_name(str(rule.get("table")), by_name, where)
        table = by_name.get(qualname)
        if table is None:
            if str(rule.get("table")) not in refused_names:
                errors.append(f"{where}: no such table in the sync; fix the name")
            continue
        column = rule.get("column")
        if column not in table["columns"]:
            errors.append(f"{where}: {table['table']} has no column {column!r}")
            continue
        name = rule.get("rule")
        if name not in masking.RULES:
            errors.append(f"{where}: unknown rule {name!r}; use one of {', '.join(sorted(masking.RULES))}")
            continue
        needs_value, unique_preserving, _ = masking.RULES[name]
        if needs_value and "value" not in rule:
            errors.append(f"{where}: rule {name} needs a value")
            continue
        if table["policy"] not in ("copy", "merge"):
            errors.append(f"{where}: {table['table']} has policy {table['policy']}, nothing of it is copied; "
                          "remove the rule")
            continue
        unique = column in table["unique_columns"]
        if unique and not unique_preserving and name not in ("keep", "name"):
            errors.append(f"{where}: {column} is unique and rule {name} would give equal values; use email or hash")
            continue
        if name == "null" and column in table["not_null"]:
            errors.append(f"{where}: {column} is NOT NULL; use constant or hash")
            continue
        if not masking_key and name not in ("keep", "null", "constant"):
            errors.append(f"{where}: no masking key; set staging_sync_masking_key (from the vault)")
            continue
        table["masks"][column] = masking.ColumnMask(
            masking_key, name, value=rule.get("value"), prefix=rule.get("prefix"), domain=email_domain,
            unique=unique, is_array=column in table["array_columns"])
    return errors


def _check_masked_foreign_keys(by_name, foreign_keys):
    """A masked column that is part of a foreign key must be masked with the same rule on both sides."""
    errors = []
    for fk in foreign_keys:
        child, parent = by_name[fk["child"]], by_name[fk["parent"]]
        for column, parent_column in zip(fk["columns"], fk["parent_columns"], strict=True):
            child_mask, parent_mask = child["masks"].get(column), parent["masks"].get(parent_column)
            same = (child_mask is None and parent_mask is None) or (
                child_mask is not None and parent_mask is not None and
                (child_mask.rule, child_mask.value, child_mask.prefix) ==
                (parent_mask.rule, parent_mask.value, parent_mask.prefix) and child_mask.rule not in ("null",))
            if not same:
                errors.append(f"foreign key {fk['name']}: {fk['child']}.{column} is {_mask_text(child_mask)} but "
                              f"{fk['parent']}.{parent_column} is {_mask_text(parent_mask)}; mask both with the "
                              "same deterministic rule so that they still join")
    return errors


def _mask_text(mask):
    return "not masked" if mask is None else f"rule {mask.rule}"


def _sequences_to_sync(target_cat, by_name):
    out = []
    for sequence in target_cat["sequences"]:
        policies = {by_name[f["table"]]["policy"] for f in sequence["feeds"] if f["table"] in by_name}
        if policies & {"copy", "merge"}:
            out.append({"sequence": sequence["qualname"], "mode": "source" if policies == {"copy"} else "greatest"})
    return out


def plan_lines(plan):
    lines = []
    for table in plan["tables"]:
        how = {"reload": "truncated and reloaded", "upsert": "upserted by key"
               + (" (rows the source lacks deleted)" if table["policy"] == "copy" else ""),
               "keep": "kept as it is" + (" (verified unchanged)" if table["verify_unchanged"] else "")}[table["mode"]]
        masked = ", ".join(f"{c}: {m.rule}" for c, m in table["masks"].items())
        lines.append(f"{table['table']}: {table['policy']}, {how}" + (f"; masked {masked}" if masked else ""))
    for fk in plan.get("cycle_foreign_keys", ()):
        lines.append(f"foreign key {fk['name']} ({fk['child']} -> {fk['parent']}, a cycle): dropped inside the "
                     "sync's transaction for the load, added back and validated before the commit")
    return lines


# ----------------------------------------------------------------------------------------- execute

def _qual(name):
    return sql.SQL(name)


def _cols(columns):
    return sql.SQL(", ").join(sql.Identifier(c) for c in columns)


class _PipeWriter:
    """COPY TO's output, masked when the table has rules, into a pipe the target's COPY FROM reads."""

    def __init__(self, fd, masker):
        self.fd = fd
        self.masker = masker
        self.bytes = 0

    def write(self, data):
        data = bytes(data)
        if self.masker:
            data = self.masker.feed(data)
        self.bytes += len(data)
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]


def _stream_table(source_conn, target_cur, table, into):
    """COPY the table's columns from the source snapshot into `into` (a table or a temp table)."""
    source_select = sql.SQL("COPY (SELECT {} FROM {}{}) TO STDOUT").format(
        _cols(table["columns"]), sql.SQL("" if table["partitioned"] else "ONLY "), _qual(table["table"]))
    target_copy = sql.SQL("COPY {} ({}) FROM STDIN").format(into, _cols(table["columns"]))
    positions = {table["columns"].index(c): m for c, m in table["masks"].items() if m.rule != "keep"}
    read_fd, write_fd = os.pipe()
    writer = _PipeWriter(write_fd, masking.RowMasker(positions) if positions else None)
    failure = []

    def produce():
        try:
            with source_conn.cursor() as cur:
                cur.copy_expert(source_select.as_string(source_conn), writer, size=CHUNK)
            if writer.masker:
                writer.masker.finish()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(error)
        finally:
            os.close(write_fd)

    thread = threading.Thread(target=produce, name=f"sync {table['table']}", daemon=True)
    thread.start()
    try:
        with os.fdopen(read_fd, "rb", buffering=0) as reader:
            target_cur.copy_expert(target_copy.as_string(target_cur.connection), reader, size=CHUNK)
    finally:
        thread.join()
    if failure:
        raise failure[0]
    return target_cur.rowcount, writer.bytes


def _digest_sql(table, columns):
    row = sql.SQL("ROW({})::text").format(_cols(columns)) if columns else sql.SQL("''")
    return sql.SQL("SELECT count(*), COALESCE(sum(('x' || substr(md5({}), 1, 16))::bit(64)::bigint::numeric), 0)"
                   " FROM {}{}").format(row, sql.SQL("" if table["partitioned"] else "ONLY "), _qual(table["table"]))


def _table_digest(cur, table, columns):
    cur.execute(_digest_sql(table, columns))
    count, total = cur.fetchone()
    return int(count), str(total)


def _upsert(cur, table, stage):
    key = table["key"]
    others = [c for c in table["columns"] if c not in key]
    action = (sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in others)) if others else sql.SQL("DO NOTHING"))
    overriding = sql.SQL(" OVERRIDING SYSTEM VALUE") if table["identity_always"] else sql.SQL("")
    cur.execute(sql.SQL(
        "WITH upserted AS (INSERT INTO {table} ({cols}){overriding} SELECT {cols} FROM {stage} "
        "ON CONFLICT ({key}) {action} RETURNING (xmax = 0) AS inserted) "
        "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM upserted").format(
        table=_qual(table["table"]), cols=_cols(table["columns"]), overriding=overriding, stage=stage,
        key=_cols(key), action=action))
    return cur.fetchone()


def _delete_missing(cur, table, stage):
    match = sql.SQL(" AND ").join(sql.SQL("s.{0} = t.{0}").format(sql.Identifier(c)) for c in table["key"])
    cur.execute(sql.SQL("DELETE FROM {} t WHERE NOT EXISTS (SELECT 1 FROM {} s WHERE {})").format(
        _qual(table["table"]), stage, match))
    return cur.rowcount


def _column_value(value, column_type):
    if isinstance(value, (dict, list)) and column_type in ("json", "jsonb"):
        return Json(value)
    return value


def apply_updates(cur, plan, updates):
    """The environment's post-sync updates: [{name, table, set: {column: value}, set_sql: {column: SQL},
    where: SQL}] -> [{name, table, rows}]."""
    by_name = {t["table"]: t for t in plan["tables"]}
    results = []
    for index, update in enumerate(updates or ()):
        label = update.get("name") or f"update {index + 1}"
        qualname = resolve_name(str(update.get("table")), by_name, label)
        if qualname is None:
            raise SyncError(f"{label}: no such table {update.get('table')!r} in the sync")
        table = by_name[qualname]
        assignments, params = [], []
        for column, value in (update.get("set") or {}).items():
            if column not in table["types"]:
                raise SyncError(f"{label}: {qualname} has no column {column!r}")
            assignments.append(sql.SQL("{} = %s::{}").format(sql.Identifier(column), sql.SQL(table["types"][column])))
            params.append(_column_value(value, table["types"][column]))
        for column, expression in (update.get("set_sql") or {}).items():
            if column not in table["types"]:
                raise SyncError(f"{label}: {qualname} has no column {column!r}")
            assignments.append(sql.SQL("{} = ({})").format(sql.Identifier(column), sql.SQL(expression)))
        if not assignments:
            raise SyncError(f"{label}: nothing to set; give set or set_sql")
        where = sql.SQL(" WHERE ({})").format(sql.SQL(update["where"])) if update.get("where") else sql.SQL("")
        cur.execute(sql.SQL("UPDATE {} SET {}{}").format(_qual(qualname), sql.SQL(", ").join(assignments), where),
                    params)
        results.append({"name": label, "table": qualname, "rows": cur.rowcount})
    return results


def run_checks(cur, plan, checks):
    """The environment's checks: [{name, table, column, where, allowed_pattern | forbidden_pattern | expected,
    min_rows, secret}] -> (results, failures). Array columns are checked element by element."""
    by_name = {t["table"]: t for t in plan["tables"]}
    results, failures = [], []
    for index, check in enumerate(checks or ()):
        label = check.get("name") or f"check {index + 1}"
        qualname = resolve_name(str(check.get("table")), by_name, label)
        if qualname is None:
            raise SyncError(f"{label}: no such table {check.get('table')!r} in the sync")
        table, column = by_name[qualname], check.get("column")
        if column not in table["types"]:
            raise SyncError(f"{label}: {qualname} has no column {column!r}")
        value = (sql.SQL("unnest({})::text") if column in table["array_columns"] else sql.SQL("{}::text")).format(
            sql.Identifier(column))
        where = sql.SQL(" WHERE ({})").format(sql.SQL(check["where"])) if check.get("where") else sql.SQL("")
        if "allowed_pattern" in check:
            bad, argument, wanted = sql.SQL("v IS NOT NULL AND v !~ %s"), check["allowed_pattern"], \
                f"match {check['allowed_pattern']}"
        elif "forbidden_pattern" in check:
            bad, argument, wanted = sql.SQL("v ~ %s"), check["forbidden_pattern"], \
                f"not match {check['forbidden_pattern']}"
        elif "expected" in check:
            bad, argument = sql.SQL("v IS DISTINCT FROM %s"), None if check["expected"] is None else str(
                check["expected"])
            wanted = "be the expected value" if check.get("secret") else f"be {check['expected']!r}"
        else:
            raise SyncError(f"{label}: give allowed_pattern, forbidden_pattern or expected")
        cur.execute(sql.SQL("SELECT count(*), count(*) FILTER (WHERE {bad}), "
                            "(array_agg(DISTINCT v) FILTER (WHERE {bad}))[1:{n}] "
                            "FROM (SELECT {value} AS v FROM {table}{where}) x").format(
            bad=bad, n=sql.Literal(SAMPLE_VALUES), value=value, table=_qual(qualname), where=where),
            [argument, argument])
        checked, violations, samples = cur.fetchone()
        min_rows = int(check.get("min_rows", 1 if "expected" in check else 0))
        result = {"name": label, "table": qualname, "column": column, "checked": checked, "violations": violations}
        results.append(result)
        if violations:
            shown = "" if check.get("secret") else " (e.g. " + ", ".join(repr(s) for s in samples or []) + ")"
            failures.append(f"{label}: {violations} of {checked} values of {qualname}.{column} do not {wanted}{shown}")
        elif checked < min_rows:
            failures.append(f"{label}: {qualname}.{column} has {checked} values where at least {min_rows} are "
                            "expected" + (f" (where {check['where']})" if check.get("where") else ""))
    return results, failures


def _sync_sequences(source_cur, target_cur, plan):
    synced = []
    for entry in plan["sequences"]:
        name = _qual(entry["sequence"])
        try:
            source_cur.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(name))
        except psycopg2.errors.UndefinedTable:
            raise SyncError(f"sequence {entry['sequence']} feeds a synced table but the source lacks it") from None
        last_value, is_called = source_cur.fetchone()
        if entry["mode"] == "greatest":
            target_cur.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(name))
            target_value, target_called = target_cur.fetchone()
            if target_called and (not is_called or target_value > last_value):
                last_value, is_called = target_value, target_called
        target_cur.execute("SELECT setval(%s::regclass, %s, %s)", (entry["sequence"], last_value, is_called))
        synced.append({"sequence": entry["sequence"], "last_value": last_value, "is_called": is_called})
    return synced


def _friendly(error, table, plan):
    """A database error during a table's step -> what it means for the policies."""
    text = (getattr(error, "pgerror", None) or str(error)).strip()
    diag = getattr(error, "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    if isinstance(error, psycopg2.errors.ForeignKeyViolation):
        fk = next((f for f in plan["foreign_keys"] if f["name"] == constraint), None)
        policies = {t["table"]: t["policy"] for t in plan["tables"]}
        if fk:
            return (f"{table['table']} ({table['policy']}): foreign key {constraint} from {fk['child']} "
                    f"({policies.get(fk['child'])}) to {fk['parent']} ({policies.get(fk['parent'])}) would break: "
                    f"{text}. Rows of one environment refer to rows the other does not have: give both tables the "
                    "same policy, or skip the referring table")
    if isinstance(error, psycopg2.errors.UniqueViolation):
        return (f"{table['table']} ({table['policy']}): unique constraint {constraint} would be violated: {text}. "
                "A row of the source and a different row of the target share a unique value: resolve it on "
                "one side, or change the policy")
    if isinstance(error, psycopg2.errors.LockNotAvailable):
        return (f"{table['table']}: could not lock it within the lock timeout (the application is using it): put "
                "the application in maintenance mode first, or raise the lock timeout")
    return f"{table['table']} ({table['policy']}): {text}"


class Sync:
    def __init__(self, source, target, plan, updates=(), checks=(), verify=True, lock_timeout="30s",
                 log=None):
        self.source, self.target, self.plan = source, target, plan
        self.updates, self.checks, self.verify = updates, checks, verify
        self.lock_timeout = lock_timeout
        self.log = log or (lambda _text: None)

    def run(self):
        started = time.monotonic()
        source_conn = connect(self.source, application_name="pgmigrate sync (read)")
        target_conn = connect(self.target, application_name="pgmigrate sync")
        try:
            source_conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with source_conn.cursor() as source_cur, target_conn.cursor() as target_cur:
                for statement in SESSION_SETTINGS:
                    source_cur.execute(statement)
                    target_cur.execute(statement)
                identities = preflight.server_identity(source_conn), preflight.server_identity(target_conn)
                if preflight.same_database(*identities):
                    raise SyncError("the source and the target are the same database; check the inventory")
                target_cur.execute("SET LOCAL lock_timeout = %s", (self.lock_timeout,))
                target_cur.execute("SET CONSTRAINTS ALL DEFERRED")
                report = self._run(source_cur, target_cur)
                if report["failures"]:
                    target_conn.rollback()
                    raise SyncError("The sync did not prove its result, so it was rolled back; the target is "
                                    "unchanged:\n- " + "\n- ".join(report["failures"]))
            target_conn.commit()
            report["status"] = "committed"
            report["seconds"] = round(time.monotonic() - started, 3)
            return report
        finally:
            for conn in (source_conn, target_conn):
                try:
                    conn.rollback()
                finally:
                    conn.close()

    def _run(self, source_cur, target_cur):
        tables, report_tables, failures = self.plan["tables"], [], []
        changing = [t for t in tables if t["mode"] != "keep" or t["verify_unchanged"]]
        # Dropping a foreign key locks both its tables ACCESS EXCLUSIVE: taken first, never upgraded.
        cycle_keys = self.plan.get("cycle_foreign_keys", [])
        dropping = {fk[end] for fk in cycle_keys for end in ("child", "parent")}
        for table in sorted(changing, key=lambda t: t["table"]):
            mode = "ACCESS EXCLUSIVE" if table["table"] in dropping else "EXCLUSIVE" if t_changes(table) else "SHARE"
            target_cur.execute(sql.SQL("LOCK TABLE {} IN {} MODE").format(_qual(table["table"]), sql.SQL(mode)))
        disabled_triggers = [trigger for t in tables if t_changes(t)
                             for trigger in triggers.disable_user_triggers_locally(target_cur, t["table"])]
        for fk in cycle_keys:
            target_cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                _qual(fk["child"]), sql.Identifier(fk["name"])))
        before = {}
        for table in tables:
            if table["verify_unchanged"]:
                before[table["table"]] = _table_digest(target_cur, table, table["columns"])
            elif table["policy"] == "merge":
                target_cur.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {}").format(
                    _stage_name(table, "before"), _cols(table["key"]), _qual(table["table"])))
        reload = [t for t in tables if t["mode"] == "reload"]
        if reload:
            target_cur.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(
                sql.SQL(("" if t["partitioned"] else "ONLY ") + t["table"]) for t in reload)))
            self.log(f"truncated {len(reload)} tables to reload")
        upserted = []
        for table in tables:
            entry = {"table": table["table"], "policy": table["policy"], "mode": table["mode"],
                     "masked": sorted(table["masks"])}
            t0 = time.monotonic()
            try:
                target_cur.execute("SAVEPOINT table_step")
                if table["mode"] == "reload":
                    entry["rows"], entry["bytes"] = _stream_table(source_cur.connection, target_cur, table,
                                                                  _qual(table["table"]))
                elif table["mode"] == "upsert":
                    stage = _stage_name(table, "source")
                    target_cur.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA")
                                       .format(stage, _cols(table["columns"]), _qual(table["table"])))
                    entry["rows"], entry["bytes"] = _stream_table(source_cur.connection, target_cur, table, stage)
                    entry["inserted"], entry["updated"] = _upsert(target_cur, table, stage)
                    upserted.append(table)
                target_cur.execute("RELEASE SAVEPOINT table_step")
            except psycopg2.Error as error:
                raise SyncError(_friendly(error, table, self.plan) + "; the target is unchanged") from None
            entry["seconds"] = round(time.monotonic() - t0, 3)
            if table["mode"] != "keep":
                self.log(f"{table['table']}: {entry.get('rows', 0)} rows ({table['mode']})")
            report_tables.append(entry)
        entries = {e["table"]: e for e in report_tables}
        # Rows the source lacks leave copied, upserted tables children first, once every upsert is in.
        for table in reversed(upserted):
            if table["policy"] == "copy":
                try:
                    entries[table["table"]]["deleted"] = _delete_missing(target_cur, table,
                                                                         _stage_name(table, "source"))
                except psycopg2.Error as error:
                    raise SyncError(_friendly(error, table, self.plan) + "; the target is unchanged") from None
        self._add_back(target_cur, cycle_keys)
        try:
            target_cur.execute("SET CONSTRAINTS ALL IMMEDIATE")
        except psycopg2.Error as error:
            raise SyncError(f"deferred constraints do not hold after the sync: {str(error).strip()}; the target is "
                            "unchanged") from None
        if self.verify:
            failures += self._verify_copies(source_cur, target_cur, entries)
        for table in tables:
            if table["verify_unchanged"]:
                after = _table_digest(target_cur, table, table["columns"])
                if after != before[table["table"]]:
                    reaching = [f"{fk['name']} from {fk['parent']}" for fk in self.plan["foreign_keys"]
                                if fk["child"] == table["table"]]
                    failures.append(f"{table['table']} ({table['policy']}) would change ({before[table['table']][0]} "
                                    f"rows before, {after[0]} after)" + (
                                        f", through {', '.join(reaching)} (ON DELETE actions)" if reaching else "")
                                    + ": give it the policy of the table it refers to, or keep that table")
                entries[table["table"]]["verified_unchanged"] = after == before[table["table"]]
            elif table["policy"] == "merge":
                match = sql.SQL(" AND ").join(sql.SQL("b.{0} = t.{0}").format(sql.Identifier(c)) for c in table["key"])
                target_cur.execute(sql.SQL("SELECT count(*) FROM {} b WHERE NOT EXISTS (SELECT 1 FROM {} t WHERE {})")
                                   .format(_stage_name(table, "before"), _qual(table["table"]), match))
                lost = target_cur.fetchone()[0]
                if lost:
                    failures.append(f"{table['table']} (merge) would lose {lost} of its own rows (a cascade from a "
                                    "copied table): give it the policy of the table it refers to")
        triggers.restore_triggers_locally(target_cur, disabled_triggers)
        sequences = _sync_sequences(source_cur, target_cur, self.plan)
        try:
            updates = apply_updates(target_cur, self.plan, self.updates)
            checks, check_failures = run_checks(target_cur, self.plan, self.checks)
        except psycopg2.Error as error:
            raise SyncError(f"post-sync updates or checks failed: {str(error).strip()}; the target is unchanged") \
                from None
        failures += check_failures
        return {"tables": report_tables, "sequences": sequences, "updates": updates, "checks": checks,
                "failures": failures}

    def _add_back(self, cur, cycle_keys):
        """The cycle's foreign keys dropped for the load, added back: ADD CONSTRAINT validates every row."""
        by_name = {t["table"]: t for t in self.plan["tables"]}
        for fk in cycle_keys:
            try:
                cur.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    _qual(fk["child"]), sql.Identifier(fk["name"]), sql.SQL(fk["definition"])))
            except psycopg2.Error as error:
                raise SyncError(_friendly(error, by_name[fk["child"]], self.plan) + "; the target is unchanged") \
                    from None
            self.log(f"foreign key {fk['name']} of the cycle added back and validated")

    def _verify_copies(self, source_cur, target_cur, entries):
        failures = []
        for table in self.plan["tables"]:
            if table["policy"] != "copy":
                continue
            columns = [c for c in table["columns"] if c not in table["masks"] or table["masks"][c].rule == "keep"]
            source_digest = _table_digest(source_cur, table, columns)
            target_digest = _table_digest(target_cur, table, columns)
            entries[table["table"]]["verified_equal"] = source_digest == target_digest
            if source_digest != target_digest:
                failures.append(f"{table['table']} (copy) differs from the source after the sync: "
                                f"{source_digest[0]} rows there, {target_digest[0]} here")
        return failures


def t_changes(table):
    return table["mode"] in ("reload", "upsert")


def _stage_name(table, what):
    return sql.Identifier(f"_pgmigrate_{what}_{table['number']}")


def read_catalogs(source, target, include_schemas=(), exclude_schemas=()):
    catalogs = []
    for params, name in ((source, "source"), (target, "target")):
        conn = connect(params, application_name=f"pgmigrate sync ({name} catalog)")
        try:
            catalogs.append(catalog_module.read_catalog(conn, exclude_schemas, include_schemas))
        finally:
            conn.rollback()
            conn.close()
    return catalogs


def run(source, target, policies=None, default_policy="copy", masking_rules=(), masking_key="",
        masking_email_domain=None, updates=(), checks=(), verify=True, lock_timeout="30s", include_schemas=(),
        exclude_schemas=(), check_mode=False, artifacts_dir=None, report_name="sync", log=None):
    """Plan, then (unless check_mode) run the sync; returns the report, also written as JSON under
    artifacts_dir/<report_name>-<timestamp>.json."""
    source_cat, target_cat = read_catalogs(source, target, include_schemas,
                                           list(exclude_schemas) + [catalog_module.STATE_SCHEMA])
    plan = build_plan(source_cat, target_cat, policies, default_policy, masking_rules, masking_key,
                      masking_email_domain)
    report = {"status": "planned", "plan": plan_lines(plan), "source": describe(source), "target": describe(target)}
    if not check_mode:
        report.update(Sync(source, target, plan, updates, checks, verify, lock_timeout, log).run())
    if artifacts_dir:
        os.makedirs(artifacts_dir, exist_ok=True)
        path = os.path.join(artifacts_dir, f"{report_name}-{time.strftime('%Y%m%dT%H%M%S')}.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2, default=str)
        report["report_file"] = path
    return report


def report_lines(report):
    lines = [f"{report['source']} -> {report['target']}: {report['status']}"
             + (f" in {report['seconds']} s" if "seconds" in report else "")]
    if report["status"] == "planned":
        return lines + report["plan"]
    for entry in report["tables"]:
        if entry["mode"] == "keep":
            text = "kept" + (", verified unchanged" if entry.get("verified_unchanged") else "")
        else:
            text = f"{entry['rows']} rows from the source"
            if entry["mode"] == "upsert":
                text += f", {entry['inserted']} inserted, {entry['updated']} updated"
                if "deleted" in entry:
                    text += f", {entry['deleted']} deleted"
            if entry.get("masked"):
                text += f", masked {', '.join(entry['masked'])}"
            if entry.get("verified_equal"):
                text += ", verified equal to the source" + (" (unmasked columns)" if entry.get("masked") else "")
        lines.append(f"{entry['table']} ({entry['policy']}): {text}")
    lines += [f"sequence {s['sequence']} set to {s['last_value']}" for s in report["sequences"]]
    lines += [f"update {u['name']}: {u['rows']} rows of {u['table']}" for u in report["updates"]]
    lines += [f"check {c['name']}: {c['checked']} values, all as expected" for c in report["checks"]]
    return lines
