"""The reverse replication after the cutover: for a window (zero_downtime_reverse_window_hours) the old source
follows the new database, so that a rollback switches back with every write made on the new one.

- check(): in the preflight, before anything changes: the new server can publish (wal_level, a free slot and
  WAL sender, a login that may replicate), the old source's login may subscribe, and the old source's server
  reaches the new one as the subscription will.
- prepare() (a hook of the write freeze, run before it): REPLICA IDENTITY FULL on the new database's tables
  listed in zero_downtime_replica_identity_full and the publication pgmigrate_zr_<run> there, with a record
  in its comment (what was changed, the old source's read-only setting before the run, the window).
- create_slot() (the other hook, inside the freeze): the new database has applied everything up to the
  freeze and no application write can reach it yet, so the slot starts after every change the forward
  replication brought: the old source gets back only what is written on the new database from then on.
- subscribe(): after the switch, the subscription on the old source (no copy, the slot made in the freeze).
  The old source stays read-only for the application's sessions (default_transaction_read_only); the
  subscription's apply worker writes regardless.
- status(), drop(): read from the catalogs (the window is in the publication's comment), so that any
  controller finds them: AWX runs each job where it likes.
"""

import json
import time

import psycopg2
from psycopg2 import errors as pg_errors
from psycopg2 import sql

from ..common.session import quiet_statement_logging
from ..common.units import human_bytes
from .errors import FreezeAbandoned, LogicalError
from .names import MAX_IDENTIFIER, REVERSE_PREFIX, TOOL_MARK, conninfo, object_name
from .replication_objects import drop_subscription, read_publication, read_subscription
from .sync_step import subscription_errors

WITHOUT_IT = "or set zero_downtime_reverse_window_hours=0 (the old source is then retired at the cutover, and a " \
             "rollback after it cannot keep the new writes)"


