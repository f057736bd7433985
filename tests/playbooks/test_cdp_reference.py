"""The CDP reference database (cdp_reference/): schema shape, generated data, determinism, CLI.

Runs against the embedded PostgreSQL servers, in scratch databases, at small scales.
"""

import os
import re
import subprocess
import sys

import pytest

from cdp_reference import generate
from conftest import PROJECT_DIR, ScratchDatabases, query

SCALE = 0.02

COLUMN_COUNTS = {
    "users": 3, "team": 16, "roles": 14, "permissions": 10, "role_permissions": 7,
    "segments": 11, "cohorts": 18, "campaigns": 16, "campaign_jobs": 10,
    "dashboard_tile_instances": 15, "dashboard_tiles": 10, "dashboard_configurations": 10,
    "presentations": 9, "slides": 9, "uploaded_images": 8, "scheduled_reports": 26, "report_executions": 12,
    "mailing_lists": 11, "integrations": 9, "environment_configurations": 8, "migration_history": 18,
}

# (child table, column, parent table)
FOREIGN_KEYS = {
    ("team", "created_by", "users"),
    ("team", "manager_id", "team"),
    ("roles", "created_by", "team"),
    ("roles", "updated_by", "team"),
    ("role_permissions", "role_id", "roles"),
    ("role_permissions", "permission_id", "permissions"),
    ("role_permissions", "granted_by", "team"),
    ("segments", "created_by", "team"),
    ("cohorts", "segment_id", "segments"),
    ("cohorts", "created_by", "team"),
    ("campaigns", "cohort_id", "cohorts"),
    ("campaigns", "created_by", "team"),
    ("campaign_jobs", "campaign_id", "campaigns"),
    ("dashboard_tiles", "created_by", "team"),
    ("dashboard_configurations", "owner_id", "team"),
    ("dashboard_tile_instances", "dashboard_id", "dashboard_configurations"),
    ("dashboard_tile_instances", "tile_id", "dashboard_tiles"),
    ("uploaded_images", "uploaded_by", "team"),
    ("presentations", "cover_image_id", "uploaded_images"),
    ("presentations", "created_by", "team"),
    ("slides", "presentation_id", "presentations"),
    ("slides", "image_id", "uploaded_images"),
    ("mailing_lists", "owner_id", "team"),
    ("scheduled_reports", "presentation_id", "presentations"),
    ("scheduled_reports", "created_by", "team"),
    ("scheduled_reports", "mailing_list_id", "mailing_lists"),
    ("report_executions", "scheduled_report_id", "scheduled_reports"),
    ("environment_configurations", "integration_id", "integrations"),
    ("migration_history", "integration_id", "integrations"),
}

# The plan's hand-written "Phase 4" order.
PLAN_ORDER = [
    "users", "permissions", "uploaded_images", "integrations",
    "team", "roles", "presentations",
    "role_permissions", "slides", "segments", "cohorts", "dashboard_tiles",
    "campaigns", "dashboard_tile_instances", "dashboard_configurations", "scheduled_reports", "mailing_lists",
    "campaign_jobs", "report_executions", "environment_configurations", "migration_history",
]

PLAN_INDEXES = {
    "idx_team_email": ("team", "(email)"),
    "idx_cohorts_status": ("cohorts", "(status)"),
    "idx_segments_active": ("segments", "(is_active)"),
    "idx_campaigns_status": ("campaigns", "(status)"),
    "idx_tiles_dashboard": ("dashboard_tile_instances", "(dashboard_id)"),
    "idx_executions_report": ("report_executions", "(scheduled_report_id)"),
}

BIG_TABLES = ("report_executions", "campaign_jobs", "dashboard_tile_instances", "slides")



def table_digests(params):
    """md5 of every table's content, rows ordered by their text form."""
    sql = 'SELECT count(*), md5(string_agg(t::text, chr(10) ORDER BY t::text)) FROM "{}" t'
    return {table: query(params, sql.format(table))[0] for table in generate.TABLES}


def fk_edges(params):
    rows = query(params, """
        SELECT c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text
        FROM pg_constraint c
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
        WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace""")
    return set(rows)


@pytest.fixture(scope="module")
def loaded(source_server):
    """A scratch database on the source server loaded at SCALE (shared by the read-only tests)."""
    databases = ScratchDatabases()
    params = databases.create(source_server, "cdpref")
    result = generate.load(params, SCALE)
    yield params, result
    databases.drop_all()


