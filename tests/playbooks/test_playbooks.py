"""migrate.yml as operators run it: ansible-playbook with an inventory, against real servers."""

import json
import os
import re
import signal
import subprocess
import time

import pytest

import dbcompare
from cdp_reference import generate
from conftest import PROJECT_DIR, connect, query, write_inventory

ANSIBLE_PLAYBOOK = str(PROJECT_DIR / ".venv" / "bin" / "ansible-playbook")


def playbook(inventory, *args, timeout=600):
    return subprocess.run([ANSIBLE_PLAYBOOK, "migrate.yml", "-i", str(inventory), *args], cwd=PROJECT_DIR,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def cdp_pair(db_pair):
    src, dst = db_pair
    generate.load(src, 0.02)
    return src, dst


def all_artifact_text(tmp_path):
    texts = []
    for root, _dirs, files in os.walk(tmp_path / "artifacts"):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                texts.append(handle.read().decode(errors="replace"))
    return "\n".join(texts)


def test_migrate_yml_clones_the_cdp_database_and_reports_the_documents_errors(cdp_pair, tmp_path):
    src, dst = cdp_pair
    inventory = write_inventory(tmp_path, src, dst, {"migration_profile": "cdp"})
    result = playbook(inventory)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert dbcompare.compare_databases(src, dst) == []
    assert "The documented order is wrong" in result.stdout
    assert "dashboard_tile_instances is listed at position 14 but depends on public.dashboard_configurations" \
        in result.stdout
    assert "Copy complete: 21 tables" in result.stdout
    assessment = json.loads((tmp_path / "artifacts" / "assessment.json").read_text())
    assert len(assessment["plan"]["tables"]) == 21 and assessment["pg_stats"]
    for secret in (src["password"], dst["password"]):
        assert secret not in result.stdout + result.stderr
        assert secret not in all_artifact_text(tmp_path)


@pytest.mark.parametrize("background", [False, True], ids=["foreground", "background"])
def test_the_copys_progress_is_printed_while_it_runs(db_pair, tmp_path, background):
    """Foreground: the callback plugin migration_live_progress prints the progress file's line while
    the copy task runs, and the validation's while it runs. Background: each poll of the async job prints
    the copy's. Either way the copy is exact."""
    src, dst = db_pair
    # Scale 1 (about 100 MB): at 0.3 the copy, small tables copied in-process, ends within one poll.
    generate.load(src, 1)
    inventory = write_inventory(tmp_path, src, dst, {"migration_workers": 1, "migration_progress_poll_seconds": 1,
                                                     "migration_copy_in_background": background,
                                                     "validation_workers": 1})
    result = playbook(inventory, "--skip-tags", "backup,validate" if background else "backup")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    # The lines under the task that printed them: the foreground copy, or the polls of the background job.
    task = "TASK [Follow the copy" if background else "TASK [Copy (rows"
    output = result.stdout.split(task, 1)[1].split("\nTASK [", 1)[0]
    progress_lines = re.findall(r"^ +\[data\] +\d+\.\d% tables \d+/21 rows [\d,]+ streamed .* ETA", output,
                                re.MULTILINE)
    assert progress_lines, result.stdout[-3000:]
    if not background:
        validation = result.stdout.split("TASK [validation : Validate the target against the source]", 1)[1]
        validation = validation.split("\nTASK [", 1)[0]
        assert re.search(r"^ +\[validate\] (catalogs and schema|content|orphans|sequences)", validation,
                         re.MULTILINE), validation[-3000:]
        assert "Validation passed" in result.stdout
    assert dbcompare.compare_databases(src, dst) == []


def test_check_mode_shows_the_plan_and_changes_nothing(cdp_pair, tmp_path):
    src, dst = cdp_pair
    result = playbook(write_inventory(tmp_path, src, dst), "--check")
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(r"Level 0 \(\d+ tables\): ", result.stdout)
    conn = connect(dst)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")
        assert cur.fetchone()[0] == 0
    conn.close()


def test_an_inventory_without_a_target_is_a_clear_error(cdp_pair, tmp_path):
    src, _ = cdp_pair
    result = playbook(write_inventory(tmp_path, src, None), timeout=120)
    assert result.returncode != 0
    assert "must define migration_source and migration_target" in result.stdout


def test_a_production_target_needs_confirmation(cdp_pair, tmp_path):
    src, dst = cdp_pair
    inventory = write_inventory(tmp_path, src, dst, {"migration_target_is_production": True})
    result = playbook(inventory, timeout=120)
    assert result.returncode != 0
    assert f"migration_confirm_target={dst['dbname']}" in result.stdout
    conn = connect(dst)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")
        assert cur.fetchone()[0] == 0
    conn.close()
    confirmed = playbook(inventory, "-e", f"migration_confirm_target={dst['dbname']}")
    assert confirmed.returncode == 0, confirmed.stdout[-3000:]


def test_kill_9_of_ansible_playbook_then_rerun_finishes_the_job(db_pair, tmp_path):
    src, dst = db_pair
    # Large enough that the data phase outlasts the copy's watchdog (it looks for its controller every 0.2 s)
    # by several seconds: killed at the first bytes, the copy must still be running when the watchdog looks.
    # Scale 2 (about 200 MB): at 0.6 the copy, small tables copied in-process, could end between two reads
    # of the progress file.
    generate.load(src, 2)
    inventory = write_inventory(tmp_path, src, dst, {"migration_workers": 2, "migration_progress_poll_seconds": 1})
    progress_file = tmp_path / "artifacts" / "progress.json"
    proc = subprocess.Popen([ANSIBLE_PLAYBOOK, "migrate.yml", "-i", str(inventory)], cwd=PROJECT_DIR,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    killed_in = None
    while time.time() < deadline and proc.poll() is None:
        try:
            progress = json.loads(progress_file.read_text())
        except (OSError, ValueError):
            progress = {}
        if progress.get("phase") == "data" and progress.get("bytes_streamed", 0) > 0:
            killed_in = progress
            os.kill(proc.pid, signal.SIGKILL)  # the playbook only: its async copy lives on by itself
            break
        time.sleep(0.01)
    proc.wait()
    assert killed_in, "the copy was never seen in its data phase"
    rerun = playbook(inventory)
    assert rerun.returncode == 0, rerun.stdout[-4000:]
    assert "resumed run" in rerun.stdout, rerun.stdout[-3000:]
    assert dbcompare.compare_databases(src, dst) == []
    log = "".join(p.read_text() for p in (tmp_path / "artifacts" / "runs").glob("*/progress.log"))
    assert "controlling process" in log and "is gone: stopping" in log


def test_validate_yml_fails_naming_the_check_and_table_and_links_the_reports(cdp_pair, tmp_path):
    src, dst = cdp_pair
    inventory = write_inventory(tmp_path, src, dst)
    assert playbook(inventory).returncode == 0
    conn = connect(dst)
    with conn.cursor() as cur:
        cur.execute("DELETE FROM public.report_executions WHERE id = (SELECT id FROM public.report_executions "
                    "ORDER BY id LIMIT 1) RETURNING id")
        deleted = cur.fetchone()[0]
    conn.commit()
    conn.close()
    result = subprocess.run([ANSIBLE_PLAYBOOK, "playbooks/validate.yml", "-i", str(inventory)], cwd=PROJECT_DIR,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode != 0
    assert "Validation failed: row_counts (public.report_executions)" in result.stdout
    assert "content (public.report_executions)" in result.stdout
    reports = sorted((tmp_path / "artifacts" / "validation").glob("*/validation.html"))
    assert len(reports) == 2  # migrate.yml's passing run, then this one
    page = reports[-1].read_text()
    assert str(deleted) in page and "missing in target" in page
    for secret in (src["password"], dst["password"]):
        assert secret not in result.stdout and secret not in page


def test_a_failed_validation_with_the_rollback_left_out_still_stops_the_run_and_says_so(cdp_pair, tmp_path):
    """--skip-tags rollback: the failed validation still ends the run before any later phase, non-zero, and the
    message says that nothing was rolled back (the target keeps the copy)."""
    src, dst = cdp_pair
    inventory = write_inventory(tmp_path, src, dst, {
        "validation_performance_queries": [{"name": "impossible", "sql": "SELECT pg_sleep(0.2)"}],
        "validation_query_limit_seconds": 0.01,
    })
    result = playbook(inventory, "--skip-tags", "backup,rollback")
    assert result.returncode != 0
    words = " ".join(result.stdout.split())
    assert "Nothing was rolled back (the rollback plays were left out by --tags or --skip-tags)" in words
    assert "PLAY [(7/10) CUTOVER" not in result.stdout and "DONE: Report" not in result.stdout
    assert query(dst, "SELECT count(*) FROM public.users")[0][0] > 0  # the copy stays


def test_a_failed_validation_rolls_back_by_itself_and_fails_the_run(cdp_pair, tmp_path):
    """Validation fails (here: a representative query cannot meet an impossible limit); migrate.yml
    restores the target from its pre-migration backup, says so, and exits non-zero."""
    src, dst = cdp_pair
    conn = connect(dst)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE keep_me (note text); INSERT INTO keep_me VALUES ('pre-migration state')")
    conn.commit()
    conn.close()
    inventory = write_inventory(tmp_path, src, dst, {
        "migration_target_overwrite": True,
        "validation_performance_queries": [{"name": "impossible", "sql": "SELECT pg_sleep(0.2)"}],
        "validation_query_limit_seconds": 0.01,
    })
    result = playbook(inventory)
    assert result.returncode != 0
    assert "query_performance (impossible)" in result.stdout
    assert "The migration was rolled back" in result.stdout
    conn = connect(dst)
    with conn.cursor() as cur:
        cur.execute("SELECT note FROM keep_me")
        assert cur.fetchall() == [("pre-migration state",)]
        cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert cur.fetchone()[0] == 1, "the copied tables must be gone after the data rollback"
    conn.close()
