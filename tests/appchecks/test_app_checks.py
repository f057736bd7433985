"""The plan's security and performance checks (module_utils/pgmigrate/appchecks/app_checks.py) on real databases.

The CDP reference database (scale 0.02) is loaded once on the source and once on the target; each test
breaks one thing (inside a transaction it rolls back where it can) and checks that exactly that is
reported, by row key, and that no sensitive value ever appears in the check.
"""

import json
import time

import psycopg2
import psycopg2.errors
import pytest
import yaml

from cdp_reference import generate
from conftest import PROJECT_DIR, ScratchDatabases, connect
from pgmigrate.appchecks import app_checks

SCALE = 0.02
# The validation defaults (limits) and the CDP profile's checks (group_vars/all/profile_cdp.yml, selected by
# migration_profile: cdp).
VALIDATION_VARS = {
    **yaml.safe_load((PROJECT_DIR / "group_vars" / "all" / "validation.yml").read_text()),
    **yaml.safe_load((PROJECT_DIR / "group_vars" / "all" / "profile_cdp.yml").read_text())["migration_profile_cdp"]}
PLAN_INDEXES = {"idx_team_email", "idx_cohorts_status", "idx_segments_active", "idx_campaigns_status",
                "idx_tiles_dashboard", "idx_executions_report"}

# A representative query that calls public.pgm_test_delay(): it sleeps as long as the one row of
# public.pgm_test_delay_seconds says, so a test can make the target (only) slow.
DELAY_SQL = """
CREATE TABLE public.pgm_test_delay_seconds (seconds float8 NOT NULL);
INSERT INTO public.pgm_test_delay_seconds VALUES (0);
CREATE FUNCTION public.pgm_test_delay() RETURNS void LANGUAGE sql
    AS 'SELECT pg_sleep(seconds) FROM public.pgm_test_delay_seconds';
"""
DELAYED_QUERY = {
    "name": "team member by email (delayed)",
    "sql": "SELECT m.id, m.full_name, public.pgm_test_delay() FROM public.team m "
           "WHERE m.email = (SELECT email FROM public.team ORDER BY email LIMIT 1)",
}


@pytest.fixture(scope="module")
def cdp(source_server, target_server):
    """(source params, target params): the CDP at scale 0.02 on both servers, for the whole module."""
    databases = ScratchDatabases()
    try:
        pair = databases.create(source_server, "appsrc"), databases.create(target_server, "appdst")
        for params in pair:
            generate.load(params, SCALE)
            conn = connect(params)
            with conn, conn.cursor() as cur:
                cur.execute(DELAY_SQL)
            conn.close()
        yield pair
    finally:
        databases.drop_all()


@pytest.fixture
def target_conn(cdp):
    """A connection to the CDP target inside a transaction that is rolled back after the test."""
    conn = connect(cdp[1])
    yield conn
    conn.rollback()
    conn.close()


def set_delay(params, seconds):
    conn = connect(params)
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE public.pgm_test_delay_seconds SET seconds = %s", (seconds,))
    conn.close()


def first_id(cur, table, offset=0):
    cur.execute(f"SELECT id::text FROM public.{table} ORDER BY id OFFSET %s LIMIT 1", (offset,))
    return cur.fetchone()[0]


def assert_check_shape(check, name):
    assert check["name"] == name
    assert check["status"] in ("pass", "fail", "warn", "skip")
    assert isinstance(check["title"], str) and isinstance(check["summary"], str)
    assert isinstance(check["seconds"], float)
    for item in check["items"]:
        assert {"table", "status", "detail"} <= set(item)
        assert item["status"] in ("pass", "fail", "warn")
    json.dumps(check)  # JSON-serialisable as it is


def failing(check):
    return [item for item in check["items"] if item["status"] == "fail"]


# --- the CDP as generated passes everything --------------------------------------------------------------


