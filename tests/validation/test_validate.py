"""Validation: an exact copy passes; each injected fault is caught and named (a mutation suite)."""

import uuid

import pytest

import dbcompare
from cdp_reference import generate
from conftest import ScratchDatabases, connect
from pgmigrate.clone import copier
from pgmigrate.validation.validate import validate


@pytest.fixture(scope="module")
def golden(source_server, target_server, tmp_path_factory):
    """The hard-cases database and an exact copy of it made by the engine (kept as a template)."""
    databases = ScratchDatabases()
    src = databases.create(source_server, "vsrc")
    dst = databases.create(target_server, "vgold")
    dbcompare.load_hard_cases(src)
    copier.migrate(src, dst, artifacts_dir=str(tmp_path_factory.mktemp("artifacts")), workers=4)
    yield src, dst
    databases.drop_all()


@pytest.fixture
def faulty(golden, target_server):
    """A fresh copy of the golden target (CREATE DATABASE ... TEMPLATE), to break one thing in."""
    src, gold = golden
    name = f"vfault_{uuid.uuid4().hex[:10]}"
    admin = connect(target_server)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{gold["dbname"]}"')
    yield src, {**gold, "dbname": name}
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def break_target(params, statements):
    conn = connect(params)
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    conn.commit()
    conn.close()


def failing(result):
    return {c["name"]: c for c in result["checks"] if c["status"] == "fail"}


def items(check, status="fail"):
    return [i for i in check["items"] if i["status"] == status]


# The hard-cases source carries defects of its own: app.ident_default's identity sequence is behind
# the column's maximum, and a NOT VALID foreign key has orphans. A faithful copy reproduces them:
# validation says so as warnings, and fails only on what the copy changed.
SOURCE_DEFECT = "app.ident_default_id_seq"


def test_an_exact_copy_passes_and_the_sources_own_defects_are_warnings(golden):
    src, dst = golden
    result = validate(src, dst)
    assert result["status"] == "pass", failing(result)
    checks = {c["name"]: c for c in result["checks"]}
    assert [i["table"] for i in items(checks["sequences"], "warn")] == [SOURCE_DEFECT]
    # legacy_child's NOT VALID foreign key is broken in the source already
    assert [i["table"] for i in items(checks["orphans"], "warn")] == ["app.legacy_child"]
    assert {c["name"] for c in result["checks"]} >= {"schema", "row_counts", "content", "orphans", "sequences"}


def test_an_exact_copy_of_the_cdp_database_passes(db_pair, tmp_path):
    src, dst = db_pair
    generate.load(src, 0.02)
    copier.migrate(src, dst, artifacts_dir=str(tmp_path))
    result = validate(src, dst)
    assert result["status"] == "pass", [(c["name"], c["summary"]) for c in result["checks"]]