def test_expected_row_counts_shape():
    small, one, big = (generate.expected_row_counts(s) for s in (0.02, 1, 10))
    assert list(one) == list(generate.TABLES) and len(one) == 21
    for table in ("permissions", "roles", "role_permissions", "integrations", "environment_configurations"):
        assert small[table] == one[table] == big[table] <= 400
    for table in ("permissions", "integrations", "environment_configurations"):
        assert 10 <= one[table] <= 60
    assert max(one, key=one.get) == "report_executions"
    assert sorted(one, key=one.get)[-2] == "campaign_jobs"
    assert big["report_executions"] == 10 * one["report_executions"]
    assert all(count >= 5 for count in generate.expected_row_counts(0.0001).values())
    with pytest.raises(ValueError):
        generate.expected_row_counts(0)


def test_load_result(loaded):
    _params, result = loaded
    assert result["row_counts"] == generate.expected_row_counts(SCALE)
    assert result["seconds"] > 0 and result["data_bytes"] > 0
    assert result["database_bytes"] > result["data_bytes"]


def test_tables_and_column_counts(loaded):
    params, _ = loaded
    rows = query(params, """
        SELECT c.relname, count(a.attnum)
        FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
        GROUP BY c.relname""")
    assert dict(rows) == COLUMN_COUNTS


def test_extensions(loaded):
    params, _ = loaded
    names = {row[0] for row in query(params, "SELECT extname FROM pg_extension")}
    assert {"uuid-ossp", "pgcrypto"} <= names


def test_foreign_keys(loaded):
    params, _ = loaded
    edges = fk_edges(params)
    assert edges == FOREIGN_KEYS
    assert ("team", "manager_id", "team") in edges  # the self-reference


def test_real_graph_differs_from_plan_order(loaded):
    params, _ = loaded
    edges = {(child, parent) for child, _col, parent in fk_edges(params) if child != parent}
    position = {table: i for i, table in enumerate(PLAN_ORDER)}
    violated = {(child, parent) for child, parent in edges if position[parent] > position[child]}
    assert {("dashboard_tile_instances", "dashboard_configurations"), ("scheduled_reports", "mailing_lists"),
            ("uploaded_images", "team")} <= violated
    # the generator's own load order respects every edge
    load_position = {table: i for i, table in enumerate(generate.TABLES)}
    assert all(load_position[parent] < load_position[child] for child, parent in edges)
    # roles is not a level-1 table next to team: it references team
    assert ("roles", "team") in edges and ("presentations", "team") in edges


def test_plan_indexes(loaded):
    params, _ = loaded
    rows = query(params, "SELECT indexname, tablename, indexdef FROM pg_indexes WHERE schemaname = 'public'")
    by_name = {name: (table, definition) for name, table, definition in rows}
    for name, (table, columns) in PLAN_INDEXES.items():
        assert name in by_name, name
        assert by_name[name][0] == table
        assert by_name[name][1].endswith(columns), by_name[name][1]
    assert len(by_name) > 40  # plus primary, unique and FK indexes


def test_sequences_follow_the_data(loaded):
    params, _ = loaded
    rows = dict(query(params, "SELECT sequencename, last_value FROM pg_sequences "
                              "WHERE schemaname = 'public'"))
    counts = generate.expected_row_counts(SCALE)
    assert rows == {"role_permissions_id_seq": counts["role_permissions"],
                    "migration_history_id_seq": counts["migration_history"]}


def test_passwords_are_bcrypt(loaded):
    params, _ = loaded
    hashes = [row[0] for row in query(params, "SELECT password_hash FROM team")]
    assert len(hashes) == generate.expected_row_counts(SCALE)["team"]
    pattern = re.compile(r"^\$2[ab]\$\d\d\$[./A-Za-z0-9]{53}$")
    assert all(len(h) == 60 and pattern.match(h) for h in hashes)
    # member number 1 (the earliest) has password 'password-0'
    sql = "SELECT password_hash = crypt('password-0', password_hash) FROM team ORDER BY created_at LIMIT 1"
    assert query(params, sql)[0][0] is True


def test_credentials_encrypted(loaded):
    params, _ = loaded
    data_type = query(params, "SELECT data_type FROM information_schema.columns "
                              "WHERE table_name = 'integrations' AND column_name = 'encrypted_credentials'")
    assert data_type == [("bytea",)]
    rows = query(params, """
        SELECT name, position(convert_to('CDP_SVC', 'UTF8') IN encrypted_credentials),
               position(convert_to('password', 'UTF8') IN encrypted_credentials),
               convert_from(decrypt(encrypted_credentials, convert_to(%s, 'UTF8'), 'aes'), 'UTF8')::jsonb
        FROM integrations WHERE encrypted_credentials IS NOT NULL""", (generate.CREDENTIALS_KEY,))
    assert len(rows) >= 10
    for _name, plain_user, plain_password, credentials in rows:
        assert plain_user == 0 and plain_password == 0
        assert credentials["username"].startswith("CDP_SVC_") and credentials["password"]


