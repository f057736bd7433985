"""The plan's environment paths into an environment that already runs the application: staging ->
production with production's integrations preserved (playbooks/staging_to_production.yml), the scheduled
production -> staging sync with masking (playbooks/staging_sync.yml), and the sync engine's policies."""

import re
import subprocess

import pytest

import dbcompare
from cdp_reference import generate
from conftest import PROJECT_DIR, execute, query, write_inventory
from pgmigrate.envsync import environment_sync, masking

ANSIBLE_PLAYBOOK = str(PROJECT_DIR / ".venv" / "bin" / "ansible-playbook")
PRESERVED = ("public.integrations", "public.environment_configurations", "public.migration_history")
STAGING_INBOX = "cdp-staging-inbox@example.invalid"


def run_playbook(name, inventory, *args):
    return subprocess.run([ANSIBLE_PLAYBOOK, f"playbooks/{name}", "-i", str(inventory), *args], cwd=PROJECT_DIR,
                          capture_output=True, text=True, timeout=600, check=False)




def orphans(params):
    """(constraint, orphan rows) for every foreign key of the database: all must join."""
    found = []
    for name, child, parent, columns, parent_columns in query(params, """
            SELECT con.conname, con.conrelid::regclass::text, con.confrelid::regclass::text,
                   ARRAY(SELECT attname FROM unnest(con.conkey) k JOIN pg_attribute a
                         ON a.attrelid = con.conrelid AND a.attnum = k),
                   ARRAY(SELECT attname FROM unnest(con.confkey) k JOIN pg_attribute a
                         ON a.attrelid = con.confrelid AND a.attnum = k)
            FROM pg_constraint con WHERE con.contype = 'f'"""):
        join = " AND ".join(f'p."{p}" = c."{c}"' for c, p in zip(columns, parent_columns, strict=True))
        not_null = " AND ".join(f'c."{c}" IS NOT NULL' for c in columns)
        count = query(params, f"SELECT count(*) FROM {child} c WHERE {not_null} AND NOT EXISTS "
                              f"(SELECT 1 FROM {parent} p WHERE {join})")[0][0]
        found.append((name, count))
    return found


@pytest.fixture
def staging_and_production(db_pair):
    """Staging (source) and production (target), loaded alike, then each given a life of its own."""
    staging, production = db_pair
    generate.load(staging, 0.02)
    generate.load(production, 0.02)
    execute(production,
            # Production's own integrations: other credentials and settings, one more integration.
            "UPDATE integrations SET encrypted_credentials = convert_to('production-' || id, 'UTF8'), "
            "config = config || '{\"environment\": \"production\"}'",
            "UPDATE environment_configurations SET value = 'prod-' || value WHERE is_secret",
            "INSERT INTO integrations (name, provider, status) "
            "VALUES ('Production-only webhook', 'slack', 'connected')",
            "INSERT INTO migration_history (migration_name, version, status) "
            "VALUES ('prod hotfix', '9.9', 'succeeded')",
            # A team member who left staging's copy of the data (removed by the promotion).
            "INSERT INTO team (email, full_name, password_hash) VALUES ('gone@acme-cdp.example', 'Gone', "
            "'$2b$04$' || repeat('a', 53))")
    execute(staging,
            "UPDATE team SET full_name = full_name || ' (promoted)' WHERE ctid IN (SELECT ctid FROM team LIMIT 5)",
            "INSERT INTO permissions (code, name, resource, action) "
            "VALUES ('exports2.export', 'Export v2', 'exports2', 'export')",
            "DELETE FROM campaign_jobs WHERE ctid IN (SELECT ctid FROM campaign_jobs LIMIT 40)")
    return staging, production


