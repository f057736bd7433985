#!/usr/bin/env python3
"""Clone benchmark: pgmigrate vs pgcopydb vs pg_dump | pg_restore on the same servers, in one run.

Each tool clones the whole CDP reference database (schema, data, indexes, constraints, sequences)
from the embedded source server into a new, empty database on the embedded target server, one for each
run (<target-db>_r<round>_<tool>), all dropped at the end: dropping the previous run's clone just before the
next one would delete thousands of files, and on ext4 without a journal (these machines) creating files
is then up to 20 times slower for minutes (the allocator skips inodes deleted in the last 60 to 360 s),
whichever tool runs next. Runs alternate between tools (round 1: A B C, round 2: B C A, round 3: C A B, ...); for each
run the benchmark measures the wall time and the peak memory of the tool's whole process tree, then
checks the clone (row counts, indexes, foreign keys, sequences) against the source.

    .venv/bin/python benchmarks/clone_benchmark.py [--scale 10] [--rounds 3] [--workers 4]
        [--tools pgmigrate,pgcopydb,pg_dump]

Passwords never reach a command line or an inventory: Ansible reads them from the password files
with a lookup, pgcopydb from a temporary PGPASSFILE (mode 0600), pg_dump and pg_restore from
PGPASSWORD in their own environment. Results: a table on stdout and JSON in
benchmarks/results/clone-<timestamp>.json. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import pathlib
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

import psycopg2
from phases import median_phases, pgcopydb_phases, pgmigrate_phases, print_phases
from psycopg2 import sql

PROJECT = pathlib.Path(__file__).resolve().parent.parent
RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"
VENV_BIN = PROJECT / ".venv" / "bin"
TOOLS = ("pgmigrate", "pgcopydb", "pg_dump")
TOOL_LABELS = {"pgmigrate": "pgmigrate", "pgcopydb": "pgcopydb", "pg_dump": "pg_dump|pg_restore"}
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SAMPLE_SECONDS = 0.1
MB = 1024 * 1024


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Server:
    name: str
    host: str
    port: int
    user: str
    password_file: pathlib.Path

    @property
    def password(self) -> str:
        return self.password_file.read_text(encoding="utf-8").strip()

    def connect(self, dbname: str):
        return psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=dbname, application_name="clone_benchmark")

    def uri(self, dbname: str) -> str:
        """A libpq URI without any password (the password comes from PGPASSFILE)."""
        return f"postgres://{self.user}@{self.host}:{self.port}/{dbname}"

    def client_env(self) -> dict:
        env = dict(os.environ)
        env.update(PGHOST=self.host, PGPORT=str(self.port), PGUSER=self.user, PGPASSWORD=self.password)
        return env


# --------------------------------------------------------------------------------------------------
# Process tree memory sampling


def _enable_subreaper() -> bool:
    """Become a child subreaper: processes that daemonize (Ansible's async wrapper double-forks and
    calls setsid) are re-parented to this process instead of init, so they stay in the tool's tree."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_child_subreaper = 36
        return libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _proc_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (ppid, state, comm) for every process in /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        close = stat.rfind(")")
        comm = stat[stat.find("(") + 1:close]
        fields = stat[close + 2:].split()
        table[int(entry)] = (int(fields[1]), fields[0], comm)
    return table


def descendants(root: int, table: dict[int, tuple[int, str, str]] | None = None) -> list[int]:
    """Living (non-zombie) descendants of root, root excluded."""
    table = table if table is not None else _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _state, _comm) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if table[pid][1] != "Z":
            found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