def test_the_cdp_as_generated_passes_every_check(cdp, target_conn):
    source, target = cdp
    hashes = app_checks.check_password_hashes(target_conn, VALIDATION_VARS["validation_password_hash_columns"])
    credentials = app_checks.check_plaintext_credentials(target_conn, VALIDATION_VARS["validation_encrypted_columns"])
    indexes = app_checks.check_required_indexes(target_conn, VALIDATION_VARS["validation_required_indexes"])
    queries = app_checks.check_queries(
        source, target, VALIDATION_VARS["validation_performance_queries"],
        limit_seconds=VALIDATION_VARS["validation_query_limit_seconds"],
        slower_factor=VALIDATION_VARS["validation_query_slower_factor"])
    for check, name in ((hashes, "password_hashes"), (credentials, "plaintext_credentials"),
                        (indexes, "required_indexes"), (queries, "query_performance")):
        assert_check_shape(check, name)
        assert check["status"] == "pass", json.dumps(check, indent=2)

    counts = generate.expected_row_counts(SCALE)
    (team,) = hashes["items"]
    assert (team["table"], team["column"], team["rows_checked"], team["rows_failing"]) == (
        "public.team", "password_hash", counts["team"], 0)
    (integrations,) = credentials["items"]
    assert integrations["table"] == "public.integrations"
    assert integrations["rows_checked"] == counts["integrations"] - 1  # one integration has no credentials
    assert {item["index"] for item in indexes["items"]} == PLAN_INDEXES

    # Every representative query runs and returns rows; both timings are recorded.
    assert 5 <= len(queries["items"]) <= 7
    for item in queries["items"]:
        assert item["table"] is None and item["name"]
        assert item["rows"] > 0, item
        assert 0 <= item["target_seconds"] < 1 and 0 <= item["source_seconds"] < 1

    # No hash nor ciphertext is quoted anywhere.
    with target_conn.cursor() as cur:
        cur.execute("SELECT password_hash FROM public.team ORDER BY id LIMIT 1")
        some_hash = cur.fetchone()[0]
        cur.execute("SELECT encode(encrypted_credentials, 'hex') FROM public.integrations "
                    "WHERE encrypted_credentials IS NOT NULL LIMIT 1")
        some_ciphertext = cur.fetchone()[0]
    dumped = json.dumps([hashes, credentials])
    assert some_hash not in dumped and some_hash[7:29] not in dumped
    assert some_ciphertext[:32] not in dumped


def test_no_rules_means_skip(cdp, target_conn):
    assert app_checks.check_password_hashes(target_conn, [])["status"] == "skip"
    assert app_checks.check_plaintext_credentials(target_conn, None)["status"] == "skip"
    assert app_checks.check_required_indexes(target_conn, [])["status"] == "skip"
    assert app_checks.check_queries(cdp[0], cdp[1], [])["status"] == "skip"


# --- password hashes -------------------------------------------------------------------------------------


def test_a_plaintext_password_fails_naming_its_row_by_key(target_conn):
    with target_conn.cursor() as cur:
        # The CDP's CHECK constraint would refuse it: a target without it is what this check is for.
        cur.execute("SELECT conname FROM pg_constraint WHERE conrelid = 'public.team'::regclass AND contype = 'c' "
                    "AND pg_get_constraintdef(oid) LIKE '%%password_hash%%'")
        cur.execute(f'ALTER TABLE public.team DROP CONSTRAINT "{cur.fetchone()[0]}"')
        team_id = first_id(cur, "team", offset=3)
        cur.execute("UPDATE public.team SET password_hash = 'hunter2' WHERE id = %s", (team_id,))
    check = app_checks.check_password_hashes(target_conn, [{"table": "public.team", "column": "password_hash",
                                                             "key": ["id"]}])
    assert_check_shape(check, "password_hashes")
    assert check["status"] == "fail"
    (item,) = failing(check)
    assert item["table"] == "public.team" and item["column"] == "password_hash"
    assert item["keys"] == [f"id={team_id}"]
    assert item["rows_failing"] == 1 and item["rows_checked"] == generate.expected_row_counts(SCALE)["team"]
    assert f"id={team_id}" in item["detail"]
    assert "hunter2" not in json.dumps(check)