def test_staging_to_production_preserves_productions_integrations_and_promotes_the_rest(
        staging_and_production, tmp_path):
    staging, production = staging_and_production
    before = dbcompare.table_digests(production)
    warehouse = query(production, "SELECT ec.value FROM environment_configurations ec JOIN integrations i "
                                  "ON i.id = ec.integration_id WHERE i.provider = 'snowflake' AND "
                                  "ec.environment = 'production' AND ec.key = 'warehouse' AND ec.value <> '' "
                                  "ORDER BY ec.id LIMIT 1")[0][0]
    inventory = write_inventory(tmp_path, staging, production, {"migration_target_is_production": True,
                                                                "migration_confirm_target": production["dbname"],
                                                                "migration_profile": "cdp"})
    result = run_playbook("staging_to_production.yml", inventory)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]

    after_staging, after = dbcompare.table_digests(staging), dbcompare.table_digests(production)
    for table in PRESERVED:  # production's own rows, untouched
        assert after[table] == before[table], table
    for table in set(after) - set(PRESERVED) - {"public.scheduled_reports"}:  # user data and permissions promoted
        assert after[table] == after_staging[table], table
    assert query(production, "SELECT count(*) FROM team WHERE email = 'gone@acme-cdp.example'") == [(0,)]
    # Scheduled report configurations updated: production's warehouse, everything else as staging has it.
    assert {w for (w,) in query(production, "SELECT DISTINCT snowflake_warehouse FROM scheduled_reports")} \
        == {warehouse, None}
    staging_reports = query(staging, "SELECT id, name, recipients FROM scheduled_reports ORDER BY id")
    assert query(production, "SELECT id, name, recipients FROM scheduled_reports ORDER BY id") == staging_reports
    assert dbcompare.table_digests(production)["public.scheduled_reports"].rows == len(staging_reports)
    # The report names what was preserved, verified and checked.
    assert "public.integrations (preserve): kept, verified unchanged" in result.stdout
    assert "public.team (copy): 20 rows from the source" in result.stdout
    assert "check reports are sent from production's sender address (SendGrid from_address)" in result.stdout
    assert "BACKUP" in result.stdout and (tmp_path / "artifacts" / "backups").is_dir()
    assert all(count == 0 for _name, count in orphans(production))
    for secret in (staging["password"], production["password"]):
        assert secret not in result.stdout + result.stderr


def test_a_production_target_must_be_confirmed(staging_and_production, tmp_path):
    staging, production = staging_and_production
    before = dbcompare.table_digests(production)
    inventory = write_inventory(tmp_path, staging, production, {"migration_target_is_production": True})
    result = run_playbook("staging_to_production.yml", inventory)
    assert result.returncode != 0
    assert f"-e migration_confirm_target={production['dbname']}" in result.stdout
    assert dbcompare.table_digests(production) == before


@pytest.mark.parametrize("case", ["foreign key into a preserved table", "cascade into a preserved table",
                                  "email delivery check fails"])
def test_a_sync_that_cannot_keep_its_promises_rolls_back_and_says_why(staging_and_production, tmp_path, case):
    staging, production = staging_and_production
    extra = {"migration_profile": "cdp"}
    if case == "foreign key into a preserved table":
        # Staging has a new team member who created a report; production's team is kept.
        execute(staging, "INSERT INTO team (id, email, full_name, password_hash) VALUES "
                         "('00000000-0000-4000-8000-000000000001', 'new@acme-cdp.example', 'New', "
                         "'$2b$04$' || repeat('b', 53))",
                "UPDATE scheduled_reports SET created_by = '00000000-0000-4000-8000-000000000001' "
                "WHERE ctid IN (SELECT ctid FROM scheduled_reports LIMIT 1)")
        extra["promotion_table_policies"] = {"team": "preserve", "integrations": "preserve",
                                             "environment_configurations": "preserve"}
        expected = r"foreign key \S+ from public\.scheduled_reports \(copy\) to public\.team \(preserve\) would break"
    elif case == "cascade into a preserved table":
        # Integrations copied but their settings kept: production's extra integration would vanish and
        # take its settings with it (ON DELETE CASCADE).
        execute(production, "INSERT INTO environment_configurations (integration_id, environment, key, value) "
                            "SELECT id, 'production', 'channel', '#prod' FROM integrations "
                            "WHERE name = 'Production-only webhook'")
        extra["promotion_table_policies"] = {"environment_configurations": "preserve", "migration_history": "skip"}
        expected = (r"public\.environment_configurations \(preserve\) would change \(49 rows before, 48 after\), "
                    r"through environment_configurations_integration_id_fkey")
    else:
        extra["cdp_production_sender_pattern"] = "^reports@mail\\.acme-cdp\\.example$"
        expected = (r"reports are sent from production's sender address \(SendGrid from_address\): 2 of 2 values of "
                    r"public\.environment_configurations\.value do not match")
    before = dbcompare.table_digests(production)
    result = run_playbook("staging_to_production.yml", write_inventory(tmp_path, staging, production, extra))
    assert result.returncode != 0
    assert re.search(expected, result.stdout), result.stdout[-4000:]
    assert "the target is unchanged" in result.stdout
    assert dbcompare.table_digests(production) == before