def _pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class TreeSampler:
    """Samples every SAMPLE_SECONDS the summed RSS (and PSS) of every descendant of this process.

    Only one tool runs at a time and the benchmark itself starts no other child while it runs, so
    the descendants of the benchmark are exactly the tool's process tree (the servers are not)."""

    def __init__(self) -> None:
        self.root = os.getpid()
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_procs = 0
        self.peak_breakdown: dict[str, dict] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_SECONDS)

    def sample(self) -> None:
        table = _proc_table()
        pids = descendants(self.root, table)
        rss_total, pss_total, breakdown = 0, 0, {}
        for pid in pids:
            rss, pss = _rss_bytes(pid), _pss_bytes(pid)
            rss_total += rss
            pss_total += pss
            item = breakdown.setdefault(table[pid][2], {"processes": 0, "rss_mb": 0.0})
            item["processes"] += 1
            item["rss_mb"] += rss / MB
        self.samples += 1
        self.peak_procs = max(self.peak_procs, len(pids))
        self.peak_pss = max(self.peak_pss, pss_total)
        if rss_total > self.peak_rss:
            self.peak_rss = rss_total
            self.peak_breakdown = {name: {"processes": v["processes"], "rss_mb": round(v["rss_mb"], 1)}
                                   for name, v in sorted(breakdown.items(), key=lambda kv: -kv[1]["rss_mb"])}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def reap_orphans(keep: set[int] = frozenset()) -> None:
    """Reap zombie children re-parented to us (we are a subreaper); never a Popen we still wait for."""
    me = os.getpid()
    for pid, (ppid, state, _comm) in _proc_table().items():
        if ppid == me and state == "Z" and pid not in keep:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def terminate_tree() -> None:
    """Stop every process this benchmark started (its descendants), by pid: TERM, then KILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = descendants(os.getpid())
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(3)


# --------------------------------------------------------------------------------------------------
# Running a tool


class LoggedProcess:
    """A Popen whose merged stdout/stderr is read line by line, timestamped, into a log file."""

    def __init__(self, argv: list[str], log_path: pathlib.Path, t0: float, **popen) -> None:
        self.lines: list[tuple[float, str]] = []
        self.t0 = t0
        self._log = open(log_path, "w", encoding="utf-8")  # closed by the reader thread
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     errors="replace", bufsize=1, start_new_session=True, **popen)
        self._reader = threading.Thread(target=self._read, name="reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with self._log:
            for line in self.proc.stdout:
                offset = time.monotonic() - self.t0
                line = line.rstrip("\n")
                self.lines.append((offset, line))
                self._log.write(f"[{offset:9.3f}] {line}\n")

    def wait(self) -> int:
        code = self.proc.wait()
        self._reader.join()
        return code


def tail(path: pathlib.Path, lines: int = 60) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return []


class SourceChanged(RuntimeError):
    pass


class Benchmark:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        secrets = pathlib.Path(args.secrets_dir).resolve()
        self.source = Server("source", args.source_host, args.source_port, "postgres", secrets / "source.password")
        self.target = Server("target", args.target_host, args.target_port, "postgres",
                             pathlib.Path(args.target_password_file).resolve() if args.target_password_file
                             else secrets / "target.password")
        self.source_db = args.source_db
        self.target_db = args.target_db  # the current run's (reset_target); each run has its own
        self.target_dbs: list[str] = []  # every run's, dropped by cleanup()
        self.pg_bin = pathlib.Path(args.pg_bin)
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="clone-bench-"))
        os.chmod(self.tmp, 0o700)
        self.pgpassfile = self._write_pgpassfile()
        self.source_catalog: dict | None = None

    # ---- set-up ------------------------------------------------------------------------------------

    def _write_pgpassfile(self) -> pathlib.Path:
        def esc(value: str) -> str:
            return value.replace("\\", "\\\\").replace(":", "\\:")

        path = self.tmp / "pgpass"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for server in (self.source, self.target):
                handle.write(f"{esc(server.host)}:{server.port}:*:{esc(server.user)}:{esc(server.password)}\n")
        return path

    def _admin(self, server: Server, statements: list) -> None:
        conn = server.connect("postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
        finally:
            conn.close()

    def prepare_source(self) -> None:
        conn = self.source.connect("postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.source_db,))
                if cur.fetchone() is None:
                    log(f"creating database {self.source_db} on the source")
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.source_db)))
        finally:
            conn.close()
        started = time.monotonic()
        if self.args.source_sql:
            self._load_source_sql()
        else:
            log(f"loading the CDP reference database at scale {self.args.scale:g} into {self.source_db} "
                "(does nothing when that scale is loaded already)")
            subprocess.run([str(VENV_BIN / "python"), "-m", "cdp_reference.generate", "--host", self.source.host,
                            "--port", str(self.source.port), "--user", self.source.user, "--dbname", self.source_db,
                            "--password-file", str(self.source.password_file), "--scale", f"{self.args.scale:g}",
                            "--drop"], cwd=PROJECT, check=True)
        log(f"source ready in {time.monotonic() - started:.1f}s; VACUUM ANALYZE (hint bits, visibility map)")
        conn = self.source.connect(self.source_db)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("VACUUM (ANALYZE)")
        finally:
            conn.close()
        self.source_catalog = self.catalog(self.source, self.source_db)
        self.source_fingerprint = self.fingerprint()

    def _load_source_sql(self) -> None:
        """--source-sql: the source database recreated from the file (psql, stopping at the first error)."""
        log(f"recreating {self.source_db} from {self.args.source_sql}")
        self._admin(self.source, [sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(self.source_db)), sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.source_db))])
        subprocess.run([str(self.pg_bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.source.host,
                        "-p", str(self.source.port), "-U", self.source.user, "-d", self.source_db,
                        "-f", str(self.args.source_sql)], env=self.source.client_env(), check=True,
                       stdout=subprocess.DEVNULL)

    def fingerprint(self) -> tuple:
        """What identifies the loaded source: the database's and tables' oids and files, and the
        cumulative row write counters. It changes when anything else writes to, reloads or drops it."""
        try:
            conn = self.source.connect(self.source_db)
        except psycopg2.OperationalError as exc:
            return ("unreachable", str(exc).strip())
        try:
            with conn.cursor() as cur:
                cur.execute("""
                    SELECT (SELECT oid FROM pg_database WHERE datname = current_database()),
                           array_agg(c.oid || ':' || c.relfilenode ORDER BY c.oid),
                           sum(coalesce(s.n_tup_ins + s.n_tup_upd + s.n_tup_del, 0))
                    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
                    WHERE c.relkind = 'r' AND n.nspname NOT IN %s""", (SYSTEM_SCHEMAS,))
                db_oid, files, writes = cur.fetchone()
            return (db_oid, tuple(files or ()), int(writes or 0))
        finally:
            conn.close()

    def check_source_unchanged(self) -> None:
        now = self.fingerprint()
        if now != self.source_fingerprint:
            raise SourceChanged(f"the source database {self.source_db} changed while the benchmark ran (another "
                                f"process wrote to, reloaded or dropped it): {self.source_fingerprint!r:.200} -> "
                                f"{now!r:.200}; rerun, or pick another --source-db")

    def reset_target(self, run_name: str) -> None:
        """A new, empty database for the run (a leftover of an interrupted benchmark dropped first)."""
        self.target_db = f"{self.args.target_db}_{run_name}"
        self.target_dbs.append(self.target_db)
        name = sql.Identifier(self.target_db)
        self._admin(self.target, [sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name),
                                  sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(name),
                                  "CHECKPOINT"])
        self._admin(self.source, ["CHECKPOINT"])

    # ---- catalog and checks ----------------------------------------------------------------------

    @staticmethod
    def catalog(server: Server, dbname: str) -> dict:
        conn = server.connect(dbname)
        try:
            conn.set_session(readonly=True, autocommit=False)
            with conn.cursor() as cur:
                cur.execute("""
                    SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
                      AND n.nspname NOT IN %s AND n.nspname NOT LIKE 'pg_temp%%'
                    ORDER BY 1, 2""", (SYSTEM_SCHEMAS,))
                tables = [f"{s}.{t}" for s, t in cur.fetchall()]
                counts = {}
                for qualified in tables:
                    schema, table = qualified.split(".", 1)
                    cur.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema),
                                                                            sql.Identifier(table)))
                    counts[qualified] = cur.fetchone()[0]
                cur.execute("""
                    SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                    JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN %s""", (SYSTEM_SCHEMAS,))
                indexes = cur.fetchone()[0]
                # NOT NULL constraints (contype n) exist from PostgreSQL 18 on: compared as columns' property.
                cur.execute("""
                    SELECT contype, convalidated, count(*) FROM pg_constraint k
                    JOIN pg_namespace n ON n.oid = k.connamespace WHERE n.nspname NOT IN %s AND k.contype <> 'n'
                    GROUP BY 1, 2""", (SYSTEM_SCHEMAS,))
                constraints = {f"{t}{'' if v else ' (not valid)'}": n for t, v, n in cur.fetchall()}
                cur.execute("SELECT schemaname || '.' || sequencename, last_value FROM pg_sequences "
                            "WHERE schemaname NOT IN %s ORDER BY 1", (SYSTEM_SCHEMAS,))
                sequences = dict(cur.fetchall())
                cur.execute("SELECT pg_database_size(current_database())")
                size = cur.fetchone()[0]
            conn.rollback()
        finally:
            conn.close()
        return {"tables": counts, "indexes": indexes, "constraints": constraints,
                "foreign_keys": sum(n for k, n in constraints.items() if k.startswith("f")),
                "sequences": sequences, "database_bytes": size}

    def check_clone(self) -> tuple[list[str], dict]:
        want = self.source_catalog
        got = self.catalog(self.target, self.target_db)
        problems = []
        missing = sorted(set(want["tables"]) - set(got["tables"]))
        extra = sorted(set(got["tables"]) - set(want["tables"]))
        if missing:
            problems.append(f"tables missing in the target: {', '.join(missing)}")
        if extra:
            problems.append(f"tables only in the target: {', '.join(extra)}")
        for table, rows in want["tables"].items():
            if table in got["tables"] and got["tables"][table] != rows:
                problems.append(f"{table}: {got['tables'][table]} rows in the target, {rows} in the source")
        if got["indexes"] != want["indexes"]:
            problems.append(f"indexes: {got['indexes']} in the target, {want['indexes']} in the source")
        if got["foreign_keys"] != want["foreign_keys"]:
            problems.append(f"foreign keys: {got['foreign_keys']} in the target, {want['foreign_keys']} in the source")
        if got["constraints"] != want["constraints"]:
            problems.append(f"constraints by type: {got['constraints']} in the target, {want['constraints']} "
                            "in the source")
        if got["sequences"] != want["sequences"]:
            diff = {k: [got["sequences"].get(k), want["sequences"].get(k)]
                    for k in sorted(set(want["sequences"]) | set(got["sequences"]))
                    if got["sequences"].get(k) != want["sequences"].get(k)}
            problems.append(f"sequences differ (target, source last_value): {diff}")
        figures = {"tables": len(got["tables"]), "rows": sum(got["tables"].values()), "indexes": got["indexes"],
                   "foreign_keys": got["foreign_keys"], "sequences": len(got["sequences"]),
                   "target_database_mb": round(got["database_bytes"] / MB, 1)}
        return problems, figures

    # ---- the tools ---------------------------------------------------------------------------------

    def _pgmigrate(self, workdir: pathlib.Path, t0: float) -> tuple[list[LoggedProcess], dict]:
        inventory = workdir / "inventory"
        (inventory / "group_vars" / "migration").mkdir(parents=True)
        shutil.copy(PROJECT / "inventories" / "local" / "hosts.yml", inventory / "hosts.yml")

        def connection(server: Server, dbname: str) -> str:
            return (f"  host: {server.host}\n  port: {server.port}\n  dbname: {dbname}\n  user: {server.user}\n"
                    f"  password: \"{{{{ lookup('ansible.builtin.file', '{server.password_file}') }}}}\"\n")

        (inventory / "group_vars" / "migration" / "connections.yml").write_text(
            "---\n# Written by benchmarks/clone_benchmark.py: the benchmark's databases.\n"
            "migration_source:\n" + connection(self.source, self.source_db)
            + "migration_target:\n" + connection(self.target, self.target_db), encoding="utf-8")
        if not self.args.source_sql:
            # The CDP reference database is the CDP: its inventories select the CDP's application profile.
            (inventory / "group_vars" / "migration" / "profile.yml").write_text("---\nmigration_profile: cdp\n")
        artifacts = workdir / "artifacts"
        argv = [str(VENV_BIN / "ansible-playbook"), "migrate.yml", "-i", str(inventory),
                "-e", "migration_target_overwrite=true", "-e", f"migration_workers={self.args.workers}",
                "-e", f"migration_artifacts_dir={artifacts}"]
        if self.args.pgmigrate_skip_tags:
            argv += ["--skip-tags", self.args.pgmigrate_skip_tags]
        for extra in self.args.pgmigrate_var:
            argv += ["-e", extra]
        env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
        env.pop("PGPASSWORD", None)
        proc = LoggedProcess(argv, workdir / "tool.log", t0, cwd=PROJECT, env=env)
        return [proc], {"argv": argv, "artifacts": artifacts}

    def _pgcopydb(self, workdir: pathlib.Path, t0: float) -> tuple[list[LoggedProcess], dict]:
        argv = [self.args.pgcopydb, "clone", "--source", self.source.uri(self.source_db),
                "--target", self.target.uri(self.target_db), "--table-jobs", str(self.args.pgcopydb_table_jobs),
                "--index-jobs", str(self.args.pgcopydb_index_jobs), "--no-owner", "--no-acl",
                "--dir", str(workdir / "pgcopydb")]
        env = dict(os.environ, PGPASSFILE=str(self.pgpassfile), PATH=f"{self.pg_bin}:{os.environ.get('PATH', '')}")
        env.pop("PGPASSWORD", None)
        proc = LoggedProcess(argv, workdir / "tool.log", t0, env=env)
        return [proc], {"argv": argv}

    def _pg_dump(self, workdir: pathlib.Path, t0: float) -> tuple[list, dict]:
        dump = [str(self.pg_bin / "pg_dump"), "-Fc", "-h", self.source.host, "-p", str(self.source.port),
                "-U", self.source.user, "-d", self.source_db]
        restore = [str(self.pg_bin / "pg_restore"), "--no-owner", "--no-privileges", "-h", self.target.host,
                   "-p", str(self.target.port), "-U", self.target.user, "-d", self.target_db]
        with open(workdir / "pg_dump.log", "w") as dump_err, open(workdir / "pg_restore.log", "w") as restore_err:
            p_dump = subprocess.Popen(dump, stdout=subprocess.PIPE, stderr=dump_err, env=self.source.client_env(),
                                      start_new_session=True)
            p_restore = subprocess.Popen(restore, stdin=p_dump.stdout, stdout=restore_err, stderr=subprocess.STDOUT,
                                         env=self.target.client_env(), start_new_session=True)
        p_dump.stdout.close()
        return [p_dump, p_restore], {"argv": dump + ["|"] + restore}

    def run_once(self, tool: str, round_no: int, position: int) -> dict:
        workdir = self.tmp / f"r{round_no}-{position}-{tool}"
        workdir.mkdir()
        self.check_source_unchanged()
        self.reset_target(f"r{round_no}_{tool}")
        load_before = os.getloadavg()
        log(f"round {round_no}: {TOOL_LABELS[tool]} (load average {load_before[0]:.2f})")
        sampler = TreeSampler()
        sampler.start()
        wall_start = time.time()
        t0 = time.monotonic()
        procs, info = getattr(self, f"_{tool}")(workdir, t0)
        try:
            codes = [p.wait() for p in procs]
            seconds = time.monotonic() - t0
            # Daemonized helpers (Ansible's async wrapper) may outlive the main process for a moment.
            deadline = time.monotonic() + 30
            while descendants(os.getpid()) and time.monotonic() < deadline:
                reap_orphans()
                time.sleep(0.1)
            lingering = len(descendants(os.getpid()))
        finally:
            sampler.stop()
        if lingering:
            log(f"warning: {lingering} process(es) of {tool} still running 30 s after it exited; stopping them")
            terminate_tree()
        reap_orphans()
        run = {"round": round_no, "position": position, "tool": tool, "started_at": wall_start,
               "seconds": round(seconds, 3), "exit_codes": codes,
               "peak_rss_mb": round(sampler.peak_rss / MB, 1), "peak_pss_mb": round(sampler.peak_pss / MB, 1),
               "peak_processes": sampler.peak_procs, "rss_at_peak_by_command": sampler.peak_breakdown,
               "memory_samples": sampler.samples, "load_average_before": [round(x, 2) for x in load_before],
               "load_average_after": [round(x, 2) for x in os.getloadavg()], "argv": info["argv"]}
        self.check_source_unchanged()
        problems, figures = self.check_clone()
        run["clone"] = figures
        run["problems"] = problems
        if any(codes):
            run["status"] = "failed"
        elif problems:
            run["status"] = "invalid"
        else:
            run["status"] = "ok"
        if tool == "pgmigrate":
            run["pgmigrate"] = pgmigrate_details(procs[0].lines, info["artifacts"], wall_start, seconds)
            run["phases"] = pgmigrate_phases(run["pgmigrate"], seconds)
        elif tool == "pgcopydb":
            run["pgcopydb"] = {"summary": pgcopydb_summary([line for _t, line in procs[0].lines])}
            run["phases"] = pgcopydb_phases(run["pgcopydb"]["summary"], seconds)
        if run["status"] != "ok":
            if tool == "pg_dump":
                run["output_tail"] = {"pg_dump": tail(workdir / "pg_dump.log"),
                                      "pg_restore": tail(workdir / "pg_restore.log")}
            else:
                run["output_tail"] = tail(workdir / "tool.log", 80)
        log(f"  {run['status']}: {seconds:.1f}s, peak RSS {run['peak_rss_mb']:.0f} MB "
            f"(PSS {run['peak_pss_mb']:.0f} MB, {sampler.peak_procs} processes)"
            + (f"; exit codes {codes}" if any(codes) else "")
            + ("".join(f"\n    {p}" for p in problems)))
        if tool == "pgmigrate":
            details = run["pgmigrate"]
            log("    ansible start-up {}s; ".format(details["first_task_s"])
                + "; ".join(f"{p['name'].split(':')[0]} {p['seconds']:.1f}s" for p in details["plays"])
                + f"; engine (summary.json) {details.get('engine_seconds')}s")
        if run["status"] != "ok":
            tail_lines = run["output_tail"]
            if isinstance(tail_lines, dict):
                tail_lines = [f"{k}: {x}" for k, v in tail_lines.items() for x in v]
            print("\n".join("    | " + x for x in tail_lines[-40:]), flush=True)
        return run

    def cleanup(self) -> None:
        for target_db in self.target_dbs:
            try:
                self._admin(self.target, [sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(target_db))])
            except psycopg2.Error as exc:
                log(f"could not drop {target_db} on the target: {exc}")
        if self.args.keep_temp:
            self.pgpassfile.unlink(missing_ok=True)
            log(f"kept the logs and pgmigrate artifacts in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Where each tool's time goes


_TASK = re.compile(r"^(PLAY|TASK) \[(.*)\]")
_PROGRESS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (.*)$")


def pgmigrate_details(lines: list[tuple[float, str]], artifacts: pathlib.Path, wall_start: float,
                      seconds: float) -> dict:
    """Ansible's timeline (seconds at which each play/task header was printed) and the engine's
    phases (artifacts/runs/<run>/progress.log, second resolution) relative to the playbook's start."""
    headers = [(t, m.group(1), m.group(2)) for t, line in lines if (m := _TASK.match(line))]
    tasks = []
    for i, (t, kind, name) in enumerate(headers):
        end = headers[i + 1][0] if i + 1 < len(headers) else seconds
        tasks.append({"kind": kind, "name": name, "at_s": round(t, 2), "seconds": round(end - t, 2)})
    plays = []
    for task in tasks:
        if task["kind"] == "PLAY":
            plays.append({"name": task["name"], "at_s": task["at_s"], "seconds": 0.0})
        elif plays:
            plays[-1]["seconds"] = round(plays[-1]["seconds"] + task["seconds"], 2)
    details: dict = {"first_output_s": round(lines[0][0], 2) if lines else None,
                     "first_task_s": round(headers[0][0], 2) if headers else None, "plays": plays,
                     "ansible_timeline": tasks}
    runs = sorted((artifacts / "runs").glob("*/summary.json")) if (artifacts / "runs").is_dir() else []
    if not runs:
        return details
    run_dir = runs[-1].parent
    try:
        summary = json.loads(runs[-1].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = {}
    details["engine_seconds"] = summary.get("seconds")
    details["engine_phases"] = summary.get("phases")
    details["engine_status"] = summary.get("status")
    if summary.get("seconds") is not None:
        details["outside_engine_s"] = round(seconds - summary["seconds"], 2)
    details["slowest_tables"] = sorted(({"table": t["table"], "rows": t["rows"], "mb": round(t["bytes"] / MB, 1),
                                         "seconds": t["seconds"]} for t in summary.get("tables", [])),
                                       key=lambda t: -t["seconds"])[:5]
    details["warnings"] = summary.get("warnings", [])
    events = []
    for line in tail(run_dir / "progress.log", 100000):
        m = _PROGRESS.match(line)
        if not m or m.group(2).startswith("["):
            continue
        text = m.group(2)
        if text.startswith(("phase ", "pre-data", "run complete", "started run", "overwrite")):
            stamp = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
            events.append({"at_s": round(stamp - wall_start, 1), "event": text})
    details["engine_events"] = events
    return details


def pgcopydb_summary(lines: list[str]) -> list[str]:
    """pgcopydb's closing table of steps and durations."""
    for i, line in enumerate(lines):
        if re.search(r"\bStep\s+Connection\s+Duration", line):
            return [re.sub(r"^\S+ \d+ INFO\s+", "", x) for x in lines[i:]]
    return lines[-25:]


# --------------------------------------------------------------------------------------------------
# Report


def machine_info(bench: Benchmark) -> dict:
    def first_line(argv: list[str]) -> str | None:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=PROJECT)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return None

    cpu = None
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo", encoding="utf-8")
                    if line.startswith("model name")), None)
        mem = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo", encoding="utf-8")
                   if line.startswith("MemTotal:"))
    except (OSError, StopIteration):
        mem = None
    settings = {}
    conn = bench.target.connect("postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT name, setting, unit FROM pg_settings WHERE name IN ('server_version', "
                        "'shared_buffers', 'max_wal_size', 'maintenance_work_mem', 'fsync', 'synchronous_commit', "
                        "'wal_level', 'max_parallel_maintenance_workers', 'checkpoint_timeout')")
            settings = {n: s + (f" ({u})" if u else "") for n, s, u in cur.fetchall()}
    finally:
        conn.close()
    dirty = first_line(["git", "status", "--porcelain"])
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(), "cpu_model": cpu,
            "memory_gb": round(mem / 1024**3, 1) if mem else None, "kernel": platform.release(),
            "python": platform.python_version(), "target_server_settings": settings,
            "pgcopydb": first_line([bench.args.pgcopydb, "--version"]),
            "pg_dump": first_line([str(bench.pg_bin / "pg_dump"), "--version"]),
            "ansible": first_line([str(VENV_BIN / "ansible-playbook"), "--version"]),
            "git_commit": first_line(["git", "rev-parse", "HEAD"]), "git_dirty": bool(dirty),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def _git_head() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=PROJECT,
                              timeout=60).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def summarize(runs: list[dict], tools: list[str]) -> list[dict]:
    rows = []
    for tool in tools:
        mine = [r for r in runs if r["tool"] == tool]
        ok = [r for r in mine if r["status"] == "ok"]
        times = [r["seconds"] for r in ok]
        rows.append({"tool": tool, "label": TOOL_LABELS[tool], "runs": len(mine), "ok_runs": len(ok),
                     "median_s": round(statistics.median(times), 2) if times else None,
                     "min_s": round(min(times), 2) if times else None,
                     "max_s": round(max(times), 2) if times else None,
                     "peak_rss_mb": max((r["peak_rss_mb"] for r in ok), default=None),
                     "peak_pss_mb": max((r["peak_pss_mb"] for r in ok), default=None)})
    base = next((r["median_s"] for r in rows if r["tool"] == "pgcopydb"), None)
    for row in rows:
        row["ratio_to_pgcopydb"] = round(row["median_s"] / base, 2) if base and row["median_s"] else None
    return rows


