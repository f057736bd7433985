"""Session settings shared by every domain: keeping a statement that carries a secret out of the server's log."""

import re

import psycopg2

# Settings that would write a statement (and so the secret it carries: a pgcrypto key, a subscription's
# password) to the server's log. Each needs a superuser (or GRANT SET ON PARAMETER).
QUIET_STATEMENT_SETTINGS = (("log_statement", "none"), ("log_min_duration_statement", "-1"),
                            ("log_min_duration_sample", "-1"), ("log_min_error_statement", "panic"),
                            ("pgaudit.log", "none"))


def _still_logs(name, current):
    return {"log_statement": current in ("mod", "all"),
            "log_min_duration_statement": current not in ("", "-1"),
            "log_min_duration_sample": current not in ("", "-1"),
            "pgaudit.log": bool(set(re.split(r"\s*,\s*", current)) & {"write", "all"}),
            }.get(name, False)


def quiet_statement_logging(cur, local=True):
    """Set each of QUIET_STATEMENT_SETTINGS that this login may change: for the caller's transaction
    (local=True, each under a savepoint) or for the session (local=False, an autocommit connection).
    Returns what still logs statements that change data (e.g. "log_statement = all"): the settings this
    login could not change and the server has on; [] when no statement will be logged."""
    still_logging = []
    for name, value in QUIET_STATEMENT_SETTINGS:
        if local:
            cur.execute("SAVEPOINT quiet_logging")
        try:
            cur.execute("SELECT set_config(%s, %s, %s)", (name, value, local))
            if local:
                cur.execute("RELEASE SAVEPOINT quiet_logging")
            continue
        except psycopg2.Error:
            if local:
                cur.execute("ROLLBACK TO SAVEPOINT quiet_logging")
        cur.execute("SELECT current_setting(%s, true)", (name,))
        current = (cur.fetchone()[0] or "").strip().lower()
        if _still_logs(name, current):
            still_logging.append(f"{name} = {current}")
    return still_logging
