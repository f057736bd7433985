"""The backup a data rollback restores is the target's state before the migration's first attempt
(issue 15): attempts interrupted during the copy, reruns, retention and the rollback through real
ansible-playbook runs; and the rollback point's rules (module_utils/pgmigrate/backup/rollback_point.py) alone."""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import PROJECT_DIR, execute, query, write_inventory
from faultlib import ANSIBLE_PLAYBOOK, database_state, run_playbook
from pgmigrate.backup import rollback_point


def output(result):
    return result.stdout[-6000:] + result.stderr[-3000:]


def interrupt_during_the_copy(inventory, progress_file, sig, checkout=PROJECT_DIR):
    """Start migrate.yml (from checkout) and send its process group sig once the copy's data phase began."""
    proc = subprocess.Popen([ANSIBLE_PLAYBOOK, "migrate.yml", "-i", str(inventory)], cwd=checkout,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, interrupted = time.time() + 300, False
    while time.time() < deadline and proc.poll() is None:
        try:
            progress = json.loads(progress_file.read_text())
        except (OSError, ValueError):
            progress = {}
        # As the data phase begins: the target holds the new tables and the tool's state. Waiting for
        # streamed bytes too (written each second) missed runs whose copy takes about a second.
        if progress.get("state") == "running" and progress.get("phase") == "data":
            os.killpg(proc.pid, sig)
            interrupted = True
            break
        time.sleep(0.01)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert interrupted, "the copy ended before it could be interrupted"
    return proc.returncode


@pytest.fixture
def older_target(db_pair):
    """A source with a table large enough to interrupt its copy, and a target that already holds an older
    application database (keep_me, 5,000 rows), which the migration overwrites."""
    src, dst = db_pair
    execute(src, "CREATE TABLE users (id serial PRIMARY KEY, name text)",
            "INSERT INTO users (name) SELECT 'u' || g FROM generate_series(1, 1000) g",
            "CREATE TABLE events (id bigserial PRIMARY KEY, user_id int REFERENCES users, pad text)",
            "INSERT INTO events (user_id, pad) SELECT 1 + g % 1000, repeat(md5(g::text), 6) "
            "FROM generate_series(1, 600000) g")
    execute(dst, "CREATE TABLE keep_me (id int PRIMARY KEY, note text)",
            "INSERT INTO keep_me SELECT g, 'old ' || g FROM generate_series(1, 5000) g")
    return src, dst


def test_interrupted_attempts_rerun_and_data_rollback_bring_back_the_target_before_the_first(older_target,
                                                                                              tmp_path):
    src, dst = older_target
    before = database_state(dst)
    inventory = write_inventory(tmp_path, src, dst, {"migration_target_overwrite": True, "backup_keep": 1,
                                                     "migration_workers": 2})
    backups = tmp_path / "artifacts" / "backups"
    progress = tmp_path / "artifacts" / "progress.json"
    for sig in (signal.SIGKILL, signal.SIGINT, signal.SIGKILL):
        assert interrupt_during_the_copy(inventory, progress, sig) != 0
        progress.unlink(missing_ok=True)
    target_backups = sorted(backups.glob("2*/target-*"))
    assert len(target_backups) == 1, target_backups  # backed up once, before the first attempt

    result = run_playbook(inventory)
    assert result.returncode == 0, output(result)
    assert "Rollback point: reusing the backup of the target" in result.stdout
    assert "Rollback point closed" in result.stdout
    assert query(dst, "SELECT count(*) FROM events")[0][0] == 600000
    # retention (backup_keep 1) removed the older source backups, never the target's rollback point
    assert sorted(backups.glob("2*/target-*")) == target_backups
    assert len(list(backups.glob("2*/source-*"))) == 1

    result = run_playbook(inventory, "-e", "rollback_mode=data", playbook="playbooks/rollback.yml")
    assert result.returncode == 0, output(result)
    assert "before the last finished migration" in result.stdout
    assert database_state(dst) == before
    assert query(dst, "SELECT count(*), min(note), max(id) FROM keep_me")[0] == (5000, "old 1", 5000)

    # The point is used up: a second data rollback is refused, and changes nothing.
    execute(dst, "INSERT INTO keep_me VALUES (5001, 'new')")
    result = run_playbook(inventory, "-e", "rollback_mode=data", playbook="playbooks/rollback.yml")
    assert result.returncode != 0
    assert "Refusing the data rollback" in result.stdout and "already rolled back" in result.stdout
    assert query(dst, "SELECT count(*) FROM keep_me")[0][0] == 5001


def test_a_data_rollback_without_a_migrations_backup_is_refused(db_pair, tmp_path):
    src, dst = db_pair
    execute(dst, "CREATE TABLE keep_me (id int)", "INSERT INTO keep_me VALUES (1)")
    inventory = write_inventory(tmp_path, src, dst)
    result = run_playbook(inventory, "-e", "rollback_mode=data", playbook="playbooks/rollback.yml")
    assert result.returncode != 0
    assert "Refusing the data rollback: there is no rollback point for this target" in result.stdout
    assert "Nothing was changed" in result.stdout
    assert query(dst, "SELECT count(*) FROM keep_me")[0][0] == 1


# ------------------------------------------------------------------ the rules alone -------------
def make_unit(backup_dir, run, key="target-db@h-5432"):
    unit = backup_dir / run / key / "complete"
    unit.mkdir(parents=True)
    return unit


def test_a_point_opens_once_closes_and_designates_what_to_restore(tmp_path):
    key = "target-db@h-5432"
    with pytest.raises(rollback_point.RollbackPointError, match="no migration by migrate.yml"):
        rollback_point.to_restore(str(tmp_path), key)
    first = make_unit(tmp_path, "20260101T000000Z")
    rollback_point.open_point(str(tmp_path), key, str(first), "20260101T000000Z")
    with pytest.raises(rollback_point.RollbackPointError, match="unfinished"):
        rollback_point.open_point(str(tmp_path), key, str(make_unit(tmp_path, "20260102T000000Z")), "x")
    path, why = rollback_point.to_restore(str(tmp_path), key)
    assert path == str(tmp_path / "20260101T000000Z" / key / "complete") and "first attempt" in why
    assert rollback_point.protected(str(tmp_path), key) == {str((tmp_path / "20260101T000000Z" / key).resolve())}

    # discarded: the open point goes, nothing is left to restore (no migration finished)
    rollback_point.close(str(tmp_path), key, "discarded")
    with pytest.raises(rollback_point.RollbackPointError):
        rollback_point.to_restore(str(tmp_path), key)

    second = make_unit(tmp_path, "20260103T000000Z")
    rollback_point.open_point(str(tmp_path), key, str(second), "20260103T000000Z")
    points, changed = rollback_point.close(str(tmp_path), key, "migrated")
    assert changed and points["open"] is None and points["finished"]["outcome"] == "migrated"
    path, why = rollback_point.to_restore(str(tmp_path), key)
    assert path.endswith("20260103T000000Z/" + key + "/complete") and "last finished migration" in why
    assert rollback_point.close(str(tmp_path), key, "migrated")[1] is False  # nothing open: nothing changes


def test_a_point_outside_the_backup_directory_is_refused(tmp_path):
    outside = tmp_path / "elsewhere" / "complete"
    outside.mkdir(parents=True)
    with pytest.raises(rollback_point.RollbackPointError, match="must be a backup below"):
        rollback_point.open_point(str(tmp_path / "backups"), "k", str(outside), "r")


def test_a_rollback_after_a_finished_migration_uses_its_point_up(tmp_path):
    key = "target-db@h-5432"
    rollback_point.open_point(str(tmp_path), key, str(make_unit(tmp_path, "20260101T000000Z")), "r1")
    rollback_point.close(str(tmp_path), key, "migrated")
    assert rollback_point.to_restore(str(tmp_path), key)[0].endswith("/complete")
    points, changed = rollback_point.close(str(tmp_path), key, "rolled back")
    assert changed and points["finished"]["outcome"] == "rolled back"
    with pytest.raises(rollback_point.RollbackPointError, match="already rolled back"):
        rollback_point.to_restore(str(tmp_path), key)
    # still protected from retention until the next migration closes its own point
    assert rollback_point.protected(str(tmp_path), key)


def interrupt_at_task(inventory, task_prefix, sig):
    """Start migrate.yml and send its process group sig when the task task_prefix starts."""
    proc = subprocess.Popen([ANSIBLE_PLAYBOOK, "migrate.yml", "-i", str(inventory)], cwd=PROJECT_DIR,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("TASK [" + task_prefix):
            time.sleep(0.5)  # inside the task
            os.killpg(proc.pid, sig)
            break
    else:
        raise AssertionError("the run ended before " + task_prefix + ": " + "".join(seen)[-3000:])
    proc.stdout.close()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.returncode


@pytest.mark.parametrize("first, second", [(signal.SIGKILL, signal.SIGINT), (signal.SIGINT, signal.SIGKILL)],
                         ids=["kill-9-first", "ctrl-c-first"])
def test_interrupted_in_every_database_phase_then_rolled_back(older_target, tmp_path, first, second):
    """Interrupted while backing up, while preparing the target (extensions), while copying and while
    validating (after the copy finished), each phase once with kill -9 and once with Ctrl-C (the two
    parameters swap them), then rerun and rolled back: the target is as it was before the first attempt."""
    src, dst = older_target
    before = database_state(dst)
    inventory = write_inventory(tmp_path, src, dst, {"migration_target_overwrite": True, "migration_workers": 2})
    assert interrupt_at_task(inventory, "backup : Back up from one snapshot, every kind of backup_kinds, verify and "
                             "point latest/ at it: target", first) != 0
    assert database_state(dst) == before  # the backup changes nothing
    assert interrupt_at_task(inventory, "extensions : Check the extensions the target needs", second) != 0
    assert interrupt_during_the_copy(inventory, tmp_path / "artifacts" / "progress.json", first) != 0
    assert interrupt_at_task(inventory, "validation : Validate the target against the source", second) != 0
    result = run_playbook(inventory)
    assert result.returncode == 0, output(result)
    assert "Rollback point: reusing the backup of the target" in result.stdout
    result = run_playbook(inventory, "-e", "rollback_mode=data", playbook="playbooks/rollback.yml")
    assert result.returncode == 0, output(result)
    assert database_state(dst) == before


def checkout(path):
    """Another checkout of the project, as each AWX job gets: its own files, the same durable artifacts."""
    shutil.copytree(PROJECT_DIR, path, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".embedded", "artifacts", ".git", "__pycache__", ".pytest_cache", "results"))
    return path


def test_two_checkouts_sharing_the_artifacts_directory_behave_as_one(older_target, tmp_path):
    """Interrupted in one checkout, finished from another, then asked again and rolled back from the first:
    the run state is the target's and the durable artifacts directory's, never a checkout's."""
    src, dst = older_target
    before = database_state(dst)
    first, second = checkout(tmp_path / "job1"), checkout(tmp_path / "job2")
    inventory = write_inventory(tmp_path, src, dst, {"migration_target_overwrite": True, "migration_workers": 2})
    progress = tmp_path / "artifacts" / "progress.json"
    assert interrupt_during_the_copy(inventory, progress, signal.SIGKILL, checkout=first) != 0
    finished = subprocess.run([ANSIBLE_PLAYBOOK, "migrate.yml", "-i", str(inventory)], cwd=second,
                              capture_output=True, text=True, timeout=600, check=False)
    assert finished.returncode == 0, output(finished)
    assert "Rollback point: reusing the backup of the target" in finished.stdout
    again = subprocess.run([ANSIBLE_PLAYBOOK, "migrate.yml", "-i", str(inventory), "--tags", "copy",
                            "-e", "migration_target_overwrite=false"], cwd=first,
                           capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, output(again)
    assert "Nothing to do" in again.stdout
    rolled_back = subprocess.run([ANSIBLE_PLAYBOOK, "playbooks/rollback.yml", "-i", str(inventory),
                                  "-e", "rollback_mode=data"], cwd=first,
                                 capture_output=True, text=True, timeout=600, check=False)
    assert rolled_back.returncode == 0, output(rolled_back)
    assert database_state(dst) == before
    assert not (first / "artifacts").exists() and not (second / "artifacts").exists()
