"""The corpus: foreign databases, written like real applications' (tests/corpus/*.sql), each migrated
by `ansible-playbook migrate.yml` with nothing but the two connections, then compared with the source
by tests/independent_compare.py, which shares no code with the engine's validator.

Each corpus file names the roles it needs in a `-- roles:` header line; they are created (NOLOGIN,
idempotently, never dropped: roles are per server and other tests may run at the same time) on both
servers before the source is loaded. Files are run by psql, as an application's migrations would be.
"""

import secrets
import subprocess
import time

import pytest

import independent_compare
from conftest import PROJECT_DIR, connect, write_inventory
from corpus_tools import CORPUS_DIR, corpus_roles, ensure_roles, load_sql, reference_copy

ANSIBLE_PLAYBOOK = str(PROJECT_DIR / ".venv" / "bin" / "ansible-playbook")

# Settings each database is migrated with, beyond the two connections: none, except where the point
# of the database is a setting (owners and privileges kept).
KEPT_OWNERS_AND_PRIVILEGES = {"migration_no_owner": False, "migration_no_privileges": False}
CORPUS = {
    "blog_cms": {},
    "shop": {},
    "saas": KEPT_OWNERS_AND_PRIVILEGES,
    "events": {},
    "types_zoo": {},
    "erp_settings": {},
    "no_tables": {},
    "empty": {},
    "many_tables": {},
}
SLOW = {"many_tables"}


def migrate(inventory, timeout=1200):
    return subprocess.run([ANSIBLE_PLAYBOOK, "migrate.yml", "-i", str(inventory)], cwd=PROJECT_DIR,
                          capture_output=True, text=True, timeout=timeout, check=False)


def failure_excerpt(result):
    """The lines of a failed run that say why: failed tasks and their messages, then the end."""
    lines = result.stdout.splitlines()
    failed = [i for i, line in enumerate(lines) if line.startswith(("fatal:", "failed:")) or "FAILED!" in line]
    excerpt = []
    for i in failed[:4]:
        excerpt += lines[max(0, i - 2):i + 6]
    return "\n".join(excerpt)[-6000:] + "\n...\n" + result.stdout[-2500:] + result.stderr[-1500:]


def corpus_params():
    return [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name for name in CORPUS]


@pytest.mark.parametrize("name", corpus_params())
def test_corpus_database_migrates_exactly_with_default_settings(name, db_pair, source_server, target_server,
                                                                tmp_path):
    src, dst = db_pair
    sql_path = CORPUS_DIR / f"{name}.sql"
    roles = corpus_roles(sql_path.read_text(encoding="utf-8"))
    for server in (source_server, target_server):
        ensure_roles(server, roles)
    load_sql(src, sql_path)
    settings = CORPUS[name]
    inventory = write_inventory(tmp_path, src, dst, settings)

    started = time.monotonic()
    result = migrate(inventory)
    elapsed = time.monotonic() - started
    print(f"corpus {name}: migrate.yml exit {result.returncode} in {elapsed:.1f} s")
    assert result.returncode == 0, failure_excerpt(result)

    kept = settings is KEPT_OWNERS_AND_PRIVILEGES
    differences = independent_compare.compare(src, dst, owners=kept, privileges=kept)
    assert differences == [], "\n".join(differences)


def unprivileged_owner(target_server, dst, role="corpus_saas_migrator"):
    """The target's connection as docs/security.md describes it: a login that owns the target
    database and is no superuser (a fresh password each time, sent as a query parameter)."""
    ensure_roles(target_server, [role])
    password = secrets.token_hex(16)
    conn = connect(target_server)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"ALTER ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD %s", (password,))
        cur.execute(f'ALTER DATABASE "{dst["dbname"]}" OWNER TO {role}')
    conn.close()
    return {**dst, "user": role, "password": password}


def test_corpus_saas_into_a_target_owned_by_a_login_that_is_no_superuser(db_pair, source_server, target_server,
                                                                         tmp_path):
    """The SaaS database (FORCE ROW LEVEL SECURITY) into a target whose owner is an ordinary login:
    the owner is subject to its own tables' policies, in the copy, the backup and the validation."""
    src, dst = db_pair
    sql_path = CORPUS_DIR / "saas.sql"
    for server in (source_server, target_server):
        ensure_roles(server, corpus_roles(sql_path.read_text(encoding="utf-8")))
    load_sql(src, sql_path)
    inventory = write_inventory(tmp_path, src, unprivileged_owner(target_server, dst))
    started = time.monotonic()
    result = migrate(inventory)
    print(f"corpus saas (unprivileged target owner): migrate.yml exit {result.returncode}"
          f" in {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, failure_excerpt(result)
    differences = independent_compare.compare(src, dst)
    assert differences == [], "\n".join(differences)


def test_the_independent_check_sees_each_kind_of_difference(db_pair, source_server, target_server):
    """The check passes on a pg_dump | pg_restore copy, and names each thing changed in the target."""
    src, dst = db_pair
    sql_path = CORPUS_DIR / "blog_cms.sql"
    for server in (source_server, target_server):
        ensure_roles(server, corpus_roles(sql_path.read_text(encoding="utf-8")))
    load_sql(src, sql_path)
    reference_copy(src, dst)
    assert independent_compare.compare(src, dst, owners=True, privileges=True) == []

    conn = connect(dst)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("""UPDATE "Content".tags SET name = 'tag-changed' WHERE id = 1""")
        cur.execute("SELECT setval('auth.users_id_seq', 500)")
        cur.execute("""ALTER TABLE "Content".comments DROP CONSTRAINT comments_parent_id_fkey""")
        cur.execute("SELECT lo_put(910001, 0, 'X')")
        cur.execute("COMMENT ON LARGE OBJECT 910004 IS NULL")
        cur.execute("SELECT lo_unlink(910005)")
        cur.execute("ALTER LARGE OBJECT 910002 OWNER TO postgres")
        cur.execute(f"""ALTER DATABASE "{dst['dbname']}" SET work_mem = '1MB'""")
    conn.close()
    differences = "\n".join(independent_compare.compare(src, dst, owners=True, privileges=True))
    for expected in ("rows Content.tags: source 25 rows", "tag-changed",
                     "sequence auth.users_id_seq: source (12, True) != target (500, True)",
                     "schema (pg_dump --schema-only) differs", "comments_parent_id_fkey",
                     "large object 910001: source {'md5'", "large object 910004:", "large object 910005: missing",
                     "'owner': 'corpus_blog_author'", "database setting for every role: only in target"):
        assert expected in differences, f"{expected!r} not reported in:\n{differences}"
    # Owners are compared only when the run keeps them.
    assert "owner" not in "\n".join(independent_compare.compare(src, dst, owners=False, privileges=False))
