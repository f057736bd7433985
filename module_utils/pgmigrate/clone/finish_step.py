"""The last steps: materialized views refreshed, what is left analyzed, then the one transaction that
carries the database settings, drops the run's state and creates the event triggers."""


import psycopg2
from psycopg2 import sql

from ..common import database_settings
from . import state
from .data_step import analyze_job
from .errors import MigrationError


class FinishStep:
    def __init__(self, run, post_data):
        self.run = run  # run_context.CopyRun
        self.post_data = post_data  # post_data_step.PostDataStep: the preamble event triggers are created under

    def refresh_materialized_views(self):
        views = [v for v in self.run.catalog["views"] if v["materialized"] and v["populated"]]
        self.run.enter_phase("materialized views", f"refreshing {len(views)}")
        conn = self.run.connect("target")
        for view in views:
            key = f"refresh:{view['qualname']}"
            if key in self.run.done:
                continue
            with conn.cursor() as cur:
                cur.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(sql.SQL(view["qualname"])))
                state.mark_done(cur, self.run.run_id, key)
            conn.commit()
        conn.close()

    def analyze_the_rest(self):
        """What the data phase did not analyze yet (existing mode, or a resumed run)."""
        jobs = [analyze_job(self.run, t["table"]) for t in self.run.plan["tables"]
                if f"analyze:{t['table']}" not in self.run.done]
        if jobs:
            self.run.enter_phase("analyze", f"collecting planner statistics on {len(jobs)} table(s)")
            self.run.run_jobs(jobs)

    def finish_in_target(self):
        """The database's settings, the run's state dropped, then the event triggers created: one
        transaction, the last one. The triggers come after the drop so that the database's own DDL
        triggers (sql_drop, ddl_command_end) never see the tool's DROP SCHEMA."""
        conn = self.run.connect("target")
        try:
            with conn.cursor() as cur:
                if self.run.settings_to_apply:
                    database_settings.apply(cur, self.run.settings_to_apply, self.run.target["dbname"])
                state.drop_state_in(cur)
                # (skipping those a run of an earlier version created and recorded done)
                event_triggers = [e for e in self.run.event_triggers if f"post:{e['key']}" not in self.run.done]
                for entry in event_triggers:
                    self.post_data.apply_settings(cur)
                    try:
                        cur.execute(entry["sql"])
                    except psycopg2.Error as error:
                        raise MigrationError(f"post-data {entry['type']} {entry['name']} failed: {error}") from None
            conn.commit()
            for entry in event_triggers:
                self.run.progress.job_done(entry["key"])
        except database_settings.SettingsError as error:
            conn.rollback()
            raise MigrationError(str(error)) from None
        finally:
            conn.close()
        if self.run.settings_to_apply:
            self.run.event(f"applied {len(self.run.settings_to_apply)} database setting(s) to the target")