def test_bad_policies_are_refused_before_anything_changes(staging_and_production, tmp_path):
    staging, production = staging_and_production
    before = dbcompare.table_digests(production)
    inventory = write_inventory(tmp_path, staging, production, {
        "promotion_table_policies": {"integration": "preserve", "team": "keep", "campaigns": "merge"}})
    result = run_playbook("staging_to_production.yml", inventory)
    assert result.returncode != 0
    assert "table policy integration: no such table in the source or the target" in result.stdout
    assert "table policy team: 'keep' is not one of copy, merge, preserve, skip" in result.stdout
    assert "TASK [backup" not in result.stdout  # stopped at the plan, before the backup
    assert dbcompare.table_digests(production) == before


def test_masking_rules_are_checked_against_the_schema(db_pair):
    production, staging = db_pair
    generate.load(production, 0.01)
    generate.load(staging, 0.01)
    source_cat, target_cat = environment_sync.read_catalogs(production, staging)
    with pytest.raises(environment_sync.SyncError) as error:
        environment_sync.build_plan(source_cat, target_cat, {"integrations": "preserve"}, "copy", [
            {"table": "team", "column": "email", "rule": "constant", "value": "x@example.invalid"},
            {"table": "team", "column": "full_name", "rule": "null"},
            {"table": "users", "column": "mail", "rule": "email"},
            {"table": "integrations", "column": "name", "rule": "hash"},
        ], masking_key="k")
    message = str(error.value)
    assert "team.email): email is unique and rule constant would give equal values; use email or hash" in message
    assert "full_name is NOT NULL; use constant or hash" in message
    assert "public.users has no column 'mail'" in message
    assert "public.integrations has policy preserve, nothing of it is copied; remove the rule" in message
    with pytest.raises(environment_sync.SyncError, match="no masking key; set staging_sync_masking_key"):
        environment_sync.build_plan(source_cat, target_cat, {}, "copy",
                                    [{"table": "users", "column": "email", "rule": "email"}], masking_key="")


def personal_values(params):
    """Every email, name, phone and password hash of production's people and recipients."""
    values = set()
    for statement in ("SELECT email FROM users", "SELECT email FROM team", "SELECT full_name FROM team",
                      "SELECT phone FROM team WHERE phone IS NOT NULL AND phone <> ''",
                      "SELECT password_hash FROM team",
                      "SELECT unnest(emails) FROM mailing_lists", "SELECT unnest(recipients) FROM scheduled_reports",
                      "SELECT unnest(cc_recipients) FROM scheduled_reports"):
        values.update(v for (v,) in query(params, statement) if v)
    return values


def table_text(params, tables):
    """The tables' rows as text, as one string to search."""
    return "\n".join(row[0] for table in tables for row in query(params, f"SELECT t::text FROM {table} t"))


