"""Shared pieces of the fault and bad-input suite (tests/faults/test_faults_*.py, marker `faults`).

- `recorder(request)`: each test writes what it tried (a crash trial, a fault, a bad input) and what came of
  it (rows lost, seconds to the error) as JSON lines into $PGM_FAULT_RECORDS; scripts/fault_suite.py
  joins them with pytest's own verdicts (junit XML) and prints the figures. Without the variable
  (plain `pytest`) nothing is written.
- `ThrowawayCluster`: a PostgreSQL 15 server of the test's own (initdb + pg_ctl on a free loopback
  port, as scripts/embedded_pg.sh does) for faults the shared embedded servers must not suffer:
  restarts, a full disk, TLS.
- `database_state` / `rows_lost`: what "nothing changed" and "no row lost" are measured with.
"""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time

from conftest import PROJECT_DIR, connect

PG_BIN = pathlib.Path("/usr/lib/postgresql/15/bin")
ANSIBLE_PLAYBOOK = str(PROJECT_DIR / ".venv" / "bin" / "ansible-playbook")


# ---------------------------------------------------------------------------- records ------------
class FaultRecorder:
    def __init__(self, nodeid):
        self.nodeid = nodeid
        self.path = os.environ.get("PGM_FAULT_RECORDS")

    def __call__(self, kind, name, **fields):
        """kind: crash | fault | bad_input | secrets | tls | least_privilege."""
        if not self.path:
            return
        line = json.dumps({"nodeid": self.nodeid, "kind": kind, "name": name, **fields}, default=str)
        with open(self.path, "a") as handle:
            handle.write(line + "\n")


def recorder(request):
    """The test's recorder: `record = recorder(request)`, then `record(kind, name, **figures)`."""
    return FaultRecorder(request.node.nodeid)


# ---------------------------------------------------------------------------- database state -----
def table_counts(params):
    """{schema.table: exact row count} of every user table (the tool's _pgmigrate schema included)."""
    conn = connect(params)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname NOT IN "
                        "('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1")
            counts = {}
            for (name,) in cur.fetchall():
                cur.execute(f"SELECT count(*) FROM {name}")  # noqa: S608 - quoted by format('%I')
                counts[name] = cur.fetchone()[0]
            return counts
    finally:
        conn.close()


def database_state(params):
    """Everything a failed run must leave as it was: relations, schemas, extensions, row counts."""
    conn = connect(params)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
                        "AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1, 2")
            relations = cur.fetchall()
            cur.execute("SELECT nspname FROM pg_namespace ORDER BY 1")
            schemas = cur.fetchall()
            cur.execute("SELECT extname, extversion FROM pg_extension ORDER BY 1")
            extensions = cur.fetchall()
    finally:
        conn.close()
    return {"relations": relations, "schemas": schemas, "extensions": extensions, "rows": table_counts(params)}


def rows_lost(src, dst):
    """Rows of the source's tables that the target lacks (a missing table loses all its rows)."""
    source, target = table_counts(src), table_counts(dst)
    return sum(max(0, count - target.get(name, 0)) for name, count in source.items())


# ---------------------------------------------------------------------------- playbooks ----------
def run_playbook(inventory, *args, playbook="migrate.yml", timeout=600):
    started = time.monotonic()
    result = subprocess.run([ANSIBLE_PLAYBOOK, playbook, "-i", str(inventory), *args], cwd=PROJECT_DIR,
                            capture_output=True, text=True, timeout=timeout, check=False)
    result.seconds = round(time.monotonic() - started, 2)
    return result


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------- throwaway servers --
def _as_server(args, **kwargs):
    """The server refuses to run as root: as root its commands run as the postgres user."""
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs)


