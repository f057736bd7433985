"""Run a project playbook through ansible-runner, as AWX does, for cron, CI and the scheduled staging sync.

    scripts/pgmigrate-run -i inventories/staging [--playbook migrate.yml] [--check] [--tags copy] \
        [--vault-password-file FILE] [-e name=value ...]

What it adds to ansible-playbook:
- the run's events are kept like AWX keeps them: artifacts/runner/<ident>/ holds job_events/, stdout, rc and
  status (the environment ansible-runner records there is dropped: it is the caller's, and may hold secrets);
- the terminal shows one line per phase (play) with its outcome and duration ("skipped: no host matched" for
  a play whose group is empty; a play switched off with the pattern '!all', such as the checks a phase
  playbook imports again after migrate.yml made them, is not shown), per-table progress of the copy
  (each table as it completes, and the overall line every few seconds, from the copy's progress file),
  each failure with its task and message, and a closing summary;
- the exit status is 0 only when the playbook succeeded.
"""

import json
import os
import shlex
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_PLAYBOOK = "migrate.yml"
# hosts: '!all' - how a play is switched off for this run (playbooks/checks/inventory.yml, when imported again)
SWITCHED_OFF_PATTERN = "!all"


# The project's one style for sizes and durations (module_utils is the modules' code, plain Python).
sys.path.insert(0, str(PROJECT_DIR / "module_utils"))
from pgmigrate.common.units import human_bytes, human_duration  # noqa: E402


