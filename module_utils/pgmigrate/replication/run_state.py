"""The run's record on the controller, written so that a reader never sees half of it."""

import datetime
import json
import os

from ..common.files import replace_atomically


def now():
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


class RunState:
    """The run's record on the controller: <artifacts_dir>/zero_downtime/<name>/state.json."""

    def __init__(self, artifacts_dir, name):
        self.directory = os.path.join(artifacts_dir, "zero_downtime", name)
        self.path = os.path.join(self.directory, "state.json")
        self.data = {}
        if os.path.exists(self.path):
            with open(self.path) as handle:
                self.data = json.load(handle)

    def update(self, **values):
        self.data.update(values)
        self.save()

    def save(self):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        write_json_atomically(self.path, self.data, mode=0o600)

    def remove(self):
        if os.path.exists(self.path):
            os.unlink(self.path)


def write_json_atomically(path, data, mode=0o644):
    """Write then rename, durably: a reader sees the old file or the new one, never half of one."""
    replace_atomically(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", mode=mode, durable=True)