def test_password_hash_formats(target_conn):
    """bcrypt, argon2, scrypt and pbkdf2 in their usual encodings pass; anything else fails."""
    good = {
        1: None,  # bcrypt from pgcrypto, set below
        2: "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$RdescudvJCsgt3ub+b+dWRWJTmaaJObG7Hg0Wg6bXAs",
        3: "$argon2i$v=19$m=65536,t=2,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
        4: "$argon2d$m=512,t=3,p=2$c29tZXNhbHQ$2+JCoQtY/2x5F0VB9pEVP3xBNguWP1T25Ui0PtZuk8o",
        5: "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E",
        6: "$7$C6..../....SodiumChloride$kBGj9fHznVYFQMEn/qDCfrDevf9YDtcDdKvEqHJLV8D",
        7: "pbkdf2_sha256$600000$Zq3rGmAT2wY1vJkH$Yp3vGhUeu0nGm6yF5Bf3aYV0w6Rk3mWkQhUeJ4tNn1E=",
        8: "$pbkdf2-sha256$29000$N2bmTMWXEgLg/N.eU2oN4Q$CeTn8Xk3Gzq0e3uHcT7SU2c2w7hZ5n1sT2iVfVJjB6A",
        9: "$pbkdf2$1212$OB.dtnSEXZK8U5cgxU/GYQ$y5LKPOplRmok7CZp/aqVDVg8zGI",
        10: "argon2$argon2id$v=19$m=102400,t=2,p=8$dGhpc2lzYXNhbHQ$0x5GbbuRLyyk7xoHKvWJmg0rLUpk8nLH3wH9M4zh7wQ",
    }
    bad = {
        21: "hunter2",
        22: "",
        23: "5f4dcc3b5aa765d61d8327deb882cf99",  # unsalted md5
        24: "$2b$12$tooshort",
        25: "$1$saltsalt$qjXMvbEw8oaL.CzflDugX/",  # md5-crypt
        26: "sha1$salt$0beec7b5ea3f0fdbc95d0dd47f3c5bc275da8a33",
        27: "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ",  # no hash
        28: "pbkdf2_sha256$600000$salt$",  # no hash
    }
    with target_conn.cursor() as cur:
        cur.execute("CREATE TABLE public.hash_samples (id int PRIMARY KEY, h text, b bytea)")
        cur.execute("INSERT INTO public.hash_samples VALUES (1, crypt('pw', gen_salt('bf', 4)))")
        for key, value in {**good, **bad}.items():
            if value is not None:
                cur.execute("INSERT INTO public.hash_samples (id, h) VALUES (%s, %s)", (key, value))
        cur.execute("INSERT INTO public.hash_samples (id, h) VALUES (30, NULL)")  # NULL: no password, passes
        cur.execute("UPDATE public.hash_samples SET b = convert_to(h, 'UTF8')")
    check = app_checks.check_password_hashes(target_conn, [
        {"table": "public.hash_samples", "column": "h", "key": ["id"]},
        {"table": "public.hash_samples", "column": "b"},  # bytea; key: the primary key
        {"table": "public.hash_samples", "column": "h", "key": "id", "formats": ["bcrypt"]},
    ])
    text_item, bytea_item, bcrypt_item = check["items"]
    expected_bad = [f"id={key}" for key in sorted(bad)]
    assert text_item["keys"] == expected_bad, text_item
    assert bytea_item["keys"] == expected_bad, bytea_item
    assert text_item["rows_checked"] == len(good) + len(bad)
    assert bcrypt_item["keys"] == [f"id={key}" for key in sorted(set(good) - {1} | set(bad))]
    dumped = json.dumps(check)
    assert "hunter2" not in dumped and "5f4dcc3b" not in dumped and "RdescudvJCsgt3ub" not in dumped


def test_more_than_twenty_offenders_are_counted_and_the_first_twenty_named(target_conn):
    with target_conn.cursor() as cur:
        cur.execute("CREATE TABLE public.accounts (tenant int, login text, pw text, PRIMARY KEY (tenant, login))")
        cur.execute("INSERT INTO public.accounts SELECT i % 3, 'user' || i, 'plain-' || i "
                    "FROM generate_series(1, 45) i")
    check = app_checks.check_password_hashes(target_conn, [{"table": "public.accounts", "column": "pw",
                                                             "key": ["tenant", "login"]}])
    (item,) = check["items"]
    assert item["rows_failing"] == 45 and len(item["keys"]) == app_checks.MAX_KEYS_SHOWN
    assert item["keys"][:2] == ["tenant=0, login=user12", "tenant=0, login=user15"]
    assert "and 25 more" in item["detail"]
    assert "plain-" not in json.dumps(check)


