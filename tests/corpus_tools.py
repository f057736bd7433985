"""The corpus's files (tests/corpus/*.sql) loaded as an application's migrations would be, and the copy
PostgreSQL's own tools make of a database: shared by the corpus tests of every version pair.

Each corpus file names the roles it needs in a `-- roles:` header line; they are created (NOLOGIN,
idempotently, never dropped: roles are per server and other tests may run at the same time) on both
servers before the source is loaded. Files are run by psql.
"""

import os
import pathlib
import re
import subprocess
import tempfile

import psycopg2

from conftest import connect

CORPUS_DIR = pathlib.Path(__file__).resolve().parent / "corpus"
PSQL = "/usr/lib/postgresql/15/bin/psql"


def corpus_roles(sql_text):
    """The role names of the file's `-- roles:` header line (each must start with corpus_)."""
    match = re.search(r"^-- roles:(.*)$", sql_text, re.MULTILINE)
    roles = match.group(1).split() if match else []
    for role in roles:
        assert re.fullmatch(r"corpus_[a-z0-9_]+", role), f"corpus role {role!r} must be named corpus_..."
    return roles


def ensure_roles(server, roles):
    conn = connect(server)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for role in roles:
                try:
                    cur.execute(f"CREATE ROLE {role} NOLOGIN")
                except (psycopg2.errors.DuplicateObject, psycopg2.errors.UniqueViolation):
                    pass  # already there (or created at this moment by a concurrent test)
    finally:
        conn.close()


def load_sql(params, path):
    """Run a corpus file with psql (stop at the first error); the password travels in the environment."""
    env = {**os.environ, "PGPASSWORD": params["password"]}
    args = [PSQL, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", params["host"], "-p", str(params["port"]),
            "-U", params["user"], "-d", params["dbname"], "-f", str(path)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"loading {path.name} failed: {done.stderr[-3000:]}"


def reference_copy(src, dst, tools=None):
    """pg_dump -Fc | pg_restore: the copy PostgreSQL's own tools (of directory tools, default version 15's)
    make (database settings excepted).

    pg_restore creates event triggers before it refreshes materialized views, so a trigger that records DDL
    would record the refresh in the copy: the event triggers are restored in a second pass, last."""
    tools = pathlib.Path(tools or pathlib.Path(PSQL).parent)
    src_env, dst_env = {**os.environ, "PGPASSWORD": src["password"]}, {**os.environ, "PGPASSWORD": dst["password"]}
    with tempfile.TemporaryDirectory() as work:
        dump, listing = pathlib.Path(work) / "dump", pathlib.Path(work) / "list"
        subprocess.run([str(tools / "pg_dump"), "-Fc", "-f", str(dump), "-h", src["host"], "-p", str(src["port"]),
                        "-U", src["user"], src["dbname"]], env=src_env, capture_output=True, timeout=300, check=True)
        entries = subprocess.run([str(tools / "pg_restore"), "-l", str(dump)], capture_output=True, text=True,
                                 timeout=60, check=True).stdout.splitlines()
        restore = [str(tools / "pg_restore"), "-h", dst["host"], "-p", str(dst["port"]), "-U", dst["user"],
                   "-d", dst["dbname"], "--exit-on-error", "-L", str(listing), str(dump)]
        for wanted in (False, True):
            listing.write_text("\n".join(e for e in entries if (" EVENT TRIGGER " in e) == wanted) + "\n")
            subprocess.run(restore, env=dst_env, capture_output=True, timeout=300, check=True)
