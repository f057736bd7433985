#!/usr/bin/python
"""Ansible module: back up a PostgreSQL database with pg_dump, verify, prune and restore the backups."""

DOCUMENTATION = r"""
module: pg_backup
short_description: Verified pg_dump backups (schema-only, data-only, complete), retention and restore
description:
  - >-
    C(inspect) reads what the pre-checks need, changing nothing: the database's size (pg_database_size), the
    disk space the backups are estimated to take, the free space at I(path), and that pg_dump can dump the server;
    of I(connection), or of each of I(connections) in one call. With I(rollback_point_key), also the rollback
    point of that database (as pg_rollback_point C(status) reads it).
  - >-
    C(create) dumps one database into I(path)/<kind>/ for each of I(kinds), all from one exported snapshot:
    C(schema-only) and C(data-only) as plain SQL with the plan's C(--no-owner --no-privileges), C(complete) in
    directory format with I(jobs) parallel jobs. Each backup gets a C(backup.json) (origin, times, the exact row
    count of every table counted in the same snapshot, in short transactions of their own so that no session
    holds a lock on every table beside pg_dump's) and a C(SHA256SUMS) manifest, written last. With I(latest), each
    backup is then verified as C(verify) does, and only once all verify, I(latest)/<kind> points at them.
  - Tables the login reads only through their row-level security policies (FORCE ROW LEVEL SECURITY on tables it
    owns) are dumped through them (C(--enable-row-security)) when they show every row, counted with the forcing
    lifted inside a rolled-back transaction; otherwise the backup is refused before anything is written.
  - >-
    C(derive) writes the plan's plain C(schema-only) and C(data-only) backups (those of I(kinds)) from the
    complete backup at I(path) (a backup directory or a latest/ link to one), verified first, with
    C(pg_restore --file) and the plan's C(--no-owner --no-privileges): beside it in the same run directory, with
    their own C(backup.json) (the complete one's snapshot and row counts, and C(derived_from)) and C(SHA256SUMS).
    The database is not read. A kind already there (derived before, or dumped by the run) is kept when it
    verifies, so a repeated call does nothing. With I(latest), each is verified and I(latest)/<kind> points at it
    when I(latest)/complete is the backup it came from.
  - >-
    C(verify) checks a backup at I(path): its manifest first (every file, no file missing or added), then
    C(pg_restore --list) for the complete one, or a non-empty plain SQL file ending with pg_dump's
    "dump complete" marker.
  - C(prune) keeps the I(keep) newest backups of each database of I(keys) per kind under I(path) and removes the
    older ones; never what latest/ points at, nor a rollback point's backup.
  - C(restore) verifies the complete backup at I(path) and refuses it unless it verifies, then drops the
    I(connection)'s database and recreates it with C(pg_restore --create --jobs).
  - C(check_counts) compares the exact row counts of the I(connection)'s database with those recorded in the
    backup at I(path).
  - Passwords reach pg_dump and pg_restore through their environment, never their command line.
options:
  action: {description: What to do., type: str, required: true, choices: [inspect, create, derive, verify, prune, restore, check_counts]}
  connection: {description: "The database (host, port, dbname, user, password, sslmode, ...); for inspect, create, restore, check_counts.", type: dict}
  connections:
    description: "inspect: the databases to inspect in one call, by label (source, target), each as I(connection)."
    type: dict
  rollback_point_key:
    description: "inspect: also read the rollback point of this database key under I(path). create: once the backups
      verify, open the migration's rollback point of this key on the complete one (under I(private_root)), as
      pg_rollback_point C(open) does; refused while another point is open."
    type: str
  private_root:
    description: "create: the backup directory holding every run, made private (mode 0700) first, created if need be:
      backups hold whole databases."
    type: path
  label: {description: Which database it is (source or target), for messages and backup.json., type: str, default: database}
  path: {description: "inspect: the backup directory; create: the database's directory of the run; derive: the complete backup; verify, restore, check_counts: one backup; prune: the backup directory.", type: path}
  paths: {description: "verify: several backups (with or instead of I(path)).", type: list, elements: path}
  kinds: {description: "Which backups to make (derive: which of schema-only and data-only; complete is ignored there).", type: list, elements: str, default: [schema-only, data-only, complete], choices: [schema-only, data-only, complete]}
  jobs: {description: Parallel jobs of pg_dump (complete backup) and pg_restore., type: int, default: 2}
  compress_level:
    description: "create: gzip level of the complete backup (pg_dump --compress): 1 is about as small as pg_dump's
      default 6 at half the time; 0 is fastest and largest."
    type: int
    default: 1
    choices: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
  run_id: {description: The run's name, recorded in backup.json., type: str, default: ""}
  keys: {description: "prune: the databases, by their directory name under each run.", type: list, elements: str}
  latest: {description: "create, derive: the database's latest/ directory; each backup is verified, then latest/<kind> points at it.", type: path}
  keep: {description: How many backups of each kind to keep (prune)., type: int, default: 3}
  pg_bin_dir: {description: Directory of pg_dump and pg_restore (default the newest installed)., type: path}
  maintenance_db: {description: Database to connect to while the restored one is dropped and created., type: str, default: postgres}
  progress_file:
    description: "create: where the progress line (the dump running, bytes written, the share of the last backup's
      size and an ETA) is written while the module runs, for the callback plugin migration_live_progress."
    type: path
  terminate_connections: {description: Disconnect the sessions of the database being restored., type: bool, default: true}
  no_owner: {description: Restore without the archive's owners., type: bool, default: false}
  no_privileges: {description: Restore without the archive's privileges., type: bool, default: false}
  analyze: {description: ANALYZE the restored database., type: bool, default: true}
author: pgmigrate maintainers
"""