def test_bad_rules_fail_with_a_clear_message_and_leave_the_transaction_usable(target_conn):
    check = app_checks.check_password_hashes(target_conn, [
        {"table": "public.nope", "column": "password_hash", "key": ["id"]},
        {"table": "public.team", "column": "passwd", "key": ["id"]},
        {"table": "public.team", "column": "password_hash", "key": ["uid"]},
        {"table": "a.b.c.d", "column": "x"},
        {"table": "public.team"},
        {"table": "public.team", "column": "password_hash", "key": ["id"], "formats": ["md5"]},
        {"table": "public.team", "column": "password_hash", "key": ["id"]},
    ])
    details = [item["detail"] for item in check["items"]]
    assert check["status"] == "fail"
    assert "table public.nope does not exist" in details[0]
    assert "public.team has no column 'passwd'" in details[1]
    assert "no key column 'uid'" in details[2]
    assert details[3].startswith("cannot check: table a.b.c.d")
    assert "needs table and column" in details[4]
    assert "unknown password hash formats md5" in details[5]
    assert check["items"][6]["status"] == "pass"
    with target_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM public.team")  # the caller's transaction is still usable
        assert cur.fetchone()[0] == generate.expected_row_counts(SCALE)["team"]


# --- plaintext credentials -------------------------------------------------------------------------------


def test_a_plaintext_integration_credential_fails_naming_its_row_by_key(target_conn):
    with target_conn.cursor() as cur:
        integration_id = first_id(cur, "integrations", offset=5)
        cur.execute("UPDATE public.integrations SET encrypted_credentials = convert_to('{\"api_key\": \"abc\"}', "
                    "'UTF8') WHERE id = %s", (integration_id,))
    check = app_checks.check_plaintext_credentials(target_conn, VALIDATION_VARS["validation_encrypted_columns"])
    assert_check_shape(check, "plaintext_credentials")
    assert check["status"] == "fail"
    (item,) = failing(check)
    assert item["table"] == "public.integrations" and item["column"] == "encrypted_credentials"
    assert item["keys"] == [f"id={integration_id}"] and item["rows_failing"] == 1
    assert item["reasons"] == {"a JSON object": 1}
    assert f"id={integration_id}" in item["detail"]
    assert "api_key" not in json.dumps(check)


def test_ciphertext_passes_and_readable_secrets_fail_in_bytea_and_text_columns(target_conn):
    key = "convert_to('k3y', 'UTF8')"
    encrypted = {
        1: f"encrypt(convert_to('{{\"api_key\": \"abc\"}}', 'UTF8'), {key}, 'aes')",
        2: "pgp_sym_encrypt_bytea(convert_to('{\"password\": \"p\"}', 'UTF8'), 'k3y')",
        3: "convert_to(armor(pgp_sym_encrypt('password=p', 'k3y')), 'UTF8')",
        4: f"convert_to(encode(encrypt(convert_to('secret', 'UTF8'), {key}, 'aes'), 'base64'), 'UTF8')",
        5: f"convert_to(encode(encrypt(convert_to('token', 'UTF8'), {key}, 'aes-cbc'), 'hex'), 'UTF8')",
        6: "convert_to('vault:v1:' || encode(gen_random_bytes(48), 'base64'), 'UTF8')",
        7: "NULL",
        8: "''::bytea",
    }
    plaintext = {
        11: "convert_to('hunter2', 'UTF8')",
        12: "convert_to('{\"api_key\": \"abc\"}', 'UTF8')",
        13: "convert_to('user=svc password=pa55', 'UTF8')",
        14: "convert_to('AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI', 'UTF8')",
        15: "convert_to(encode(convert_to('{\"token\": \"t0k\"}', 'UTF8'), 'base64'), 'UTF8')",
        16: "convert_to('postgresql://app:S3cr3t@db.internal:5432/cdp', 'UTF8')",
        17: "convert_to('eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl', 'UTF8')",
        18: "convert_to('correct horse battery staple', 'UTF8')",
    }
    with target_conn.cursor() as cur:
        cur.execute("CREATE TABLE public.vault (id int PRIMARY KEY, b bytea, t text)")
        for row, expression in {**encrypted, **plaintext}.items():
            cur.execute(f"INSERT INTO public.vault (id, b) VALUES (%s, {expression})", (row,))
        # The text column holds the same values where they are text (ciphertext bytes only in bytea).
        cur.execute("UPDATE public.vault SET t = convert_from(b, 'UTF8') WHERE id NOT IN (1, 2)")
    check = app_checks.check_plaintext_credentials(target_conn, [
        {"table": "public.vault", "column": "b", "key": ["id"]},
        {"table": "public.vault", "column": "t"},
    ])
    bytea_item, text_item = check["items"]
    expected = [f"id={row}" for row in sorted(plaintext)]
    assert bytea_item["keys"] == expected, bytea_item
    assert text_item["keys"] == expected, text_item
    assert bytea_item["rows_checked"] == len(encrypted) + len(plaintext) - 1  # NULL is not checked
    dumped = json.dumps(check)
    for secret in ("hunter2", "api_key", "pa55", "wJalrXUtnFEMI", "S3cr3t", "horse", "eyJ"):
        assert secret not in dumped


