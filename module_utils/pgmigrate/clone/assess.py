"""Phase 1 of the plan: assess the source and print the copy plan."""

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

from ..common import catalog as catalog_module
from ..common import extension_substitutes as extension_substitutes_module
from ..common import planner, preflight
from ..common.connection import describe
from ..common.units import human_bytes, human_duration
from . import completion, state


def _read_pg_stats(source, exclude_schemas):
    conn = preflight.connect_or_explain(source, "migration_source", "pgmigrate assess")
    try:
        return catalog_module.read_pg_stats(conn, exclude_schemas)
    finally:
        conn.close()


def assess(source, target=None, documented_order=None, workers=4, split_tables_larger_than=1 << 30,
           schema_mode="copy", artifacts_dir=None, exclude_schemas=(), include_schemas=(),
           throughput_bytes_per_second=planner.DEFAULT_THROUGHPUT_BYTES_PER_SECOND, check_target=False,
           overwrite=True, pg_bin_dir=None, extension_substitutes=None):
    """check_target: fail here, before any later phase changes the target (the extensions phase creates
    extensions), when the target lacks an extension the source uses that extension_substitutes
    (migration_extension_substitutes) does not say how to do without, or when schema mode copy would meet
    tables already in the target that no unfinished or completed run of this tool put there and
    overwrite (migration_target_overwrite) is false. pg_bin_dir: migration_pg_bin_dir (client_tools)."""
    preflight.use_client_tools(pg_bin_dir)
    conn = preflight.connect_or_explain(source, "migration_source", "pgmigrate assess")
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        preflight.check_source_rights(conn, source, include_schemas, exclude_schemas)
        # The plan's pg_stats query in a session of its own, while this one reads the catalog.
        with ThreadPoolExecutor(1) as pool:
            stats = pool.submit(_read_pg_stats, source, exclude_schemas)
            catalog = catalog_module.read_catalog(conn, exclude_schemas, include_schemas, sequence_states=False)
            stats = stats.result()
        source_identity = preflight.server_identity(conn)
        collations = preflight.icu_collations(conn)
    finally:
        conn.close()
    target_report = None
    if target:
        tconn = preflight.connect_or_explain(target, "migration_target", "pgmigrate assess")
        try:
            target_identity = preflight.server_identity(tconn)
            preflight.check_not_same(source_identity, target_identity, source, target)
            preflight.check_versions(source_identity, target_identity)
            preflight.check_client_tools(source_identity, target_identity)
            preflight.check_target_rights(tconn, target, catalog["schemas"], schema_mode)
            missing = preflight.missing_extensions(tconn, catalog["extensions"])
            target_report = {
                "server_version_num": target_identity["server_version_num"],
                "missing_extensions": missing,
                "existing_tables": preflight.existing_user_tables(tconn, catalog["schemas"]),
                "extension_substitutes": None,
            }
            if check_target:
                substitution = preflight.check_extensions(tconn, catalog, target, extension_substitutes,
                                                          source=source, exclude_schemas=exclude_schemas)
                preflight.check_collations(tconn, collations, target)
            else:  # check mode: reported, not refused
                substitution = preflight.substitution_plan(missing, extension_substitutes, source=source,
                                                           exclude_schemas=exclude_schemas) if missing else None
            if substitution and substitution["left_out"]:
                target_report["extension_substitutes"] = {
                    "left_out": substitution["left_out"], "notes": substitution_notes(substitution),
                    "functions": [{k: f[k] for k in ("extension", "function", "body")}
                                  for f in substitution["functions"]]}
            if check_target and not overwrite and schema_mode == "copy" and target_report["existing_tables"]:
                check_target_empty_or_ours(tconn, target, target_report["existing_tables"], source_identity,
                                           target_identity, artifacts_dir)
        finally:
            tconn.close()

    plan = planner.build_plan(catalog, workers=workers, split_tables_larger_than=split_tables_larger_than,
                              throughput_bytes_per_second=throughput_bytes_per_second,
                              split_self_referencing=schema_mode == "copy")
    notes = planner.handling_notes(plan, schema_mode)
    findings = planner.compare_with_documented_order(plan, documented_order) if documented_order else []
    report = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": describe(source),
        "server_version": catalog["server_version"],
        "database_bytes": catalog["database_bytes"],
        "schemas": catalog["schemas"],
        "extensions": catalog["extensions"],
        "plan": plan,
        "handling": notes,
        "documented_order_findings": findings,
        "sequences": catalog["sequences"],
        "foreign_keys": catalog["foreign_keys"],
        "views": catalog["views"],
        "tables": catalog["tables"],
        "pg_stats": stats,
        "target": target_report,
    }
    report["lines"] = plan_lines(report, schema_mode, tables_per_level=TABLES_SHOWN_PER_LEVEL)
    if artifacts_dir:
        os.makedirs(artifacts_dir, mode=0o700, exist_ok=True)
        path = os.path.join(artifacts_dir, "assessment.json")
        with open(path, "w") as handle:
            # Compact: indented, json runs its pure-Python encoder (0.5 s for 3,000 tables).
            handle.write(json.dumps(report, default=str))
        with open(os.path.join(artifacts_dir, "assessment.txt"), "w") as handle:
            handle.write("\n".join(plan_lines(report, schema_mode)) + "\n")
        report["report_file"] = path
    return report


