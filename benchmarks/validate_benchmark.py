#!/usr/bin/env python3
"""Benchmark: full validation of the CDP database against the time its copy takes, and the cost
of pinpointing differing rows in the largest table against plain count(*) scans.

    .venv/bin/python benchmarks/validate_benchmark.py --scale 10 --rounds 3

Uses the embedded servers (scripts/embedded_pg.sh): the source database cdp_bench_validation (loaded with the
CDP generator at --scale if needed) is copied by the engine into bench_validate on the target.
Prints a table and writes benchmarks/results/validate-<timestamp>.json.
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

PROJECT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT / "module_utils"))
sys.path.insert(0, str(PROJECT))

import psycopg2  # noqa: E402
from psycopg2 import sql  # noqa: E402

from cdp_reference import generate  # noqa: E402
from pgmigrate.clone import copier  # noqa: E402
from pgmigrate.validation.validate import Validator  # noqa: E402


def server(name, port):
    secret = PROJECT / ".embedded" / "secrets" / f"{name}.password"
    return {"host": "127.0.0.1", "port": port, "user": "postgres", "password": secret.read_text().strip(),
            "dbname": "postgres"}


def admin(params, statement):
    conn = psycopg2.connect(**params)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(statement)
    conn.close()


def timed(function, *args, **kwargs):
    started = time.monotonic()
    result = function(*args, **kwargs)
    return time.monotonic() - started, result


def count_rows(params, table):
    conn = psycopg2.connect(**params)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(table)))
        count = cur.fetchone()[0]
    conn.close()
    return count


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    source_server, target_server = server("source", 55432), server("target", 55433)
    src = {**source_server, "dbname": "cdp_bench_validation"}
    dst = {**target_server, "dbname": "bench_validate"}
    conn = psycopg2.connect(**source_server)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = 'cdp_bench_validation'")
        if not cur.fetchone():
            cur.execute("CREATE DATABASE cdp_bench_validation")
    conn.close()
    expected = generate.expected_row_counts(args.scale)
    probe = psycopg2.connect(**src)
    with probe.cursor() as cur:
        cur.execute("SELECT to_regclass('public.report_executions') IS NOT NULL")
        loaded = cur.fetchone()[0]
        if loaded:
            cur.execute("SELECT count(*) FROM report_executions")
            loaded = cur.fetchone()[0] == expected["report_executions"]
    probe.close()
    if not loaded:
        print(f"loading the CDP database at scale {args.scale} into cdp_bench_validation ...", flush=True)
        generate.load(src, args.scale, drop_existing=True)
    conn = psycopg2.connect(**src)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_database_size(current_database())")
        database_bytes = cur.fetchone()[0]
        cur.execute("SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables "
                    "ORDER BY pg_table_size(relid) DESC LIMIT 1")
        largest = cur.fetchone()[0]
    conn.close()

    runs = []
    for round_number in range(1, args.rounds + 1):
        admin(target_server, "DROP DATABASE IF EXISTS bench_validate WITH (FORCE)")
        admin(target_server, "CREATE DATABASE bench_validate")
        with tempfile.TemporaryDirectory() as artifacts:
            copy_seconds, _ = timed(copier.migrate, src, dst, artifacts_dir=artifacts, workers=args.workers)
        validate_seconds, result = timed(Validator(src, dst, workers=args.workers).run)
        assert result["status"] == "pass", [c["summary"] for c in result["checks"] if c["status"] == "fail"]
        count_seconds, _ = timed(lambda: (count_rows(src, largest), count_rows(dst, largest)))
        # one changed row in the largest table, then pinpoint it
        conn = psycopg2.connect(**dst)
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT id FROM {} ORDER BY id LIMIT 1 OFFSET 1000").format(sql.SQL(largest)))
            victim = cur.fetchone()[0]
            cur.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 1 AND "
                        "atttypid = 'timestamptz'::regtype AND NOT attisdropped LIMIT 1", (largest,))
            column = cur.fetchone()[0]
            cur.execute(sql.SQL("UPDATE {} SET {} = {} + interval '1 second' WHERE id = %s").format(
                sql.SQL(largest), sql.Identifier(column), sql.Identifier(column)), (victim,))
        conn.commit()
        conn.close()
        validator = Validator(src, dst, workers=args.workers, checks=("content",))
        context, rows = validator.context, validator.row_checks
        validator.catalogs.read_catalogs()
        table = next(t for t in context.src_catalog["tables"] if t["qualname"] == largest)
        s = rows.digest(context.src_pool, table)
        d = rows.digest(context.dst_pool, table)
        pinpoint_seconds, item = timed(rows.differing_rows.pinpoint, table, s, d)
        context.close()
        assert item["changed"] == [[str(victim)]], item
        runs.append({"round": round_number, "copy_seconds": round(copy_seconds, 2),
                     "validate_seconds": round(validate_seconds, 2),
                     "validate_to_copy": round(validate_seconds / copy_seconds, 3),
                     "count_two_scans_seconds": round(count_seconds, 2),
                     "pinpoint_seconds": round(pinpoint_seconds, 2),
                     "pinpoint_to_two_counts": round(pinpoint_seconds / count_seconds, 2),
                     "checks": {c["name"]: c["seconds"] for c in result["checks"]}})
        print(f"round {round_number}: copy {copy_seconds:.1f}s, validation {validate_seconds:.1f}s, "
              f"two count(*) {count_seconds:.2f}s, pinpoint {pinpoint_seconds:.2f}s", flush=True)

    def median(key):
        return round(statistics.median(r[key] for r in runs), 3)

    summary = {"scale": args.scale, "database_bytes": database_bytes, "largest_table": largest,
               "nproc": os.cpu_count(), "workers": args.workers, "rounds": runs,
               "median": {k: median(k) for k in ("copy_seconds", "validate_seconds", "validate_to_copy",
                                                 "count_two_scans_seconds", "pinpoint_seconds",
                                                 "pinpoint_to_two_counts")}}
    print()
    print(f"CDP database {database_bytes / 1024 ** 2:.0f} MB (scale {args.scale}), median of {args.rounds}:")
    print(f"{'measure':44} {'seconds':>9}")
    for key, label in (("copy_seconds", "copy (engine, schema+data+indexes+FKs)"),
                       ("validate_seconds", "full validation (schema, counts, digests, FKs, seqs)"),
                       ("count_two_scans_seconds", f"count(*) of {largest} on both sides"),
                       ("pinpoint_seconds", f"pinpoint 1 changed row in {largest}")):
        print(f"{label:44} {summary['median'][key]:9.2f}")
    print(f"validation / copy = {summary['median']['validate_to_copy']:.2f} (target <= 0.5); "
          f"pinpoint / two counts = {summary['median']['pinpoint_to_two_counts']:.2f}")
    out = PROJECT / "benchmarks" / "results" / f"validate-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()
