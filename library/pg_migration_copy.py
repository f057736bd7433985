#!/usr/bin/python
"""Ansible module: copy a PostgreSQL database (schema, data, post-data, sequences) into a target."""

DOCUMENTATION = r"""
module: pg_migration_copy
short_description: Dependency-ordered, parallel, resumable streaming copy of a PostgreSQL database
description:
  - Copies every table of the source into the target with COPY streamed between the servers, from one
    exported snapshot, in parallel, largest tables first, large tables split into ctid block ranges.
  - Schema mode C(copy) restores the source's pre-data schema first and builds indexes, constraints,
    triggers and foreign keys after the load; schema mode C(existing) loads into a schema the application
    created, level by level in foreign-key order.
  - Every table part is all-or-nothing and recorded in the target's C(_pgmigrate) schema in the same
    transaction; a rerun after a crash resumes the unfinished run. The state is dropped on success.
  - In check mode nothing changes; the plan is returned.
options:
  source: {description: Source connection (host, port, dbname, user, password, sslmode, sslrootcert)., type: dict, required: true}
  target: {description: Target connection, same keys as I(source)., type: dict, required: true}
  schema_mode: {description: C(copy) or C(existing)., type: str, default: copy, choices: [copy, existing]}
  workers: {description: Parallel copy and index workers., type: int, default: 4}
  split_tables_larger_than: {description: Split tables whose heap is larger than this (e.g. 1GB; 0 never)., type: str, default: 1GB}
  source_frozen: {description: The source takes no writes (maintenance mode) so no snapshot is exported., type: bool, default: false}
  overwrite: {description: Replace tables that already exist (copy) or hold rows (existing) in the target., type: bool, default: false}
  restart: {description: Discard an unfinished run recorded in the target instead of resuming it., type: bool, default: false}
  artifacts_dir: {description: Where plan, progress and summary files are written., type: path, required: true}
  progress_file: {description: Progress JSON rewritten every second while the copy runs., type: path}
  include_schemas: {description: Only these schemas (default all)., type: list, elements: str, default: []}
  exclude_schemas: {description: Schemas to leave out., type: list, elements: str, default: []}
  no_owner: {description: Do not restore object ownership (the plan's --no-owner)., type: bool, default: true}
  no_privileges: {description: Do not restore privileges (the plan's --no-privileges)., type: bool, default: true}
  analyze: {description: ANALYZE every table after the copy., type: bool, default: true}
  retries: {description: Retries of a part after a lost connection, lock timeout or deadlock., type: int, default: 3}
  lock_timeout: {description: How long a statement waits for a lock on the target before retrying., type: str, default: 60s}
  maintenance_work_mem: {description: Memory per index build on the target., type: str, default: 512MB}
  target_is_production: {description: The target is production; require I(confirm_target)., type: bool, default: false}
  confirm_target: {description: Must repeat the target's database name when it is production., type: str, default: ""}
  stop_when_process_exits: {description: "PID of the controlling ansible-playbook: the copy stops cleanly when it is gone.", type: int}
  run_lock_wait_seconds: {description: How long to wait for another run on the same target to end., type: int, default: 120}
  database_settings:
    description:
      - Carry the source database's settings (ALTER DATABASE ... SET) and its roles' settings in it
        (ALTER ROLE ... IN DATABASE ... SET) to the target database; settings of roles the target lacks are
        skipped with a warning. C(false) leaves them.
    type: bool
    default: true
  database_settings_skipped:
    description:
      - Names of database settings never carried (a warning names each one the source has), such as
        C(default_transaction_read_only) when the run's maintenance window sets it on the source.
    type: list
    elements: str
    default: []
  pg_bin_dir:
    description:
      - Directory of pg_dump, pg_restore and psql (default the newest installed). They must be of the newer
        server's major version or newer; an older client is refused before anything changes.
    type: path
  extension_substitutes:
    description:
      - "migration_extension_substitutes, C({extension: {function: SQL body}}). An extension the source uses that the
        target server cannot provide is left out of the schema (its CREATE EXTENSION and COMMENT ON EXTENSION), and
        each of its functions the schema uses is created in its place, before the objects that need it, as an SQL
        function of the given body with the source's function's signature. An extension with no entry here, or a
        use of it that no body covers, is refused before anything changes."
    type: dict
    default: {}
author: pgmigrate maintainers
"""

EXAMPLES = r"""
- name: Copy the source database into the target
  pg_migration_copy:
    source: "{{ migration_source }}"
    target: "{{ migration_target }}"
    workers: 4
    artifacts_dir: "{{ migration_artifacts_dir }}"
"""

RETURN = r"""
summary:
  description: >-
    Totals (table_count, rows, bytes, seconds), large objects (count, bytes, copied, resumed), the database
    settings carried, warnings, the run's directory and summary_file, the summary.json that also holds
    each table's rows, bytes, seconds and workers.
  returned: always
  type: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.pgmigrate.clone import copy_options  # plain Python: no psycopg2 needed

try:
    from ansible.module_utils.pgmigrate.clone import copier
    from ansible.module_utils.pgmigrate.common.connection import ConfigError
    from ansible.module_utils.pgmigrate.common.module_args import clean_connection, connection_argument
    from ansible.module_utils.pgmigrate.common.preflight import PreflightError
    IMPORT_ERROR = None
except ImportError:
    IMPORT_ERROR = traceback.format_exc()


def main():
    module = AnsibleModule(
        argument_spec={
            "source": connection_argument(),
            "target": connection_argument(),
            **copy_options.argument_spec(),  # every copy option, declared once
        },
        supports_check_mode=True,
    )
    if IMPORT_ERROR:
        module.fail_json(msg="pg_migration_copy needs psycopg2 (pip install psycopg2-binary)", exception=IMPORT_ERROR)
    params = module.params
    try:
        options = copy_options.engine_options(params)
        options["check_mode"] = module.check_mode
        summary = copier.migrate(clean_connection(params["source"]), clean_connection(params["target"]), **options)
    except (ConfigError, PreflightError, ValueError) as error:
        module.fail_json(msg=str(error), changed=False)
    except copier.MigrationError as error:
        module.fail_json(msg=f"Migration failed: {error}. Rerun the same command to resume: completed tables "
                             "are not copied again.", changed=True)
    # A rerun that found the copy already done changed nothing, and says so. Each table's figures are in
    # the summary file only (and so is its timeline): a result listing thousands of tables costs Ansible a second.
    outline = {key: value for key, value in summary.items() if key not in ("tables", "timeline")}
    outline["table_count"] = len(summary["tables"])
    module.exit_json(changed=not module.check_mode and summary["status"] != "already complete", summary=outline)


if __name__ == "__main__":
    main()
