"""Validation of what lives outside the schemas: large objects and the database's settings.

Large objects: the same oids on both sides, each with the same size and content digest (md5 of the
md5s of its 1 MB pieces, computed inside each server, never a whole value in memory), the same comment,
and the same owner and grants. Owners and grants follow the copy's no_owner / no_privileges: a target
whose large objects all belong to the validating login, or whose large objects all have no grants while
the source's have some, is what those settings give, and is reported (pass) as not carried.

Database settings (ALTER DATABASE ... SET, ALTER ROLE ... IN DATABASE ... SET): compared by name, a
missing one reported as "database setting search_path missing in the target".
"""

import time
from concurrent.futures import ThreadPoolExecutor

from ..clone import large_objects
from ..common import database_settings
from ..common.connection import describe

DIGEST_CHUNK = 1 << 20
DIGEST_BATCH = 200
DIGEST_QUERY = f"""
SELECT l.oid, (SELECT md5(string_agg(md5(lo_get(l.oid, o, {DIGEST_CHUNK})), '' ORDER BY o))
               FROM generate_series(0::bigint, greatest(l.size - 1, 0), {DIGEST_CHUNK}) AS o)
FROM unnest(%s::oid[], %s::bigint[]) AS l(oid, size)
"""
SHOWN = 10


def _check(name, title):
    return {"name": name, "title": title, "status": "pass", "summary": "", "items": [], "seconds": 0.0}


def _finish(check, started, summary_pass, noun):
    failing = [i for i in check["items"] if i["status"] == "fail"]
    warning = [i for i in check["items"] if i["status"] == "warn"]
    check["status"] = "fail" if failing else ("warn" if warning else "pass")
    if failing:
        shown = "; ".join(i["detail"] for i in failing[:SHOWN])
        check["summary"] = f"{len(failing)} {noun} differ: {shown}" + (" ..." if len(failing) > SHOWN else "")
    else:
        check["summary"] = summary_pass
    check["seconds"] = round(time.monotonic() - started, 3)
    return check


def large_object_state(pool):
    """{oid: {"owner", "has_acl", "grants", "comment", "bytes", "digest"}} of one side."""
    conn = pool.get()
    try:
        denied = large_objects.unreadable(conn)
        if denied:
            raise ValueError(
                f"Validation may not read {len(denied)} large object(s) of {describe(pool.params)} as "
                f"{pool.params.get('user')} (e.g. {', '.join(str(o) for o in denied[:5])}): GRANT SELECT ON LARGE "
                "OBJECT <oid> to it for each (pg_read_all_data does not cover large objects), or validate as their "
                "owner or a superuser.")
        listed = large_objects.list_large_objects(conn)
        digests = {}
        with conn.cursor() as cur:
            for start in range(0, len(listed), DIGEST_BATCH):
                batch = listed[start:start + DIGEST_BATCH]
                cur.execute(DIGEST_QUERY, ([lo["oid"] for lo in batch], [lo["bytes"] for lo in batch]))
                digests.update(dict(cur.fetchall()))
    finally:
        conn.rollback()
    return {lo["oid"]: {**lo, "grants": sorted((g[0] or "", g[1], g[2]) for g in lo["grants"]),
                        "digest": digests.get(lo["oid"])} for lo in listed}


def _owners_not_carried(src, dst, target_user):
    return bool(dst) and all(lo["owner"] == target_user for lo in dst.values()) and \
        any(lo["owner"] != target_user for lo in src.values())


def _grants_not_carried(src, dst):
    return bool(dst) and not any(lo["has_acl"] for lo in dst.values()) and any(lo["has_acl"] for lo in src.values())


def compare_large_objects(src, dst, target_user, no_owner=None, no_privileges=None):
    """Check items, one per large object. no_owner / no_privileges None: inferred from the target."""
    if no_owner is None:
        no_owner = _owners_not_carried(src, dst, target_user)
    if no_privileges is None:
        no_privileges = _grants_not_carried(src, dst)
    items = []
    for oid in sorted(src.keys() | dst.keys()):
        label = f"large object {oid}"
        a, b = src.get(oid), dst.get(oid)
        if b is None:
            items.append({"table": label, "status": "fail", "detail": f"{label} missing in the target"})
            continue
        if a is None:
            items.append({"table": label, "status": "fail", "detail": f"{label} exists only in the target"})
            continue
        problems, notes = [], []
        if (a["bytes"], a["digest"]) != (b["bytes"], b["digest"]):
            problems.append(f"content differs (source {a['bytes']} bytes md5 {a['digest']}, target {b['bytes']} "
                            f"bytes md5 {b['digest']})")
        if a["comment"] != b["comment"]:
            problems.append(f"comment: source {a['comment']!r} / target {b['comment']!r}")
        if a["owner"] != b["owner"]:
            if no_owner:
                notes.append(f"owner {b['owner']} (source {a['owner']}: owners not carried, migration_no_owner)")
            else:
                problems.append(f"owner: source {a['owner']} / target {b['owner']}")
        if (a["has_acl"], a["grants"]) != (b["has_acl"], b["grants"]):
            if no_privileges and not b["has_acl"]:
                notes.append("grants not carried (migration_no_privileges)")
            else:
                problems.append(f"grants: source {_grants_text(a)} / target {_grants_text(b)}")
        detail = f"{label}: " + "; ".join(problems) if problems else \
            f"{a['bytes']} bytes, digest equal" + (f"; {'; '.join(notes)}" if notes else "")
        items.append({"table": label, "status": "fail" if problems else "pass", "detail": detail})
    return items


def _grants_text(lo):
    if not lo["has_acl"]:
        return "default (owner only)"
    return ", ".join(f"{grantee or 'PUBLIC'} {privilege}{' WITH GRANT OPTION' if grantable else ''}"
                     for grantee, privilege, grantable in lo["grants"]) or "none"


def check_large_objects(src_pool, dst_pool, target_user, no_owner=None, no_privileges=None):
    """The check, or None when neither side has a large object."""
    started = time.monotonic()
    check = _check("large_objects", "Large objects: oids, content digests, comments, owners and grants")
    with ThreadPoolExecutor(2) as pool:
        s = pool.submit(large_object_state, src_pool)
        d = pool.submit(large_object_state, dst_pool)
        src, dst = s.result(), d.result()
    if not src and not dst:
        return None
    check["items"] = compare_large_objects(src, dst, target_user, no_owner, no_privileges)
    total = sum(lo["bytes"] for lo in src.values())
    return _finish(check, started, f"{len(src)} large object(s), {total} bytes, identical", "large object(s)")


def _settings(pool):
    conn = pool.get()
    try:
        settings = database_settings.read_settings(conn)
        roles = database_settings.existing_roles(conn, {s["role"] for s in settings if s["role"]})
    finally:
        conn.rollback()
    return {(s["role"], s["name"]): s["value"] for s in settings}, roles


def check_database_settings(src_pool, dst_pool, carried=True, skipped=()):
    """The check, or None when neither database has a setting. carried=False: the copy left the settings
    on purpose, so one missing in the target is a warning; so is any difference in a setting the copy never
    carries (skipped)."""
    started = time.monotonic()
    check = _check("database_settings", "Database settings: ALTER DATABASE / ALTER ROLE ... IN DATABASE ... SET")
    with ThreadPoolExecutor(2) as pool:
        s = pool.submit(_settings, src_pool)
        d = pool.submit(_settings, dst_pool)
        (src, _), (dst, _) = s.result(), d.result()
    if not src and not dst:
        return None
    conn = dst_pool.get()
    try:
        target_roles = database_settings.existing_roles(conn, {role for role, _ in src if role})
    finally:
        conn.rollback()
    for key in sorted(src.keys() | dst.keys(), key=lambda k: (k[0] or "", k[1])):
        role, name = key
        label = database_settings.describe_setting({"role": role, "name": name})
        a, b = src.get(key), dst.get(key)
        if a == b:
            item = {"status": "pass", "detail": f"{label} = {a}"}
        elif database_settings.is_skipped({"name": name}, skipped):
            item = {"status": "warn", "detail": f"{label} not carried (migration_database_settings_skipped): "
                                                f"source {a if a is not None else 'not set'}, target "
                                                f"{b if b is not None else 'not set'}"}
        elif b is None and role is not None and role not in target_roles:
            item = {"status": "warn", "detail": f"{label} not carried: role {role} does not exist in the target"}
        elif b is None and not carried:
            item = {"status": "warn", "detail": f"{label} not carried (migration_copy_database_settings is false)"}
        elif b is None:
            item = {"status": "fail", "detail": f"{label} missing in the target (source: {name}={a})"}
        elif a is None:
            item = {"status": "warn", "detail": f"{label} exists only in the target ({name}={b})"}
        else:
            item = {"status": "fail", "detail": f"{label}: source {a} / target {b}"}
        check["items"].append({"table": label, "setting": name, **({"role": role} if role else {}), **item})
    return _finish(check, started, f"{len(src)} setting(s) identical", "setting(s)")


def checks_for(run):
    """The checks of this module that the run's enabled checks (run: context.ValidationRun) call for: large
    objects with the content (or "large_objects"), the database's settings with the schema (or
    "database_settings"); a check is left out when neither side has anything of its kind. Whether the copy
    carried the large objects' owners and grants is not an option of the validation: it is inferred from the
    target (check_large_objects' no_owner / no_privileges left None)."""
    checks = []
    if run.enabled & {"content", "large_objects"} and not run.include_schemas:
        checks.append(check_large_objects(run.src_pool, run.dst_pool, run.target.get("user")))
    if run.enabled & {"schema", "database_settings"}:
        checks.append(check_database_settings(run.src_pool, run.dst_pool, run.database_settings_carried,
                                              run.database_settings_skipped))
    return [check for check in checks if check is not None]