def test_plaintext_check_works_in_autocommit_mode(cdp):
    conn = connect(cdp[1])
    conn.autocommit = True
    try:
        check = app_checks.check_plaintext_credentials(conn, VALIDATION_VARS["validation_encrypted_columns"])
        assert check["status"] == "pass", check
        check = app_checks.check_password_hashes(conn, [{"table": "team", "column": "password_hash"}])
        assert check["status"] == "pass" and check["items"][0]["table"] == "public.team"
    finally:
        conn.close()


def test_plaintext_reason_never_quotes_the_value():
    reasons = [app_checks.plaintext_reason(v) for v in (b"hunter2", '{"api_key": "zzz"}', "token=zzz")]
    assert all(reasons) and not any("zzz" in r or "hunter2" in r for r in reasons)


# --- query performance -----------------------------------------------------------------------------------


def test_a_query_over_the_limit_fails(cdp):
    source, target = cdp
    set_delay(target, 6)  # pg_sleep(6): over the 5 s limit, cancelled by the statement timeout
    try:
        began = time.monotonic()
        check = app_checks.check_queries(source, target, [DELAYED_QUERY], limit_seconds=5.0)
        elapsed = time.monotonic() - began
    finally:
        set_delay(target, 0)
    assert_check_shape(check, "query_performance")
    assert check["status"] == "fail"
    (item,) = check["items"]
    assert item["name"] == DELAYED_QUERY["name"] and item["table"] is None
    assert item["source_seconds"] is not None and item["source_seconds"] < 1
    assert item["target_seconds"] is None  # cancelled: no run finished
    assert "cancelled on the target" in item["detail"] and "limit 5 s" in item["detail"]
    assert elapsed < 10  # the cancelled query is not run three times


def test_a_query_slower_than_factor_times_the_source_fails(cdp):
    source, target = cdp
    set_delay(target, 0.3)
    try:
        check = app_checks.check_queries(source, target, [DELAYED_QUERY], limit_seconds=5.0, slower_factor=2.0)
    finally:
        set_delay(target, 0)
    (item,) = check["items"]
    assert item["status"] == "fail", item
    assert 0.3 <= item["target_seconds"] < 5 and item["source_seconds"] < 0.1
    assert "more than 2 x the source" in item["detail"]
    # The same timings pass with a factor that allows them.
    set_delay(target, 0.3)
    try:
        check = app_checks.check_queries(source, target, [DELAYED_QUERY], slower_factor=2.0, slack_seconds=1.0)
    finally:
        set_delay(target, 0)
    assert check["status"] == "pass", check


def test_a_query_over_a_small_limit_is_measured_and_fails(cdp):
    source, target = cdp
    check = app_checks.check_queries(source, target, [{"name": "sleepy", "sql": "SELECT pg_sleep(0.2)"}],
                                     limit_seconds=0.1, slower_factor=100, runs=2)
    (item,) = check["items"]
    assert item["status"] == "fail" and 0.2 <= item["target_seconds"] < 0.36
    assert "over the limit of 0.1 s" in item["detail"] and "on the source" in item["detail"]


