"""playbooks/zero_downtime.yml on a foreign database (the corpus's shop.sql: NOT VALID constraints that old
rows violate, a keyless table, quoted names), with a writer running through the whole run: from PostgreSQL
15 to 15, to 18 (the embedded target18, across major versions: the schema copied by version 18's
programs, migration_pg_bin_dir), and from 14 (the embedded source14) to 15. Every acknowledged write is on
the target exactly once; the rest of the
database is compared with the source by tests/independent_compare.py (across versions, its schema with
version 18's own copy)."""

import json

import pytest
from test_zero_downtime import (
    EXTRA_SCHEMA,
    WRITER_SCHEMA,
    WRITER_TABLES,
    ConcurrentWriter,
    drop_replication_leftovers,
    replication_objects,
    run_sql,
    zero_downtime,
)

import independent_compare
from conftest import wheel_bin, write_inventory
from corpus_tools import CORPUS_DIR, corpus_roles, ensure_roles, load_sql, reference_copy


@pytest.fixture(params=[(15, 15), (15, 18), (14, 15)], ids=["15-to-15", "15-to-18", "14-to-15"])
def foreign_pair(request, scratch):
    """(source, target, source server, target server, version 18's programs or None), and no replication
    object left after."""
    source_major, major = request.param
    source_server = request.getfixturevalue("source14_server" if source_major == 14 else "source_server")
    server = request.getfixturevalue("target18_server" if major == 18 else "target_server")
    src, dst = scratch.create(source_server, f"src{source_major}"), scratch.create(server, f"dst{major}")
    yield src, dst, source_server, server, wheel_bin() if major == 18 else None
    drop_replication_leftovers(src, dst)


def test_zero_downtime_of_a_foreign_database_with_a_concurrent_writer(foreign_pair, scratch, tmp_path):
    src, dst, source_server, target_server, pg_bin = foreign_pair
    sql_path = CORPUS_DIR / "shop.sql"
    for server in (source_server, target_server):
        ensure_roles(server, corpus_roles(sql_path.read_text(encoding="utf-8")))
    load_sql(src, sql_path)
    run_sql(src, EXTRA_SCHEMA + WRITER_SCHEMA)
    own_publications = replication_objects(src, dst)  # the database's own: shop_orders
    switch_file = tmp_path / "switch" / "database.json"
    inventory = write_inventory(tmp_path, src, dst, {
        "migration_pg_bin_dir": pg_bin or "",
        "zero_downtime_switch_file": str(switch_file),
        "zero_downtime_replica_identity_full": ["extra.keyless_log", "sales.gift_cards"],
        "zero_downtime_progress_poll_seconds": 1,
    })
    writer = ConcurrentWriter(src, dst, switch_file)
    writer.start()
    try:
        result = zero_downtime(inventory)
    finally:
        writer.stop.set()
        writer.join(30)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    # The reverse window (the default's 24 h) ended at once: the reverse replication's publication and
    # replica identities leave the new database.
    finalized = zero_downtime(inventory, "-e", "zero_downtime_finalize=true")
    assert finalized.returncode == 0 and "the migration is final" in finalized.stdout, finalized.stdout[-3000:]
    assert writer.writes_on["source"] > 0 and writer.writes_on["target"] > 0, writer.writes_on
    major = 18 if pg_bin else 15
    assert run_sql(dst, "SELECT current_setting('server_version_num')::int / 10000", fetch=True) == [(major,)]

    on_target = dict(run_sql(dst, "SELECT write_id::text, count(*) FROM zd_writer_events GROUP BY 1", fetch=True))
    assert sorted(on_target) == sorted(writer.acknowledged)
    assert all(count == 1 for count in on_target.values())
    assert run_sql(dst, "SELECT n FROM zd_writer_counter WHERE id = 1", fetch=True)[0][0] == len(writer.acknowledged)

    # Everything else equals the source (the writer's tables and their sequence went on on the target), the
    # NOT VALID check of sales.order_lines included: added after the sync, NOT VALID as on the source.
    source_major = run_sql(src, "SELECT current_setting('server_version_num')::int / 10000", fetch=True)[0][0]
    reference = None
    if source_major != major:
        reference = scratch.create(target_server, f"ref{major}")
        reference_copy(src, reference, tools=pg_bin)
        # Restored with owners, the reference gives the public schema its owner on the source; the run's schema
        # copy (--no-owner) leaves the one the target's version gives it (pg_database_owner since 15).
        run_sql(reference, "ALTER SCHEMA public OWNER TO pg_database_owner")
    # The old source is read-only after the switch (default_transaction_read_only), the target is not.
    differences = [d for d in independent_compare.compare(src, dst, schema_reference=reference, pg_bin=pg_bin)
                   if not any(table in d for table in WRITER_TABLES)
                   and "(source 'default_transaction_read_only=on')" not in d]
    assert differences == [], "\n".join(differences)
    assert replication_objects(src, dst) == own_publications
    assert own_publications == {"publications": [("shop_orders",)], "slots": [], "subscriptions": []}
    report = json.loads(next((tmp_path / "artifacts" / "zero_downtime").glob("*/report.json")).read_text())
    print(f"{source_major} -> {major} zero downtime: write freeze {report['freeze_window_seconds']:.3f} s, "
          f"{len(writer.acknowledged)} writes ({writer.writes_on})")
    assert isinstance(report["freeze_window_seconds"], float)
