"""The copy's progress file: written by several threads at once (the background writer, the phase
changes, the final state), it is always complete and never makes a writer fail."""

import json
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
