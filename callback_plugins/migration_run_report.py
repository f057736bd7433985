"""Run report callback: the whole run's phases as a picture. Each play's start, end and outcome are recorded as
the playbook runs; at its end, run-reports/<time>-<playbook>.html (and .json) is written into the run's
migration_artifacts_dir, with a timeline of the plays, their durations and links to the copy and validation
reports the run wrote. The timing lives in module_utils/pgmigrate/reports/run_timeline.py, the page in
reports/render.py."""

import glob
import json
import os
import sys
import time

from ansible import context
from ansible.plugins.callback import CallbackBase

# The project's plain-Python core: Ansible puts module_utils/ on modules' paths, not on plugins'.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils"))
from pgmigrate.common import playbook_variables  # noqa: E402
from pgmigrate.notify.notify import status_from_stats  # noqa: E402
from pgmigrate.reports.render import render_run_html  # noqa: E402
from pgmigrate.reports.run_timeline import PlayTimeline  # noqa: E402

DOCUMENTATION = r"""
name: migration_run_report
type: aggregate
short_description: write the whole run's phases (one bar per play) as an HTML report in the artifacts directory
description:
  - At the end of a playbook run, writes run-reports/<time>-<playbook>.html and .json into the
    migration_artifacts_dir of the migration_controller host, when that directory exists (the run made it)
    and the run was not in check mode. Never changes the run's outcome.
requirements:
  - enable it in ansible.cfg (callbacks_enabled)
"""

REPORT_DIR = "run-reports"
# The reports a run writes itself, linked from its run report when written during the run.
RUN_REPORTS = (("runs/*/report.html", "The copy"), ("validation/*/validation.html", "The validation"))


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "migration_run_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._timeline = None
        self._play = None

    def v2_playbook_on_start(self, playbook):
        name = os.path.basename(str(getattr(playbook, "_file_name", "playbook")))
        self._timeline = PlayTimeline(name, time.time())

    def v2_playbook_on_play_start(self, play):
        self._play = play
        if self._timeline:
            self._timeline.play_started(play.get_name(), time.time())

    def v2_runner_on_ok(self, result):
        if self._timeline:
            self._timeline.task_done()

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if self._timeline:
            self._timeline.task_done(failed=not ignore_errors)

    def v2_runner_on_unreachable(self, result):
        if self._timeline:
            self._timeline.task_done(failed=True)

    def v2_playbook_on_stats(self, stats):
        if self._timeline is None or context.CLIARGS.get("check"):
            return
        host_stats = {host: stats.summarize(host) for host in sorted(stats.processed)}
        run = self._timeline.finish(status_from_stats(host_stats), time.time())
        try:
            path = self._write(run)
        except Exception as error:  # noqa: BLE001 - the run's own outcome matters more than its picture
            self._display.warning(f"Run report not written: {type(error).__name__}: {error}")
            return
        if path:
            self._display.display(f"RUN REPORT: {path}")

    def _write(self, run):
        variables, templar = playbook_variables.controller_variables(self._play)
        artifacts = playbook_variables.rendered_text(variables, templar, "migration_artifacts_dir")
        if not artifacts or not os.path.isdir(artifacts):
            return None  # the run stopped before it made its artifacts directory: nothing to keep a report in
        directory = os.path.join(os.path.abspath(artifacts), REPORT_DIR)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        started = time.strftime("%Y%m%dT%H%M%S", time.localtime(self._timeline.started))
        base = os.path.join(directory, f"{started}-{os.path.splitext(run['playbook'])[0]}")
        reports = self._reports_written(os.path.abspath(artifacts), directory)
        inventory = playbook_variables.rendered_text(variables, templar, "inventory_dir")
        with open(base + ".json", "w") as handle:
            json.dump({**run, "reports": reports}, handle, indent=1)
        with open(base + ".html", "w") as handle:
            handle.write(render_run_html(run, time.strftime("%Y-%m-%d %H:%M:%S %z",
                                                            time.localtime(self._timeline.started)),
                                         inventory or "", reports))
        return base + ".html"

    def _reports_written(self, artifacts, directory):
        """The copy and validation reports written during this run, as links relative to the run report."""
        found = []
        for pattern, label in RUN_REPORTS:
            for path in sorted(glob.glob(os.path.join(artifacts, pattern))):
                if os.path.getmtime(path) >= self._timeline.started:
                    found.append({"label": f"{label}: {os.path.relpath(path, artifacts)}",
                                  "href": os.path.relpath(path, directory)})
        return found
