"""What exists of a run's publication, slots and subscription, and the record the run keeps in the
publication's comment (what it changed on the source, so that another controller can undo it)."""

import json

from psycopg2 import sql

from .names import TOOL_MARK


class ReplicationObjects:
    """The run's publication (source), replication slots (source) and subscription (target), as found."""

    def __init__(self, context):
        self.context = context

    def publication(self, src):
        return read_publication(src, self.context.name)

    def slots(self, src, subscription_oid=None):
        """Our slot and, while the initial sync runs, the table sync slots of our subscription."""
        with src.cursor() as cur:
            cur.execute("SELECT slot_name, active, active_pid FROM pg_replication_slots "
                        "WHERE slot_name = %s OR (%s::oid IS NOT NULL AND slot_name LIKE %s)",
                        (self.context.name, subscription_oid, f"pg\\_{subscription_oid}\\_sync\\_%"))
            return [{"name": n, "active": a, "pid": p} for n, a, p in cur.fetchall()]

    def subscription(self, dst):
        return read_subscription(dst, self.context.name)

    def comment_publication(self, cur, record):
        cur.execute(sql.SQL("COMMENT ON PUBLICATION {} IS {}").format(
            sql.Identifier(self.context.name), sql.Literal(json.dumps(record, sort_keys=True))))


def read_publication(conn, name):
    """A publication of the run ({"oid", "record": its comment's JSON}) or None."""
    with conn.cursor() as cur:
        cur.execute("SELECT p.oid, obj_description(p.oid, 'pg_publication') FROM pg_publication p "
                    "WHERE p.pubname = %s", (name,))
        row = cur.fetchone()
    if not row:
        return None
    try:
        record = json.loads(row[1] or "{}")
    except ValueError:
        record = {}
    return {"oid": row[0], "record": record}


def read_subscription(conn, name):
    """A subscription of this database ({"oid", "enabled", "slot", "ours"}) or None."""
    with conn.cursor() as cur:
        cur.execute("SELECT s.oid, s.subenabled, s.subslotname, obj_description(s.oid, 'pg_subscription') "
                    "FROM pg_subscription s WHERE s.subname = %s AND s.subdbid = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())", (name,))
        row = cur.fetchone()
    if not row:
        return None
    return {"oid": row[0], "enabled": row[1], "slot": row[2], "ours": TOOL_MARK in (row[3] or "")}


def drop_subscription(cur, name, subscription):
    """Drop a subscription found by read_subscription, its slot detached first: works when the publisher
    cannot be reached (the slot is dropped on the publisher's side)."""
    identifier = sql.Identifier(name)
    if subscription["enabled"]:
        cur.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(identifier))
    if subscription["slot"]:
        cur.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(identifier))
    cur.execute(sql.SQL("DROP SUBSCRIPTION {}").format(identifier))