def test_staging_sync_masks_personal_data_keeps_keys_joining_and_neutralises_outward_effects(db_pair, tmp_path):
    production, staging = db_pair
    generate.load(production, 0.02)
    generate.load(staging, 0.02)
    # Staging's own integrations and credentials (kept by the sync).
    execute(staging, "UPDATE integrations SET encrypted_credentials = convert_to('staging-' || id, 'UTF8')",
            "UPDATE environment_configurations SET value = 'staging-' || value WHERE is_secret")
    # The same person in users and team: masked alike, so a join on email still holds.
    execute(production, "UPDATE team SET email = (SELECT email FROM users ORDER BY id LIMIT 1) "
                        "WHERE id = (SELECT id FROM team ORDER BY id LIMIT 1)")
    staging_integrations = {t: dbcompare.table_digests(staging)[t] for t in PRESERVED}
    production_credentials = {bytes(c) for (c,) in query(production, "SELECT encrypted_credentials FROM integrations "
                                                                      "WHERE encrypted_credentials IS NOT NULL")}
    inventory = write_inventory(tmp_path, None, staging, {
        "staging_sync_source": {k: v for k, v in production.items() if k != "password"} | {
            "password": "{{ lookup('ansible.builtin.file', '" + str(tmp_path / "production.password") + "') }}"},
        "staging_sync_masking_key": "test-masking-key-0123456789", "migration_profile": "cdp"})
    (tmp_path / "production.password").write_text(production["password"])
    result = run_playbook("staging_sync.yml", inventory)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]

    synced = [t for t in dbcompare.table_digests(staging) if t not in PRESERVED]
    text = table_text(staging, synced)
    survivors = [v for v in personal_values(production) if v in text]
    assert survivors == []
    staging_credentials = {bytes(c) for (c,) in query(staging, "SELECT encrypted_credentials FROM integrations "
                                                               "WHERE encrypted_credentials IS NOT NULL")}
    assert not staging_credentials & production_credentials
    assert {t: dbcompare.table_digests(staging)[t] for t in PRESERVED} == staging_integrations
    # Every foreign key still joins, unique emails stay unique, the shared person is masked alike.
    assert all(count == 0 for _name, count in orphans(staging)), orphans(staging)
    assert query(staging, "SELECT count(DISTINCT lower(email)) = count(*) FROM users") == [(True,)]
    assert query(staging, "SELECT count(*) FROM team t JOIN users u ON u.email = t.email") == [(1,)]
    # Outward effects neutralised.
    assert query(staging, "SELECT count(*) FROM campaigns WHERE status IN ('scheduled', 'running')") == [(0,)]
    recipients = query(staging, "SELECT DISTINCT unnest(recipients) FROM scheduled_reports")
    assert {r for (r,) in recipients} == {STAGING_INBOX}
    assert query(staging, "SELECT DISTINCT emails, provider, external_list_id FROM mailing_lists") == \
        [([STAGING_INBOX], "internal", None)]
    # The rest is production's data.
    production_digests = dbcompare.table_digests(production)
    for table in ("public.segments", "public.cohorts", "public.report_executions", "public.role_permissions"):
        assert dbcompare.table_digests(staging)[table] == production_digests[table]
    # Deterministic: a second run gives the very same staging data.
    first = dbcompare.table_digests(staging)
    again = run_playbook("staging_sync.yml", inventory, "--skip-tags", "backup")
    assert again.returncode == 0, again.stdout[-3000:]
    assert dbcompare.table_digests(staging) == first
    assert "test-masking-key" not in result.stdout + again.stdout
    assert production["password"] not in result.stdout + again.stdout