EXAMPLES = r"""
- name: Back up the target before the migration
  pg_backup:
    action: create
    connection: "{{ migration_target }}"
    label: target
    path: "{{ backup_dir }}/20250617T120000Z/target-cdp@db.example.com-5432"
    kinds: [schema-only, data-only, complete]
    jobs: 4
    latest: "{{ backup_dir }}/latest/target-cdp@db.example.com-5432"

- name: The plan's schema_backup.sql and data_backup.sql, from the latest complete backup (the database is not read)
  pg_backup:
    action: derive
    path: "{{ backup_dir }}/latest/target-cdp@db.example.com-5432/complete"
    kinds: [schema-only, data-only]
    latest: "{{ backup_dir }}/latest/target-cdp@db.example.com-5432"

- name: Verify it again, later
  pg_backup:
    action: verify
    path: "{{ backup_dir }}/latest/target-cdp@db.example.com-5432/complete"

- name: Restore the target from it
  pg_backup:
    action: restore
    connection: "{{ migration_target }}"
    path: "{{ backup_dir }}/latest/target-cdp@db.example.com-5432/complete"
    jobs: 4
"""

RETURN = r"""
inspection: {description: "inspect: label, database, server_version, database_bytes, estimated_bytes, free_bytes, free_bytes_at, pg_dump.", returned: inspect with connection, type: dict}
inspections: {description: "inspect with connections: the same for each, in their order.", returned: inspect with connections, type: list}
rollback_point: {description: "inspect and create with rollback_point_key: open and finished (as pg_rollback_point status).", returned: inspect and create with rollback_point_key, type: dict}
backups: {description: "create, derive: each backup's kind, path, files, bytes, seconds (derive: existing, when it was there already).", returned: "create, derive", type: list}
from: {description: "derive: the complete backup the others were written from (its real path).", returned: derive, type: str}
latest_updated: {description: "derive with latest: whether latest/<kind> now points at the derived backups (only when latest/complete is the backup they came from).", returned: derive, type: bool}
tables: {description: "create: tables counted; check_counts: tables found.", returned: create, check_counts, type: int}
rows: {description: "create: rows in the snapshot; check_counts: rows found.", returned: create, check_counts, type: int}
snapshot: {description: The exported snapshot all the dumps were taken from., returned: create, type: str}
warnings_from_tools: {description: pg_dump's or pg_restore's messages (e.g. circular foreign keys)., returned: create, restore, type: list}
verification: {description: "verify with I(path): its path, kind, ok, problems, record (label, database, run_id, finished_at, bytes, rows...).", returned: verify, type: dict}
verifications: {description: "verify: the same for every backup checked; create and derive with latest: each new backup's.", returned: "verify, create, derive", type: list}
removed: {description: "prune: the backups removed.", returned: prune, type: list}
kept: {description: "prune: the backups kept.", returned: prune, type: list}
pinned: {description: "prune: the rollback points' backup directories, kept whatever their age.", returned: prune, type: list}
restore: {description: "restore: path, database, existed, sessions_terminated, seconds, backup.", returned: restore, type: dict}
differences: {description: "check_counts: tables whose row count differs from the backup's.", returned: check_counts, type: list}
"""

