"""The plan's success criteria, checked after the migration (role post_checks): functional smoke tests
against the running application, page-load and query limits, access control, hardening, error logs.

Each check returns {"name", "title", "status": "pass"|"fail"|"warn"|"skip", "summary", "items", "seconds"}
like app_checks (report.py), every failing item naming what broke: the endpoint, the query, the team
member and permission code, the report and recipient, the integration.

* http_checks: a list of HTTP calls (method, url, json/body, headers, expected status, body_contains, a
  JSON subset, max_seconds), each timed: "functional" (status and body) and "page_load" (time) checks;
* check_access_control: every team member's effective permissions (a query returning email, permission
  code) on the source and on the target, the differences listed per member;
* check_recipients: the scheduled reports' recipients against the target environment's allowed domains;
* check_query_times: the checked queries on the target under their limit;
* harden_credentials / harden_passwords: the plan's security hardening, idempotent (pgaudit: the role's
  tasks, with community.postgresql's postgresql_alter_system and postgresql_ext);
* watch_error_log: new lines matching a pattern in a log file (and/or a systemd journal) for a window.

Secrets (the credentials key, passwords in request bodies) are passed as query parameters or substituted
into requests, and never appear in a check, an item or an error message.

The checks, each a module of this package: web_checks, database_checks, hardening, error_logs.
This module is their one entry point.
"""



from .database_checks import (
    check_access_control,
    check_query_times,
    check_recipients,
    check_security,
    effective_permissions,
)
from .error_logs import mark_error_logs, watch_error_log
from .hardening import harden_credentials, harden_passwords
from .web_checks import http_checks, json_subset, run_http_check, substitute


def failure_message(checks):
    """One line naming every failing check and what failed in it."""
    parts = []
    for check in checks:
        if check["status"] != "fail":
            continue
        details = [i["detail"] for i in check["items"] if i["status"] == "fail" and i["detail"] not in check["summary"]]
        parts.append(f"{check['name']}: {check['summary']}" + "".join(f"; {d}" for d in details))
    return "; ".join(parts)


__all__ = [
    "check_access_control",
    "check_query_times",
    "check_recipients",
    "check_security",
    "effective_permissions",
    "failure_message",
    "harden_credentials",
    "harden_passwords",
    "http_checks",
    "json_subset",
    "mark_error_logs",
    "run_http_check",
    "substitute",
    "watch_error_log",
]
