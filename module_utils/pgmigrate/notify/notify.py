"""Run notifications: one summary of a playbook run, redacted, sent by email (SMTP) and to a webhook.

The callback plugin callback_plugins/migration_notify.py feeds a RunRecord with Ansible's events
and calls notify() at the end of the run; everything else lives here, in plain Python (standard
library only), so it is unit-tested without Ansible. Nothing here raises on a delivery problem:
notify() returns one Delivery per destination, and the caller prints the failures as warnings, so a
notification can never change a run's outcome. Every attempt is bounded by a socket timeout.
"""

import datetime
import json
import re
import smtplib
import socket
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ..common.errors import PgmigrateError
from ..common.units import human_bytes, human_duration

REDACTED = "********"

# Variables (or mapping keys) whose string values are secrets: redacted from every notification.
SECRET_NAME = re.compile(r"passw|passphrase|(^|_)pass($|_)|secret|token|key|credential|vault|auth", re.IGNORECASE)
# Shorter values are not redacted: replacing a 3-letter word everywhere would garble the message
# while protecting nothing a real secret policy allows.
MIN_SECRET_LENGTH = 6
# user:password@ in URLs, password=... in libpq connection strings, Authorization values.
URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@\s]*@", re.IGNORECASE)
KEYWORD_CREDENTIALS = re.compile(r"(?P<key>\b(?:password|passwd|pwd|secret|token)\s*[=:]\s*)(?P<q>['\"]?)[^\s'\",;]+",
                                 re.IGNORECASE)