import os
import traceback

from ansible.module_utils.basic import AnsibleModule

try:
    from ansible.module_utils.pgmigrate.backup import backup, rollback_point
    from ansible.module_utils.pgmigrate.backup.progress import BackupProgress
    from ansible.module_utils.pgmigrate.common.module_args import clean_connection, connection_argument
    IMPORT_ERROR = None
except ImportError:
    IMPORT_ERROR = traceback.format_exc()

NEEDS_CONNECTION = ("create", "restore", "check_counts")


def run(module):
    params = module.params
    action, path = params["action"], params["path"]
    connection = clean_connection(params["connection"])
    if action == "inspect":
        return inspect(module, connection)
    if action == "create":
        return create(module, connection)
    if action == "derive":
        return derive(module)
    if action == "verify":
        result = verify(module, ([path] if path else []) + (params["paths"] or []))
        return {"changed": False, "verification": result["verifications"][0] if path else None, **result}
    if action == "prune":
        return prune(module)
    if action == "restore":
        restored = backup.restore(connection, path, params["jobs"], params["maintenance_db"],
                                  params["terminate_connections"], params["no_owner"], params["no_privileges"],
                                  params["analyze"], params["pg_bin_dir"], module.check_mode)
        warnings = restored.pop("warnings")
        return {"changed": True, "restore": restored, "warnings_from_tools": warnings}
    differences, tables, rows = backup.compare_counts(connection, path)
    return {"changed": False, "differences": differences, "tables": tables, "rows": rows}


def inspect(module, connection):
    """The pre-checks' reads in one call: each database (connection, or every one of connections by label) and,
    with rollback_point_key, that database's rollback point."""
    params = module.params
    result = {"changed": False}
    if params["connections"]:
        result["inspections"] = [
            backup.inspect(clean_connection(params["connections"][label]), label, params["path"], params["kinds"],
                           params["pg_bin_dir"])
            for label in ("source", "target") if params["connections"].get(label)]
    if params["connection"]:
        result["inspection"] = backup.inspect(connection, params["label"], params["path"], params["kinds"],
                                              params["pg_bin_dir"])
    if params["rollback_point_key"]:
        result["rollback_point"] = rollback_point.read(params["path"], params["rollback_point_key"])
    return result


def create(module, connection):
    """Back up, then (with latest) verify each backup as it lies on disk and only then point latest/ at it:
    one module call, where three tasks and a loop cost a second or more of the whole run each."""
    params = module.params
    progress = BackupProgress(None if module.check_mode else params["progress_file"], params["label"],
                              params["latest"])
    if params["private_root"] and not module.check_mode:
        backup.make_private_directory(params["private_root"])
    try:
        created = backup.create_backup(connection, params["label"], params["path"], params["kinds"], params["jobs"],
                                       params["run_id"], params["pg_bin_dir"], module.check_mode, progress,
                                       params["compress_level"])
        result = {"changed": True, **created, "warnings_from_tools": created.pop("warnings")}
        if params["latest"] and not module.check_mode:
            progress.step(f"verifying {len(created['backups'])} backup(s)")
            result.update(verify(module, [one["path"] for one in created["backups"]], result))
            backup.point_latest(params["latest"], created["backups"])
        if params["rollback_point_key"] and not module.check_mode:
            result["rollback_point"] = open_rollback_point(params, created["backups"])
    except BaseException:
        progress.finish("failed")
        raise
    progress.finish("done")
    return result


def open_rollback_point(params, backups):
    """The migration's rollback point opened on the complete backup just made (and verified, with latest): in the
    backup's own call, where a task of its own cost the run half a second."""
    complete = [one["path"] for one in backups if one["kind"] == "complete"]
    if not complete or not params["private_root"]:
        raise backup.BackupError("a rollback point needs the complete backup (kinds) and the backup directory "
                                 "(private_root)")
    return rollback_point.open_point(params["private_root"], params["rollback_point_key"], complete[0],
                                     params["run_id"])