FAULTS = {
    "changed cell": (["UPDATE app.big SET payload = payload || 'x' WHERE id = 777"],
                     "content", "app.big", lambda i: i["changed"] == [["777"]] and i["changed_count"] == 1),
    "deleted row": (["DELETE FROM app.big WHERE id = 778"],
                    "content", "app.big", lambda i: i["missing"] == [["778"]] and i["extra_count"] == 0),
    "extra row": (["INSERT INTO app.events SELECT 424242, kind, payload, created_at FROM app.events LIMIT 1"],
                  "content", "app.events", lambda i: i["extra"] == [["424242"]]),
    "duplicated row in a keyless table": (
        ["INSERT INTO app.nopk_log SELECT * FROM app.nopk_log WHERE message IS NOT NULL LIMIT 1"],
        "content", "app.nopk_log",
        lambda i: i["difference_count"] == 1 and i["multiset_differences"][0]["target_count"]
        == i["multiset_differences"][0]["source_count"] + 1),
    "NULL instead of an empty string": (["UPDATE app.text_cases SET val = NULL WHERE id = 2"],
                                        "content", "app.text_cases", lambda i: i["changed"] == [["2"]]),
    "sequence set back": (["SELECT setval('app.shared_seq', 1)"], "sequences", "app.shared_seq",
                          lambda i: "differs from the source" in i["detail"] and "collides" in i["detail"]),
    "orphan child row": (["SET session_replication_role = replica",
                          "INSERT INTO app.tree VALUES (999, 123456, 'orphan')"],
                         "orphans", "app.tree", lambda i: i["orphans"] == 1 and i["sample"] == [["123456"]]),
    "dropped index": (["DROP INDEX app.nopk_log_ts_idx"], "schema", "app.nopk_log",
                      lambda i: any("nopk_log_ts_idx missing in the target" in d for d in i["differences"])),
    "missing extension": (["DROP EXTENSION hstore CASCADE"], "schema", "(database)",
                          lambda i: any("extension hstore missing in the target" in d for d in i["differences"])),
    "changed column default": (["ALTER TABLE app.big ALTER COLUMN grp SET DEFAULT 7"], "schema", "app.big",
                               lambda i: any("column grp" in d for d in i["differences"])),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_fault_is_caught_and_named(faulty, fault):
    src, dst = faulty
    statements, check_name, table, detail_ok = FAULTS[fault]
    break_target(dst, statements)
    result = validate(src, dst)
    assert result["status"] == "fail"
    fails = failing(result)
    summaries = [(c["name"], c["summary"]) for c in result["checks"]]
    assert check_name in fails, f"{fault} not caught by {check_name}: {summaries}"
    named = [i for i in items(fails[check_name]) if i["table"] == table]
    assert named, f"{fault}: {check_name} does not name {table}: {fails[check_name]['summary']}"
    assert detail_ok(named[0]), named[0]


def test_uuid_buckets_follow_key_order_and_cover_every_key(db_pair):
    """Tables keyed by one uuid are bucketed by its top 10 bits: each bucket's range read back by the
    index must hold exactly the rows the grouped scan counted in it."""
    from psycopg2 import sql

    from pgmigrate.validation.digests import _uuid_bound, _uuid_bucket_expression, _uuid_ranges_condition

    src, _ = db_pair
    conn = connect(src)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE u (id uuid PRIMARY KEY); INSERT INTO u SELECT md5(g::text)::uuid "
                    "FROM generate_series(1, 5000) g; INSERT INTO u VALUES ('00000000-0000-0000-0000-000000000000'),"
                    " ('ffffffff-ffff-ffff-ffff-ffffffffffff')")
        cur.execute(sql.SQL("SELECT {} b, count(*) FROM u r GROUP BY 1").format(_uuid_bucket_expression("id")))
        counts = dict(cur.fetchall())
        assert counts[0] >= 1 and counts[1023] >= 1
        for buckets in ([0], [1023], [5, 6, 7, 100], sorted(counts)):
            cur.execute(sql.SQL("SELECT count(*) FROM u r WHERE {}").format(_uuid_ranges_condition("id", buckets)))
            assert cur.fetchone()[0] == sum(counts.get(b, 0) for b in buckets)
    conn.rollback()
    conn.close()
    assert _uuid_bound(0) == "00000000-0000-0000-0000-000000000000"
    assert _uuid_bound(1023) == "ffc00000-0000-0000-0000-000000000000"


def test_the_failure_message_names_what_differs_in_each_failing_check(faulty, tmp_path):
    """The message of the module and of the role's fail task (what an AWX job log shows) names each
    failing check's first differences, not only its tables."""
    from pgmigrate.validation.validation_run import run_validation

    src, dst = faulty
    break_target(dst, ["ALTER TABLE app.unique_no_pk DROP CONSTRAINT unique_no_pk_code_key",
                       "CREATE EXTENSION pg_trgm",
                       "UPDATE app.big SET payload = payload || 'x' WHERE id = 777"])
    result, _paths, message = run_validation(src, dst, str(tmp_path / "validation"))
    assert result["status"] == "fail"
    assert ("schema ((database), app.unique_no_pk): extension pg_trgm exists only in the target (database); "
            "constraint unique_no_pk_code_key missing in the target (app.unique_no_pk); "
            "index unique_no_pk_code_key missing in the target (app.unique_no_pk)") in message, message
    assert "content (app.big): 1 changed (id: 777)" in message, message
