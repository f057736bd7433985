"""Files that readers may open at any moment: written whole under a temporary name, then renamed."""

import json
import os
import tempfile
import time


def replace_atomically(path, text, mode=None, durable=False):
    """Write text to path so that a reader sees the old file or the new one, never half of one. The temporary
    name is unique to this call, so writers in several threads or processes never rename each other's file.
    mode: the file's permissions (mkstemp's 0600 otherwise); durable: fsync before the rename."""
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.remove(temporary)
        except FileNotFoundError:
            pass
        raise


def write_progress_line(path, state, line):
    """The progress file the live-progress callback reads ({"state", "line"}); a courtesy, so a write that
    fails (a full disk) is left unwritten rather than failing the work it describes."""
    try:
        replace_atomically(path, json.dumps({"state": state, "line": line, "updated_at": time.time()}))
    except OSError:
        pass