def derive(module):
    """The plain backups from a complete one; with latest, verified and pointed at when that complete backup is
    the latest one."""
    params = module.params
    kinds = [kind for kind in params["kinds"] if kind != "complete"]
    derived = backup.derive_backups(params["path"], kinds, params["pg_bin_dir"], module.check_mode)
    written = [one for one in derived["backups"] if not one.get("existing")]
    result = {"changed": bool(written) and not module.check_mode, **derived}
    if params["latest"] and not module.check_mode:
        result.update(verify(module, [one["path"] for one in derived["backups"]], result))
        latest_complete = os.path.join(params["latest"], "complete")
        result["latest_updated"] = os.path.realpath(latest_complete) == derived["from"]
        if result["latest_updated"]:
            backup.point_latest(params["latest"], derived["backups"])
    return result


def verify(module, paths, partial=None):
    """{"verifications": [...]} of the backups at paths; fails naming each one that does not verify."""
    verifications = [backup.verify_backup(one, module.params["pg_bin_dir"]) for one in paths]
    failed = [one for one in verifications if not one["ok"]]
    if failed:
        module.fail_json(msg=" ".join(f"Backup {one['path']} does not verify: " + "; ".join(one["problems"]) + "."
                                      for one in failed), verifications=verifications, **(partial or {}))
    return {"verifications": verifications}


def prune(module):
    """Retention for each database of keys, in one call."""
    params = module.params
    pruned = {"removed": [], "kept": [], "pinned": []}
    for key in params["keys"]:
        pinned = sorted(rollback_point.protected(params["path"], key))
        one = backup.prune(params["path"], key, params["keep"], module.check_mode, pinned=pinned)
        for field, values in (("removed", one["removed"]), ("kept", one["kept"]), ("pinned", pinned)):
            pruned[field] += values
    return {"changed": bool(pruned["removed"]), **pruned}


def main():
    module = AnsibleModule(
        argument_spec={
            "action": {"type": "str", "required": True,
                       "choices": ["inspect", "create", "derive", "verify", "prune", "restore", "check_counts"]},
            "connection": connection_argument(required=False),
            # In the pre-checks' order (source, then target): one call for both databases.
            "connections": {"type": "dict", "options": {"source": connection_argument(required=False),
                                                         "target": connection_argument(required=False)}},
            "rollback_point_key": {"type": "str", "no_log": False},
            "private_root": {"type": "path"},
            "label": {"type": "str", "default": "database"},
            "path": {"type": "path"},
            "paths": {"type": "list", "elements": "path"},
            "kinds": {"type": "list", "elements": "str", "default": ["schema-only", "data-only", "complete"],
                      "choices": ["schema-only", "data-only", "complete"]},
            "jobs": {"type": "int", "default": 2},
            "compress_level": {"type": "int", "default": 1, "choices": list(range(10))},
            "run_id": {"type": "str", "default": ""},
            "keys": {"type": "list", "elements": "str"},
            "latest": {"type": "path"},
            "keep": {"type": "int", "default": 3},
            "pg_bin_dir": {"type": "path"},
            "maintenance_db": {"type": "str", "default": "postgres"},
            "terminate_connections": {"type": "bool", "default": True},
            "no_owner": {"type": "bool", "default": False},
            "no_privileges": {"type": "bool", "default": False},
            "analyze": {"type": "bool", "default": True},
            "progress_file": {"type": "path"},
        },
        required_if=[("action", action, ["connection", "path"]) for action in NEEDS_CONNECTION]
        + [("action", "prune", ["path", "keys"]), ("action", "verify", ["path", "paths"], True),
           ("action", "inspect", ["path"]), ("action", "inspect", ["connection", "connections"], True),
           ("action", "derive", ["path"])],
        supports_check_mode=True,
    )
    if IMPORT_ERROR:
        module.fail_json(msg="pg_backup needs psycopg2 (pip install psycopg2-binary)", exception=IMPORT_ERROR)
    try:
        result = run(module)
    except backup.BackupError as error:
        module.fail_json(msg=str(error), changed=isinstance(error, backup.PartialRestoreError))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