def test_data_is_realistic(loaded):
    params, _ = loaded
    (orphans,) = query(params, """
        SELECT count(*) FROM team t LEFT JOIN users u ON t.created_by = u.id::text::uuid
        WHERE t.created_by IS NOT NULL AND u.id IS NULL""")[0]
    assert orphans == 0
    statuses = dict(query(params, "SELECT status, count(*) FROM report_executions GROUP BY status"))
    assert max(statuses, key=statuses.get) == "succeeded" and {"failed", "timeout"} <= set(statuses)
    nulls, empties, unicode_names = query(params, """
        SELECT count(*) FILTER (WHERE description IS NULL), count(*) FILTER (WHERE description = ''),
               count(*) FILTER (WHERE name ~ '[^\\x01-\\x7e]') FROM cohorts""")[0]
    assert nulls > 0 and empties > 0 and unicode_names > 0
    (managers,) = query(params, "SELECT count(*) FROM team WHERE manager_id IS NOT NULL")[0]
    assert managers == generate.expected_row_counts(SCALE)["team"] - 1
    (bad_sizes,) = query(params, "SELECT count(*) FROM uploaded_images WHERE byte_size <> octet_length(data) "
                                 "OR sha256 <> encode(digest(data, 'sha256'), 'hex')")[0]
    assert bad_sizes == 0
    (uuid_versions,) = query(params, "SELECT array_agg(DISTINCT substr(id::text, 15, 1)) FROM users")[0]
    assert uuid_versions == ["4"]


def test_load_refuses_existing_tables(loaded):
    params, _ = loaded
    with pytest.raises(generate.TablesExistError):
        generate.load(params, SCALE)
    assert query(params, "SELECT count(*) FROM users")[0][0] == generate.expected_row_counts(SCALE)["users"]


def test_deterministic(loaded, scratch, target_server):
    """A second load (on the other server) has byte-identical content, table by table."""
    params, _ = loaded
    other = scratch.create(target_server, "cdpref2")
    generate.load(other, SCALE)
    first, second = table_digests(params), table_digests(other)
    assert first == second
    assert all(count > 0 for count, _digest in first.values())


def test_size_is_linear(loaded, scratch, source_server):
    params, _ = loaded
    double = scratch.create(source_server, "cdpref4")
    result = generate.load(double, 2 * SCALE)
    small = generate.expected_row_counts(SCALE)
    for table in BIG_TABLES:
        assert result["row_counts"][table] == 2 * small[table]
    sizes = "SELECT sum(pg_total_relation_size(t::regclass)) FROM unnest(%s::text[]) AS t"
    small_bytes = query(params, sizes, (list(BIG_TABLES),))[0][0]
    double_bytes = query(double, sizes, (list(BIG_TABLES),))[0][0]
    assert 1.6 < double_bytes / small_bytes < 2.4


def run_cli(params, password_file, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    command = [sys.executable, "-m", "cdp_reference.generate", "--host", params["host"], "--port",
               str(params["port"]), "--dbname", params["dbname"], "--user", params["user"],
               "--password-file", str(password_file), *args]
    return subprocess.run(command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=300)


def test_cli_idempotent(scratch, source_server, tmp_path):
    params = scratch.create(source_server, "cdpcli")
    password_file = tmp_path / "password"
    password_file.write_text(params["password"] + "\n")
    password_file.chmod(0o600)

    first = run_cli(params, password_file, "--scale", str(SCALE))
    assert first.returncode == 0, first.stderr
    assert "report_executions" in first.stdout and "rows" in first.stdout

    second = run_cli(params, password_file, "--scale", str(SCALE))
    assert second.returncode == 0, second.stderr
    assert f"already loaded at scale {SCALE:g}" in second.stdout

    other = run_cli(params, password_file, "--scale", str(2 * SCALE))
    assert other.returncode == 2
    assert "--drop" in other.stderr
    assert query(params, "SELECT count(*) FROM report_executions")[0][0] == \
        generate.expected_row_counts(SCALE)["report_executions"]

    dropped = run_cli(params, password_file, "--scale", str(2 * SCALE), "--drop")
    assert dropped.returncode == 0, dropped.stderr
    assert query(params, "SELECT count(*) FROM report_executions")[0][0] == \
        generate.expected_row_counts(2 * SCALE)["report_executions"]

    for run in (first, second, other, dropped):
        assert params["password"] not in run.stdout + run.stderr


def test_cli_takes_no_password_argument():
    result = subprocess.run([sys.executable, "-m", "cdp_reference.generate", "--dbname", "x", "--password",
                             "secret"], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr
