"""Large objects: listed from the run's snapshot, copied with their oids in batches on the worker pool.

pg_dump --schema-only leaves large objects out (PostgreSQL 15 emits no BLOB entry without data), so the
copy creates each one itself: lo_create(oid) on the target, the content streamed from the source in
CHUNK_SIZE pieces (never a whole value in memory), then its comment, and its owner and grants unless
no_owner / no_privileges (the same settings as for tables). A batch is one target transaction that
also records each of its oids as done ("lo:<oid>" in the run's state), so a resumed run copies exactly
the large objects not recorded yet. Like pg_dump, a run limited to some schemas copies none.
"""

import time

from psycopg2 import errors as pg_errors
from psycopg2 import sql

from ..common.batching import consecutive_groups
from ..common.connection import connect
from ..common.errors import PgmigrateError

CHUNK_SIZE = 1 << 20
BATCH_BYTES = 64 << 20
BATCH_COUNT = 500
INV_READ = 0x40000

# Owner, comment, grants (grantee NULL = PUBLIC) and size of every large object. The size comes from a
# descriptor opened and closed in the same row (OFFSET 0 keeps the subquery from being flattened).
LIST_QUERY = f"""
SELECT s.oid, pg_get_userbyid(s.lomowner), s.lomacl IS NOT NULL,
       (SELECT json_agg(json_build_array(CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END,
                                         a.privilege_type, a.is_grantable) ORDER BY a.n)
          FROM aclexplode(s.lomacl) WITH ORDINALITY AS a(grantor, grantee, privilege_type, is_grantable, n)),
       obj_description(s.oid, 'pg_largeobject'), lo_lseek64(s.fd, 0, 2), lo_close(s.fd)
FROM (SELECT m.oid, m.lomowner, m.lomacl, lo_open(m.oid, {INV_READ}) AS fd
      FROM pg_largeobject_metadata m ORDER BY m.oid OFFSET 0) s
ORDER BY s.oid
"""

# Large objects the login may not read (lo_open would fail): checked before anything changes.
UNREADABLE_QUERY = """
SELECT m.oid FROM pg_largeobject_metadata m
WHERE NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
  AND NOT current_setting('lo_compat_privileges')::bool
  AND NOT pg_has_role(m.lomowner, 'USAGE')
  AND NOT EXISTS (SELECT 1 FROM aclexplode(m.lomacl) a WHERE a.privilege_type = 'SELECT'
                  AND (a.grantee = 0 OR pg_has_role(a.grantee, 'USAGE')))
ORDER BY 1
"""


def list_large_objects(conn):
    """Every large object as {"oid", "owner", "has_acl", "grants", "comment", "bytes"}, by oid. Opens
    descriptors: call inside a transaction of its own (they close with it)."""
    with conn.cursor() as cur:
        cur.execute(LIST_QUERY)
        return [{"oid": oid, "owner": owner, "has_acl": has_acl, "grants": grants or [], "comment": comment,
                 "bytes": size} for oid, owner, has_acl, grants, comment, size, _closed in cur.fetchall()]


def unreadable(conn):
    with conn.cursor() as cur:
        cur.execute(UNREADABLE_QUERY)
        return [r[0] for r in cur.fetchall()]


def read_from_snapshot(source, snapshot_id, application_name="pgmigrate large objects"):
    """The source's large objects as the run's snapshot sees them (or now, without a snapshot).
    Raises LookupError naming the large objects the login may not read."""
    conn = connect(source, application_name=application_name)
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            if snapshot_id:
                cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot_id,))
        denied = unreadable(conn)
        if denied:
            raise LookupError(denied)
        return list_large_objects(conn)
    finally:
        conn.rollback()
        conn.close()


def existing_oids(conn, oids):
    """Which of these oids the target already uses for a large object."""
    with conn.cursor() as cur:
        cur.execute("SELECT oid FROM pg_largeobject_metadata WHERE oid = ANY(%s::oid[]) ORDER BY 1", (list(oids),))
        return [r[0] for r in cur.fetchall()]


