"""The sync's plan: each table's policy (copy, merge, preserve, skip), its key, its masks, the foreign keys
of its cycles and the sequences to carry, checked before anything changes."""


from ..common import planner
from . import masking
from .errors import SyncError
from .table_steps import t_changes

POLICIES = ("copy", "merge", "preserve", "skip")


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
