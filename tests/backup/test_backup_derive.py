"""The plan's plain backups written from a complete one (backup.derive_backups): what they hold, and what
happens when the complete backup is damaged, a derivation was killed, or a plain backup is already there."""

import os
import pathlib
import subprocess

import pytest

import dbcompare
from conftest import execute, query
from pgmigrate.backup import backup

PG_BIN = pathlib.Path("/usr/lib/postgresql/15/bin")


@pytest.fixture
def complete_backup(db_pair, tmp_path):
    """A source with hard cases (several schemas, quoted names, large values) and its complete backup only."""
    src, _dst = db_pair
    dbcompare.load_hard_cases(src)
    # Schema then data, the plan's way (as pg_dump's own two files), creates a NOT VALID constraint before the
    # rows: the old rows that break it (kept by a copy) would fail that restore, whatever wrote the files.
    execute(src, "UPDATE app.legacy SET val = 1 WHERE val <= 0",
            "CREATE SEQUENCE public.counter START 40", "SELECT nextval('public.counter')")
    created = backup.create_backup(src, "source", str(tmp_path / "run" / "source-db"), ["complete"], 2, "r1",
                                   str(PG_BIN))
    (complete,) = created["backups"]
    return src, pathlib.Path(complete["path"])


def psql_file(params, path):
    env = {**os.environ, "PGHOST": params["host"], "PGPORT": str(params["port"]), "PGUSER": params["user"],
           "PGPASSWORD": params["password"], "PGOPTIONS": "-c session_replication_role=replica"}
    result = subprocess.run([PG_BIN / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", params["dbname"], "-f", path],
                            env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]


def pg_dump_lines(params, *options):
    """What the plan's own command writes (pg_dump <options> --no-owner --no-privileges), as lines, without
    psql's per-run \\restrict key."""
    env = {**os.environ, "PGPASSWORD": params["password"]}
    text = subprocess.run([PG_BIN / "pg_dump", "-h", params["host"], "-p", str(params["port"]), "-U", params["user"],
                           *options, "--no-owner", "--no-privileges", params["dbname"]], env=env, check=True,
                          capture_output=True, text=True).stdout
    return without_restrict_keys(text)


def without_restrict_keys(text):
    return [line for line in text.splitlines() if not line.startswith(("\\restrict ", "\\unrestrict "))]


def test_the_derived_plain_backups_are_what_pg_dump_writes_and_rebuild_the_source(complete_backup, scratch,
                                                                                  target_server):
    src, complete = complete_backup
    derived = backup.derive_backups(str(complete), pg_bin_dir=str(PG_BIN))
    assert [one["kind"] for one in derived["backups"]] == ["schema-only", "data-only"]
    for one in derived["backups"]:
        assert backup.verify_backup(one["path"], str(PG_BIN))["ok"]
        assert not list(complete.parent.glob("*.partial-*"))
    data = backup.read_record(str(complete.parent / "data-only"))
    assert data["tables"] == backup.read_record(str(complete))["tables"]  # the counts of the same snapshot
    # The plan's commands, run now on the unchanged source: the same schema file, line for line (the
    # materialized view's REFRESH left out, as pg_dump does), and the same data lines (tables in another order).
    schema_sql = (complete.parent / "schema-only" / "schema.sql").read_text()
    assert without_restrict_keys(schema_sql) == pg_dump_lines(src, "--schema-only")
    data_sql = (complete.parent / "data-only" / "data.sql").read_text()
    assert sorted(without_restrict_keys(data_sql)) == sorted(pg_dump_lines(src, "--data-only"))
    # And they rebuild the source; like pg_dump's pair, they leave materialized views unpopulated.
    rebuilt = scratch.create(target_server, "rebuilt")
    psql_file(rebuilt, complete.parent / "schema-only" / "schema.sql")
    psql_file(rebuilt, complete.parent / "data-only" / "data.sql")
    views = query(src, "SELECT format('%I.%I', schemaname, matviewname) FROM pg_matviews WHERE ispopulated")
    execute(rebuilt, *[f"REFRESH MATERIALIZED VIEW {name}" for (name,) in views])
    assert dbcompare.compare_databases(src, rebuilt) == []


def test_a_damaged_complete_backup_derives_nothing(complete_backup):
    _src, complete = complete_backup
    data_file = max((complete / "dump").glob("*.dat.gz"), key=lambda p: p.stat().st_size)
    content = bytearray(data_file.read_bytes())
    content[len(content) // 2] ^= 0x01
    data_file.write_bytes(bytes(content))
    with pytest.raises(backup.BackupError, match=rf"does not verify, nothing was derived.*{data_file.name}"):
        backup.derive_backups(str(complete), pg_bin_dir=str(PG_BIN))
    assert sorted(p.name for p in complete.parent.iterdir()) == ["complete"]


def test_a_killed_derivation_leaves_no_backup_and_the_next_one_cleans_up(complete_backup):
    _src, complete = complete_backup
    # What a derivation killed mid-way leaves: a staging directory (a process id that no longer exists).
    stale = complete.parent / "data-only.partial-999999"
    stale.mkdir()
    (stale / "data.sql").write_text("COPY public.t FROM stdin;\n1\n")
    assert not backup.verify_backup(str(complete.parent / "data-only"), str(PG_BIN))["ok"]  # no data-only yet
    derived = backup.derive_backups(str(complete), ["data-only"], pg_bin_dir=str(PG_BIN))
    assert [one["kind"] for one in derived["backups"]] == ["data-only"]
    assert sorted(p.name for p in complete.parent.iterdir()) == ["complete", "data-only"]


def test_a_plain_backup_already_there_is_kept_when_it_verifies_and_refused_when_not(complete_backup):
    _src, complete = complete_backup
    first = backup.derive_backups(str(complete), pg_bin_dir=str(PG_BIN))
    assert not any(one.get("existing") for one in first["backups"])
    again = backup.derive_backups(str(complete), pg_bin_dir=str(PG_BIN))
    assert all(one["existing"] for one in again["backups"])
    schema_sql = complete.parent / "schema-only" / "schema.sql"
    schema_sql.write_text(schema_sql.read_text()[:-300])
    with pytest.raises(backup.BackupError, match=r"schema-only already holds a backup that does not verify .*"
                                                 r"schema.sql does not match its checksum.*remove it"):
        backup.derive_backups(str(complete), pg_bin_dir=str(PG_BIN))


def test_only_plain_kinds_are_derived_and_only_from_a_complete_backup(complete_backup, tmp_path):
    _src, complete = complete_backup
    missing = tmp_path / "latest" / "source-db" / "complete"
    with pytest.raises(backup.BackupError, match=rf"there is no complete backup at {missing}: make one first"):
        backup.derive_backups(str(missing), pg_bin_dir=str(PG_BIN))
    with pytest.raises(backup.BackupError, match="cannot derive complete"):
        backup.derive_backups(str(complete), ["complete"], pg_bin_dir=str(PG_BIN))
    backup.derive_backups(str(complete), ["schema-only"], pg_bin_dir=str(PG_BIN))
    with pytest.raises(backup.BackupError, match="is a schema-only backup: derive from a complete one"):
        backup.derive_backups(str(complete.parent / "schema-only"), pg_bin_dir=str(PG_BIN))