class CopyProgressWatcher:
    """While the copy task runs, reads its progress file and reports each finished table and, every
    `interval` seconds, the overall line."""

    def __init__(self, path, interval, write):
        self.path, self.interval, self.write = path, max(float(interval), 0.5), write
        self.reported = set()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="copy progress", daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        self.stop_event.set()
        self.thread.join(timeout=5)
        self._poll(final=True)

    def _read(self):
        try:
            with open(self.path, encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return None

    def _poll(self, final=False):
        state = self._read()
        if not state:
            return
        for table, info in sorted(state.get("tables", {}).items()):
            if info.get("status") == "done" and table not in self.reported:
                self.reported.add(table)
                self.write(f"      table {table}: {info.get('rows', 0):,} rows, {human_bytes(info.get('bytes'))}")
        if not final:
            self.write(f"      {state.get('phase', '')}: {state.get('tables_done', 0)}/{state.get('tables_total', 0)} "
                       f"tables, {state.get('rows_done', 0):,} rows, {human_bytes(state.get('bytes_streamed'))}"
                       f" ({100 * float(state.get('fraction') or 0):.1f}%)")

    def _loop(self):
        while not self.stop_event.wait(self.interval):
            self._poll()


class EventPrinter:
    """Turns ansible-runner events into the terminal lines described in the module docstring."""

    def __init__(self, write=None):
        self.write = write or (lambda line: print(line, flush=True))
        self.phases = []  # [name, started, status]
        self.counts = {"tasks": 0, "ran": 0, "changed": 0, "skipped": 0}  # of the current play
        self.failures = []
        self.watcher = None
        self.live_progress = None
        self.copy_summary = None
        self.heading_pending = False
        self.play_switched_off = False

    def _show_heading(self):
        """A play's heading is written when its first task starts (or it ends): a play switched off has none."""
        if self.heading_pending:
            self.heading_pending = False
            self.write(f"==> {self.phases[-1][0]}")

    def _close_phase(self):
        """The play's outcome: failed; skipped when no task was selected (tags) or every task's condition was
        false; ok, with how many tasks changed something."""
        self._show_heading()
        if self.phases and self.phases[-1][2] is None:
            phase, counts = self.phases[-1], self.counts
            seconds = human_duration(time.monotonic() - phase[1])
            if any(f["phase"] == phase[0] for f in self.failures):
                phase[2], line = "failed", f"failed in {seconds}"
            elif counts["tasks"] == 0:
                phase[2], line = "skipped", "skipped: no task selected (tags)"
            elif counts["ran"] == 0 and counts["skipped"]:
                phase[2], line = "skipped", f"skipped in {seconds}: every task's condition was false"
            else:
                phase[2] = f"ok, {counts['changed']} changed" if counts["changed"] else "ok"
                line = f"{phase[2]} in {seconds}"
            self.write(f"    {line}")

    def handle(self, event):
        kind, data = event.get("event"), event.get("event_data", {})
        if kind == "playbook_on_play_start":
            self._close_phase()
            name = data.get("play") or data.get("name") or "play"
            self.phases.append([name, time.monotonic(), None])
            self.counts = {"tasks": 0, "ran": 0, "changed": 0, "skipped": 0}
            self.heading_pending = True
            self.play_switched_off = (data.get("play_pattern") or data.get("pattern")) == SWITCHED_OFF_PATTERN
        elif kind == "playbook_on_no_hosts_matched" and self.heading_pending:
            if self.play_switched_off:
                self.phases.pop()
                self.heading_pending = False
            else:
                self._show_heading()
                self.phases[-1][2] = "skipped"
                self.write("    skipped: no host matched")
        elif kind == "playbook_on_task_start":
            self._show_heading()
            self.counts["tasks"] += 1
            task = data.get("task", "")
            if self.live_progress and task.startswith("Copy (") and self.watcher is None:
                self.watcher = CopyProgressWatcher(self.live_progress["file"], self.live_progress.get("interval", 5),
                                                   self.write)
                self.watcher.start()
        elif kind == "runner_on_skipped":
            self.counts["skipped"] += 1
        elif kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable"):
            self._show_heading()
            result = data.get("res") or {}
            self.counts["ran"] += 1
            self.counts["changed"] += 1 if result.get("changed") else 0
            facts = result.get("ansible_facts") or {}
            if "migration_live_progress" in facts:
                self.live_progress = facts["migration_live_progress"]
            task = data.get("task", "")
            if self.watcher and task.startswith("Copy ("):
                self.watcher.stop()
                self.watcher = None
                if isinstance(result.get("summary"), dict):
                    self.copy_summary = result["summary"]
            if kind != "runner_on_ok" and not data.get("ignore_errors"):
                message = str(result.get("msg") or result.get("stderr") or "failed").strip()
                phase = self.phases[-1][0] if self.phases else ""
                self.failures.append({"phase": phase, "host": data.get("host"), "task": task, "message": message})
                self.write(f"    FAILED {data.get('host')}: {task}: {message.splitlines()[0] if message else ''}")
        elif kind == "playbook_on_stats":
            self._close_phase()
        return True

    def summary_lines(self, status, rc, artifacts):
        lines = [f"Result: {status} (exit code {rc})"]
        for name, _started, outcome in self.phases:
            lines.append(f"  {outcome or 'not finished'}: {name}")
        copy = self.copy_summary
        if copy and copy.get("status"):
            lines.append(f"  copy {copy['status']}: {copy.get('table_count', '?')} tables, "
                         f"{copy.get('rows', 0):,} rows in {human_duration(copy.get('seconds'))}")
        for failure in self.failures:
            lines.append(f"  failed: {failure['task']} on {failure['host']}: {failure['message'][:500]}")
        lines.append(f"Events, output and status: {artifacts}")
        return lines


def _scrub_recorded_environment(artifact_dir):
    """ansible-runner writes the whole process environment into artifacts/<ident>/command (and env/ files
    with what it was given): drop the environment, which is the caller's and may hold secrets."""
    command_file = Path(artifact_dir) / "command"
    if command_file.exists():
        try:
            record = json.loads(command_file.read_text())
        except ValueError:
            return
        record.pop("env", None)
        command_file.write_text(json.dumps(record))


def build_cmdline(check=False, diff=False, tags=None, skip_tags=None, limit=None, vault_password_file=None,
                  vault_ids=(), verbosity=0):
    """Command-line options for ansible-playbook (no secrets: only paths and names)."""
    args = []
    if check:
        args.append("--check")
    if diff:
        args.append("--diff")
    if tags:
        args += ["--tags", tags]
    if skip_tags:
        args += ["--skip-tags", skip_tags]
    if limit:
        args += ["--limit", limit]
    if vault_password_file:
        args += ["--vault-password-file", str(Path(vault_password_file).resolve())]
    for vault_id in vault_ids:
        args += ["--vault-id", vault_id]
    if verbosity:
        args.append("-" + "v" * verbosity)
    return args


def run(inventory, playbook=DEFAULT_PLAYBOOK, extravars=None, artifacts_dir=None, ident=None, write=None,
        **cmdline_options):
    """Run the playbook; returns (exit code, status, artifact directory, EventPrinter)."""
    import ansible_runner  # imported here: the module is usable (and testable) for its helpers without it

    playbook_path = (PROJECT_DIR / playbook).resolve()
    if not playbook_path.is_file():
        raise SystemExit(f"no playbook {playbook} in {PROJECT_DIR}: give a path relative to the project")
    inventory_path = Path(inventory).resolve()
    if not inventory_path.exists():
        raise SystemExit(f"no inventory {inventory}: give e.g. inventories/staging")
    artifacts_dir = Path(artifacts_dir or PROJECT_DIR / "artifacts" / "runner").resolve()
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    ident = ident or f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    printer = EventPrinter(write)
    # The ansible-playbook of this Python environment (the project's .venv), whether or not it is on PATH.
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    private_data_dir = tempfile.mkdtemp(prefix="pgmigrate-runner-")
    try:
        result = ansible_runner.run(
            private_data_dir=private_data_dir, artifact_dir=str(artifacts_dir), ident=ident,
            project_dir=str(PROJECT_DIR), playbook=str(playbook_path.relative_to(PROJECT_DIR)),
            inventory=str(inventory_path), extravars=extravars or None,
            cmdline=shlex.join(build_cmdline(**cmdline_options)),
            event_handler=printer.handle, quiet=True, suppress_env_files=True,
            envvars={"ANSIBLE_CONFIG": str(PROJECT_DIR / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0"})
    finally:
        # The private data directory holds the extra variables as given: nothing of it is kept.
        shutil.rmtree(private_data_dir, ignore_errors=True)
    if printer.watcher:
        printer.watcher.stop()
    _scrub_recorded_environment(result.config.artifact_dir)
    rc = result.rc if result.rc is not None else 1
    if result.status != "successful" and rc == 0:
        rc = 1
    return rc, result.status, result.config.artifact_dir, printer


def parse_extravars(values):
    """-e name=value (YAML value) or -e @file.yml, several times."""
    import yaml
    extravars = {}
    for value in values or ():
        if value.startswith("@"):
            with open(value[1:], encoding="utf-8") as handle:
                extravars.update(yaml.safe_load(handle) or {})
            continue
        name, sep, raw = value.partition("=")
        if not sep or not name:
            raise SystemExit(f"-e {value!r}: write name=value or @file.yml")
        extravars[name] = yaml.safe_load(raw) if raw else ""
    return extravars


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(prog="pgmigrate-run", description=__doc__.split("\n\n")[0])
    parser.add_argument("-i", "--inventory", required=True, help="inventory directory or file (inventories/<env>)")
    parser.add_argument("-p", "--playbook", default=DEFAULT_PLAYBOOK,
                        help="playbook relative to the project (default migrate.yml)")
    parser.add_argument("-e", "--extra-vars", action="append", default=[],
                        help="name=value or @file.yml (never secrets: they belong in the vault)")
    parser.add_argument("--check", action="store_true", help="show the plan, change nothing")
    parser.add_argument("--diff", action="store_true")
    parser.add_argument("-t", "--tags")
    parser.add_argument("--skip-tags")
    parser.add_argument("-l", "--limit")
    parser.add_argument("--vault-password-file", help="file holding the vault password (a path, never the password)")
    parser.add_argument("--vault-id", action="append", default=[])
    parser.add_argument("--artifacts-dir", help="where runs are kept (default artifacts/runner)")
    parser.add_argument("--ident", help="name of this run's directory (default: timestamp and random suffix)")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    rc, status, artifact_dir, printer = run(
        args.inventory, args.playbook, parse_extravars(args.extra_vars), args.artifacts_dir, args.ident,
        check=args.check, diff=args.diff, tags=args.tags, skip_tags=args.skip_tags, limit=args.limit,
        vault_password_file=args.vault_password_file, vault_ids=args.vault_id, verbosity=args.verbose)
    for line in printer.summary_lines(status, rc, artifact_dir):
        print(line, flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
