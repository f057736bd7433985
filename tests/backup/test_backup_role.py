"""The backup role (playbooks/backup.yml, tasks_from verify and restore) through real ansible-playbook runs.

Every test builds an inventory like inventories/local whose passwords come from files, and runs the
playbooks against scratch databases on the embedded servers; outcomes are checked on disk and in the
databases (tests/dbcompare.py), never by looking at which tasks ran.
"""

import json
import os
import pathlib
import re
import stat
import subprocess
import time
import uuid

import pytest

import dbcompare
from cdp_reference import generate
from conftest import PROJECT_DIR, connect, execute, query, write_inventory
from pgmigrate.backup import backup
from pgmigrate.backup.progress import BackupProgress

ANSIBLE_PLAYBOOK = str(PROJECT_DIR / ".venv" / "bin" / "ansible-playbook")
PG_BIN = pathlib.Path("/usr/lib/postgresql/15/bin")
KINDS = ("schema-only", "data-only", "complete")

# Playbooks a rollback playbook would contain: the role's other entry points.
VERIFY_PLAYBOOK = """
- name: Verify the backups
  hosts: migration_controller
  gather_facts: false
  tasks:
    - name: Verify
      ansible.builtin.include_role:
        name: backup
        tasks_from: verify
"""
RESTORE_PLAYBOOK = """
- name: Roll back the target's data
  hosts: migration_controller
  gather_facts: false
  tasks:
    - name: Restore the target from its pre-migration backup
      ansible.builtin.include_role:
        name: backup
        tasks_from: restore
"""


def playbook_command(inventory, path="playbooks/backup.yml", extra_vars=None, *args):
    command = [ANSIBLE_PLAYBOOK, str(path), "-i", str(inventory), *args]
    if extra_vars:
        command += ["-e", json.dumps(extra_vars)]
    return command


def run(inventory, path="playbooks/backup.yml", extra_vars=None, *args, timeout=600):
    return subprocess.run(playbook_command(inventory, path, extra_vars, *args), cwd=PROJECT_DIR,
                          capture_output=True, text=True, timeout=timeout, check=False)


def side_playbook(tmp_path, text, name):
    path = tmp_path / name
    path.write_text(text)
    return path


def key(label, params):
    return f"{label}-{params['dbname']}@{params['host']}-{params['port']}"


def run_dirs(backup_dir):
    if not backup_dir.exists():
        return []
    return sorted(p.name for p in backup_dir.iterdir() if p.name not in ("latest", "rollback"))


def tree_text(root):
    """Everything under root, as text: to look for a password in any file left there."""
    texts = []
    for directory, _dirs, files in os.walk(root):
        for name in files:
            texts.append((pathlib.Path(directory) / name).read_bytes().decode(errors="replace"))
    return "\n".join(texts)


def assert_no_secret(text, *params):
    for one in params:
        assert one["password"] not in text


def recorded_rows(params, tables):
    conn = connect(params)
    with conn.cursor() as cur:
        named = {}
        for table in tables:
            cur.execute("SELECT quote_ident(%s) || '.' || quote_ident(%s)", (table["schema"], table["table"]))
            named[cur.fetchone()[0]] = table["rows"]
    conn.close()
    return named


def output(result):
    return result.stdout[-5000:] + result.stderr[-3000:]


def pg_env(params):
    return {**os.environ, "PGHOST": params["host"], "PGPORT": str(params["port"]), "PGUSER": params["user"],
            "PGPASSWORD": params["password"]}



@pytest.fixture
def cdp_and_hard_cases(db_pair):
    """A source holding the CDP database and a target whose pre-migration state has several schemas."""
    src, dst = db_pair
    generate.load(src, 0.02)
    dbcompare.load_hard_cases(dst)
    return src, dst


