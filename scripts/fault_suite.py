#!/usr/bin/env python3
"""The fault and bad-input suite (issue 8): runs the tests marked `faults` against real servers and
prints what they proved: trials, faults survived, bad inputs tried and cleared within seconds, rows lost.

    scripts/fault_suite.py            # all of it: 12 kill -9 moments, the slow tests included
    scripts/fault_suite.py --fast     # the CI part: 3 kill -9 moments, slow tests left out
    scripts/fault_suite.py --kills 20 --seed 42 -- -x   # more moments, a fixed seed, extra pytest arguments

Every figure comes from the tests that ran: each test appends its trials to a JSON-lines file
($PGM_FAULT_RECORDS) and pytest's own verdicts (junit XML) say which of them passed; nothing is
counted from a test that failed or did not run. The figures are written to
benchmarks/results/faults-<time>.json; the exit status is 0 only if every test passed and no row was lost.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

PROJECT_DIR = pathlib.Path(__file__).resolve().parent.parent
CLEAR_WITHIN_SECONDS = 30


def pytest_verdicts(junit_path):
    """{nodeid: passed | failed | skipped} from pytest's junit XML."""
    verdicts = {}
    for case in ET.parse(junit_path).getroot().iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        nodeid = classname.replace(".", "/") + ".py::" + name
        if case.find("failure") is not None or case.find("error") is not None:
            verdicts[nodeid] = "failed"
        elif case.find("skipped") is not None:
            verdicts[nodeid] = "skipped"
        else:
            verdicts[nodeid] = "passed"
    return verdicts


def figures(records, verdicts):
    """The suite's figures: a trial counts as survived only if its record says so and its test passed."""

    def ok(record):
        return verdicts.get(record["nodeid"]) == "passed" and record.get("survived", True)

    crashes = [r for r in records if r["kind"] == "crash"]
    faults = [r for r in records if r["kind"] == "fault"]
    bad = [r for r in records if r["kind"] == "bad_input"]
    bad_clear = [r for r in bad if verdicts.get(r["nodeid"]) == "passed" and r.get("clear")
                 and r["seconds"] < CLEAR_WITHIN_SECONDS]
    secrets = [r for r in records if r["kind"] == "secrets"]
    tls = [r for r in records if r["kind"] == "tls"]
    least = [r for r in records if r["kind"] == "least_privilege"]
    counts = {v: sum(1 for x in verdicts.values() if x == v) for v in ("passed", "failed", "skipped")}
    return {
        "tests": counts,
        "kill9_trials": len(crashes),
        "kill9_survived": sum(1 for r in crashes if ok(r)),
        "kill9_phases": sorted({r.get("phase") for r in crashes if r.get("phase")}),
        "faults_tried": len(faults),
        "faults_survived": sum(1 for r in faults if ok(r)),
        "faults": [{"name": r["name"], "outcome": r.get("outcome"), "survived": ok(r)} for r in faults],
        "trials": len(crashes) + len(faults),
        "survived": sum(1 for r in crashes + faults if ok(r)),
        "bad_inputs_tried": len(bad),
        "bad_inputs_clear_within_seconds": len(bad_clear),
        "bad_input_slowest_seconds": max((r["seconds"] for r in bad), default=None),
        "bad_inputs": [{"name": r["name"], "seconds": r["seconds"], "clear": r.get("clear"),
                        "verdict": verdicts.get(r["nodeid"]), "note": r.get("note")} for r in bad],
        "rows_lost": sum(r.get("rows_lost", 0) for r in records),
        "secret_leaks": sum(r.get("leaks", 0) for r in secrets) if secrets else None,
        "command_line_samples": sum(r.get("samples", 0) for r in secrets),
        "secrets_checked": all(ok(r) for r in secrets) if secrets else None,
        "tls_verify_full": all(ok(r) for r in tls) if tls else None,
        "least_privilege": all(ok(r) for r in least) if least else None,
    }


