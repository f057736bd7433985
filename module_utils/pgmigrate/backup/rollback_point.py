"""The target's rollback point: which backup a data rollback restores.

A migration's data rollback must bring the target back to its state before the migration's *first*
attempt. An attempt interrupted during the copy leaves a half-copied target; backing it up again on the
rerun, and restoring that, would "roll back" to the half copy. So:

- migrate.yml's backup play backs up the target once per migration and opens the rollback point on that
  backup (open). Its reruns, while the point is open, take no new backup of the target and reuse it.
- The migration's end closes the point: migrated (the run finished) or rolled back (a data rollback
  restored it). The closed point stays as the last finished migration's (finished) until the next
  migration closes its own: a rollback after a finished migration restores the target as it was before it.
- Retention (backup.prune) never removes a backup that the open or the finished point designates.

One JSON file per target below the backup directory: rollback/<target key>.json, written atomically.
"""

import json
import os
import time

from ..common.files import replace_atomically
from . import backup

DIRECTORY = "rollback"


class RollbackPointError(backup.BackupError):
    pass


def _path(backup_dir, key):
    return os.path.join(backup_dir, DIRECTORY, key + ".json")


def read(backup_dir, key):
    """{"open": point or None, "finished": point or None}; a point is {"backup" (the complete backup's
    directory, relative to backup_dir), "run_id", "opened_at", and for finished "closed_at", "outcome"}."""
    try:
        with open(_path(backup_dir, key)) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {"open": None, "finished": None}
    except (OSError, ValueError) as error:
        raise RollbackPointError(f"the rollback point {_path(backup_dir, key)} cannot be read ({error}): "
                                 "restore it from a copy of the backup directory, or remove it knowingly") from None
    return {"open": data.get("open"), "finished": data.get("finished")}


def _write(backup_dir, key, data):
    path = _path(backup_dir, key)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    replace_atomically(path, json.dumps(data, indent=1, sort_keys=True), mode=0o600, durable=True)


def backup_path(backup_dir, point):
    return os.path.join(backup_dir, point["backup"]) if point else None


def open_point(backup_dir, key, unit, run_id):
    """Open the rollback point on the complete backup unit (a directory below backup_dir), taken before
    the migration changed the target. Refused while another point is open: that migration is unfinished."""
    points = read(backup_dir, key)
    if points["open"]:
        raise RollbackPointError(
            "a migration of this target is unfinished: its rollback point is "
            f"{backup_path(backup_dir, points['open'])}; "
            "finish it (rerun migrate.yml) or roll it back (playbooks/rollback.yml -e rollback_mode=data)")
    relative = os.path.relpath(os.path.realpath(unit), os.path.realpath(backup_dir))
    if relative.startswith(os.pardir):
        raise RollbackPointError(f"the rollback point must be a backup below {backup_dir}, not {unit}")
    points["open"] = {"backup": relative, "run_id": run_id, "opened_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _write(backup_dir, key, points)
    return points


def close(backup_dir, key, outcome):
    """The open point becomes the finished one (outcome: migrated or rolled back), or is dropped (discarded).
    With none open, a rollback uses up the finished migration's point. Returns (points, whether anything
    changed)."""
    points = read(backup_dir, key)
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    finished = points["finished"]
    if not points["open"] and outcome == "rolled back" and finished and finished.get("outcome") == "migrated":
        # A rollback after the migration finished restored its point: it is used up (a second rollback would
        # throw away what was written since the first).
        points["finished"] = {**finished, "outcome": "rolled back", "rolled_back_at": now}
        _write(backup_dir, key, points)
        return points, True
    if not points["open"]:
        return points, False
    if outcome != "discarded":  # a discarded point never was a migration's end: the finished one stays
        points["finished"] = {**points["open"], "closed_at": now, "outcome": outcome}
    points["open"] = None
    _write(backup_dir, key, points)
    return points, True


def to_restore(backup_dir, key):
    """(backup directory, why) a data rollback restores: the open point's, else the finished one's. Refused
    when there is none: no backup of the target was taken before a migration by this tool."""
    points = read(backup_dir, key)
    if points["open"]:
        return backup_path(backup_dir, points["open"]), (
            f"the target as it was before the unfinished migration's first attempt (backup of "
            f"{points['open']['opened_at']})")
    finished = points["finished"]
    if finished and finished.get("outcome") == "migrated":
        return backup_path(backup_dir, finished), (
            f"the target as it was before the last finished migration (backup of {finished['opened_at']}, "
            f"migrated at {finished['closed_at']})")
    why = ("the last migration was already rolled back to it" if finished else
           "no migration by migrate.yml backed the target up here")
    raise RollbackPointError(
        f"Refusing the data rollback: there is no rollback point for this target in {backup_dir} ({why}). "
        "Nothing was changed. To restore a backup of your choice, set backup_restore_path to its complete backup.")


def protected(backup_dir, key):
    """The run directories (below backup_dir, every kind) of the backups the points designate."""
    points = read(backup_dir, key)
    return {os.path.realpath(os.path.dirname(backup_path(backup_dir, point)))
            for point in (points["open"], points["finished"]) if point}