class ReverseReplication:
    """The new database's publication and slot, the old source's subscription, and the window."""

    def __init__(self, context, replicated_tables):
        self.context = context  # the forward run's: source = the old database, target = the new one
        self.replicated_tables = replicated_tables
        self.name = object_name(context.run_name, REVERSE_PREFIX)

    @property
    def enabled(self):
        return self.context.reverse_window_hours > 0

    # -- preflight -------------------------------------------------------------------------------------------
    def check(self, src, dst, problems):
        if not self.enabled:
            return
        with dst.cursor() as cur:
            cur.execute("SELECT current_setting('wal_level'), "
                        "current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots), "
                        "current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_stat_replication), "
                        "r.rolsuper OR r.rolreplication, current_user FROM pg_roles r WHERE r.rolname = current_user")
            wal_level, free_slots, free_senders, may_replicate, target_user = cur.fetchone()
        if wal_level != "logical":
            problems.append(f"the reverse replication after the cutover needs wal_level = logical on the target "
                            f"server (it is {wal_level}): set it and restart the target, {WITHOUT_IT}")
        if free_slots < 1 or free_senders < 1:
            problems.append(f"the reverse replication needs a free replication slot and WAL sender on the target "
                            f"({free_slots} and {free_senders} free): raise max_replication_slots or max_wal_senders "
                            f"(restart), {WITHOUT_IT}")
        if not may_replicate:
            problems.append(f"the target login {target_user} may not replicate, as the reverse replication needs: "
                            f"ALTER ROLE {target_user} REPLICATION, {WITHOUT_IT}")
        with src.cursor() as cur:
            cur.execute("SELECT r.rolsuper, current_user, current_setting('server_version_num')::int >= 160000 "
                        "AND EXISTS (SELECT 1 FROM pg_roles g WHERE g.rolname = 'pg_create_subscription' "
                        "AND pg_has_role(current_user, g.oid, 'MEMBER')) "
                        "FROM pg_roles r WHERE r.rolname = current_user")
            superuser, source_user, may_subscribe = cur.fetchone()
        if not (superuser or may_subscribe):
            problems.append(f"the source login {source_user} may not create the reverse replication's subscription "
                            f"(a superuser, or on PostgreSQL 16 and later a member of pg_create_subscription), "
                            f"{WITHOUT_IT}")
        if not problems:
            self._probe_from_source(src, problems)

    def _probe_from_source(self, src, problems):
        """The old source's server connects to the new one as the subscription will, in a transaction rolled
        back: a wrong zero_downtime_target_host_from_source, pg_hba.conf or password shows now."""
        reach = self.context.target_from_source
        try:
            with src.cursor() as cur:
                cur.execute("BEGIN")
                quiet_statement_logging(cur)
                cur.execute(sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (connect = true, "
                                    "enabled = false, create_slot = false, slot_name = NONE, copy_data = false)")
                            .format(sql.Identifier(f"{self.name}_probe"[:MAX_IDENTIFIER]),
                                    sql.Literal(conninfo(reach)), sql.Identifier(self.name)))
        except psycopg2.Error as error:
            problems.append(self.context.secrets.mask(
                f"the source server cannot reach the target as {reach['host']}:{reach['port']} for the reverse "
                f"replication: {str(error).strip().splitlines()[0]}. Set zero_downtime_target_host_from_source/"
                f"_port_from_source to the target's address as the source server sees it and allow it in the "
                f"target's pg_hba.conf, {WITHOUT_IT}"))
        finally:
            with src.cursor() as cur:
                cur.execute("ROLLBACK")

    # -- the cutover's hooks -----------------------------------------------------------------------------------
    def before_freeze(self, _src, _dst, prepared):
        """The publication on the new database (REPLICA IDENTITY FULL where the run set it on the source)."""
        if not self.enabled:
            return
        conn = self.context.connect("target", autocommit=False)
        try:
            existing = self.publication(conn)
            record = existing["record"] if existing else {
                "tool": TOOL_MARK, "run": self.context.run_name, "direction": "reverse",
                "old_source_read_only": prepared["previous_read_only"], "replica_identity_full": {}}
            record["window_hours"] = self.context.reverse_window_hours
            tables = self.replicated_tables.read_tables(conn)
            self.replicated_tables.attach_roots(conn, tables)
            identity_full, _unknown = self.replicated_tables.identity_full_tables(tables)
            with conn.cursor() as cur:
                for table in identity_full:
                    if table["qualname"] not in record["replica_identity_full"]:
                        record["replica_identity_full"][table["qualname"]] = table["replica_identity"]
                        cur.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(
                            sql.Identifier(table["schema"], table["name"])))
                if not existing:
                    published = self.replicated_tables.published_tables(tables)
                    cur.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)")
                                .format(sql.Identifier(self.name), sql.SQL(", ").join(
                                    sql.Identifier(t["schema"], t["name"]) for t in published)))
                self._comment(cur, record)
            conn.commit()
        finally:
            conn.close()

    def at_switch(self, _src, dst, _prepared):
        """Inside the freeze: the new database has caught up, no application write has reached it yet."""
        if not self.enabled:
            return
        timeout_ms = int(self.context.freeze_catchup_seconds * 1000)
        with dst.cursor() as cur:
            cur.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                        "WHERE slot_name = %s AND NOT active", (self.name,))  # an earlier attempt's
            cur.execute("SELECT set_config('statement_timeout', %s, false)", (str(timeout_ms),))
            try:
                cur.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (self.name,))
            except (pg_errors.QueryCanceled, pg_errors.DuplicateObject) as error:
                raise FreezeAbandoned(f"the reverse replication's slot {self.name} could not be made on the target "
                                      f"within {self.context.freeze_catchup_seconds} s "
                                      f"({str(error).strip().splitlines()[0]}): a long transaction on the target "
                                      "holds it back", retry=True) from None
            finally:
                cur.execute("RESET statement_timeout")

    # -- after the switch ------------------------------------------------------------------------------------
    def subscribe(self, since_epoch):
        """The old source's subscription to the new database, from the slot made in the freeze; the window
        starts at the switch. Decided at the cutover: without the publication it prepared, nothing to do.
        Idempotent (a finish run again)."""
        context = self.context
        dst = context.connect("target")
        try:
            publication = self.publication(dst)
        finally:
            dst.close()
        if publication is None:
            return None
        src = context.connect("source")
        try:
            with src.cursor() as cur:
                if not read_subscription(src, self.name):
                    quiet_statement_logging(cur, local=False)
                    try:
                        cur.execute(sql.SQL(
                            "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (copy_data = false, "
                            "create_slot = false, slot_name = {}, enabled = true)").format(
                            sql.Identifier(self.name), sql.Literal(conninfo(context.target_from_source)),
                            sql.Identifier(self.name), sql.Literal(self.name)))
                    except psycopg2.Error as error:
                        raise LogicalError(context.secrets.mask(
                            f"the reverse replication's subscription on the old source failed: {str(error).strip()}. "
                            "The application uses the new database; drop the reverse replication with -e "
                            "zero_downtime_finalize=true, or fix and rerun the playbook")) from None
                    cur.execute("RESET ALL")
                    cur.execute("SET default_transaction_read_only = off")
                    cur.execute(sql.SQL("COMMENT ON SUBSCRIPTION {} IS {}").format(
                        sql.Identifier(self.name), sql.Literal(f"{TOOL_MARK} reverse run {context.run_name}")))
        finally:
            src.close()
        dst = context.connect("target")
        try:
            publication = self.publication(dst)
            if publication is None:
                raise LogicalError(f"the reverse replication's publication {self.name} is gone from the target")
            record = publication["record"]
            if "since_epoch" not in record:
                record.update(since_epoch=since_epoch,
                              until_epoch=since_epoch + float(record.get("window_hours", 0)) * 3600)
                with dst.cursor() as cur:
                    self._comment(cur, record)
        finally:
            dst.close()
        return self.status()

    def status(self):
        """The window as the catalogs have it: {"active": False} when there is no reverse replication."""
        dst = self.context.connect("target")
        try:
            publication = self.publication(dst)
            if publication is None:
                return {"active": False, "name": self.name}
            with dst.cursor() as cur:
                cur.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, active "
                            "FROM pg_replication_slots WHERE slot_name = %s", (self.name,))
                slot = cur.fetchone()
        finally:
            dst.close()
        src = self.context.connect("source")
        try:
            subscription = read_subscription(src, self.name)
            if subscription:
                with src.cursor() as cur:
                    subscription["apply_errors"] = subscription_errors(cur, self.name)[0]
        finally:
            src.close()
        record = publication["record"]
        until = record.get("until_epoch")
        status = {"active": True, "name": self.name, "since_epoch": record.get("since_epoch"), "until_epoch": until,
                  "remaining_seconds": round(until - time.time()) if until else None,
                  "expired": bool(until and time.time() > until), "slot": slot is not None,
                  "lag_bytes": max(0, slot[0] or 0) if slot else None, "slot_active": bool(slot and slot[1]),
                  "subscribed": subscription is not None,
                  "apply_errors": subscription["apply_errors"] if subscription else 0}
        status["line"] = self.describe(status)
        return status

    @staticmethod
    def describe(status):
        if not status["active"]:
            return "No reverse replication: the old source does not follow the new database."
        if not status["subscribed"]:
            return (f"Reverse replication {status['name']} prepared on the new database, not yet subscribed by the old "
                    "source (the run's finish subscribes it)")
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(status["since_epoch"]))
        until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(status["until_epoch"]))
        window = ("the window is OVER: drop it with -e zero_downtime_finalize=true (its slot keeps WAL on the new "
                  "server)" if status["expired"] else f"window until {until}")
        lag = human_bytes(status["lag_bytes"]) if status["lag_bytes"] is not None else "unknown (no slot)"
        return (f"Reverse replication: the old source follows the new database since {since}; lag {lag}"
                f"{'' if status['slot_active'] else ' (NOT connected)'}, {status['apply_errors']} apply errors; "
                f"{window}. playbooks/rollback.yml switches back with every write made since")

    # -- the end ---------------------------------------------------------------------------------------------
    def drop(self):
        """The old source's subscription, the new database's slot and publication, the replica identities
        the run changed there. Idempotent; works when the old source's server cannot reach the new one."""
        done = []
        src = self.context.connect("source")
        try:
            subscription = read_subscription(src, self.name)
            if subscription:
                with src.cursor() as cur:
                    drop_subscription(cur, self.name, subscription)
                done.append(f"reverse subscription {self.name} dropped on the old source")
        finally:
            src.close()
        dst = self.context.connect("target")
        try:
            if self._drop_slot(dst):
                done.append(f"reverse replication slot {self.name} dropped on the new database")
            publication = self.publication(dst)
            if publication:
                with dst.cursor() as cur:
                    cur.execute("SET lock_timeout = '10s'")
                    for qualname, identity in sorted(publication["record"].get("replica_identity_full", {}).items()):
                        clause = {"d": "DEFAULT", "n": "NOTHING", "f": "FULL"}.get(identity)
                        if clause:
                            cur.execute(f"ALTER TABLE {qualname} REPLICA IDENTITY {clause}")
                            done.append(f"replica identity of {qualname} back to {clause} on the new database")
                    cur.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(self.name)))
                done.append(f"reverse publication {self.name} dropped on the new database")
        finally:
            dst.close()
        return done

    def _drop_slot(self, dst):
        deadline = time.monotonic() + 30
        with dst.cursor() as cur:
            while True:
                cur.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (self.name,))
                row = cur.fetchone()
                if row is None:
                    return False
                if row[0] is None:
                    try:
                        cur.execute("SELECT pg_drop_replication_slot(%s)", (self.name,))
                        return True
                    except (pg_errors.ObjectInUse, pg_errors.UndefinedObject):
                        pass
                else:
                    cur.execute("SELECT pg_terminate_backend(%s, 1000)", (row[0],))
                if time.monotonic() > deadline:
                    raise LogicalError(f"the reverse replication slot {self.name} is still in use on the new database")
                time.sleep(0.2)

    def publication(self, conn):
        return read_publication(conn, self.name)

    def _comment(self, cur, record):
        cur.execute(sql.SQL("COMMENT ON PUBLICATION {} IS {}").format(
            sql.Identifier(self.name), sql.Literal(json.dumps(record, sort_keys=True))))
