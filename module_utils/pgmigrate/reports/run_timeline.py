"""The whole run's phases: each play of a playbook run, when it started and ended and how it went, fed event by
event by the callback plugin migration_run_report. Plain Python (the clock is given), tested on its own."""


class PlayTimeline:
    """Plays in the order they started; a play ends when the next starts or the run ends."""

    def __init__(self, playbook, started):
        self.playbook = playbook
        self.started = started
        self.plays = []

    def play_started(self, name, now):
        self._close(now)
        self.plays.append({"play": name, "start": now, "end": None, "tasks": 0, "failed": 0})

    def task_done(self, failed=False):
        """A task ran in the current play (not skipped): the play did something, and failed when a task did."""
        if self.plays:
            self.plays[-1]["tasks"] += 1
            self.plays[-1]["failed"] += int(bool(failed))

    def finish(self, status, now):
        """The run as the report shows it: each play's seconds from the run's start, its status (ok, failed,
        skipped: no task ran), and the run's status and seconds."""
        self._close(now)
        plays = [{"play": p["play"], "start": round(p["start"] - self.started, 3),
                  "end": round(p["end"] - self.started, 3), "seconds": round(p["end"] - p["start"], 3),
                  "status": "failed" if p["failed"] else ("ok" if p["tasks"] else "skipped"), "tasks": p["tasks"]}
                 for p in self.plays]
        return {"playbook": self.playbook, "status": status, "seconds": round(now - self.started, 3), "plays": plays}

    def _close(self, now):
        if self.plays and self.plays[-1]["end"] is None:
            self.plays[-1]["end"] = now
