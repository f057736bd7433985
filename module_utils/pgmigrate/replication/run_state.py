"""The run's record on the controller, written so that a reader never sees half of it."""

import datetime
import json
import os
import tempfile


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
    """Write then rename: a reader sees the old file or the new one, never half of one."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(data, stream, indent=2, sort_keys=True, default=str)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
