"""Configuration shared by the CDP stand-in programs (web, worker, report).

Everything comes from one env file of KEY=VALUE lines, /etc/cdp/cdp.env (root, mode 0600): DATABASE_URL and
the programs' settings. Under systemd the file reaches the service through LoadCredential=cdp.env:..., so the
service user reads it from $CREDENTIALS_DIRECTORY without the file being readable by that user and without the
password ever being in a process's environment or on a command line.
"""

import os
import re
import sys

import psycopg2

DEFAULT_ENV_FILE = "/etc/cdp/cdp.env"
CREDENTIAL_NAME = "cdp.env"

DEFAULTS = {
    "CDP_HTTP_HOST": "127.0.0.1",
    "CDP_HTTP_PORT": "8000",
    "CDP_WORKER_INTERVAL": "10",
    "CDP_WORKER_LOG": "/var/log/cdp/worker.log",
    "CDP_REPORT_DIR": "/var/lib/cdp/reports",
    "CDP_REPORT_KEEP": "30",
    # The web application's functional endpoints (cdp_app.py /api/...): where report emails go (SMTP, no
    # authentication: a local relay), the Amplitude and Braze endpoints cohorts are synced to, the key
    # integrations' credentials are encrypted with (pgcrypto), and an optional file errors are appended to.
    "CDP_SMTP_HOST": "127.0.0.1",
    "CDP_SMTP_PORT": "25",
    "CDP_MAIL_FROM": "cdp-reports@localhost",
    "CDP_AMPLITUDE_URL": "",
    "CDP_BRAZE_URL": "",
    "CDP_CREDENTIALS_KEY": "",
    "CDP_ERROR_LOG": "",
}


def default_env_file():
    """The systemd credential when the service has one, else /etc/cdp/cdp.env."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory and os.path.exists(os.path.join(directory, CREDENTIAL_NAME)):
        return os.path.join(directory, CREDENTIAL_NAME)
    return DEFAULT_ENV_FILE


def load_env_file(path):
    """KEY=VALUE lines ('#' comments, optional 'export ', optional matching quotes) -> dict."""
    settings = {}
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("export "):
                line = line[len("export "):].lstrip()
            key, separator, value = line.partition("=")
            key, value = key.strip(), value.strip()
            if not separator or not key.isidentifier():
                raise ValueError(f"{path}:{number}: expected KEY=VALUE")
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            settings[key] = value
    return settings


def load_config(path=None):
    """The settings with their defaults; exits with a message when the file or DATABASE_URL is missing."""
    path = path or default_env_file()
    try:
        settings = {**DEFAULTS, **load_env_file(path)}
    except (OSError, ValueError) as error:
        sys.exit(f"cannot read the configuration {path}: {error}")
    if not settings.get("DATABASE_URL"):
        sys.exit(f"DATABASE_URL is not set in {path}")
    return settings


def redact(url):
    """A connection URL without its password, for logs and messages."""
    return re.sub(r"^(\w+://[^:@/]*):[^@]*@", r"\1:***@", url)


def connect(settings, application_name):
    """A new session through DATABASE_URL; libpq's errors never contain the password."""
    return psycopg2.connect(settings["DATABASE_URL"], connect_timeout=5, application_name=application_name)
