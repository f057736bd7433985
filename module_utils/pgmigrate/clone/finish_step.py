"""The last steps: materialized views refreshed, what is left analyzed, then the one transaction that
carries the database settings, drops the run's state and creates the event triggers."""


import psycopg2
from psycopg2 import sql

from ..common import database_settings
from . import state
from .errors import MigrationError


class FinishStep:
    """A step of copier.Engine: the run's context (options, plan, state, progress) is the engine's."""

    def _phase_materialized_views(self):
        views = [v for v in self.catalog["views"] if v["materialized"] and v["populated"]]
        self._enter_phase("materialized views", f"refreshing {len(views)}")
        conn = self._connect("target")
        for view in views:
            key = f"refresh:{view['qualname']}"
            if key in self.done:
                continue
            with conn.cursor() as cur:
                cur.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(sql.SQL(view["qualname"])))
                state.mark_done(cur, self.run_id, key)
            conn.commit()
        conn.close()

    def _phase_analyze(self):
        """What the data phase did not analyze yet (existing mode, or a resumed run)."""
        jobs = [self._analyze_job(t["table"]) for t in self.plan["tables"] if f"analyze:{t['table']}" not in self.done]
        if jobs:
            self._enter_phase("analyze", f"collecting planner statistics on {len(jobs)} table(s)")
            self._run_jobs(jobs)

    def _finish_in_target(self):
        """The database's settings, the run's state dropped, then the event triggers created: one
        transaction, the last one. The triggers come after the drop so that the database's own DDL
        triggers (sql_drop, ddl_command_end) never see the tool's DROP SCHEMA."""
        conn = self._connect("target")
        try:
            with conn.cursor() as cur:
                if self.settings_to_apply:
                    database_settings.apply(cur, self.settings_to_apply, self.target["dbname"])
                state.drop_state_in(cur)
                # (skipping those a run of an earlier version created and recorded done)
                event_triggers = [e for e in self.event_triggers if f"post:{e['key']}" not in self.done]
                for entry in event_triggers:
                    self._post_data_settings(cur)
                    try:
                        cur.execute(entry["sql"])
                    except psycopg2.Error as error:
                        raise MigrationError(f"post-data {entry['type']} {entry['name']} failed: {error}") from None
            conn.commit()
            for entry in event_triggers:
                self.progress.job_done(entry["key"])
        except database_settings.SettingsError as error:
            conn.rollback()
            raise MigrationError(str(error)) from None
        finally:
            conn.close()
        if self.settings_to_apply:
            self._event(f"applied {len(self.settings_to_apply)} database setting(s) to the target")
