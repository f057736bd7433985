"""What every check shares: the validator's error, a check's record and how it ends."""

import time

from ..common.errors import PgmigrateError


class ValidationError(PgmigrateError):
    """Validation could not read what it must compare: the message names the table, the side and the fix."""


def _check(name, title):
    return {"name": name, "title": title, "status": "pass", "summary": "", "items": [], "seconds": 0.0}


def _finish(check, started, summary_pass, summary_fail):
    failing = [i for i in check["items"] if i["status"] == "fail"]
    warning = [i for i in check["items"] if i["status"] == "warn"]
    check["status"] = "fail" if failing else ("warn" if warning else check["status"])
    check["summary"] = summary_fail(failing) if failing else summary_pass
    check["seconds"] = round(time.monotonic() - started, 3)
    return check