def plan_outline(plan):
    """The plan without its per-table lists: what a playbook shows or decides on."""
    return {"table_count": len(plan["tables"]), "tables_per_level": [len(level) for level in plan["levels"]],
            "cycles": plan["cycles"], "self_references": plan["self_references"],
            "total_bytes": plan["total_bytes"], "total_rows": plan["total_rows"],
            "estimated_seconds": plan["estimated_seconds"]}


def check_target_empty_or_ours(tconn, target, present, source_identity, target_identity, artifacts_dir):
    """The copy's own emptiness rule, applied at assessment: tables of an unfinished run (resume) or of a
    run recorded complete for this source and target (an idempotent rerun) are the tool's own."""
    if state.unfinished_run(tconn):
        return
    tconn.rollback()
    source_key = {k: source_identity.get(k) for k in ("system_identifier", "database", "address", "port",
                                                      "database_oid")}
    completed = completion.find(artifacts_dir or "artifacts", source_key, target_identity)
    if completed:
        completion.check_unchanged(tconn, completed, target)  # a changed target is refused here already
        return
    raise preflight.PreflightError(
        f"The target {describe(target)} is not empty: {len(present)} table(s) already exist in the schemas to "
        f"migrate (e.g. {', '.join(present[:5])}). Nothing was changed. Set migration_target_overwrite=true to "
        "replace them, or use migration_schema_mode=existing if the application created the schema.")


def substitution_notes(substitution):
    """The notes of extension_substitutes, and what still refuses the run (check mode reports it)."""
    problem = extension_substitutes_module.problem(substitution)
    return extension_substitutes_module.notes(substitution) + ([f"refused: {problem}"] if problem else [])


# The console's plan names a level's largest tables only; assessment.txt names every table.
TABLES_SHOWN_PER_LEVEL = 10


def plan_lines(report, schema_mode, tables_per_level=None):
    """The plan in words, a line each. tables_per_level: name only that many of each level's tables (the
    largest), and count the rest; None names them all."""
    plan = report["plan"]
    tables = {t["table"]: t for t in plan["tables"]}
    lines = [
        f"Source {report['source']}: PostgreSQL {report['server_version']}, "
        f"{human_bytes(report['database_bytes'])}, {len(plan['tables'])} tables in "
        f"{len(report['schemas'])} schema(s), {len(report['foreign_keys'])} foreign keys, "
        f"{len(report['sequences'])} sequences, extensions: "
        + (", ".join(f"{e['name']} {e['version']}" for e in report["extensions"]) or "none"),
        f"Estimated copy: {human_bytes(plan['total_bytes'])}, ~{plan['total_rows']:,} rows, "
        f"about {human_duration(plan['estimated_seconds'], whole=True)} of streaming",
    ]
    if schema_mode == "copy":
        lines.append("Schema mode copy: foreign keys are created after the load, so all tables copy in parallel, "
                     "largest first; the levels below are the order with foreign keys in force.")
    for i, level in enumerate(plan["levels"]):
        entries = []
        shown = level if tables_per_level is None or len(level) <= tables_per_level else sorted(
            level, key=lambda name: -(tables[name]["total_bytes"] if name in tables else 0))[:tables_per_level]
        for name in shown:
            table = tables.get(name)
            if table is None:
                entries.append(f"{name} (partitioned)")
                continue
            parts = len(table["parts"])
            entries.append(f"{name} {human_bytes(table['total_bytes'])}" + (f" in {parts} parts" if parts > 1 else ""))
        more = len(level) - len(shown)
        lines.append(f"Level {i} ({len(level)} tables): " + ", ".join(entries)
                     + (f" and {more} smaller (all in assessment.txt)" if more else ""))
    lines.extend(f"Handling: {note}" for note in report["handling"])
    if report["documented_order_findings"]:
        lines.append(f"The documented order is wrong in {len(report['documented_order_findings'])} place(s):")
        lines.extend(f"  - {f['message']}" for f in report["documented_order_findings"])
    target = report.get("target")
    if target:
        if target["missing_extensions"]:
            lines.append("Target lacks extensions: " + ", ".join(target["missing_extensions"]))
        substitutes = target.get("extension_substitutes")
        lines.extend(f"Note: {note}" for note in (substitutes["notes"] if substitutes else []))
        if target["existing_tables"]:
            lines.append(f"Target already has {len(target['existing_tables'])} table(s) in the schemas to migrate")
    return lines
