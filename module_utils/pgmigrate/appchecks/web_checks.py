"""HTTP calls against the running application, each timed: functional (status, body, a JSON subset) and
page-load checks; secrets substituted into requests, never shown.

Not ansible.builtin.uri, which would do the request: its `elapsed` is whole seconds, truncated
(ansible-core 2.19: `(datetime.now(timezone.utc) - start).seconds`), so a 3.9 s page would pass the plan's
3 s limit and the report could not give a page's time; the calls chain (a later URL or body uses an
earlier answer, save_as), which a uri loop cannot do; and secrets are substituted here, inside the module,
so a password is never a task argument that verbose output or a failure would show."""

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request

from .rules import _counts_summary, _finish

_TOKEN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z0-9_.]+)\}")


def _lookup(saved, secrets, scope, path):
    if scope == "secrets":
        if path not in secrets:
            raise KeyError(f"secrets.{path} is not defined")
        return secrets[path]
    if scope not in saved:
        raise KeyError(f"no earlier check saved its answer as {scope!r} (save_as)")
    value = saved[scope]
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(f"{scope}.{path} is not in the answer saved as {scope!r}")
    return value


def substitute(value, saved, secrets):
    """${name.path} in strings (recursively in lists and dicts): a field of an earlier check's JSON answer
    (save_as: name) or ${secrets.key}. A string that is exactly one token keeps the value's type."""
    if isinstance(value, str):
        whole = _TOKEN.fullmatch(value)
        if whole:
            return _lookup(saved, secrets, whole.group(1), whole.group(2))
        return _TOKEN.sub(lambda m: str(_lookup(saved, secrets, m.group(1), m.group(2))), value)
    if isinstance(value, list):
        return [substitute(v, saved, secrets) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, saved, secrets) for k, v in value.items()}
    return value


def json_subset(expected, actual):
    """Whether expected (dicts: these keys with these values, recursively; lists: these leading
    elements) is contained in actual; returns the path of the first difference or None."""
    def walk(exp, act, path):
        if isinstance(exp, dict):
            if not isinstance(act, dict):
                return path or "the body"
            for key, value in exp.items():
                if key not in act:
                    return f"{path}.{key}".lstrip(".")
                found = walk(value, act[key], f"{path}.{key}")
                if found:
                    return found.lstrip(".")
            return None
        if isinstance(exp, list):
            if not isinstance(act, list) or len(act) < len(exp):
                return path or "the body"
            for number, (e, a) in enumerate(zip(exp, act, strict=False)):
                found = walk(e, a, f"{path}[{number}]")
                if found:
                    return found
            return None
        return None if exp == act else (path.lstrip(".") or "the body")
    return walk(expected, actual, "")


def _join_url(base_url, url):
    if re.match(r"^[a-z][a-z0-9+.-]*://", url, re.I):
        return url
    if not base_url:
        raise ValueError(f"{url} is relative and no base URL is set (post_checks_base_url)")
    return base_url.rstrip("/") + "/" + url.lstrip("/")


def _shown_url(url):
    """The URL without user info or query string values (they may carry secrets)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "&".join(f"{p.split('=', 1)[0]}=..." for p in parts.query.split("&") if p) if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _call(method, url, data, headers, timeout):
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    began = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 (configured URLs)
            body = answer.read()
            status = answer.status
    except urllib.error.HTTPError as error:
        body = error.read()
        status = error.code
    return status, body, time.perf_counter() - began


def run_http_check(check, base_url, saved, secrets, default_max_seconds, timeout):
    """One call: its item for "functional" and its item for "page_load"."""
    name = str(check.get("name") or f"{check.get('method', 'GET')} {check.get('url')}")
    method = str(check.get("method") or "GET").upper()
    expected = check.get("status", 200)
    expected = [int(s) for s in expected] if isinstance(expected, list) else [int(expected)]
    limit = float(check.get("max_seconds") or default_max_seconds)
    base = {"table": None, "name": name, "method": method, "expected_status": expected, "max_seconds": limit}
    try:
        url = _join_url(base_url, substitute(str(check["url"]), saved, secrets))
        base["url"] = _shown_url(url)
        headers = dict(substitute(check.get("headers") or {}, saved, secrets))
        data = None
        if check.get("json") is not None:
            data = json.dumps(substitute(check["json"], saved, secrets)).encode()
            headers.setdefault("Content-Type", "application/json")
        elif check.get("body") is not None:
            data = str(substitute(check["body"], saved, secrets)).encode()
        status, body, seconds = _call(method, url, data, headers, max(timeout, limit))
    except (KeyError, ValueError) as error:
        item = {**base, "status": "fail", "detail": f"{name}: cannot build the request: {error}"}
        return item, {**item}
    except (OSError, urllib.error.URLError) as error:
        reason = getattr(error, "reason", error)
        item = {**base, "status": "fail", "detail": f"{name}: {method} {base.get('url')} got no answer: {reason}"}
        return item, {**item}
    text = body.decode("utf-8", "replace")
    answer = None
    try:
        answer = json.loads(text) if text.strip() else None
    except ValueError:
        pass
    if check.get("save_as") and isinstance(answer, dict):
        saved[str(check["save_as"])] = answer
    where = f"{name} ({method} {base['url']})"
    problems = []
    if status not in expected:
        snippet = " ".join(text.split())[:200]
        problems.append(f"answered {status}, expected {'/'.join(map(str, expected))}"
                        + (f": {snippet}" if snippet else ""))
    for needle in [] if problems else ([check["body_contains"]] if isinstance(check.get("body_contains"), str)
                   else check.get("body_contains") or []):
        if str(needle) not in text:
            problems.append(f"the body does not contain {needle!r}")
    if check.get("json_subset") is not None and not problems:
        difference = json_subset(check["json_subset"], answer)
        if difference:
            problems.append(f"the JSON answer differs from the expected subset at {difference}")
    functional = {**base, "http_status": status, "seconds": round(seconds, 4)}
    if problems:
        functional.update(status="fail", detail=f"{where}: {'; '.join(problems)}")
    else:
        functional.update(status="pass", detail=f"{where}: {status} in {seconds:.3f} s")
    timing = {**base, "http_status": status, "seconds": round(seconds, 4)}
    if seconds > limit:
        timing.update(status="fail", detail=f"{where} took {seconds:.3f} s: over the limit of {limit:g} s")
    else:
        timing.update(status="pass", detail=f"{where}: {seconds:.3f} s (limit {limit:g} s)")
    return functional, timing


def http_checks(base_url, checks, secrets=None, default_max_seconds=3.0, timeout=30.0):
    """Runs the calls in order (a later one may use an earlier one's answer); returns the functional
    check and the page-load check."""
    started = time.monotonic()
    saved, functional, timing = {}, [], []
    for check in checks or []:
        item, timed = run_http_check(check, base_url, saved, dict(secrets or {}), float(default_max_seconds),
                                     float(timeout))
        functional.append(item)
        timing.append(timed)
    summary = _counts_summary(functional, "endpoints") if functional else "no HTTP checks configured"
    limit_summary = (_counts_summary(timing, "page loads") + f" (limit {float(default_max_seconds):g} s unless "
                     "the check sets max_seconds)") if timing else "no HTTP checks configured"
    summary += "".join(f"; {i['detail']}" for i in functional if i["status"] == "fail")
    limit_summary += "".join(f"; {i['detail']}" for i in timing if i["status"] == "fail")
    return (_finish("functional", "Functional checks against the application", functional, started, summary),
            _finish("page_load", "Page load times", timing, started, limit_summary))