def print_table(rows: list[dict]) -> None:
    def fmt(value, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    header = f"{'tool':<20} {'ok':>5} {'median s':>9} {'min s':>8} {'max s':>8} {'x pgcopydb':>10} " \
             f"{'peak RSS MB':>11} {'peak PSS MB':>11}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['label']:<20} {str(r['ok_runs']) + '/' + str(r['runs']):>5} {fmt(r['median_s'], '.1f'):>9} "
              f"{fmt(r['min_s'], '.1f'):>8} {fmt(r['max_s'], '.1f'):>8} {fmt(r['ratio_to_pgcopydb'], '.2f'):>10} "
              f"{fmt(r['peak_rss_mb'], '.0f'):>11} {fmt(r['peak_pss_mb'], '.0f'):>11}")


# --------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--scale", type=float, default=10, help="CDP reference scale (1 is about 100 MB)")
    parser.add_argument("--source-sql", type=pathlib.Path, default=None,
                        help="load the source from this SQL file instead of the CDP reference (e.g. "
                             "tests/corpus/many_tables.sql); no application profile is selected then")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs every tool once, order rotated")
    parser.add_argument("--workers", type=int, default=4, help="pgmigrate's migration_workers")
    parser.add_argument("--tools", default=",".join(TOOLS),
                        help=f"comma-separated subset of {', '.join(TOOLS)} (pg_dump = pg_dump -Fc | pg_restore)")
    parser.add_argument("--pgmigrate-skip-tags", default="",
                        help="passed to ansible-playbook --skip-tags, e.g. 'validate' to time the clone without "
                             "migrate.yml's validation play (default: the whole migrate.yml)")
    parser.add_argument("--pgmigrate-var", action="append", default=[], metavar="NAME=VALUE",
                        help="extra variable for migrate.yml (repeatable), e.g. migration_workers=3")
    parser.add_argument("--pgcopydb-table-jobs", type=int, default=2)
    parser.add_argument("--pgcopydb-index-jobs", type=int, default=2)
    parser.add_argument("--source-db", default=None,
                        help="database loaded on the source server (default cdp_clone_bench, or sql_clone_bench "
                             "with --source-sql: the two never share a database)")
    parser.add_argument("--target-db", default="bench_clone",
                        help="prefix of the databases created on the target, one for each run (dropped at the end)")
    parser.add_argument("--source-host", default="127.0.0.1")
    parser.add_argument("--source-port", type=int, default=55432)
    parser.add_argument("--target-host", default="127.0.0.1")
    parser.add_argument("--target-port", type=int, default=55433)
    parser.add_argument("--target-password-file", default=None,
                        help="the target's password file instead of <secrets-dir>/target.password, e.g. "
                             ".embedded/secrets/target18.password with --target-port 55434 (PostgreSQL 18)")
    parser.add_argument("--secrets-dir", default=str(PROJECT / ".embedded" / "secrets"),
                        help="directory holding source.password and target.password (superuser postgres)")
    parser.add_argument("--pg-bin", default="/usr/lib/postgresql/15/bin", help="pg_dump and pg_restore")
    parser.add_argument("--pgcopydb", default=shutil.which("pgcopydb") or "/usr/bin/pgcopydb")
    parser.add_argument("--keep-temp", action="store_true", help="keep logs and pgmigrate artifacts (path printed)")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in tools if t not in TOOLS]
    if unknown or not tools:
        parser.error(f"--tools: unknown {unknown}; choose from {', '.join(TOOLS)}")
    args.tools = [t for t in TOOLS if t in tools]
    if args.rounds < 1 or args.workers < 1 or args.scale <= 0:
        parser.error("--rounds and --workers must be >= 1 and --scale > 0")
    if args.source_db is None:
        args.source_db = "sql_clone_bench" if args.source_sql else "cdp_clone_bench"
    if args.source_sql is not None and not args.source_sql.is_file():
        parser.error(f"--source-sql {args.source_sql}: no such file (a SQL file psql can run, e.g. "
                     "tests/corpus/many_tables.sql)")
    return args


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(argv)
    if not _enable_subreaper():
        log("warning: could not become a child subreaper: daemonized processes escape the memory figures")
    signal.signal(signal.SIGTERM, _interrupt)
    bench = Benchmark(args)
    runs: list[dict] = []
    stamp = time.strftime("%Y%m%dT%H%M%S")
    interrupted = None
    machine = machine_info(bench)
    try:
        log(f"machine: {machine['nproc']} CPUs ({machine['cpu_model']}), {machine['memory_gb']} GB, "
            f"load average {machine['load_average_at_start']}")
        bench.prepare_source()
        src = bench.source_catalog
        log(f"source {args.source_db}: {src['database_bytes'] / MB:.0f} MB, {len(src['tables'])} tables, "
            f"{sum(src['tables'].values()):,} rows, {src['indexes']} indexes, {src['foreign_keys']} foreign keys, "
            f"{len(src['sequences'])} sequences")
        for round_no in range(1, args.rounds + 1):
            shift = (round_no - 1) % len(args.tools)
            order = args.tools[shift:] + args.tools[:shift]
            for position, tool in enumerate(order, 1):
                runs.append(bench.run_once(tool, round_no, position))
    except KeyboardInterrupt:
        interrupted = "interrupted (SIGINT/SIGTERM)"
        log("interrupted: stopping the running tool")
        terminate_tree()
        reap_orphans()
    except SourceChanged as exc:
        interrupted = str(exc)
        log(f"error: {exc}")
    finally:
        bench.cleanup()
    if bench.source_catalog is None:
        return 130 if interrupted else 1
    src = bench.source_catalog
    rows = summarize(runs, args.tools)
    result = {"benchmark": "clone", "timestamp": stamp,
              "parameters": {"source_sql": str(args.source_sql) if args.source_sql else None,
                             "scale": args.scale, "rounds": args.rounds, "workers": args.workers,
                             "tools": args.tools, "pgcopydb_table_jobs": args.pgcopydb_table_jobs,
                             "pgcopydb_index_jobs": args.pgcopydb_index_jobs,
                             "pgmigrate_skip_tags": args.pgmigrate_skip_tags or None,
                             "pgmigrate_vars": args.pgmigrate_var,
                             "memory_sample_seconds": SAMPLE_SECONDS},
              "machine": dict(machine, load_average_at_end=[round(x, 2) for x in os.getloadavg()],
                              git_commit_at_end=_git_head()),
              "source": {"database": args.source_db, "database_mb": round(src["database_bytes"] / MB, 1),
                         "tables": len(src["tables"]), "rows": sum(src["tables"].values()),
                         "indexes": src["indexes"], "foreign_keys": src["foreign_keys"],
                         "constraints": src["constraints"], "sequences": len(src["sequences"]),
                         "row_counts": src["tables"]},
              "summary": rows, "phases": median_phases(runs, args.tools), "runs": runs}
    if interrupted:
        result["interrupted"] = interrupted
    out_dir = pathlib.Path(args.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"clone-{stamp}.json"
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print()
    what = f"{args.source_sql.name}" if args.source_sql else f"scale {args.scale:g}"
    print(f"Clone of {args.source_db} ({what}, {src['database_bytes'] / MB:.0f} MB) on "
          f"{machine['nproc']} CPUs; pgmigrate workers {args.workers}, pgcopydb table/index jobs "
          f"{args.pgcopydb_table_jobs}/{args.pgcopydb_index_jobs}"
          + (f"; pgmigrate --skip-tags {args.pgmigrate_skip_tags}" if args.pgmigrate_skip_tags else "")
          + f"; {args.rounds} round(s); load average "
          f"{machine['load_average_at_start'][0]:.2f} at start, {os.getloadavg()[0]:.2f} at end")
    print_table(rows)
    if result["phases"]:
        print()
        print_phases(result["phases"], TOOL_LABELS)
    print(f"\nJSON: {out}")
    if interrupted:
        print(f"INCOMPLETE: {interrupted}")
        return 1
    return 0 if all(r["status"] == "ok" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