BEARER = re.compile(r"(?P<key>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE)

STATUSES = ("success", "failed", "aborted")
WHEN_CHOICES = {"success": {"success"}, "failure": {"failed", "aborted"},
                "both": {"success", "failed", "aborted"}, "always": {"success", "failed", "aborted"},
                "never": set()}


class Redactor:
    """Replaces known secret values, and credentials in URLs and key=value pairs, in any text."""

    def __init__(self, secrets=()):
        values = {str(s) for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_LENGTH}
        # Longest first, so a secret containing another one is replaced whole.
        self.secrets = sorted(values, key=len, reverse=True)

    def text(self, value):
        value = str(value)
        for secret in self.secrets:
            value = value.replace(secret, REDACTED)
        value = URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", value)
        value = KEYWORD_CREDENTIALS.sub(lambda m: f"{m['key']}{m['q']}{REDACTED}", value)
        return BEARER.sub(lambda m: f"{m['key']}{REDACTED}", value)

    def data(self, value):
        """The same for every string in a JSON-like structure (keys included)."""
        if isinstance(value, dict):
            return {self.text(k): self.data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.data(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value


def secret_values(variables, render=lambda value: value, name_pattern=SECRET_NAME):
    """Every string a secret-looking name holds in a variables mapping, rendered (lookups, vault).

    A string counts when the name nearest to it matches (a top-level variable, a mapping key at any
    depth: migration_source.password, vault_*, api_token, a list under api_tokens). Below a vault_*
    variable every string counts. A name like validation_password_hash_columns does not make its
    table and column names secrets. `render` templates one raw value; a value it cannot render is
    skipped when it is a template (it has no value to leak), kept as is otherwise.
    """
    found = set()

    def add(raw):
        try:
            rendered = render(raw)
        except Exception:  # an undefined or broken variable cannot leak: it has no value
            rendered = None if "{{" in str(raw) else raw
        collect(rendered, secret_leaves=True, vaulted=False)

    def collect(value, secret_leaves, vaulted):
        if isinstance(value, dict):
            for key, item in value.items():
                visit(str(key), item, vaulted)
        elif isinstance(value, (list, tuple)):
            for item in value:
                collect(item, secret_leaves, vaulted)
        elif isinstance(value, str) and value and (secret_leaves or vaulted):
            found.add(str(value))

    def visit(name, value, vaulted=False):
        vaulted = vaulted or name.lower().startswith("vault_")
        is_secret = vaulted or bool(name_pattern.search(name))
        if isinstance(value, (dict, list, tuple)):
            collect(value, is_secret, vaulted)
        elif is_secret and isinstance(value, str):
            add(value)

    for name, value in (variables or {}).items():
        try:
            visit(str(name), value)
        except Exception:  # noqa: S112 - a strange variable must not stop the others from being found
            continue
    return found


# ----------------------------------------------------------------------------------------------
# What happened during the run


def failure_text(result, max_lines=10, max_chars=2000):
    """The first lines of a failed task's error: msg, then stderr, then the exception's last line."""
    if result.get("_ansible_no_log") or result.get("censored"):
        return "the task's output is hidden (no_log)"
    lines = []
    failed_items = [item for item in result.get("results") or [] if isinstance(item, dict) and item.get("failed")]
    for source in [result, *failed_items[:1]]:
        message = source.get("msg")
        if message and not isinstance(message, str):
            message = json.dumps(message, default=str)
        for text in (message, source.get("stderr"), source.get("module_stderr")):
            if text:
                lines.extend(str(text).strip().splitlines())
    if not lines and result.get("exception"):
        lines = str(result["exception"]).strip().splitlines()[-1:]
    if not lines:
        lines = ["(no error message)"]
    unique = list(dict.fromkeys(line.rstrip() for line in lines if line.strip()))
    text = "\n".join(unique[:max_lines]) + ("\n…" if len(unique) > max_lines else "")
    return text if len(text) <= max_chars else text[:max_chars] + "…"


def action_name(action):
    return (action or "").rsplit(".", 1)[-1]


def key_figures(action, result):
    """The figures worth a line in the summary from one task result, as (kind, figures), or None."""
    action = action_name(action)
    if action in ("pg_migration_copy", "pg_migration_progress") and isinstance(result.get("summary"), dict):
        summary = result["summary"]
        # The module returns table_count (each table's figures are in its summary_file).
        tables = summary.get("table_count", summary.get("tables"))
        if summary.get("status") in (None, "planned") or tables is None:
            return None
        return "copy", {
            "status": summary.get("status"),
            "tables": len(tables) if isinstance(tables, (list, dict)) else tables,
            "rows": summary.get("rows"), "bytes": summary.get("bytes"), "seconds": summary.get("seconds"),
            "run_id": summary.get("run_id"), "resumed": summary.get("resumed"),
            "source": summary.get("source"), "target": summary.get("target"),
            "summary_file": summary.get("summary_file"),
        }
    if action == "pg_migration_validate" and result.get("status"):
        checks = result.get("checks") or []
        return "validation", {
            "status": result.get("status"),
            "checks": len(checks),
            "failed_checks": [c.get("name") for c in checks if isinstance(c, dict) and c.get("status") == "fail"],
            "reports": result.get("reports") or {},
        }
    if action == "pg_backup" and isinstance(result.get("backups"), list):
        backups = [b for b in result["backups"] if isinstance(b, dict)]
        return "backup", {"backups": len(backups), "bytes": sum(b.get("bytes") or 0 for b in backups),
                          "paths": [b.get("path") for b in backups if b.get("path")]}
    if action == "pg_environment_sync" and result.get("status"):
        return "environment_sync", {"status": result.get("status"), "lines": len(result.get("lines") or [])}
    if action == "pg_migration_logical" and result.get("freeze_window_seconds") is not None:
        return "zero_downtime", {"freeze_window_seconds": result.get("freeze_window_seconds")}
    return None


class RunRecord:
    """What a notification needs to know about one playbook run, fed event by event."""

    def __init__(self, playbook, clock=time.time):
        self.playbook = playbook
        self.clock = clock
        self.started = clock()
        self.current_play = None
        self.phases = []
        self.failures = []
        self.figures = {}

    def play_started(self, name):
        self.current_play = name

    def task_ran(self, host=None, task=None):
        """A task did something (not skipped) in the current play: the play counts as a phase run."""
        if self.current_play and self.current_play not in self.phases:
            self.phases.append(self.current_play)

    def task_ok(self, action, result):
        self.task_ran()
        figures = key_figures(action, result)
        if figures:
            kind, values = figures
            if kind == "backup" and "backup" in self.figures:  # source and target: one total
                previous = self.figures["backup"]
                values = {"backups": previous["backups"] + values["backups"],
                          "bytes": previous["bytes"] + values["bytes"],
                          "paths": previous["paths"] + values["paths"]}
            self.figures[kind] = values

    def task_failed(self, host, task, result, unreachable=False):
        self.task_ran()
        # Kept long here; the summary cuts it to notify_error_lines, read only at the end of the run.
        self.failures.append({"host": host, "task": task, "play": self.current_play,
                              "unreachable": unreachable, "error": failure_text(result, max_lines=50)})

    def summary(self, status, host_stats=None, environment=None, inventory=None, artifacts_dir=None,
                check_mode=False, aborted_reason=None, failed_hosts=None, error_lines=10):
        finished = self.clock()
        failures = self.failures
        if failed_hosts is not None:
            # A host stops at its last unrescued failure: that is the one to name (rescued ones are history).
            last = {f["host"]: f for f in failures if f["host"] in failed_hosts}
            failures = list(last.values())
        failures = [{**f, "error": _first_lines(f["error"], error_lines)} for f in failures]
        return {
            "tool": "pgmigrate",
            "playbook": self.playbook,
            "environment": environment or "unknown",
            "inventory": inventory,
            "status": status,
            "check_mode": bool(check_mode),
            "started_at": _iso(self.started),
            "finished_at": _iso(finished),
            "duration_seconds": round(finished - self.started, 1),
            "phases": list(self.phases),
            "failures": failures if status != "success" else [],
            "aborted_reason": aborted_reason,
            "figures": self.figures,
            "artifacts_dir": artifacts_dir,
            "hosts": host_stats or {},
            "controller": socket.gethostname(),
        }


def _first_lines(text, count):
    lines = str(text).splitlines()
    return "\n".join(lines[:count]) + ("\n…" if len(lines) > count else "")


def _iso(timestamp):
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat(timespec="seconds")


def status_from_stats(host_stats):
    """failed when any host has an unrescued failure or was unreachable, else success."""
    for counts in host_stats.values():
        if counts.get("failures") or counts.get("unreachable"):
            return "failed"
    return "success"


# ----------------------------------------------------------------------------------------------
# The message


def _number(value):
    return f"{value:,}" if isinstance(value, int) else str(value)


def subject(summary, prefix="[pgmigrate]"):
    status = summary["status"].upper() + (" (check mode)" if summary.get("check_mode") else "")
    return f"{prefix} {summary['environment']}: {summary['playbook']} {status}".strip()


def render_text(summary):
    """The summary as plain text: the email body and the webhook's Slack-compatible `text`."""
    lines = [f"pgmigrate {summary['playbook']} on {summary['environment']}: {summary['status'].upper()}"
             f"{' (check mode, nothing changed)' if summary.get('check_mode') else ''}"
             f" after {human_duration(summary['duration_seconds'])}"]
    if summary.get("aborted_reason"):
        lines.append(f"Stopped before its end: {summary['aborted_reason']}")
    for failure in summary.get("failures") or []:
        kind = "Unreachable" if failure.get("unreachable") else "Failed"
        lines.append(f"{kind}: task \"{failure['task']}\" on {failure['host']}"
                     + (f" (play \"{failure['play']}\")" if failure.get("play") else ""))
        lines.extend(f"    {line}" for line in str(failure["error"]).splitlines())
    lines.append(f"Started {summary['started_at']}, finished {summary['finished_at']}"
                 f" ({human_duration(summary['duration_seconds'])})")
    if summary.get("inventory"):
        lines.append(f"Inventory: {summary['inventory']}")
    lines.append("Phases run:" + ("" if summary.get("phases") else " none"))
    lines.extend(f"    {phase}" for phase in summary.get("phases") or [])
    figures = summary.get("figures") or {}
    copy = figures.get("copy")
    if copy:
        lines.append(f"Copy {copy.get('status')}: {_number(copy.get('tables'))} tables,"
                     f" {_number(copy.get('rows'))} rows,"
                     f" {human_bytes(copy.get('bytes'))} ({_number(copy.get('bytes'))} bytes)"
                     f" in {human_duration(copy.get('seconds'))}"
                     + (f", run {copy['run_id']}" if copy.get("run_id") else "")
                     + (" (resumed)" if copy.get("resumed") else ""))
        if copy.get("source") or copy.get("target"):
            lines.append(f"    {copy.get('source')} -> {copy.get('target')}")
        if copy.get("summary_file"):
            lines.append(f"    summary: {copy['summary_file']}")
    validation = figures.get("validation")
    if validation:
        failed = validation.get("failed_checks") or []
        lines.append(f"Validation: {validation.get('status')} ({validation.get('checks')} checks"
                     + (f"; failing: {', '.join(map(str, failed))}" if failed else "") + ")")
        for kind in ("html", "markdown", "json"):
            if (validation.get("reports") or {}).get(kind):
                lines.append(f"    report: {validation['reports'][kind]}")
    backup = figures.get("backup")
    if backup:
        lines.append(f"Backups: {backup['backups']}, {human_bytes(backup['bytes'])}")
    sync = figures.get("environment_sync")
    if sync:
        lines.append(f"Environment sync: {sync['status']}")
    zero_downtime = figures.get("zero_downtime")
    if zero_downtime:
        lines.append(f"Zero-downtime cutover: writes frozen for {zero_downtime['freeze_window_seconds']} s")
    if summary.get("artifacts_dir"):
        lines.append(f"Artifacts: {summary['artifacts_dir']}")
    hosts = summary.get("hosts") or {}
    if hosts:
        lines.append("Hosts: " + "; ".join(
            f"{host} ok={c.get('ok', 0)} changed={c.get('changed', 0)} failed={c.get('failures', 0)}"
            f" unreachable={c.get('unreachable', 0)}" for host, c in sorted(hosts.items())))
    lines.append(f"Controller: {summary.get('controller')}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Settings and delivery


class SettingsError(ValueError):
    pass


def _bool(value):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"expected a boolean, got {value!r}")


def _list(value):
    if value in (None, ""):
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return [str(item) for item in value if str(item).strip()]


@dataclass
class NotificationSettings:
    """The notify_* variables (group_vars/all/notifications.yml), checked. Defaults send nothing."""

    on: str = "both"
    email_on: str = ""
    webhook_on: str = ""
    check_mode_runs: bool = False
    environment: str = ""
    error_lines: int = 10
    timeout_seconds: float = 10.0
    retries: int = 2
    retry_delay_seconds: float = 2.0
    email_to: list = field(default_factory=list)
    email_from: str = "pgmigrate@localhost"
    email_subject_prefix: str = "[pgmigrate]"
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_security: str = "none"
    smtp_validate_certs: bool = True
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    webhook_url: str = field(default="", repr=False)
    webhook_headers: dict = field(default_factory=dict, repr=False)
    webhook_validate_certs: bool = True

    @classmethod
    def from_variables(cls, variables):
        """From rendered notify_* variables (names with or without the notify_ prefix)."""
        values = {name.removeprefix("notify_"): value for name, value in (variables or {}).items()}
        known = {f for f in cls.__dataclass_fields__}
        settings = cls(**{k: v for k, v in values.items() if k in known and v is not None})
        try:
            settings.on = str(settings.on or "both").lower()
            settings.email_on = str(settings.email_on or settings.on).lower()
            settings.webhook_on = str(settings.webhook_on or settings.on).lower()
            for name in ("on", "email_on", "webhook_on"):
                if getattr(settings, name) not in WHEN_CHOICES:
                    raise SettingsError(f"notify_{name} must be one of {', '.join(WHEN_CHOICES)},"
                                        f" not {getattr(settings, name)!r}")
            settings.check_mode_runs = _bool(settings.check_mode_runs)
            settings.smtp_validate_certs = _bool(settings.smtp_validate_certs)
            settings.webhook_validate_certs = _bool(settings.webhook_validate_certs)
            settings.error_lines = max(1, int(settings.error_lines))
            settings.timeout_seconds = max(1.0, float(settings.timeout_seconds))
            settings.retries = max(0, int(settings.retries))
            settings.retry_delay_seconds = max(0.0, float(settings.retry_delay_seconds))
            settings.smtp_port = int(settings.smtp_port)
            settings.email_to = _list(settings.email_to)
            settings.smtp_security = str(settings.smtp_security or "none").lower()
            if settings.smtp_security not in ("none", "starttls", "ssl"):
                raise SettingsError("notify_smtp_security must be none, starttls or ssl,"
                                    f" not {settings.smtp_security!r}")
            settings.webhook_url = str(settings.webhook_url or "")
            if settings.webhook_url and not settings.webhook_url.lower().startswith(("http://", "https://")):
                raise SettingsError("notify_webhook_url must start with http:// or https://")
            if not isinstance(settings.webhook_headers, dict):
                raise SettingsError("notify_webhook_headers must be a mapping of header names to values")
            settings.webhook_headers = {str(k): str(v) for k, v in settings.webhook_headers.items()}
        except (TypeError, ValueError) as error:
            raise SettingsError(str(error)) from error
        return settings

    def destinations(self, status, check_mode=False):
        """The destinations this run's status goes to: a subset of ("email", "webhook")."""
        if check_mode and not self.check_mode_runs:
            return []
        chosen = []
        if self.email_to and status in WHEN_CHOICES[self.email_on]:
            chosen.append("email")
        if self.webhook_url and status in WHEN_CHOICES[self.webhook_on]:
            chosen.append("webhook")
        return chosen

    def secrets(self):
        """Values of these settings that must never appear anywhere (the URL may embed a token)."""
        return [self.smtp_password, self.webhook_url, *self.webhook_headers.values()]


@dataclass
class Delivery:
    destination: str
    delivered: bool
    detail: str
    attempts: int = 0


class DeliveryError(PgmigrateError):
    """A delivery attempt failed; `retry` says whether another attempt may succeed."""

    def __init__(self, message, retry=True):
        super().__init__(message)
        self.retry = retry


def _ssl_context(validate):
    context = ssl.create_default_context()
    if not validate:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def build_email(settings, summary, text):
    message = EmailMessage()
    message["Subject"] = subject(summary, settings.email_subject_prefix)
    message["From"] = settings.email_from
    message["To"] = ", ".join(settings.email_to)
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain="pgmigrate")
    message["X-Pgmigrate-Status"] = summary["status"]
    message["X-Pgmigrate-Environment"] = str(summary["environment"])
    message.set_content(text + "\n")
    return message


def send_email(settings, message):
    """One SMTP delivery attempt. smtplib never logs here (debuglevel 0): the login stays private."""
    try:
        if settings.smtp_security == "ssl":
            client = smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port, timeout=settings.timeout_seconds,
                                      context=_ssl_context(settings.smtp_validate_certs))
        else:
            client = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.timeout_seconds)
        with client:
            if settings.smtp_security == "starttls":
                client.starttls(context=_ssl_context(settings.smtp_validate_certs))
            if settings.smtp_user:
                client.login(settings.smtp_user, settings.smtp_password)
            refused = client.send_message(message)
    except smtplib.SMTPAuthenticationError as error:
        raise DeliveryError(f"SMTP login refused ({error.smtp_code})", retry=False) from None
    except smtplib.SMTPResponseException as error:
        # 5xx is permanent (bad address, relay denied); 4xx is worth another try.
        raise DeliveryError(f"SMTP server answered {error.smtp_code} {_decode(error.smtp_error)}",
                            retry=error.smtp_code < 500) from None
    except smtplib.SMTPRecipientsRefused as error:
        raise DeliveryError(f"every recipient refused: {', '.join(error.recipients)}", retry=False) from None
    except (OSError, smtplib.SMTPException) as error:
        raise DeliveryError(f"{type(error).__name__}: {error}") from None
    if refused:
        return f"sent to {len(settings.email_to) - len(refused)} recipient(s), refused: {', '.join(refused)}"
    return f"sent to {len(settings.email_to)} recipient(s) via {settings.smtp_host}:{settings.smtp_port}"


