"""Large objects: copied with their oids, content, comment, owner and grants (under no_owner /
no_privileges like tables), resumable, and validated (a deleted or altered one fails naming its oid)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import dbcompare
from conftest import PROJECT_DIR, connect, execute, query
from pgmigrate.clone import copier, large_objects, state
from pgmigrate.validation.validate import Validator

BIG_OID, SMALL_OIDS = 910005, (910001, 910002, 910003, 910004)
BIG_BYTES = 10 << 20


def migrate(src, dst, tmp_path, **options):
    options.setdefault("workers", 3)
    return copier.migrate(src, dst, artifacts_dir=str(tmp_path / "artifacts"), **options)


def validate(src, dst, **options):
    result = Validator(src, dst, workers=2, checks=["content"], **options).run()
    return next(c for c in result["checks"] if c["name"] == "large_objects")


@pytest.fixture
def lo_pair(db_pair, source_server, target_server):
    """Five large objects (one of about 10 MB, one empty) referenced by an oid column, with a comment,
    grants and an owner role that exists on both servers."""
    src, dst = db_pair
    role = f"lo_owner_{src['dbname'][-10:]}"
    for server in (source_server, target_server):
        execute(server, f'CREATE ROLE "{role}"')
    execute(src,
            "CREATE TABLE documents (id int PRIMARY KEY, name text, content oid)",
            f"SELECT lo_from_bytea({SMALL_OIDS[0]}, 'hello large objects')",
            f"SELECT lo_from_bytea({SMALL_OIDS[1]}, '')",
            f"SELECT lo_from_bytea({SMALL_OIDS[2]}, decode(repeat('00ff', 5000), 'hex'))",
            f"SELECT lo_from_bytea({SMALL_OIDS[3]}, 'owned by a role')",
            # ten different 1 MB pieces: a counter, then a block of sha256 output (not compressible)
            f"SELECT lo_from_bytea({BIG_OID}, (SELECT string_agg(int4send(k) || substr(b.block, 5), '' ORDER BY k) "
            "FROM (SELECT string_agg(sha256(i::text::bytea), '' ORDER BY i) AS block "
            "FROM generate_series(1, 32768) i) b, generate_series(1, 10) k))",
            f"COMMENT ON LARGE OBJECT {SMALL_OIDS[0]} IS 'the greeting'",
            f'GRANT SELECT ON LARGE OBJECT {SMALL_OIDS[0]} TO "{role}"',
            f"GRANT SELECT, UPDATE ON LARGE OBJECT {BIG_OID} TO PUBLIC",
            f'ALTER LARGE OBJECT {SMALL_OIDS[3]} OWNER TO "{role}"',
            f'GRANT UPDATE ON LARGE OBJECT {SMALL_OIDS[3]} TO "{role}" WITH GRANT OPTION',
            "INSERT INTO documents VALUES " + ", ".join(
                f"({i}, 'doc {i}', {oid})" for i, oid in enumerate(SMALL_OIDS + (BIG_OID,), 1)))
    yield src, dst
    for server, params in ((source_server, src), (target_server, dst)):
        execute(server, f'DROP DATABASE IF EXISTS "{params["dbname"]}" WITH (FORCE)', f'DROP ROLE IF EXISTS "{role}"')


def target_large_objects(dst):
    return {oid: size for oid, size in query(dst, "SELECT oid, length(lo_get(oid)) FROM pg_largeobject_metadata")}


def test_large_objects_are_copied_exactly_with_their_oids_owner_grants_and_comment(lo_pair, tmp_path):
    src, dst = lo_pair
    summary = migrate(src, dst, tmp_path, no_owner=False, no_privileges=False)
    assert summary["status"] == "complete"
    assert summary["large_objects"]["count"] == 5 and summary["large_objects"]["copied"] == 5
    assert summary["large_objects"]["bytes"] == BIG_BYTES + 19 + 10000 + 15
    assert dbcompare.compare_databases(src, dst) == []
    # the application's oid column resolves on the target
    assert query(dst, "SELECT count(*) FROM documents d JOIN pg_largeobject_metadata m ON m.oid = d.content") == [(5,)]
    progress = json.loads((tmp_path / "artifacts" / "runs" / summary["run_id"] / "progress.json").read_text())
    assert (progress["large_objects_done"], progress["large_objects_total"]) == (5, 5)
    check = validate(src, dst)
    assert check["status"] == "pass", check["summary"]


def test_by_default_owners_and_grants_are_left_and_validation_passes(lo_pair, tmp_path):
    src, dst = lo_pair
    migrate(src, dst, tmp_path)  # no_owner and no_privileges, the plan's defaults
    rows = query(dst, "SELECT oid, pg_get_userbyid(lomowner), lomacl, obj_description(oid, 'pg_largeobject') "
                      "FROM pg_largeobject_metadata ORDER BY oid")
    assert [r[0] for r in rows] == sorted(SMALL_OIDS + (BIG_OID,))
    assert {(r[1], r[2]) for r in rows} == {(dst["user"], None)}
    assert rows[0][3] == "the greeting"
    differences = dbcompare.compare_databases(src, dst)
    assert differences and all(d.startswith("large object") and ("owner" in d or "acl" in d) for d in differences)
    check = validate(src, dst)
    assert check["status"] == "pass", check["summary"]
    assert "owners not carried" in " ".join(i["detail"] for i in check["items"])


def test_validation_fails_naming_a_deleted_or_altered_large_object(lo_pair, tmp_path):
    src, dst = lo_pair
    migrate(src, dst, tmp_path, no_owner=False, no_privileges=False)
    execute(dst, f"SELECT lo_unlink({SMALL_OIDS[1]})",
            f"SELECT lo_put({BIG_OID}, 5000000, 'x')",
            f"COMMENT ON LARGE OBJECT {SMALL_OIDS[0]} IS 'changed'",
            f"REVOKE UPDATE ON LARGE OBJECT {SMALL_OIDS[3]} FROM lo_owner_{src['dbname'][-10:]}")
    check = validate(src, dst)
    assert check["status"] == "fail"
    failing = {i["table"]: i["detail"] for i in check["items"] if i["status"] == "fail"}
    assert failing[f"large object {SMALL_OIDS[1]}"] == f"large object {SMALL_OIDS[1]} missing in the target"
    assert "content differs" in failing[f"large object {BIG_OID}"]
    assert "comment" in failing[f"large object {SMALL_OIDS[0]}"]
    assert "grants" in failing[f"large object {SMALL_OIDS[3]}"]
    assert f"large object {SMALL_OIDS[1]} missing in the target" in check["summary"]


def test_an_interrupted_copy_resumes_without_losing_or_duplicating_large_objects(lo_pair, tmp_path, monkeypatch):
    src, dst = lo_pair
    monkeypatch.setattr(large_objects, "BATCH_COUNT", 1)
    original, calls = large_objects.copy_batch, []

    def failing_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected failure in the third large object batch")
        return original(*args, **kwargs)

    monkeypatch.setattr(large_objects, "copy_batch", failing_third_batch)
    with pytest.raises(copier.MigrationError, match="injected failure"):
        migrate(src, dst, tmp_path, workers=1, no_owner=False, no_privileges=False)
    conn = connect(dst)
    run = state.unfinished_run(conn)
    done = [s for s in state.done_steps(conn, run["run_id"]) if s.startswith("lo:")]
    conn.close()
    present = target_large_objects(dst)
    assert len(present) == len(done) == 2, "every committed large object is recorded, nothing half-copied"
    monkeypatch.setattr(large_objects, "copy_batch", original)
    summary = migrate(src, dst, tmp_path, workers=1, no_owner=False, no_privileges=False)
    assert summary["resumed"] and summary["large_objects"]["resumed"] == 2 and summary["large_objects"]["copied"] == 3
    assert dbcompare.compare_databases(src, dst) == []


# The engine's own peak is VmHWM: getrusage's ru_maxrss survives exec, so it would report the peak of the
# pytest process the engine was forked from (hundreds of MB late in the suite), not the engine's.
RUNNER = """
import json, re, resource, sys
sys.path.insert(0, {module_utils!r})
from pgmigrate.clone import copier
args = json.loads(sys.stdin.read())
copier.migrate(args["src"], args["dst"], artifacts_dir=args["artifacts"], workers=2)
with open("/proc/self/status") as status:
    peak_kb = int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1))
