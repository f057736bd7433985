"""Where each tool's time goes: one breakdown into the same phases for every tool that reports them.

pgmigrate: its plays' times (the Ansible timeline) and the engine's own phase seconds (summary.json's
"phases"); pgcopydb: its closing step table. pg_dump | pg_restore is one pipe and has no breakdown.
"other" is the rest of the wall time: Ansible's start-up and plays around the modules, or pgcopydb's own.
"""

import re
import statistics

PHASES = ("assess", "backup", "extensions", "schema", "data+indexes", "constraints", "sequences+finish",
          "validation", "other")

# The engine's phases (clone/progress.py) in the breakdown's terms. "setup" is the snapshot and the catalog
# read, "starting" the target's preparation: pgcopydb counts its catalog queries with the schema too.
ENGINE_PHASES = {"setup": "schema", "starting": "schema", "schema": "schema", "prepare": "schema",
                 "data": "data+indexes", "post-data": "constraints", "sequences": "sequences+finish",
                 "materialized views": "sequences+finish", "analyze": "sequences+finish"}

# The plays of migrate.yml by their step number, (k/10); the copy play's time is the engine's phases, and
# what the play spends around the engine is "other".
PLAY_PHASES = {"1": "assess", "2": "backup", "3": "extensions", "6": "validation"}

# pgcopydb's steps (its summary table), wall-clock ones only: the "(cumulative)" lines overlap them.
PGCOPYDB_STEPS = {"Catalog Queries": "schema", "Dump Schema": "schema", "Prepare Schema": "schema",
                  "COPY, INDEX, CONSTRAINTS, VACUUM": "data+indexes", "Reset Sequences": "sequences+finish",
                  "Finalize Schema": "sequences+finish"}

_PLAY_NUMBER = re.compile(r"^\((\d+)/\d+\)")
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s(\d*))?(?:(\d+)ms)?")


def pgmigrate_phases(details: dict, seconds: float) -> dict:
    """{phase: seconds} of one pgmigrate run from benchmark.pgmigrate_details' record."""
    phases = dict.fromkeys(PHASES, 0.0)
    for play in details.get("plays", []):
        match = _PLAY_NUMBER.match(play["name"])
        number = match.group(1) if match else None
        if number in PLAY_PHASES:
            phases[PLAY_PHASES[number]] += play["seconds"]
    engine = details.get("engine_phases") or {}
    engine_total = details.get("engine_seconds") or 0.0
    for name, spent in engine.items():
        phases[ENGINE_PHASES.get(name, "sequences+finish")] += spent
    # The engine's last transaction (settings, state dropped) follows its last phase.
    phases["sequences+finish"] += max(0.0, engine_total - sum(engine.values()))
    phases["other"] = max(0.0, seconds - sum(phases.values()))
    return {name: round(value, 2) for name, value in phases.items()}


def parse_pgcopydb_duration(text: str) -> float | None:
    """pgcopydb's durations: 94ms, 4s408 (4.408 s), 1m22s, 2h3m; None for anything else."""
    match = _DURATION.fullmatch(text.strip())
    if not match or not any(match.groups()):
        return None
    hours, minutes, whole, fraction, millis = match.groups()
    seconds = int(hours or 0) * 3600 + int(minutes or 0) * 60 + int(whole or 0) + int(millis or 0) / 1000
    return seconds + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def pgcopydb_phases(summary_lines: list[str], seconds: float) -> dict:
    """{phase: seconds} of one pgcopydb run from its closing step table."""
    phases = dict.fromkeys(PHASES, 0.0)
    for line in summary_lines:
        for step, phase in PGCOPYDB_STEPS.items():
            if line.strip().startswith(step):
                columns = re.split(r"\s{2,}", line.strip())
                duration = next((d for d in map(parse_pgcopydb_duration, columns[2:3]) if d is not None), None)
                if duration is not None:
                    phases[phase] += duration
    phases["other"] = max(0.0, seconds - sum(phases.values()))
    return {name: round(value, 2) for name, value in phases.items()}


def median_phases(runs: list[dict], tools: list[str]) -> list[dict]:
    """Per tool, the median of each phase over its ok runs that have a breakdown."""
    rows = []
    for tool in tools:
        broken_down = [r["phases"] for r in runs if r["tool"] == tool and r["status"] == "ok" and r.get("phases")]
        if broken_down:
            rows.append({"tool": tool, "runs": len(broken_down),
                         **{p: round(statistics.median(b[p] for b in broken_down), 2) for p in PHASES}})
    return rows


def print_phases(rows: list[dict], labels: dict) -> None:
    if not rows:
        return
    widths = {p: max(8, len(p)) + 2 for p in PHASES}
    header = f"{'phase (median s)':<20}" + "".join(f"{p:>{widths[p]}}" for p in PHASES)
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{labels[row['tool']]:<20}" + "".join(f"{row[p]:>{widths[p]}.1f}" for p in PHASES))
