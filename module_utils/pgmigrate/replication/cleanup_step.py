"""5. finish and abort: what the run created removed, what it changed on the source put back."""

import os
import time

import psycopg2
from psycopg2 import errors as pg_errors
from psycopg2 import sql

from ..common.connection import describe
from .errors import LogicalError
from .replication_objects import drop_subscription
from .run_state import now, write_json_atomically
from .switch_file import switch_description


class CleanupStep:
    """What the run created removed and what it changed on the source put back, after the switch (finish)
    or before it (abort)."""

    def __init__(self, context, replication_objects, source_read_only, reverse, target_hold):
        self.context = context
        self.replication_objects = replication_objects
        self.source_read_only = source_read_only
        self.reverse = reverse  # reverse_replication.ReverseReplication: subscribed at the finish, dropped by abort
        self.target_hold = target_hold  # target_hold.TargetHold: released by abort

    def finish(self):
        """After the switch: replication objects dropped, replica identities reverted, report written."""
        context = self.context
        state = context.state
        if not state.data.get("switched"):
            raise LogicalError("the switch has not happened: finish runs after the cutover (to stop before the "
                               "switch use -e zero_downtime_abort=true)")
        cleanup = self._drop_replication(revert_read_only=False)
        freeze = dict(state.data.get("freeze", {}))
        reverse = self.reverse.subscribe(freeze.get("released_epoch") or time.time())
        if freeze.get("switch") == "external" and "switched_after_seconds" not in freeze:
            # The application hosts' play switched after the freeze: writes failed until it ended.
            freeze["switched_after_seconds"] = round(time.time() - freeze["released_epoch"], 3)
            freeze["freeze_window_seconds"] = round(freeze["freeze_window_seconds"]
                                                    + freeze["switched_after_seconds"], 3)
            state.update(freeze=freeze)
        report = {
            "run": context.run_name, "status": "switched", "source": describe(context.source),
            "target": describe(context.target), "tables": len(state.data.get("tables", {})),
            "table_names": sorted(state.data.get("tables", {})),
            "schema_seconds": state.data.get("schema_seconds"),
            "initial_sync_seconds": state.data.get("initial_sync_seconds"),
            "max_lag_bytes": state.data.get("max_lag_bytes", 0),
            "freeze_window_seconds": freeze.get("freeze_window_seconds"),
            "freeze": freeze, "sequences_synced": freeze.get("sequences_synced"),
            "materialized_views_refreshed": state.data.get("materialized_views_refreshed", []),
            "switched_to": switch_description(context.target), "switch_file": context.switch_file,
            "cleanup": cleanup, "finished_at": now(), "reverse_replication": reverse,
            "source_left": ("a replica of the new database (reverse replication) until "
                            + time.strftime("%Y-%m-%d %H:%M UTC, ", time.gmtime(reverse["until_epoch"]))
                            if reverse else "")
            + "read-only for new sessions (default_transaction_read_only = on); "
            f"ALTER DATABASE {context.source['dbname']} RESET default_transaction_read_only to reuse it",
        }
        report_file = os.path.join(state.directory, "report.json")
        write_json_atomically(report_file, report, mode=0o600)
        state.update(finished=True, report_file=report_file)
        report["report_file"] = report_file
        return report

    def abort_check(self):
        """Raises when an abort would be refused (the switch was made); changes nothing."""
        state = self.context.state
        if state.data.get("switched") and not state.data.get("finished"):
            raise LogicalError("the switch was made: the application writes to the target now, so going back "
                               "would lose writes. Run the playbook again without zero_downtime_abort to finish")
        return {"switched": bool(state.data.get("switched"))}

    def abort(self):
        """Stop before the switch: the source as it was, the replication objects gone. Idempotent."""
        state = self.context.state
        self.abort_check()
        cleanup = self._drop_replication(revert_read_only=True)
        if not state.data.get("switched"):
            # A freeze given up may have prepared the reverse replication on the target.
            cleanup += self.reverse.drop()
            state.update(aborted_at=now(), cleanup=cleanup)
        return cleanup

    def _drop_replication(self, revert_read_only):
        """Subscription (its slot detached first, so this works even when the target cannot reach the
        source), every slot of the run, the publication, the replica identity changes."""
        done = []
        subscription_oid = self.context.state.data.get("subscription_oid")
        if self.context.check_mode:
            return ["nothing (check mode)"]
        dst = self.context.connect("target")
        try:
            subscription = self.replication_objects.subscription(dst)
            if subscription:
                subscription_oid = subscription["oid"]
                with dst.cursor() as cur:
                    drop_subscription(cur, self.context.name, subscription)
                done.append(f"subscription {self.context.name} dropped on the target")
        finally:
            dst.close()
        src = self.context.connect("source")
        try:
            publication = self.replication_objects.publication(src)
            record = publication["record"] if publication else {}
            subscription_oid = subscription_oid or record.get("subscription_oid")
            for slot in self._drop_slots(src, subscription_oid):
                done.append(f"replication slot {slot} dropped on the source")
            if revert_read_only:
                done += self.target_hold.release_after_abort(record)
            with src.cursor() as cur:
                if revert_read_only and record.get("read_only_set"):
                    self.source_read_only.restore_setting(cur, record.get("previous_read_only"))
                    done.append("the source database is writable again (default_transaction_read_only restored)")
                cur.execute("SET lock_timeout = '10s'")
                for qualname, identity in sorted(record.get("replica_identity_full", {}).items()):
                    clause = {"d": "DEFAULT", "n": "NOTHING", "f": "FULL"}.get(identity)
                    if clause is None:
                        continue  # USING INDEX: never changed by the run (such tables have a usable identity)
                    try:
                        cur.execute(f"ALTER TABLE {qualname} REPLICA IDENTITY {clause}")
                        done.append(f"replica identity of {qualname} back to {clause}")
                    except psycopg2.Error as error:
                        done.append(f"WARNING: replica identity of {qualname} not reverted: "
                                    f"{str(error).strip().splitlines()[0]}")
                if publication:
                    cur.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(self.context.name)))
                    done.append(f"publication {self.context.name} dropped on the source")
        finally:
            src.close()
        return done or ["nothing to clean up: no publication, slot or subscription of this run"]

    def _drop_slots(self, src, subscription_oid):
        dropped = []
        deadline = time.monotonic() + 30
        while True:
            slots = self.replication_objects.slots(src, subscription_oid)
            if not slots:
                return dropped
            with src.cursor() as cur:
                for slot in slots:
                    if slot["active"]:
                        # The WAL sender of a subscription that is going away: it holds the slot a moment longer.
                        cur.execute("SELECT pg_terminate_backend(%s, 1000)", (slot["pid"],))
                        continue
                    try:
                        cur.execute("SELECT pg_drop_replication_slot(%s)", (slot["name"],))
                        dropped.append(slot["name"])
                    except (pg_errors.ObjectInUse, pg_errors.UndefinedObject):
                        pass
            if time.monotonic() > deadline:
                still_there = self.replication_objects.slots(src, subscription_oid)
                raise LogicalError("replication slots still in use on the source: "
                                   + ", ".join(s["name"] for s in still_there))
            time.sleep(0.2)
