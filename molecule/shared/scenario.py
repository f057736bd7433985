"""What the scenarios' testinfra tests share: where things are, the run's own names and ports, the embedded
servers' connections, the converge's recorded output (shared/run_migrate.yml) and HTTP requests made on a host."""

import os
import sys
from pathlib import Path

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[2]))
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
SECRETS = PROJECT / ".embedded" / "secrets"
SOURCE_PORT = int(os.environ.get("PGM_SOURCE_PORT", "55432"))
TARGET_PORT = int(os.environ.get("PGM_TARGET_PORT", "55433"))
ENV_FILE = "/etc/cdp/cdp.env"
# A run of its own (scripts/molecule.sh, PGM_MOLECULE_RUN=<run>): the containers' names end in -<run>, the
# scenario's databases and logins in _<run>; every port a scenario listens on is shifted by the offset. From the
# same two variables as molecule.yml (PGM_MOLECULE_SUFFIX, -<run>, set by the script); both unset: the names and
# ports written in the scenarios.
SUFFIX = os.environ.get("PGM_MOLECULE_SUFFIX", "")
RUN = SUFFIX.removeprefix("-")
PORT_OFFSET = int(os.environ.get("PGM_MOLECULE_PORT_OFFSET") or 0)
if os.environ.get("PGM_MOLECULE_RUN", RUN) != RUN:
    raise RuntimeError(f"PGM_MOLECULE_RUN={os.environ['PGM_MOLECULE_RUN']} but PGM_MOLECULE_SUFFIX={SUFFIX!r}: "
                       "run the scenarios through scripts/molecule.sh, which sets both")

# The project's database comparison (tests/dbcompare.py).
sys.path.insert(0, str(PROJECT / "tests"))


def instance(name):
    """The run's own name of the container named name in molecule.yml (platforms)."""
    return name + SUFFIX


def dbname(name):
    """The run's own name of a database or login named name in molecule.yml."""
    return f"{name}_{RUN}" if RUN else name


def port(number):
    """The run's own port of a port written in molecule.yml (the containers share the machine's network)."""
    return number + PORT_OFFSET


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
