"""A finished copy rerun says "nothing to do" only while the target still holds what it copied (issue 15):
the row count of every table is recorded when the copy finishes and counted again before saying so."""

import pytest

import dbcompare
from conftest import execute, write_inventory
from faultlib import run_playbook
from pgmigrate.clone import assess, copier
from pgmigrate.common import preflight


@pytest.fixture
def copied(db_pair, tmp_path):
    src, dst = db_pair
    execute(src, "CREATE SCHEMA app", "CREATE TABLE app.users (id int PRIMARY KEY)",
            "INSERT INTO app.users SELECT generate_series(1, 3)",
            *[f"CREATE TABLE app.t{i} (id int)" for i in range(150)])  # more than one counting batch
    summary = copier.migrate(src, dst, artifacts_dir=str(tmp_path), workers=2)
    assert summary["status"] == "complete"
    return src, dst


def test_an_unchanged_target_is_nothing_to_do(copied, tmp_path):
    src, dst = copied
    summary = copier.migrate(src, dst, artifacts_dir=str(tmp_path), workers=2)
    assert summary["status"] == "already complete"
    assert "table_rows" not in summary["completed_run"]
    assert dbcompare.compare_databases(src, dst) == []


@pytest.mark.parametrize("change, named", [
    ("INSERT INTO app.users VALUES (4)", "app.users: 4 rows, the copy left 3"),
    ("DROP TABLE app.t140", "app.t140: missing, the copy left 0 rows"),
    ("INSERT INTO app.t101 VALUES (1)", "app.t101: 1 rows, the copy left 0"),
], ids=["row added", "table dropped", "row in a later batch"])
def test_a_target_changed_since_the_copy_is_refused_naming_what_changed(copied, tmp_path, change, named):
    src, dst = copied
    execute(dst, change)
    with pytest.raises(preflight.PreflightError) as refused:
        copier.migrate(src, dst, artifacts_dir=str(tmp_path), workers=2)
    assert named in str(refused.value) and "migration_target_overwrite=true" in str(refused.value)
    # the assessment, before any backup or change, refuses it the same way
    with pytest.raises(preflight.PreflightError, match="has changed since"):
        assess.assess(src, dst, artifacts_dir=str(tmp_path), check_target=True, overwrite=False)
    # and overwrite copies again
    assert copier.migrate(src, dst, artifacts_dir=str(tmp_path), workers=2, overwrite=True)["status"] == "complete"
    assert dbcompare.compare_databases(src, dst) == []


def test_a_rerun_of_a_finished_copy_says_nothing_to_do_and_changes_nothing(db_pair, tmp_path):
    src, dst = db_pair
    execute(src, "CREATE TABLE t (id int PRIMARY KEY)", "INSERT INTO t SELECT generate_series(1, 10)")
    inventory = write_inventory(tmp_path, src, dst)
    first = run_playbook(inventory, "--tags", "copy")
    assert first.returncode == 0, first.stdout[-3000:]
    again = run_playbook(inventory, "--tags", "copy")
    assert again.returncode == 0, again.stdout[-3000:]
    copy_task = again.stdout.split("TASK [Copy (rows")[1].split("TASK [")[0]
    assert "ok: [localhost]" in copy_task and "changed:" not in copy_task
    assert "Nothing to do" in again.stdout and "every table still holds the rows it copied" in again.stdout