@pytest.fixture
def merge_pair(db_pair):
    source, target = db_pair
    ddl = ("CREATE TABLE accounts (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, handle text NOT NULL UNIQUE, "
           "plan text NOT NULL, touched_at timestamptz)",
           "CREATE TABLE notes (id serial PRIMARY KEY, account_id bigint REFERENCES accounts ON DELETE CASCADE, "
           "body text)",
           "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS "
           "$$BEGIN NEW.touched_at := now(); RETURN NEW; END$$",
           "CREATE TRIGGER accounts_touch BEFORE INSERT OR UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION touch()")
    execute(source, *ddl, "ALTER TABLE accounts DISABLE TRIGGER accounts_touch",
            "INSERT INTO accounts (handle, plan) SELECT 'a' || i, 'pro' FROM generate_series(1, 5) i",
            "INSERT INTO notes (account_id, body) SELECT i, 'source note ' || i FROM generate_series(1, 5) i")
    execute(target, *ddl, "ALTER TABLE accounts DISABLE TRIGGER accounts_touch",
            "INSERT INTO accounts (handle, plan) SELECT 'a' || i, 'free' FROM generate_series(1, 3) i",
            "SELECT setval('accounts_id_seq', 100)",
            "INSERT INTO accounts (id, handle, plan) OVERRIDING SYSTEM VALUE VALUES (50, 'target-only', 'team')",
            "ALTER TABLE accounts ENABLE TRIGGER accounts_touch",
            "INSERT INTO notes (id, account_id, body) VALUES (100, 50, 'kept note')")
    return source, target


def test_merge_upserts_by_key_keeps_the_targets_rows_and_never_fires_its_triggers(merge_pair):
    source, target = merge_pair
    report = environment_sync.run(source, target, {"accounts": "merge", "notes": "merge"})
    assert report["status"] == "committed"
    assert query(target, "SELECT id, handle, plan, touched_at FROM accounts ORDER BY id") == [
        (1, "a1", "pro", None), (2, "a2", "pro", None), (3, "a3", "pro", None), (4, "a4", "pro", None),
        (5, "a5", "pro", None), (50, "target-only", "team", None)]
    entries = {e["table"]: e for e in report["tables"]}
    assert (entries["public.accounts"]["inserted"], entries["public.accounts"]["updated"]) == (2, 3)
    # The greater of both sequences: the target's own identity values are never handed out again.
    assert query(target, "SELECT last_value FROM accounts_id_seq") == [(100,)]
    assert query(target, "SELECT tgenabled FROM pg_trigger WHERE tgname = 'accounts_touch'") == [("O",)]
    assert query(target, "SELECT count(*) FROM notes") == [(6,)]


def test_copy_of_a_referenced_table_upserts_and_deletes_what_the_source_lacks(merge_pair):
    source, target = merge_pair
    # accounts copied, notes kept: the target-only account goes, and its note with it (ON DELETE CASCADE)
    # unless notes may change: preserve refuses, skip of a non-referencing table is verified too.
    with pytest.raises(environment_sync.SyncError, match=r"public\.notes \(preserve\) would change"):
        environment_sync.run(source, target, {"accounts": "copy", "notes": "preserve"})
    assert query(target, "SELECT count(*) FROM accounts") == [(4,)]
    execute(target, "DELETE FROM notes WHERE account_id = 50")
    report = environment_sync.run(source, target, {"accounts": "copy", "notes": "preserve"})
    entries = {e["table"]: e for e in report["tables"]}
    assert entries["public.accounts"]["mode"] == "upsert" and entries["public.accounts"]["deleted"] == 1
    assert entries["public.accounts"]["verified_equal"] is True
    assert query(target, "SELECT id, handle, plan FROM accounts ORDER BY id") == \
        query(source, "SELECT id, handle, plan FROM accounts ORDER BY id")


def test_the_same_database_is_refused_as_its_own_target(db_pair):
    source, _target = db_pair
    execute(source, "CREATE TABLE t (id int PRIMARY KEY)")
    with pytest.raises(environment_sync.SyncError, match="the source and the target are the same database"):
        environment_sync.run(source, dict(source))