def _decode(value):
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def webhook_payload(summary, text):
    """Slack-compatible (`text`) plus the summary's structured fields for any other receiver."""
    return {"text": text, **summary}


def send_webhook(settings, payload):
    """One POST attempt. The URL is never repeated in messages: chat webhooks embed their token in it."""
    body = json.dumps(payload, default=str).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "pgmigrate-notify", **settings.webhook_headers}
    request = urllib.request.Request(settings.webhook_url, data=body, headers=headers, method="POST")
    context = _ssl_context(settings.webhook_validate_certs) if settings.webhook_url.lower().startswith("https") \
        else None
    try:
        with urllib.request.urlopen(request, timeout=settings.timeout_seconds, context=context) as response:  # noqa: S310
            return f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        # 429 and 5xx may pass on a retry; other 4xx (bad token, bad URL) will not.
        raise DeliveryError(f"HTTP {error.code} {error.reason}", retry=error.code == 429 or error.code >= 500) \
            from None
    except urllib.error.URLError as error:
        raise DeliveryError(f"cannot reach the webhook: {error.reason}") from None
    except (OSError, ValueError) as error:
        raise DeliveryError(f"{type(error).__name__}: {error}") from None


def _attempt(destination, send, settings, sleep=time.sleep):
    attempts = 0
    while True:
        attempts += 1
        try:
            return Delivery(destination, True, send(), attempts)
        except DeliveryError as error:
            if not error.retry or attempts > settings.retries:
                return Delivery(destination, False, f"{error} (after {attempts} attempt(s))", attempts)
            sleep(settings.retry_delay_seconds * attempts)


def notify(summary, settings, redactor, sleep=time.sleep):
    """Send the (redacted) summary to the destinations its status calls for; a Delivery each.

    The caller reports failed deliveries as warnings; nothing here raises.
    """
    destinations = settings.destinations(summary["status"], summary.get("check_mode"))
    if not destinations:
        return []
    safe = redactor.data(summary)
    text = redactor.text(render_text(safe))
    outcomes = []
    if "email" in destinations:
        message = build_email(settings, safe, text)
        outcomes.append(_attempt("email", lambda: send_email(settings, message), settings, sleep))
    if "webhook" in destinations:
        payload = webhook_payload(safe, text)
        outcomes.append(_attempt("webhook", lambda: send_webhook(settings, payload), settings, sleep))
    # Server answers could quote anything back: the details go through the redactor too.
    for outcome in outcomes:
        outcome.detail = redactor.text(outcome.detail)
    return outcomes
