"""The pre-data restore in steps, several at once (module_utils/pgmigrate/clone/pre_data.py): the target's schema is
the source's (pg_dump's own text, independent_compare), on a schema that mixes what the waves take with what
they must leave to the last step; a function among the tables keeps the restore in one transaction; an
interrupted step restore resumes at its first unfinished step."""

import json
import pathlib

import pytest
import test_corpus

import independent_compare
from conftest import execute
from pgmigrate.clone import copier, pre_data

TABLES = 12

MIXED_SCHEMA = [
    'CREATE SCHEMA "Sales"',
    "CREATE SCHEMA app",
    "CREATE TYPE app.mood AS ENUM ('ok', 'bad')",
    "CREATE DOMAIN app.positive AS integer CHECK (VALUE > 0)",
    "CREATE FUNCTION app.double(integer) RETURNS integer LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2'",
    "CREATE SEQUENCE app.shared_seq",  # no owner: the tables' inline defaults need it first
    *[f"CREATE TABLE app.t{i:02d} (id serial PRIMARY KEY, shared bigint DEFAULT nextval('app.shared_seq'), "
      f"mood app.mood, n app.positive CHECK (app.double(n) < 1000), note text)" for i in range(TABLES)],
    'CREATE TABLE "Sales"."Orders" (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, total numeric)',
    "CREATE TABLE app.uses_identity (id bigint DEFAULT nextval('\"Sales\".\"Orders_id_seq\"'), x int)",
    "CREATE VIEW app.t05_view AS SELECT id, note FROM app.t05",  # sorts among the tables
    "CREATE MATERIALIZED VIEW app.t07_summary AS SELECT count(*) AS n FROM app.t07",
    "COMMENT ON TABLE app.t03 IS 'commented'",
    "COMMENT ON COLUMN app.t04.note IS 'a column comment'",
    "CREATE TABLE app.parent (id int, at date)",
    "CREATE TABLE app.t06_child (extra text) INHERITS (app.parent)",
    "CREATE TABLE app.events (id int, at date) PARTITION BY RANGE (at)",
    "CREATE TABLE app.events_2026 PARTITION OF app.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
    "CREATE TABLE app.t08_rows (original app.t01, many app.t02[])",  # a table's row as a column type
    "CREATE UNLOGGED TABLE app.t09_unlogged (id int)",
    "INSERT INTO app.t01 (n, note) SELECT g, 'n' || g FROM generate_series(1, 50) g",
    'INSERT INTO "Sales"."Orders" (total) VALUES (1), (2)',
]


@pytest.fixture
def few_tables_suffice(monkeypatch):
    monkeypatch.setattr(pre_data, "PARALLEL_MIN_TABLES", 5)


def _steps_plan(summary):
    path = pathlib.Path(summary["run_dir"], "schema.dump.steps.json")
    return json.loads(path.read_text())["plan"]


def test_steps_restore_the_sources_schema_with_what_the_waves_must_leave_last(db_pair, tmp_path,
                                                                                few_tables_suffice):
    src, dst = db_pair
    execute(src, *MIXED_SCHEMA)
    summary = copier.migrate(src, dst, artifacts_dir=str(tmp_path), workers=3)
    assert summary["status"] == "complete"
    plan = _steps_plan(summary)
    assert plan is not None and len(plan["tables"]) == 3
    in_waves = "\n".join(line for group in plan["tables"] + plan["sequences"] for line in group)
    for left_last in ("t06_child", "events_2026", "t08_rows", "uses_identity", "Orders_id_seq", "t05_view"):
        assert left_last not in in_waves, left_last
    assert " t00 " in in_waves and "shared_seq" in in_waves and "t09_unlogged" in in_waves
    differences = independent_compare.compare(src, dst)
    assert differences == [], "\n".join(differences)


def test_a_function_among_the_tables_keeps_the_restore_in_one_transaction(db_pair, tmp_path, few_tables_suffice):
    src, dst = db_pair
    execute(src, *MIXED_SCHEMA,
            # Takes t01's row, so the dump places it after t01 and before the tables that sort after it.
            "CREATE FUNCTION app.t01_weight(app.t01) RETURNS integer LANGUAGE sql AS 'SELECT $1.n'")
    summary = copier.migrate(src, dst, artifacts_dir=str(tmp_path), workers=3)
    assert summary["status"] == "complete"
    assert _steps_plan(summary) is None
    differences = independent_compare.compare(src, dst)
    assert differences == [], "\n".join(differences)


def test_an_interrupted_step_restore_resumes_at_its_first_unfinished_step(db_pair, tmp_path, few_tables_suffice,
                                                                          monkeypatch):
    src, dst = db_pair
    execute(src, *MIXED_SCHEMA)
    ran = []
    real_step = pre_data.StepRestore._step

    def failing_at_the_second_table_group(self, name, lines):
        if name == "tables-2":
            raise RuntimeError("interrupted at tables-2")
        real_step(self, name, lines)
        ran.append(name)

    monkeypatch.setattr(pre_data.StepRestore, "_step", failing_at_the_second_table_group)
    with pytest.raises(Exception, match="interrupted at tables-2"):
        copier.migrate(src, dst, artifacts_dir=str(tmp_path), workers=3)
    assert "first" in ran and "last" not in ran
    done_before = set(ran)
    ran.clear()
    monkeypatch.setattr(pre_data.StepRestore, "_step", lambda self, name, lines: (real_step(self, name, lines),
                                                                                    ran.append(name)))
    summary = copier.migrate(src, dst, artifacts_dir=str(tmp_path), workers=2)  # other settings: the same plan
    assert summary["status"] == "complete" and summary["resumed"]
    assert "tables-2" in ran and "last" in ran and not done_before & set(ran), (done_before, ran)
    differences = independent_compare.compare(src, dst)
    assert differences == [], "\n".join(differences)


@pytest.mark.parametrize("name", [name for name in test_corpus.CORPUS if name not in test_corpus.SLOW])
def test_every_corpus_database_restores_the_same_in_steps(name, db_pair, source_server, target_server, tmp_path,
                                                          monkeypatch):
    """The foreign databases of tests/corpus, each restored in steps as soon as it has a table."""
    monkeypatch.setattr(pre_data, "PARALLEL_MIN_TABLES", 1)
    src, dst = db_pair
    sql_path = test_corpus.CORPUS_DIR / f"{name}.sql"
    for server in (source_server, target_server):
        test_corpus.ensure_roles(server, test_corpus.corpus_roles(sql_path.read_text(encoding="utf-8")))
    test_corpus.load_sql(src, sql_path)
    kept = test_corpus.CORPUS[name] is test_corpus.KEPT_OWNERS_AND_PRIVILEGES
    summary = copier.migrate(src, dst, artifacts_dir=str(tmp_path), workers=3, no_owner=not kept,
                             no_privileges=not kept)
    assert summary["status"] == "complete"
    print(f"corpus {name}: pre-data", "in steps" if _steps_plan(summary) else "in one transaction")
    differences = independent_compare.compare(src, dst, owners=kept, privileges=kept)
    assert differences == [], "\n".join(differences)
