"""Sync an environment's database from another one, table by table, by policy (the plan's "Environment
paths": staging -> production with the target's integrations and API keys preserved, and production ->
staging with personal data masked).

Both databases already have the application's schema. Each table has a policy:

* ``copy``: the target's table ends equal to the source's (masked where rules say so);
* ``merge``: the source's rows are upserted by the table's key, the target's other rows stay;
* ``preserve``: the target's rows stay exactly as they are (verified);
* ``skip``: not part of the sync.

Everything happens in ONE target transaction, read from ONE source snapshot: the target either gets the
whole sync, verified, or nothing at all. Before the commit the sync proves what it promises: every copied
table equals the source (row count and digest of every unmasked column), no preserved table changed (a
foreign key's ON DELETE CASCADE from a copied table would be caught here), no merged table lost a row,
the environment's post-sync updates ran, and the environment's checks (report recipients, SMTP
settings, ...) hold. Any failure rolls back and says what to change.

Copied tables that only copied tables reference are truncated and reloaded with COPY (fast); copied
tables that a kept table references are upserted by their key and then stripped of the rows the source
lacks, so the kept rows' references stay valid.

Across major versions (staging is often on the new version first) the rows move by COPY in text format and
every copied table is compared with the source before the commit, so 15 -> 18 and 18 -> 15 both work when the
two schemas match; no dump is restored into the other server. The only client programs of a sync are the
target's backup's (role backup, before the sync: pg_dump and pg_restore of migration_pg_bin_dir), which must be
of the target server's major version or newer, and not so new that their pg_restore could not restore that
backup into the target (from version 17 on, into PostgreSQL 16 or older): check_client_tools() refuses either
in the plan, before anything changes.

The parts, each a module of this package: plan, sync (the transaction), table_steps, after_sync, errors.
"""

import json
import os
import time

from ..common import catalog as catalog_module
from ..common import client_tools
from ..common.connection import connect, describe
from .errors import SyncError
from .plan import (
    build_plan,
    plan_lines,
)
from .sync import Sync


def read_catalogs(source, target, include_schemas=(), exclude_schemas=()):
    catalogs = []
    for params, name in ((source, "source"), (target, "target")):
        conn = connect(params, application_name=f"pgmigrate sync ({name} catalog)")
        try:
            catalogs.append(catalog_module.read_catalog(conn, exclude_schemas, include_schemas))
        finally:
            conn.rollback()
            conn.close()
    return catalogs


# Settings pg_restore sets at the start of every session, from the major version that introduced them: a
# pg_restore of that version or newer cannot restore into an older server (measured: pg_restore 18.6 into
# PostgreSQL 15, 'unrecognized configuration parameter "transaction_timeout"' on each connection, exit 1).
RESTORE_SESSION_SETTINGS = {17: "transaction_timeout"}


def check_client_tools(target_version_num, target_text):
    """pg_dump and pg_restore (client_tools: migration_pg_bin_dir, else the newest installed) fit for the target's
    backup before the sync: of the target server's major version or newer, so that pg_dump can read it, and not
    so new that pg_restore could not restore that backup into it. SyncError otherwise, before anything changes.
    The source is never dumped: its version asks nothing of the client."""
    major = client_tools.server_major(target_version_num)
    for name in ("pg_dump", "pg_restore"):
        path = client_tools.find_tool(name)
        version = client_tools.tool_major(path)
        if version < major:
            raise SyncError(
                f"{path} is version {version}, older than the PostgreSQL {major} server of the target {target_text}: "
                f"the target is backed up before the sync (role backup) with pg_dump and pg_restore of its major "
                f"version or newer. Install them (Debian: postgresql-client-{major}) and set "
                f"{client_tools.SETTING} to their directory (e.g. -e {client_tools.SETTING}="
                f"/usr/lib/postgresql/{major}/bin). Nothing was changed.")
        unknown = [setting for since, setting in sorted(RESTORE_SESSION_SETTINGS.items()) if major < since <= version]
        if name == "pg_restore" and unknown:
            raise SyncError(
                f"{path} is version {version}, newer than the PostgreSQL {major} server of the target {target_text}: "
                f"the target's backup before the sync could only be restored by a pg_restore of version {version}, "
                f"which cannot restore into PostgreSQL {major} (it sets {', '.join(unknown)}, unknown to that "
                f"server). The sync moves rows, not a dump: a newer source needs no newer client. Set "
                f"{client_tools.SETTING} to the target's own client programs (e.g. -e {client_tools.SETTING}="
                f"/usr/lib/postgresql/{major}/bin). Nothing was changed.")


def run(source, target, policies=None, default_policy="copy", masking_rules=(), masking_key="",
        masking_email_domain=None, updates=(), checks=(), verify=True, lock_timeout="30s", include_schemas=(),
        exclude_schemas=(), check_mode=False, artifacts_dir=None, report_name="sync", log=None,
        check_client_tools_first=False):
    """Plan, then (unless check_mode) run the sync; returns the report, also written as JSON under
    artifacts_dir/<report_name>-<timestamp>.json. check_client_tools_first: refuse, before anything, client
    programs too old for the target's backup (check_client_tools)."""
    source_cat, target_cat = read_catalogs(source, target, include_schemas,
                                           list(exclude_schemas) + [catalog_module.STATE_SCHEMA])
    if check_client_tools_first:
        check_client_tools(target_cat["server_version_num"], describe(target))
    plan = build_plan(source_cat, target_cat, policies, default_policy, masking_rules, masking_key,
                      masking_email_domain)
    report = {"status": "planned", "plan": plan_lines(plan), "source": describe(source), "target": describe(target),
              "source_version": source_cat["server_version"], "target_version": target_cat["server_version"]}
    if not check_mode:
        report.update(Sync(source, target, plan, updates, checks, verify, lock_timeout, log).run())
    if artifacts_dir:
        os.makedirs(artifacts_dir, exist_ok=True)
        path = os.path.join(artifacts_dir, f"{report_name}-{time.strftime('%Y%m%dT%H%M%S')}.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2, default=str)
        report["report_file"] = path
    return report


def report_lines(report):
    versions = {end: f" (PostgreSQL {report[end + '_version'].split()[0]})" if report.get(end + "_version") else ""
                for end in ("source", "target")}
    lines = [f"{report['source']}{versions['source']} -> {report['target']}{versions['target']}: {report['status']}"
             + (f" in {report['seconds']} s" if "seconds" in report else "")]
    if report["status"] == "planned":
        return lines + report["plan"]
    for entry in report["tables"]:
        if entry["mode"] == "keep":
            text = "kept" + (", verified unchanged" if entry.get("verified_unchanged") else "")
        else:
            text = f"{entry['rows']} rows from the source"
            if entry["mode"] == "upsert":
                text += f", {entry['inserted']} inserted, {entry['updated']} updated"
                if "deleted" in entry:
                    text += f", {entry['deleted']} deleted"
            if entry.get("masked"):
                text += f", masked {', '.join(entry['masked'])}"
            if entry.get("verified_equal"):
                text += ", verified equal to the source" + (" (unmasked columns)" if entry.get("masked") else "")
        lines.append(f"{entry['table']} ({entry['policy']}): {text}")
    lines += [f"sequence {s['sequence']} set to {s['last_value']}" for s in report["sequences"]]
    lines += [f"update {u['name']}: {u['rows']} rows of {u['table']}" for u in report["updates"]]
    lines += [f"check {c['name']}: {c['checked']} values, all as expected" for c in report["checks"]]
    return lines


__all__ = ["SyncError", "build_plan", "check_client_tools", "plan_lines", "read_catalogs", "report_lines", "run"]
