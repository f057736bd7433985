"""Crashes (issue 8): `ansible-playbook migrate.yml` of the CDP database killed with SIGKILL (the whole
process group: the playbook, its copy module and the psql streams) at random moments of the copy; each
rerun completes and the target equals the source exactly.

The number of kills is $PGM_FAULT_KILLS (3 by default, the CI part; `scripts/fault_suite.py` runs 12);
$PGM_FAULT_SEED makes the moments reproducible (the seed is printed and recorded)."""

import json
import os
import random
import signal
import subprocess
import time

import pytest

import dbcompare
from cdp_reference import generate
from conftest import PROJECT_DIR, write_inventory
from faultlib import ANSIBLE_PLAYBOOK, recorder, rows_lost, run_playbook

pytestmark = pytest.mark.faults

KILLS = int(os.environ.get("PGM_FAULT_KILLS", "3"))
CDP_SCALE = float(os.environ.get("PGM_FAULT_CDP_SCALE", "0.3"))


def kill_at_a_random_moment(inventory, progress_file, rng):
    """Start migrate.yml and SIGKILL its process group at a random point of the copy: a random fraction
    of the bytes streamed, or (one time in five) at once on entering a phase other than data, e.g. the
    schema or the post-data indexes. Returns the progress seen at the kill, or None if it ended first."""
    fraction = rng.random()
    other_phase = rng.random() < 0.2
    proc = subprocess.Popen([ANSIBLE_PLAYBOOK, "migrate.yml", "-i", str(inventory), "--skip-tags", "backup,validate"],
                            cwd=PROJECT_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        try:
            progress = json.loads(progress_file.read_text())
        except (OSError, ValueError):
            progress = {}
        phase = progress.get("phase")
        done = progress.get("bytes_streamed", 0) / max(progress.get("bytes_estimated") or 1, 1)
        if progress.get("state") == "running" and (
                (phase == "data" and done >= fraction and not other_phase)
                or (other_phase and phase not in (None, "data"))
                or (phase in ("post-data", "sequences", "materialized views", "analyze") and not other_phase)):
            killed_at = {"phase": phase, "fraction_streamed": round(done, 3), "target_fraction": round(fraction, 3)}
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    if killed_at is None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    return killed_at


def test_kill_9_at_random_moments_of_the_copy_then_rerun_is_exact(source_server, target_server, scratch, tmp_path,
                                                                 request):
    record = recorder(request)
    seed = int(os.environ.get("PGM_FAULT_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    print(f"kill -9 trials: {KILLS}, seed {seed}")
    src = scratch.create(source_server, "src")
    generate.load(src, CDP_SCALE)
    kills, attempts = 0, 0
    while kills < KILLS and attempts < KILLS * 3:
        attempts += 1
        dst = scratch.create(target_server, "dst")
        trial_dir = tmp_path / f"trial{attempts}"
        inventory = write_inventory(trial_dir, src, dst, {"migration_workers": 2,
                                                          "migration_split_tables_larger_than": "4MB"})
        killed_at = kill_at_a_random_moment(inventory, trial_dir / "artifacts" / "progress.json", rng)
        if killed_at is None:
            continue  # the copy ended before the chosen moment: not a crash trial, try another moment
        kills += 1
        rerun = run_playbook(inventory, "--skip-tags", "backup,validate")
        differences = dbcompare.compare_databases(src, dst)
        lost = rows_lost(src, dst)
        record("crash", f"kill -9 #{kills}", seed=seed, survived=rerun.returncode == 0 and not differences,
               rows_lost=lost, rerun_seconds=rerun.seconds, resumed="resumed run" in rerun.stdout, **killed_at)
        assert rerun.returncode == 0, f"rerun after a kill in {killed_at}:\n{rerun.stdout[-3000:]}"
        assert differences == [], f"after a kill in {killed_at}: {differences[:5]}"
        assert lost == 0
    assert kills == KILLS, f"only {kills} of {KILLS} kills landed during a copy in {attempts} attempts"
