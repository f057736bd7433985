"""New lines matching a pattern in log files (and a systemd journal) during a window."""

import os
import re
import subprocess
import time

from .rules import _counts_summary, _finish


def _journal_lines(units, since_epoch):
    if not units:
        return [], None
    command = ["journalctl", "--no-pager", "-o", "short-iso", "--since", f"@{int(since_epoch)}"]
    for unit in units:
        command += ["-u", unit]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return [], f"journalctl failed: {error}"
    if done.returncode != 0:
        return [], f"journalctl failed: {done.stderr.strip()[:200]}"
    return [line for line in done.stdout.splitlines() if not line.startswith("-- ")], None


def mark_error_logs(paths):
    """Where a later watch_error_log begins: each file's current size (0 when it does not exist yet) and
    the time (for the journal). Taken before the HTTP checks, so that the errors they cause count too."""
    offsets = {}
    for path in paths or []:
        try:
            offsets[path] = os.path.getsize(path)
        except OSError:
            offsets[path] = 0
    return {"epoch": time.time(), "offsets": offsets}


def watch_error_log(paths, pattern, window_seconds, poll_seconds=1.0, journal_units=(), max_lines=20, mark=None):
    """Watches the files and the units' journal for window_seconds; every new line matching pattern (a
    Python regular expression) fails the check. New: written after `mark` (mark_error_logs), or after
    the watch began without one. A file smaller than its mark (rotated) is read from its start."""
    started = time.monotonic()
    title = "Error log watch"
    matcher = re.compile(pattern)
    mark = mark or {}
    began_epoch = float(mark.get("epoch") or time.time())
    marked = mark.get("offsets") or {}
    current = mark_error_logs(paths)["offsets"]
    offsets, notes = {}, []
    for path in paths or []:
        offsets[path] = marked.get(path, current[path])
        if current[path] < offsets[path]:
            offsets[path] = 0
            notes.append(f"{path} was rotated since the mark (read from its start)")
        if not os.path.exists(path):
            notes.append(f"{path} does not exist yet (watched from its creation)")
    found = {path: [] for path in offsets}
    deadline = started + float(window_seconds)
    while True:
        for path in offsets:
            try:
                with open(path, "rb") as handle:
                    handle.seek(offsets[path])
                    chunk = handle.read()
            except OSError:
                continue
            complete = chunk[:chunk.rfind(b"\n") + 1]
            offsets[path] += len(complete)
            for line in complete.decode("utf-8", "replace").splitlines():
                if matcher.search(line):
                    found[path].append(line.strip())
        if time.monotonic() >= deadline:
            break
        time.sleep(min(float(poll_seconds), max(0.0, deadline - time.monotonic())))
    journal, journal_error = _journal_lines(list(journal_units or []), began_epoch)
    if journal_units:
        found["journal: " + ", ".join(journal_units)] = [line for line in journal if matcher.search(line)]
    items = []
    for source, lines in found.items():
        if lines:
            shown = lines[:max_lines]
            more = f" (and {len(lines) - len(shown)} more)" if len(lines) > len(shown) else ""
            items.append({"table": None, "log": source, "lines": shown, "status": "fail",
                          "detail": f"{source}: {len(lines)} new error lines in {float(window_seconds):g} s{more}: "
                                    + " | ".join(shown)})
        else:
            items.append({"table": None, "log": source, "lines": [], "status": "pass",
                          "detail": f"{source}: no new line matching {pattern!r} in {float(window_seconds):g} s"})
    if journal_error:
        items.append({"table": None, "log": "journal", "status": "fail", "detail": journal_error})
    summary = _counts_summary(items, "logs") + f" for {float(window_seconds):g} s"
    failing = [i for i in items if i["status"] == "fail"]
    if failing:
        summary += ": " + "; ".join(i["detail"] for i in failing)
    if notes:
        summary += " (" + "; ".join(notes) + ")"
    return _finish("error_log", title, items, started, summary)