def table(result):
    f = result["figures"]
    yes = {True: "yes", False: "NO", None: "not run"}
    rows = [
        ("tests passed / failed / skipped", f"{f['tests']['passed']} / {f['tests']['failed']} / "
                                            f"{f['tests']['skipped']}"),
        ("trials (kill -9 + server faults)", f"{f['trials']}"),
        ("  kill -9 at random moments, survived", f"{f['kill9_survived']} of {f['kill9_trials']} "
                                                  f"(phases: {', '.join(f['kill9_phases']) or '-'})"),
        ("  server faults survived", f"{f['faults_survived']} of {f['faults_tried']}"),
    ]
    rows += [(f"    {x['name']}", f"{x['outcome']}, {'survived' if x['survived'] else 'FAILED'}") for x in f["faults"]]
    rows += [
        ("bad inputs tried", f"{f['bad_inputs_tried']}"),
        (f"  clear error within {CLEAR_WITHIN_SECONDS} s, nothing changed",
         f"{f['bad_inputs_clear_within_seconds']} (slowest {f['bad_input_slowest_seconds']} s)"),
    ]
    rows += [(f"    {x['name']}", f"{x['seconds']} s, {x['verdict']}" + (" (engine check; see note)"
                                                                          if x.get("note") else ""))
             for x in f["bad_inputs"]]
    rows += [
        ("rows lost", f"{f['rows_lost']}"),
        ("secrets leaked (output, artifacts, logs, argv)",
         "not run" if f["secret_leaks"] is None else f"{f['secret_leaks']} ({f['command_line_samples']} ps samples)"),
        ("TLS verify-full works, wrong CA refused", yes[f["tls_verify_full"]]),
        ("least-privilege roles migrate", yes[f["least_privilege"]]),
        ("duration", f"{result['seconds']} s ({result['mode']})"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'figure'.ljust(width)} | value", f"{'-' * width}-|-{'-' * 30}"]
    lines += [f"{name.ljust(width)} | {value}" for name, value in rows]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="the CI part: 3 kill -9 moments, no slow tests")
    parser.add_argument("--kills", type=int, help="kill -9 moments (default 12, or 3 with --fast)")
    parser.add_argument("--seed", type=int, help="seed of the random kill moments")
    parser.add_argument("--results-dir", default=str(PROJECT_DIR / "benchmarks" / "results"))
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()

    kills = args.kills or (3 if args.fast else 12)
    mode = f"{'fast' if args.fast else 'full'}, {kills} kill -9 moments"
    work = pathlib.Path(tempfile.mkdtemp(prefix="pgm-fault-suite-"))
    records_path, junit_path = work / "records.jsonl", work / "junit.xml"
    env = {**os.environ, "PGM_FAULT_RECORDS": str(records_path), "PGM_FAULT_KILLS": str(kills)}
    if args.seed is not None:
        env["PGM_FAULT_SEED"] = str(args.seed)
    marker = "faults and not slow" if args.fast else "faults"
    command = [str(PROJECT_DIR / ".venv" / "bin" / "pytest"), "-m", marker, f"--junitxml={junit_path}",
               "-p", "no:cacheprovider", *args.pytest_args]
    print(f"[fault-suite] {mode}: {' '.join(command[1:])}", flush=True)
    started = time.monotonic()
    returncode = subprocess.call(command, cwd=PROJECT_DIR, env=env)
    seconds = round(time.monotonic() - started, 1)
    if not junit_path.exists():
        print("[fault-suite] pytest wrote no results", file=sys.stderr)
        return returncode or 1
    records = [json.loads(line) for line in records_path.read_text().splitlines()] if records_path.exists() else []
    result = {"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "mode": mode, "seconds": seconds,
              "pytest_returncode": returncode, "figures": figures(records, pytest_verdicts(junit_path)),
              "records": records}
    results_dir = pathlib.Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / f"faults-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=1, default=str))
    print()
    print(table(result))
    print(f"\n[fault-suite] figures written to {out}")
    failed = returncode != 0 or result["figures"]["rows_lost"] != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