class ThrowawayCluster:
    """A PostgreSQL 15 server owned by one test: its own data directory and port, a generated password
    (from a file, never argv), scram-sha-256 on loopback. `ssl_dir` holding server.crt/server.key turns
    TLS on. `without_extensions` names extensions this server must not have, as on a host without their
    package: it runs a copy of the postgres binary beside a share directory without their files
    (PostgreSQL finds its share directory relative to its binary). Stopped and removed by `destroy()`."""

    def __init__(self, ssl_dir=None, settings=None, without_extensions=()):
        self.root = pathlib.Path(tempfile.mkdtemp(prefix="pgm-fault-"))
        self.root.chmod(0o755)
        self.bin = PG_BIN
        if without_extensions:
            self.bin = self._installation_without(without_extensions)
        self.data = self.root / "data"
        self.port = free_port()
        self.password = os.urandom(12).hex()
        pwfile = self.root / "pw"
        pwfile.write_text(self.password)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(pwfile, "postgres")
        pwfile.chmod(0o600)
        _as_server([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", f"--pwfile={pwfile}",
                    "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"])
        pwfile.unlink()
        lines = ["listen_addresses = '127.0.0.1'", f"port = {self.port}", f"unix_socket_directories = '{self.data}'",
                 "shared_buffers = 64MB", "fsync = off", "max_connections = 60"]
        if ssl_dir:
            for name in ("server.crt", "server.key"):
                shutil.copy(pathlib.Path(ssl_dir) / name, self.data / name)
                if os.geteuid() == 0:
                    shutil.chown(self.data / name, "postgres")
            (self.data / "server.key").chmod(0o600)
            lines += ["ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'"]
        lines += [f"{k} = {v}" for k, v in (settings or {}).items()]
        with open(self.data / "postgresql.conf", "a") as handle:
            handle.write("\n".join(lines) + "\n")
        self.start()
        self.params = {"host": "127.0.0.1", "port": self.port, "user": "postgres", "password": self.password,
                       "dbname": "postgres"}

    def _installation_without(self, extensions):
        """<root>/pg: lib/postgresql/15/bin/postgres (a copy: PostgreSQL resolves symlinks to its binary),
        lib/postgresql/15/lib (a link to the real libraries) and share/postgresql/15 without the control
        and script files of `extensions`. Returns the bin directory."""
        prefix = self.root / "pg"
        bin_dir = prefix / "lib" / "postgresql" / "15" / "bin"
        bin_dir.mkdir(parents=True)
        shutil.copy2(PG_BIN / "postgres", bin_dir / "postgres")
        (bin_dir.parent / "lib").symlink_to(PG_BIN.parent / "lib")
        hidden = tuple(f"{name}.control" for name in extensions) + tuple(f"{name}--" for name in extensions)
        share = PG_BIN.parents[3] / "share" / "postgresql" / "15"  # /usr/lib/postgresql/15/bin -> /usr/share/...
        shutil.copytree(share, prefix / "share" / "postgresql" / "15",
                        ignore=lambda _dir, names: [n for n in names if n.startswith(hidden)])
        return bin_dir

    def pg_ctl(self, *args):
        return _as_server([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
                           "-p", str(self.bin / "postgres"), "-w", "-t", "60", *args])

    def start(self):
        self.pg_ctl("start")

    def restart(self):
        self.pg_ctl("-m", "fast", "restart")

    def create_database(self, name, tablespace=None):
        conn = connect(self.params)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"' + (f' TABLESPACE "{tablespace}"' if tablespace else ""))
        conn.close()
        return {**self.params, "dbname": name}

    def log(self):
        try:
            return (self.root / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    def destroy(self):
        try:
            self.pg_ctl("-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def make_ca(directory, name="ca"):
    """A self-signed CA and a server certificate for 127.0.0.1/localhost signed by it (openssl)."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=pgmigrate test {name}",
            "-keyout", f"{name}.key", "-out", f"{name}.crt")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
            "-out", "server.csr")
    (directory / "san.ext").write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", f"{name}.crt", "-CAkey", f"{name}.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
    return directory / f"{name}.crt"


# ---------------------------------------------------------------------------- process sampling ---
class CommandLineSampler:
    """Samples every process's command line (`ps -eo args`) every `interval` seconds while running."""

    def __init__(self, interval=0.2):
        self.interval = interval
        self.lines = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False).stdout
            self.lines.update(out.splitlines())
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
