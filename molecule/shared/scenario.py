"""What the migration scenarios' testinfra tests share: where things are, the embedded servers'
connections, the converge's recorded output (shared/run_migrate.yml) and HTTP requests made on a host."""

import os
import sys
from pathlib import Path

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[2]))
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
SECRETS = PROJECT / ".embedded" / "secrets"
SOURCE_PORT = int(os.environ.get("PGM_SOURCE_PORT", "55432"))
TARGET_PORT = int(os.environ.get("PGM_TARGET_PORT", "55433"))
ENV_FILE = "/etc/cdp/cdp.env"

# The project's database comparison (tests/dbcompare.py).
sys.path.insert(0, str(PROJECT / "tests"))


def server(name, dbname):
    """Connection parameters of the embedded source or target server's superuser on dbname."""
    return {"host": "127.0.0.1", "port": SOURCE_PORT if name == "source" else TARGET_PORT, "dbname": dbname,
            "user": "postgres", "password": (SECRETS / f"{name}.password").read_text().strip()}


def migrate_output():
    """What `ansible-playbook migrate.yml` printed in the converge, and its exit code on the last line."""
    return (EPHEMERAL / "migrate.log").read_text()


def http_get(host, url):
    """(status, body) of a GET made with curl on the host."""
    out = host.check_output(f"curl -sS --max-time 10 -D - {url}")
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    return int(head.split()[1]), body
