"""What a run prints stays readable, and small, on a database of many tables (issue 14): the plan names each
level's largest tables and counts the rest, sequence problems beyond the first ten go to a file, and the
modules hand Ansible outlines, not per-table lists (every table is still in the artifacts)."""

import json
import pathlib

from conftest import execute
from pgmigrate.clone import assess, copier

TABLES = 25
SEQUENCES_BEHIND = 14


def _many_tables(src):
    # Each table's id sequence is left behind the ids already in it, as an application inserting explicit
    # ids does: the copy reproduces it and warns, table by table.
    execute(src, "CREATE SCHEMA app",
            *[f"CREATE TABLE app.t{i:02d} (id serial PRIMARY KEY, pad text)" for i in range(TABLES)],
            *[f"INSERT INTO app.t{i:02d} VALUES (1, repeat('x', {100 * i}))" for i in range(SEQUENCES_BEHIND)])


def test_the_plan_names_each_levels_largest_tables_and_the_file_names_all(db_pair, tmp_path):
    src, dst = db_pair
    _many_tables(src)
    execute(src, "INSERT INTO app.t24 SELECT g + 10, repeat('y', 2000) FROM generate_series(1, 500) g",
            "ANALYZE")
    report = assess.assess(src, dst, artifacts_dir=str(tmp_path))
    level = next(line for line in report["lines"] if line.startswith("Level 0"))
    assert level.startswith(f"Level 0 ({TABLES} tables): app.t24 ")  # the largest first
    assert level.count("app.t") == assess.TABLES_SHOWN_PER_LEVEL
    assert level.endswith(f"and {TABLES - assess.TABLES_SHOWN_PER_LEVEL} smaller (all in assessment.txt)")
    written = (tmp_path / "assessment.txt").read_text()
    assert all(f"app.t{i:02d} " in written for i in range(TABLES))
    outline = assess.plan_outline(report["plan"])
    assert outline["table_count"] == TABLES and outline["tables_per_level"] == [TABLES]
    assert "tables" not in outline and "levels" not in outline


def test_sequence_problems_beyond_the_first_ten_are_counted_and_listed_in_a_file(db_pair, tmp_path):
    src, dst = db_pair
    _many_tables(src)
    summary = copier.migrate(src, dst, artifacts_dir=str(tmp_path), workers=2)
    assert summary["status"] == "complete"
    warnings = [w for w in summary["warnings"] if "_id_seq" in w or "sequence problem" in w]
    assert len(warnings) == copier.SEQUENCE_WARNINGS_SHOWN + 1, warnings
    listed = pathlib.Path(summary["run_dir"], "sequence_problems.txt")
    assert warnings[-1] == (f"... and {SEQUENCES_BEHIND - copier.SEQUENCE_WARNINGS_SHOWN} more sequence "
                            f"problem(s): all {SEQUENCES_BEHIND}, each with its fix, in {listed}")
    problems = listed.read_text().splitlines()
    assert len(problems) == SEQUENCES_BEHIND
    assert all(f"fix with SELECT setval('app.t{i:02d}_id_seq', 1)" in "\n".join(problems)
               for i in range(SEQUENCES_BEHIND))
    # Every table's figures stay in summary.json.
    assert len(json.loads(pathlib.Path(summary["run_dir"], "summary.json").read_text())["tables"]) == TABLES