def test_queries_run_read_only_and_errors_are_reported(cdp):
    source, target = cdp
    check = app_checks.check_queries(source, target, [
        {"name": "writes", "sql": "UPDATE public.team SET full_name = 'x'"},
        {"name": "broken", "sql": "SELECT * FROM public.no_such_table"},
        {"name": "no sql"},
    ])
    writes, broken, empty = check["items"]
    assert writes["status"] == "fail" and "read-only transaction" in writes["detail"]
    assert broken["status"] == "fail" and "no_such_table" in broken["detail"]
    assert empty["status"] == "fail" and "needs name and sql" in empty["detail"]
    conn = connect(target)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM public.team WHERE full_name = 'x'")
        assert cur.fetchone()[0] == 0
    conn.close()


def test_an_unreachable_source_warns_and_an_unreachable_target_fails(cdp):
    source, target = cdp
    check = app_checks.check_queries({**source, "dbname": "no_such_db"}, target, [DELAYED_QUERY])
    (item,) = check["items"]
    assert item["status"] == "warn" and item["source_seconds"] is None and item["target_seconds"] is not None
    assert "not compared with the source" in item["detail"]
    check = app_checks.check_queries(source, {**target, "password": "wrong"}, [DELAYED_QUERY])
    assert check["status"] == "fail" and "Cannot connect to the target" in check["items"][0]["detail"]
    assert "wrong" not in json.dumps(check)


# --- required indexes ------------------------------------------------------------------------------------


def test_a_dropped_plan_index_fails(target_conn):
    with target_conn.cursor() as cur:
        cur.execute("DROP INDEX public.idx_team_email")
    check = app_checks.check_required_indexes(target_conn, VALIDATION_VARS["validation_required_indexes"])
    assert_check_shape(check, "required_indexes")
    assert check["status"] == "fail"
    (item,) = failing(check)
    assert (item["table"], item["index"]) == ("public.team", "idx_team_email")
    assert "missing" in item["detail"]
    assert {i["index"] for i in check["items"] if i["status"] == "pass"} == PLAN_INDEXES - {"idx_team_email"}


def test_an_index_on_another_table_or_columns_or_a_missing_table_fails(target_conn):
    check = app_checks.check_required_indexes(target_conn, [
        {"name": "idx_cohorts_status", "table": "public.campaigns"},
        {"name": "idx_team_email", "table": "public.team", "columns": ["full_name"]},
        {"name": "idx_team_email", "table": "public.team", "columns": ["email"]},
        {"name": "idx_x", "table": "public.nope"},
        {"table": "public.team"},
    ])
    wrong_table, wrong_columns, right, no_table, no_name = check["items"]
    assert "is on public.cohorts, not on public.campaigns" in wrong_table["detail"]
    assert wrong_columns["status"] == "fail" and "expected (full_name)" in wrong_columns["detail"]
    assert right["status"] == "pass"
    assert no_table["status"] == "fail" and "table public.nope does not exist" in no_table["detail"]
    assert no_name["status"] == "fail" and "needs name and table" in no_name["detail"]


def test_an_index_left_invalid_by_a_failed_concurrent_build_fails(scratch, target_server):
    params = scratch.create(target_server, "appidx")
    generate.load(params, SCALE)
    conn = connect(params)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("ALTER TABLE public.team DROP CONSTRAINT team_email_key")
            cur.execute("DROP INDEX public.idx_team_email")
            cur.execute("UPDATE public.team SET email = (SELECT email FROM public.team ORDER BY id LIMIT 1) "
                        "WHERE id = (SELECT id FROM public.team ORDER BY id OFFSET 1 LIMIT 1)")
            with pytest.raises(psycopg2.errors.UniqueViolation):
                cur.execute("CREATE UNIQUE INDEX CONCURRENTLY idx_team_email ON public.team (email)")
            cur.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = 'public.idx_team_email'::regclass")
            assert cur.fetchone()[0] is False
        check = app_checks.check_required_indexes(conn, VALIDATION_VARS["validation_required_indexes"])
    finally:
        conn.close()
    assert check["status"] == "fail"
    (item,) = failing(check)
    assert (item["table"], item["index"]) == ("public.team", "idx_team_email")
    assert "invalid" in item["detail"] and "CREATE INDEX CONCURRENTLY" in item["detail"]