def test_copy_text_and_array_literals_survive_masking_round_trips():
    for value in ("plain", "tab\there", "new\nline", "back\\slash", "ünïcödé 日本", ""):
        assert masking.decode_copy_text(masking.encode_copy_text(value)) == value
    assert masking.decode_copy_text(r"\101\x42\\") == "AB\\"
    items = masking.parse_array('{a,"b c","quote\\"d",NULL,"NULL",{x,y}}')
    assert items == ["a", "b c", 'quote"d', None, "NULL", ["x", "y"]]
    assert masking.parse_array(masking.format_array(items)) == items
    email = masking.ColumnMask("key", "email", unique=True)
    masked = {email.mask_value(f"user{i}@acme.example") for i in range(5000)}
    assert len(masked) == 5000 and all(m.endswith("@example.invalid") for m in masked)
    assert email.mask_value("x@y") == masking.ColumnMask("key", "email").mask_value("x@y")
    assert email.mask_value("x@y") != masking.ColumnMask("other key", "email").mask_value("x@y")
    row = masking.RowMasker({1: masking.ColumnMask("k", "email", is_array=True)})
    out = row.feed(b'1\t{"a@x","b@y"}\tz\n2\t\\N\tw\n3\t{}')
    assert out.count(b"\n") == 2 and b"a@x" not in out and b"\\N" in out
    assert row.feed(b"\tlast\n") == b"3\t{}\tlast\n"
    with pytest.raises(masking.MaskingError):
        masking.parse_array("[1:2]={a,b}")


CYCLE_DDL = (
    "CREATE TABLE departments (id int PRIMARY KEY, name text NOT NULL, manager_id int)",
    "CREATE TABLE employees (id int PRIMARY KEY, name text NOT NULL, department_id int NOT NULL"
    " REFERENCES departments)",
    "ALTER TABLE departments ADD CONSTRAINT departments_manager_fkey FOREIGN KEY (manager_id) REFERENCES employees",
    "CREATE TABLE badges (id int PRIMARY KEY, employee_id int REFERENCES employees)",
)


def _cycle_rows(prefix, departments, employees):
    return (f"INSERT INTO departments SELECT g, '{prefix} dept ' || g FROM generate_series(1, {departments}) g",
            f"INSERT INTO employees SELECT g, '{prefix} person ' || g, 1 + g % {departments}"
            f" FROM generate_series(1, {employees}) g",
            f"UPDATE departments SET manager_id = {employees} + 1 - id")


@pytest.mark.parametrize("badges", ["copy", "preserve"])
def test_a_foreign_key_cycle_between_copied_tables_is_synced_and_its_keys_validated(db_pair, badges):
    """departments <-> employees, both copied, neither key deferrable: whichever table is loaded first
    refers to rows of the other that are not there yet. With badges preserved, employees (which badges
    refer to) and departments are upserted instead of reloaded: the cycle is the same."""
    source, target = db_pair
    execute(source, *CYCLE_DDL, *_cycle_rows("source", 4, 12), "INSERT INTO badges VALUES (1, 3)")
    execute(target, *CYCLE_DDL, *_cycle_rows("target", 3, 5), "INSERT INTO badges VALUES (1, 3)")
    report = environment_sync.run(source, target, {"badges": badges})
    assert report["status"] == "committed"
    assert any("departments_manager_fkey" in line and "a cycle" in line for line in report["plan"])
    for table in ("departments", "employees", "badges"):
        statement = f"SELECT * FROM {table} ORDER BY id"
        assert query(target, statement) == query(source, statement)
    # Both keys are there again, validated, and still hold.
    assert query(target, "SELECT conname, convalidated, condeferrable FROM pg_constraint WHERE contype = 'f'"
                         " ORDER BY conname") == [("badges_employee_id_fkey", True, False),
                                                  ("departments_manager_fkey", True, False),
                                                  ("employees_department_id_fkey", True, False)]
    assert orphans(target) and all(count == 0 for _name, count in orphans(target))
