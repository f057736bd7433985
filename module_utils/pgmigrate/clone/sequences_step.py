"""The sequences: set in one statement, then checked against the columns they feed."""

import os

import psycopg2

from ..common import catalog as catalog_module
from ..common import column_extremes
from ..common.sequences import set_sequence_states
from . import state

# Sequence problems shown as warnings; any more are listed in the run's sequence_problems.txt.
SEQUENCE_WARNINGS_SHOWN = 10


class SequencesStep:
    def __init__(self, run):
        self.run = run  # run_context.CopyRun

    def set_states(self):
        self.run.enter_phase("sequences", f"{len(self.run.catalog['sequences'])} sequences")
        if "sequences" in self.run.done:
            return
        conn = self.run.connect("target")
        with conn.cursor() as cur:
            set_sequence_states(cur, [(seq["qualname"], seq["last_value"], seq["is_called"])
                                      for seq in self.run.catalog["sequences"]])
            state.mark_done(cur, self.run.run_id, "sequences")
        conn.commit()
        conn.close()

    def check(self):
        """Every sequence must not hand out a value already used by a column it feeds."""
        conn = self.run.connect("target")
        sequences = [dict(seq) for seq in self.run.catalog["sequences"]]
        with conn.cursor() as cur:
            catalog_module.read_sequence_states(cur, sequences)

            def query(_feeds, statement):
                try:
                    cur.execute(statement)
                    return cur.fetchall()
                except psycopg2.Error:
                    conn.rollback()  # the next statement (each column alone) in a transaction of its own
                    raise
            feeds = [(f["table"], f["column"], True) for seq in sequences if seq["increment"] > 0 for f in seq["feeds"]]
            sizes = {t["qualname"]: t["table_bytes"] for t in self.run.catalog["tables"]}
            maxima = column_extremes.read(feeds, sizes, query)
        conn.rollback()
        conn.close()
        problems = []
        for seq, source in zip(sequences, self.run.catalog["sequences"], strict=True):
            last_value, is_called = seq["last_value"], seq["is_called"]
            if (last_value, is_called) != (source["last_value"], source["is_called"]):
                problems.append(f"{seq['qualname']} is ({last_value}, {is_called}) on the target but "
                                f"({source['last_value']}, {source['is_called']}) on the source")
            next_value = last_value + seq["increment"] if is_called else last_value
            for feed in seq["feeds"] if seq["increment"] > 0 else ():
                maximum = maxima[(feed["table"], feed["column"], True)]
                if maximum is not None and next_value <= maximum:
                    problems.append(
                        f"{seq['qualname']} would next give {next_value} but {feed['table']}.{feed['column']} "
                        f"already holds {maximum} (as on the source): fix with SELECT setval('{seq['qualname']}', "
                        f"{maximum})")
        self.run.warnings.extend(self._sequence_warnings(problems))

    def _sequence_warnings(self, problems):
        """The first SEQUENCE_WARNINGS_SHOWN problems as warnings; all of them, when there are more, in the
        run's sequence_problems.txt (a database of thousands of tables would print thousands of lines)."""
        if len(problems) <= SEQUENCE_WARNINGS_SHOWN:
            return problems
        path = os.path.join(self.run.run_dir, "sequence_problems.txt")
        with open(path, "w") as handle:
            handle.write("\n".join(problems) + "\n")
        return problems[:SEQUENCE_WARNINGS_SHOWN] + [
            f"... and {len(problems) - SEQUENCE_WARNINGS_SHOWN} more sequence problem(s): all "
            f"{len(problems)}, each with its fix, in {path}"]
