"""latest/ pointing at the newest verified backups, and retention that never removes what a rollback needs."""

import os
import shutil

from .base import KINDS, LATEST, MANIFEST, BackupError
from .manifest import read_record


def point_latest(latest_dir, backups):
    """latest_dir/<kind> -> each of backups ({kind, path}), once they verify: relative links, so that the
    backup directory can be moved or copied as a whole, each one replaced in one rename (a reader never
    finds it missing). latest_dir and its parents are created private (0700)."""
    previous_umask = os.umask(0o077)
    try:
        os.makedirs(latest_dir, mode=0o700, exist_ok=True)
    finally:
        os.umask(previous_umask)
    for one in backups:
        link = os.path.join(latest_dir, one["kind"])
        staged = f"{link}.{os.getpid()}.new"
        if os.path.lexists(staged):
            os.remove(staged)
        os.symlink(os.path.relpath(one["path"], latest_dir), staged)
        os.replace(staged, link)


def _finished_at(unit):
    try:
        return read_record(unit).get("finished_at") or ""
    except BackupError:
        return ""


def prune(backup_dir, key, keep, check_mode=False, pinned=()):
    """Keep the `keep` newest finished backups of database `key` per kind; remove the older ones.

    A backup directory without a manifest (a killed run) older than the oldest kept one goes too.
    What a `latest` pointer designates is never removed, nor any kind of the backups whose directories
    (<backup_dir>/<run>/<key>) are in pinned (the rollback points). Emptied run directories are removed.
    """
    pinned = {os.path.realpath(directory) for directory in pinned}
    if keep < 1:
        raise BackupError("backup_keep must be at least 1: the newest backup is what a rollback restores")
    backup_dir = os.path.realpath(backup_dir)
    if not os.path.isdir(backup_dir):
        return {"removed": [], "kept": []}
    protected = set()
    latest_dir = os.path.join(backup_dir, LATEST, key)
    if os.path.isdir(latest_dir):
        protected = {os.path.realpath(os.path.join(latest_dir, name)) for name in os.listdir(latest_dir)}
    removed, kept = [], []
    for kind in KINDS:
        finished, unfinished = [], []
        for run in sorted(os.listdir(backup_dir)):
            unit = os.path.join(backup_dir, run, key, kind)
            if run == LATEST or os.path.islink(unit) or not os.path.isdir(unit):
                continue
            if os.path.isfile(os.path.join(unit, MANIFEST)):
                finished.append((_finished_at(unit), run, unit))
            else:
                unfinished.append((os.path.getmtime(unit), unit))
        finished.sort(reverse=True)
        keeping = finished[:keep]
        kept += [unit for _at, _run, unit in keeping]
        doomed = [unit for _at, _run, unit in finished[keep:]]
        if keeping:
            oldest_kept = min(os.path.getmtime(unit) for _at, _run, unit in keeping)
            doomed += [unit for mtime, unit in unfinished if mtime < oldest_kept]
        for unit in doomed:
            if os.path.realpath(unit) in protected or os.path.realpath(os.path.dirname(unit)) in pinned \
                    or not os.path.realpath(unit).startswith(backup_dir + os.sep):
                kept.append(unit)
                continue
            removed.append(unit)
            if not check_mode:
                shutil.rmtree(unit)
    if not check_mode:
        for unit in removed:
            for parent in (os.path.dirname(unit), os.path.dirname(os.path.dirname(unit))):
                try:
                    os.rmdir(parent)  # the database's and the run's directories, once empty
                except OSError:
                    break
    return {"removed": removed, "kept": sorted(kept)}
