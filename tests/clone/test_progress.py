"""The copy's progress file: written by several threads at once (the background writer, the phase
changes, the final state), it is always complete and never makes a writer fail."""

import json
import os
import threading

from pgmigrate.clone.progress import Progress


def test_concurrent_writes_neither_fail_nor_leave_a_partial_file(tmp_path):
    path = tmp_path / "progress.json"
    progress = Progress(str(path), "run-1", [(f"public.t{i}", 1000, 1) for i in range(20)])
    errors = []
    start = threading.Barrier(6)

    def hammer(worker):
        start.wait()
        try:
            for i in range(100):
                if worker == 0:
                    progress.set_phase("data", f"step {i}")
                else:
                    progress.part_done(f"public.t{(worker * 7 + i) % 20}", 1)
                    progress.write()
        except OSError as error:  # before the fix: [Errno 2] ... progress.json.tmp -> progress.json
            errors.append(error)

    threads = [threading.Thread(target=hammer, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    progress.finish("complete", "done")
    record = json.loads(path.read_text())
    assert record["state"] == "complete" and record["tables_total"] == 20
    assert [p.name for p in tmp_path.iterdir()] == ["progress.json"], "no temporary file may be left behind"


def test_large_objects_count_in_the_progress_line(tmp_path):
    progress = Progress(str(tmp_path / "progress.json"), "run-2", [("public.t", 100, 1)])
    progress.set_large_objects(5, 300)
    progress.add_large_object_bytes(300)
    progress.large_objects_done(5)
    snap = progress.snapshot()
    assert (snap["large_objects_done"], snap["large_objects_total"], snap["large_object_bytes"]) == (5, 5, 300)
    assert "large objects 5/5" in progress.line(snap)
    assert snap["fraction"] == 0.75  # 300 of 400 estimated bytes, the table not copied yet


def test_the_log_keeps_every_line_whole_and_is_closed_at_the_end(tmp_path):
    """The log is written through one handle kept open (thousands of lines on a database of many tables):
    lines from many threads at once each arrive whole, and finish() leaves no file descriptor open."""
    log_path = tmp_path / "progress.log"
    progress = Progress(None, "run-3", [(f"public.t{i}", 10, 1) for i in range(40)], log_path=str(log_path))
    start = threading.Barrier(4)

    def copy(worker):
        start.wait()
        for i in range(worker, 40, 4):
            progress.part_done(f"public.t{i}", i, detail=f"analyzed by worker {worker}")

    threads = [threading.Thread(target=copy, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    progress.finish("complete", "done")
    lines = log_path.read_text().splitlines()
    copied = sorted(line.split(" ", 2)[2] for line in lines if " copied " in line)
    assert copied == sorted(f"copied public.t{i}: {i} rows; analyzed by worker {i % 4}" for i in range(40))
    assert lines[-1].endswith("run complete: done")
    open_files = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                  if os.path.exists(f"/proc/self/fd/{fd}")]
    assert str(log_path) not in open_files