def unlink(conn, oids):
    with conn.cursor() as cur:
        cur.execute("SELECT count(lo_unlink(oid)) FROM pg_largeobject_metadata WHERE oid = ANY(%s::oid[])",
                    (list(oids),))
        return cur.fetchone()[0]


def batches(large_objects, batch_bytes=None, batch_count=None):
    """Consecutive groups of at most batch_count large objects and (unless one alone is larger)
    batch_bytes bytes (defaults BATCH_COUNT, BATCH_BYTES)."""
    batch_bytes = BATCH_BYTES if batch_bytes is None else batch_bytes
    batch_count = BATCH_COUNT if batch_count is None else batch_count
    return consecutive_groups(large_objects, lambda lo: lo["bytes"], batch_count, batch_bytes)


def _metadata_statements(lo, no_owner, no_privileges):
    """Comment, grants, then owner. The grants are made while the login still owns the new object, from
    an empty list (its own default rights revoked too); ALTER ... OWNER then moves the login's part of
    the list to the new owner, so the list ends up as on the source."""
    oid = sql.Literal(lo["oid"])
    statements = []
    if lo["comment"] is not None:
        statements.append(sql.SQL("COMMENT ON LARGE OBJECT {} IS {}").format(oid, sql.Literal(lo["comment"])))
    if not no_privileges and lo["has_acl"]:
        statements.append(sql.SQL("REVOKE ALL ON LARGE OBJECT {} FROM PUBLIC").format(oid))
        statements.append(sql.SQL("REVOKE ALL ON LARGE OBJECT {} FROM CURRENT_USER").format(oid))
        for grantee, privilege, grantable in lo["grants"]:
            statements.append(sql.SQL("GRANT {} ON LARGE OBJECT {} TO {}{}").format(
                sql.SQL(privilege), oid, sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC"),
                sql.SQL(" WITH GRANT OPTION") if grantable else sql.SQL("")))
    if not no_owner:
        statements.append(sql.SQL("ALTER LARGE OBJECT {} OWNER TO {}").format(oid, sql.Identifier(lo["owner"])))
    return statements


class MetadataError(PgmigrateError):
    """A large object's owner or grantee is missing in the target."""


def _stream(source_conn, target_conn, oid, on_bytes, should_stop):
    src = source_conn.lobject(oid, "rb")
    dst = target_conn.lobject(oid, "wb")
    try:
        while True:
            if should_stop():
                raise InterruptedError("aborted")
            chunk = src.read(CHUNK_SIZE)
            if not chunk:
                break
            dst.write(chunk)
            on_bytes(len(chunk))
    finally:
        src.close()
        dst.close()


def copy_batch(source, snapshot_id, target_conn, batch, *, no_owner, no_privileges, on_bytes=lambda n: None,
               should_stop=lambda: False, mark_done=None, application_name="pgmigrate large objects"):
    """Copy one batch in one target transaction (committed by the caller after mark_done(cur, batch)).
    Returns the bytes copied."""
    t0 = time.monotonic()
    source_conn = connect(source, application_name=application_name)
    copied = 0

    def count(n):
        nonlocal copied
        copied += n
        on_bytes(n)

    try:
        with source_conn.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            if snapshot_id:
                cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot_id,))
        with target_conn.cursor() as cur:
            for lo in batch:
                cur.execute("SELECT lo_create(%s)", (lo["oid"],))
                if lo["bytes"]:
                    _stream(source_conn, target_conn, lo["oid"], count, should_stop)
                for statement in _metadata_statements(lo, no_owner, no_privileges):
                    try:
                        cur.execute(statement)
                    except pg_errors.UndefinedObject as error:
                        raise MetadataError(
                            f"large object {lo['oid']}: {str(error).strip()} in the target; create the role there, "
                            "or set migration_no_owner=true / migration_no_privileges=true to leave owners and "
                            "grants") from None
            if mark_done:
                mark_done(cur, batch, round(time.monotonic() - t0, 3))
        return copied
    finally:
        source_conn.rollback()
        source_conn.close()