def test_complete_backups_are_made_and_verified_then_the_plans_plain_ones_derived_from_them(
        cdp_and_hard_cases, scratch, target_server, tmp_path):
    """By default each database is dumped once, complete; playbooks/backup_derive.yml then writes the plan's
    schema-only and data-only backups from it, without reading the databases, and they rebuild the source."""
    src, dst = cdp_and_hard_cases
    inventory = write_inventory(tmp_path, src, dst, {"backup_jobs": 2})
    # Sample every process's command line while the playbook runs: no password may ever show there.
    proc = subprocess.Popen(playbook_command(inventory), cwd=PROJECT_DIR, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    command_lines = []
    while proc.poll() is None:
        command_lines.append(subprocess.run(["ps", "-eww", "-o", "args="], capture_output=True, text=True).stdout)
        time.sleep(0.02)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stdout[-5000:] + stderr[-3000:]
    assert_no_secret("\n".join(command_lines) + stdout + stderr, src, dst)
    # Other processes on this machine may run pg_dump too: ours write below tmp_path.
    dumps = [line for lines in command_lines for line in lines.splitlines()
             if "/pg_dump " in line and str(tmp_path) in line]
    assert all("--snapshot=" in line for line in dumps), dumps  # every dump from the database's one snapshot
    assert dumps and all("--format=directory" in line for line in dumps), dumps  # one dump, the complete one
    assert "Backups verified" in stdout

    backup_dir = tmp_path / "artifacts" / "backups"
    (run_id,) = run_dirs(backup_dir)
    for label, params in (("source", src), ("target", dst)):
        assert [p.name for p in (backup_dir / run_id / key(label, params)).iterdir()] == ["complete"]

    # The plan's plain backups, on demand: twice, and the second run finds them there and changes nothing.
    derived = run(inventory, "playbooks/backup_derive.yml")
    assert derived.returncode == 0, output(derived)
    assert "changed=1" in derived.stdout
    written = {str(p): p.stat().st_mtime_ns for p in (backup_dir / run_id).rglob("*")}
    again = run(inventory, "playbooks/backup_derive.yml")
    assert again.returncode == 0 and "changed=0" in again.stdout, output(again)
    assert {str(p): p.stat().st_mtime_ns for p in (backup_dir / run_id).rglob("*")} == written
    assert stat.S_IMODE(backup_dir.stat().st_mode) == 0o700
    for label, params in (("source", src), ("target", dst)):
        expected_rows = {name: digest.rows for name, digest in dbcompare.table_digests(params).items()}
        for kind in KINDS:
            unit = backup_dir / run_id / key(label, params) / kind
            latest = backup_dir / "latest" / key(label, params) / kind
            assert latest.is_symlink() and latest.resolve() == unit.resolve()
            # The manifest is sha256sum's format: the standard tool checks it too.
            subprocess.run(["sha256sum", "--check", "--strict", "--quiet", "SHA256SUMS"], cwd=unit, check=True)
            record = json.loads((unit / "backup.json").read_text())
            assert record["kind"] == kind and record["label"] == label and record["run_id"] == run_id
            assert record["database"]["dbname"] == params["dbname"] and "password" not in record["database"]
            if kind == "complete":
                listing = subprocess.run([PG_BIN / "pg_restore", "--list", unit / "dump"], capture_output=True,
                                         text=True, check=True).stdout
                assert "TABLE DATA" in listing
                # gzip level 1 (backup_compress_level): nearly the space of pg_dump's default at half the time
                assert "--compress=1" in record["pg_dump_options"]
                assert list((unit / "dump").glob("*.dat.gz"))
            else:
                text = (unit / ("schema.sql" if kind == "schema-only" else "data.sql")).read_text()
                assert "-- PostgreSQL database dump complete" in text[-2000:]
                assert ("COPY " in text) == (kind == "data-only")
                # Written from the complete backup: its snapshot, with the plan's options.
                assert record["derived_from"] == "../complete"
                complete_record = json.loads((unit.parent / "complete" / "backup.json").read_text())
                assert record["snapshot"] == complete_record["snapshot"]
                assert {"--no-owner", "--no-privileges"} <= set(record["pg_restore_options"])
            if kind in ("data-only", "complete"):
                # Exact counts of every table (quoted names as dbcompare writes them), taken in the dump's snapshot.
                assert recorded_rows(params, record["tables"]) == expected_rows
            for path in [unit, *unit.rglob("*")]:
                assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path
    assert_no_secret(tree_text(tmp_path / "artifacts"), src, dst)

    # The plain SQL backups are usable: schema then data rebuild the source exactly.
    rebuilt = scratch.create(target_server, "rebuilt")
    unit = backup_dir / "latest" / key("source", src)
    env = pg_env(rebuilt)
    env["PGOPTIONS"] = "-c session_replication_role=replica"  # data-only: the foreign keys are already there
    for part in ("schema-only/schema.sql", "data-only/data.sql"):
        subprocess.run([PG_BIN / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", rebuilt["dbname"],
                        "-f", unit / part], env=env, check=True, capture_output=True)
    assert dbcompare.compare_databases(src, rebuilt) == []


def test_a_corrupted_backup_fails_verification_and_is_never_restored(db_pair, tmp_path):
    src, dst = db_pair
    dbcompare.load_hard_cases(dst)
    # Every entry playbook checks first that the inventory names both connections.
    # The plan's three backups dumped at backup time (backup_kinds lists them all).
    inventory = write_inventory(tmp_path, src, dst, {"backup_databases": ["target"], "backup_kinds": list(KINDS)})
    made = run(inventory)
    assert made.returncode == 0, output(made)
    units = tmp_path / "artifacts" / "backups" / "latest" / key("target", dst)
    verify = side_playbook(tmp_path, VERIFY_PLAYBOOK, "verify.yml")
    assert run(inventory, verify).returncode == 0

    # One byte changed in a table's data, a plain dump cut short whose manifest was rewritten to match,
    # and a file slipped in beside a dump: each backup fails, named with its problem.
    data_file = sorted((units / "complete" / "dump").glob("*.dat.gz"), key=lambda p: p.stat().st_size)[-1]
    content = bytearray(data_file.read_bytes())
    content[len(content) // 2] ^= 0x01
    data_file.write_bytes(bytes(content))
    data_sql = units / "data-only" / "data.sql"
    data_sql.write_text(data_sql.read_text()[:-400])
    backup.write_manifest(str(units.joinpath("data-only").resolve()))
    (units / "schema-only" / "notes.txt").write_text("hello")

    checked = run(inventory, verify)
    assert checked.returncode != 0
    assert f"dump/{data_file.name} does not match its checksum" in checked.stdout
    assert "data.sql does not end with pg_dump's '-- PostgreSQL database dump complete' marker" in checked.stdout
    assert "notes.txt is not in the manifest" in checked.stdout

    # The restore refuses it and leaves the target as it is.
    execute(dst, "CREATE TABLE public.written_after_the_backup (id int)")
    refused = run(inventory, side_playbook(tmp_path, RESTORE_PLAYBOOK, "restore.yml"))
    assert refused.returncode != 0
    assert "Refusing to restore the target" in refused.stdout and "does not match its checksum" in refused.stdout
    assert "Nothing was changed" in refused.stdout
    conn = connect(dst)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('public.written_after_the_backup') IS NOT NULL")
        assert cur.fetchone()[0]
    conn.close()
    assert_no_secret(checked.stdout + checked.stderr + refused.stdout + refused.stderr, dst)


def test_retention_keeps_the_newest_n_backups_of_each_database_and_kind(db_pair, tmp_path):
    src, _ = db_pair
    execute(src, "CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t SELECT generate_series(1, 100)")
    inventory = write_inventory(tmp_path, src, db_pair[1], {"backup_databases": ["source"], "backup_keep": 2,
                                                            "backup_kinds": list(KINDS)})
    backup_dir = tmp_path / "artifacts" / "backups"
    runs = []
    for _ in range(3):
        result = run(inventory)
        assert result.returncode == 0, output(result)
        runs.append(sorted(set(run_dirs(backup_dir)) - set(runs))[-1])
    assert run_dirs(backup_dir) == runs[1:]
    for run_id in runs[1:]:
        assert sorted(p.name for p in (backup_dir / run_id / key("source", src)).iterdir()) == sorted(KINDS)
    assert "3 older backups removed" in result.stdout

    # Per kind: a run making only the schema-only backup, keeping 1, leaves the newest of every kind.
    result = run(inventory, extra_vars={"backup_kinds": ["schema-only"], "backup_keep": 1})
    assert result.returncode == 0, output(result)
    newest = sorted(set(run_dirs(backup_dir)) - set(runs))[-1]
    assert run_dirs(backup_dir) == [runs[2], newest]
    assert sorted(p.name for p in (backup_dir / runs[2] / key("source", src)).iterdir()) == ["complete", "data-only"]
    assert [p.name for p in (backup_dir / newest / key("source", src)).iterdir()] == ["schema-only"]
    latest = backup_dir / "latest" / key("source", src)
    assert (latest / "complete").resolve().parent.parent.name == runs[2]
    assert (latest / "schema-only").resolve().parent.parent.name == newest


def test_not_enough_disk_space_is_refused_before_anything_is_written(db_pair, tmp_path):
    src, dst = db_pair
    inventory = write_inventory(tmp_path, src, dst, {"backup_space_safety_factor": 1e12})
    result = run(inventory, timeout=300)
    assert result.returncode != 0
    assert "Not enough free disk space for the backups" in result.stdout
    assert "Nothing was written" in result.stdout
    assert not (tmp_path / "artifacts" / "backups").exists()


def test_check_mode_writes_nothing(db_pair, tmp_path):
    src, dst = db_pair
    result = run(write_inventory(tmp_path, src, dst), "playbooks/backup.yml", None, "--check", timeout=300)
    assert result.returncode == 0, output(result)
    assert not (tmp_path / "artifacts" / "backups").exists()


def test_restore_brings_a_modified_target_back_exactly(scratch, source_server, target_server, tmp_path):
    dst = scratch.create(target_server, "dst")
    generate.load(dst, 0.02)
    dbcompare.load_hard_cases(dst)
    execute(dst, f'ALTER DATABASE "{dst["dbname"]}" SET work_mem = \'7MB\'')
    # A pristine copy of the pre-migration state, to compare with after the rollback.
    pristine = {**dst, "dbname": f"pristine_{uuid.uuid4().hex[:10]}"}
    execute(target_server, f'CREATE DATABASE "{pristine["dbname"]}" TEMPLATE "{dst["dbname"]}"')
    scratch.created.append((target_server, pristine["dbname"]))

    inventory = write_inventory(tmp_path, scratch.create(source_server, "src"), dst, {"backup_databases": ["target"]})
    made = run(inventory)
    assert made.returncode == 0, output(made)

    # What a failed migration might leave: a table gone, rows changed, added and removed, a new schema
    # and extension, a database setting changed, and a session still connected.
    execute(dst,
            "DROP TABLE public.campaign_jobs",
            "UPDATE public.team SET email = 'changed-' || email WHERE id IN (SELECT id FROM public.team LIMIT 5)",
            "DELETE FROM public.report_executions WHERE id IN (SELECT id FROM public.report_executions LIMIT 10)",
            "INSERT INTO public.plain_public VALUES (2, 'added after the backup')",
            "TRUNCATE audit.events",
            "CREATE SCHEMA _pgmigrate",
            "CREATE TABLE _pgmigrate.state (id int)",
            "CREATE EXTENSION IF NOT EXISTS pg_trgm",
            f'ALTER DATABASE "{dst["dbname"]}" RESET work_mem')
    assert dbcompare.compare_databases(pristine, dst) != []
    lingering = connect(dst)

    restored = run(inventory, side_playbook(tmp_path, RESTORE_PLAYBOOK, "restore.yml"))
    assert restored.returncode == 0, output(restored)
    assert "every count equal to the backup's" in restored.stdout
    assert dbcompare.compare_databases(pristine, dst) == []
    conn = connect(dst)
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('work_mem'),"
                    " (SELECT count(*) FROM pg_namespace WHERE nspname = '_pgmigrate'),"
                    " (SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm')")
        assert cur.fetchone() == ("7MB", 0, 0)
    conn.close()
    assert lingering.closed or _is_disconnected(lingering)
    assert_no_secret(made.stdout + made.stderr + restored.stdout + restored.stderr, dst)
    assert_no_secret(tree_text(tmp_path / "artifacts"), dst)


def _is_disconnected(conn):
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    except Exception:  # the server terminated the session when the database was dropped
        return True
    return False


def run_with_pg_dump_held(inventory, src, seconds=2.5):
    """The backup playbook, its pg_dump held for a few seconds by a lock on a table it must read: however fast
    the machine, the dump is still running when the progress callback looks."""
    holder = connect(src)
    with holder.cursor() as cur:
        cur.execute("LOCK TABLE public.team IN ACCESS EXCLUSIVE MODE")
    process = subprocess.Popen(playbook_command(inventory), cwd=PROJECT_DIR, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            waiting = query(src, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")[0][0]
            if waiting:
                time.sleep(seconds)
                break
            time.sleep(0.1)
    finally:
        holder.rollback()
        holder.close()
    stdout, stderr = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_the_backups_progress_is_printed_while_pg_dump_runs(db_pair, tmp_path):
    """The callback plugin migration_live_progress prints the backup's progress line under its task: the kind
    being dumped and the bytes written (and, from the second backup on, the share of the last one and an ETA)."""
    src, dst = db_pair
    generate.load(src, 0.05)
    inventory = write_inventory(tmp_path, src, dst, {"backup_databases": ["source"], "backup_kinds": ["data-only"],
                                                     "migration_progress_poll_seconds": 1})
    for attempt in (1, 2):
        result = run_with_pg_dump_held(inventory, src)
        assert result.returncode == 0, output(result)
        task = result.stdout.split("TASK [backup : Back up from one snapshot", 1)[1].split("\nTASK [", 1)[0]
        lines = re.findall(r"^ +\[backup source\] data-only: [\d.]+ [kMG]?B written, .*", task, re.MULTILINE)
        assert lines, task[-3000:]
        if attempt == 2:  # the first backup's size is the second's yardstick
            assert any(re.search(r"\d+% of the last backup \([\d.]+ [kMG]?B\), elapsed \d+ s ETA", line)
                       for line in lines), lines


def test_the_backup_progress_line_measures_against_the_last_backup(tmp_path):
    latest = tmp_path / "latest"
    (latest / "complete").mkdir(parents=True)
    (latest / "complete" / "backup.json").write_text(json.dumps({"bytes": 4000}))
    unit = tmp_path / "run" / "complete"
    unit.mkdir(parents=True)
    (unit / "toc.dat").write_bytes(b"x" * 1000)
    progress_file = tmp_path / "backup-progress.json"
    progress = BackupProgress(str(progress_file), "source", str(latest))
    with progress.dumping("complete", str(unit)):
        time.sleep(0.2)
        line = json.loads(progress_file.read_text())
    assert line["state"] == "running"
    assert re.match(r"\[backup source\] complete: 1000 B written, 25% of the last backup \(3\.9 kB\), "
                    r"elapsed \d+ s ETA \d+ s$", line["line"]), line
    progress.finish("done")
    assert json.loads(progress_file.read_text())["state"] == "done"


def test_an_uncompressed_complete_backup_verifies_and_restores_exactly(db_pair, tmp_path):
    """backup_compress_level 0: the archive's data files are plain (no .gz), and the backup verifies and
    restores as a compressed one does."""
    src, dst = db_pair
    dbcompare.load_hard_cases(src)
    dbcompare.load_hard_cases(dst)  # the target's state before a migration, as the source's twin
    path = tmp_path / "run" / "target"
    created = backup.create_backup(dst, "target", str(path), ["complete"], compress_level=0)
    unit = path / "complete"
    assert created["backups"][0]["path"] == str(unit)
    assert list((unit / "dump").glob("*.dat")) and not list((unit / "dump").glob("*.dat.gz"))
    assert backup.verify_backup(str(unit))["ok"]
    execute(dst, "DROP SCHEMA app CASCADE")  # a half-done migration
    backup.restore(dst, str(unit), 2, "postgres", True, False, False, True)
    assert dbcompare.compare_databases(src, dst) == []
