"""The clone benchmark's phase breakdown: pgcopydb's durations read right, every second of a run accounted."""

import sys

from conftest import PROJECT_DIR

sys.path.insert(0, str(PROJECT_DIR / "benchmarks"))

from phases import PHASES, parse_pgcopydb_duration, pgcopydb_phases, pgmigrate_phases  # noqa: E402

# pgcopydb 0.10's closing table, as benchmark.pgcopydb_summary keeps it (its log prefix removed).
PGCOPYDB_TABLE = """\
                                          Step   Connection    Duration    Transfer   Concurrency
 --------------------------------------------   ----------  ----------  ----------  ------------
   Catalog Queries (table ordering, filtering)       source       4s408                         1
                                   Dump Schema       source       1s201                         1
                                Prepare Schema       target       4s596                         1
      COPY, INDEX, CONSTRAINTS, VACUUM (wall clock)         both      1m22s                     4 + 8
                             COPY (cumulative)       both       2m43s     1334 MB         4
                    CREATE INDEX (cumulative)       target      1m23s                         8
                               Reset Sequences         both        94ms                         1
                    Large Objects (cumulative)       (null)         0ms                         0
                               Finalize Schema         both      1s321                         4
 --------------------------------------------   ----------  ----------  ----------  ------------
                     Total Wall Clock Duration         both      1m33s                     4 + 8
""".splitlines()


def test_pgcopydb_durations_in_every_unit():
    assert parse_pgcopydb_duration("94ms") == 0.094
    assert parse_pgcopydb_duration("4s408") == 4.408
    assert parse_pgcopydb_duration("15s012") == 15.012
    assert parse_pgcopydb_duration("1m22s") == 82
    assert parse_pgcopydb_duration("2h3m") == 7380
    assert parse_pgcopydb_duration("both") is None
    assert parse_pgcopydb_duration("") is None


def test_pgcopydb_wall_clock_steps_only_and_the_rest_as_other():
    phases = pgcopydb_phases(PGCOPYDB_TABLE, 95.0)
    assert phases["schema"] == round(4.408 + 1.201 + 4.596, 2)
    assert phases["data+indexes"] == 82  # the cumulative COPY and CREATE INDEX lines overlap it: left out
    assert phases["sequences+finish"] == round(0.094 + 1.321, 2)
    assert abs(sum(phases.values()) - 95.0) < 0.03  # each phase rounded to 0.01 s


def test_pgmigrate_plays_and_engine_phases_add_up_to_the_wall_time():
    details = {
        "plays": [{"name": "[Pre-Check] The settings", "seconds": 0.4},
                  {"name": "(1/10) ASSESS: Read the source catalog", "seconds": 2.0},
                  {"name": "(2/10) BACKUP: Back up", "seconds": 5.0},
                  {"name": "(3/10) PREPARE TARGET: Extensions", "seconds": 0.5},
                  {"name": "(5/10) COPY: Copy", "seconds": 12.0},
                  {"name": "(6/10) VALIDATE: Prove", "seconds": 3.0}],
        "engine_seconds": 11.0,
        "engine_phases": {"setup": 1.0, "starting": 0.5, "schema": 3.0, "data": 4.0, "post-data": 1.0,
                          "sequences": 0.5, "materialized views": 0.25},
    }
    phases = pgmigrate_phases(details, 25.0)
    assert set(phases) == set(PHASES)
    assert (phases["assess"], phases["backup"], phases["extensions"], phases["validation"]) == (2.0, 5.0, 0.5, 3.0)
    assert phases["schema"] == 4.5 and phases["data+indexes"] == 4.0 and phases["constraints"] == 1.0
    assert phases["sequences+finish"] == 1.5  # its phases and the engine's last transaction after them
    assert phases["other"] == 3.5  # Ansible: 25 s less everything above
    assert abs(sum(phases.values()) - 25.0) < 0.03