print(json.dumps({{"maxrss_kb": peak_kb,
                   "children_maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}}))
"""


def run_engine(src, dst, artifacts):
    proc = subprocess.Popen([sys.executable, "-c", RUNNER.format(module_utils=str(PROJECT_DIR / "module_utils"))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    proc.stdin.write(json.dumps({"src": src, "dst": dst, "artifacts": artifacts}).encode())
    proc.stdin.close()
    return proc


def test_kill_9_during_the_large_object_copy_then_rerun_is_exact_in_little_memory(lo_pair, tmp_path):
    """kill -9 while the large objects are copied; the rerun resumes, and the engine's peak memory stays far
    below the size of what it copies many times over. The copy is held at the 10 MB large object by a test
    transaction that created the same oid and has not ended (lo_create waits for it), so the kill always
    lands inside the large-object step."""
    src, dst = lo_pair
    artifacts = str(tmp_path / "artifacts")
    blocker = connect(dst)
    with blocker.cursor() as cur:
        cur.execute("SELECT lo_create(%s)", (BIG_OID,))
    proc = run_engine(src, dst, artifacts)
    deadline = time.monotonic() + 60
    waiting = False
    while time.monotonic() < deadline and proc.poll() is None and not waiting:
        waiting = query(dst, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                             "AND wait_event_type = 'Lock' AND query LIKE '%lo_create%'")[0][0] > 0
        time.sleep(0.05)
    assert waiting, f"the copy did not reach the large objects: {proc.poll()=} {proc.stderr.read()[-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    blocker.rollback()
    blocker.close()
    conn = connect(dst)
    assert state.unfinished_run(conn) is not None, "the first run was to be killed before it completed"
    conn.close()
    final = run_engine(src, dst, artifacts)
    final.wait(timeout=120)
    out, err = final.stdout.read(), final.stderr.read()
    assert final.returncode == 0, err.decode()[-2000:]
    usage = json.loads(out.decode().strip().splitlines()[-1])
    print("peak memory (kB):", usage)
    assert usage["maxrss_kb"] < 150 * 1024 and usage["children_maxrss_kb"] < 50 * 1024, usage
    assert dbcompare.compare_databases(src, dst) == [] or all(
        d.startswith("large object") and ("owner" in d or "acl" in d) for d in dbcompare.compare_databases(src, dst))
    assert set(target_large_objects(dst)) == set(SMALL_OIDS + (BIG_OID,))


def test_existing_schema_mode_copies_them_too(lo_pair, tmp_path):
    src, dst = lo_pair
    execute(dst, "CREATE TABLE documents (id int PRIMARY KEY, name text, content oid)")
    summary = migrate(src, dst, tmp_path, schema_mode="existing", no_owner=False, no_privileges=False)
    assert summary["large_objects"]["copied"] == 5
    assert dbcompare.compare_databases(src, dst) == []


def test_a_target_holding_the_same_oids_is_refused_unless_overwrite(lo_pair, tmp_path):
    src, dst = lo_pair
    execute(dst, f"SELECT lo_from_bytea({SMALL_OIDS[2]}, 'the target''s own')")
    with pytest.raises(copier.preflight.PreflightError, match=rf"large object\(s\) with the oids .*{SMALL_OIDS[2]}"):
        migrate(src, dst, tmp_path)
    assert target_large_objects(dst) == {SMALL_OIDS[2]: 16}, "nothing may change before the refusal"
    migrate(src, dst, tmp_path, overwrite=True, no_owner=False, no_privileges=False)
    assert dbcompare.compare_databases(src, dst) == []


def test_a_source_login_that_may_not_read_them_is_refused_before_anything_changes(lo_pair, tmp_path,
                                                                                   source_server):
    src, dst = lo_pair
    reader, password = f"reader_{src['dbname'][-10:]}", "pw-" + os.urandom(8).hex()
    execute(source_server, f"CREATE ROLE \"{reader}\" LOGIN PASSWORD '{password}'",
            f'GRANT pg_read_all_data TO "{reader}"')
    try:
        with pytest.raises(copier.preflight.PreflightError) as raised:
            migrate({**src, "user": reader, "password": password}, dst, tmp_path)
        message = str(raised.value)
        # readable: BIG_OID (PUBLIC may read it); not: the others, owned by postgres or the role
        assert "may not read 4 large object(s)" in message and str(SMALL_OIDS[1]) in message
        assert "GRANT SELECT ON LARGE OBJECT" in message and password not in message
        assert target_large_objects(dst) == {} and query(dst, "SELECT count(*) FROM pg_tables WHERE "
                                                              "schemaname = 'public'") == [(0,)]
        with pytest.raises(ValueError, match=r"Validation may not read 4 large object\(s\)"):
            validate({**src, "user": reader, "password": password}, dst)
    finally:
        execute(source_server, f'DROP DATABASE IF EXISTS "{src["dbname"]}" WITH (FORCE)',
                f'DROP ROLE IF EXISTS "{reader}"')


def test_a_run_limited_to_some_schemas_leaves_them_and_says_so(lo_pair, tmp_path):
    src, dst = lo_pair
    execute(src, "CREATE SCHEMA other", "CREATE TABLE other.t (id int PRIMARY KEY)")
    summary = migrate(src, dst, tmp_path, include_schemas=["other"])
    assert summary["large_objects"]["count"] == 0 and target_large_objects(dst) == {}
    assert any("5 large object(s) not copied" in w and "migration_include_schemas" in w for w in summary["warnings"])
