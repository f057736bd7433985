"""Row counts and content: every table's digest, by buckets where they differ; the differing rows are then
named by differing_rows.DifferingRows."""

import time
from concurrent.futures import ThreadPoolExecutor

from ..common.batching import consecutive_groups
from .checks import ValidationError, _check, _finish
from .digests import (
    DIGEST_BATCH_BYTES,
    DIGEST_BATCH_TABLES,
    DIGEST_SMALL_TABLE_BYTES,
    TYPES_QUERY,
    Column,
    table_key,
)


class RowChecks:
    def __init__(self, run, differing_rows):
        self.run = run  # context.ValidationRun
        self.differing_rows = differing_rows  # differing_rows.DifferingRows: a mismatched table down to its rows

    def digest(self, pool, table):
        """Count and digest of a table in one scan, grouped by key bucket so that a mismatch can be
        pinpointed without hashing the table again."""
        return self.digest_batch(pool, [table])[0]

    def digest_batch(self, pool, tables):
        """digest() of several tables in one statement (UNION ALL of one grouped scan per table). A batch that
        fails is digested again table by table, so the error names its table."""
        names = [table["qualname"] for table in tables]
        what = f"digesting {names[0]}" + (f" and {len(names) - 1} other table(s)" if len(names) > 1 else "")
        try:
            with pool.reading(what, names) as conn, conn.cursor() as cur:
                cur.execute(TYPES_QUERY, (names,))
                columns = {i: [] for i in range(1, len(names) + 1)}
                for row in cur.fetchall():
                    columns[row[0]].append(Column(*row[1:]))
                plans, statements = [], []
                for i, table in enumerate(tables, 1):
                    key = table_key(table)
                    plans.append((columns[i], key))
                    statements.append(
                        self.run.digest_statements.statement(conn, i, table["qualname"], columns[i], key))
                # At most BUCKETS groups, but the planner counts one per key: it sorts every row (spilling the
                # rows' hash input to disk) where hashing into the buckets needs under a megabyte. Local to
                # this transaction, which reading() rolls back.
                cur.execute("SET LOCAL enable_sort = off")
                t0 = time.monotonic()
                cur.execute(" UNION ALL ".join(statements))
                grouped = {i: {} for i in range(1, len(names) + 1)}
                for i, b, c, h in cur.fetchall():
                    grouped[i][b] = (c, int(h))
                seconds = (time.monotonic() - t0) / len(tables)
        except ValidationError:
            if len(tables) == 1:
                raise
            return [result for table in tables for result in self.digest_batch(pool, [table])]
        results = []
        for i, (table_columns, key) in enumerate(plans, 1):
            buckets = grouped[i]
            results.append({"rows": sum(c for c, _ in buckets.values()),
                            "digest": str(sum(h for _, h in buckets.values())), "buckets": buckets,
                            "columns": table_columns, "key": key, "seconds": seconds})
        return results

    def _digest_batches(self):
        """The common tables in the groups they are digested in: a large table alone, small ones together."""
        large = [[t] for t in self.run.common_tables if t["table_bytes"] > DIGEST_SMALL_TABLE_BYTES]
        small = [t for t in self.run.common_tables if t["table_bytes"] <= DIGEST_SMALL_TABLE_BYTES]
        return large + consecutive_groups(small, lambda t: t["table_bytes"], DIGEST_BATCH_TABLES, DIGEST_BATCH_BYTES)

    def check_rows(self):
        started = time.monotonic()
        counts = _check("row_counts", "Row counts per table (exact)")
        content = _check("content", "Content digests per table, differing rows pinpointed")
        common = {t["qualname"] for t in self.run.common_tables}
        missing = [t["qualname"] for t in self.run.tables if t["qualname"] not in common]
        for name in missing:
            item = {"table": name, "status": "fail", "detail": "table missing in the target"}
            counts["items"].append(item)
            content["items"].append(dict(item))
        batches = self._digest_batches()
        self.run.progress.begin("content", 2 * len(self.run.common_tables),
                                2 * sum(t["table_bytes"] for t in self.run.common_tables))

        def digested(batch):
            return lambda _future: self.run.progress.advance(len(batch), sum(t["table_bytes"] for t in batch))

        with ThreadPoolExecutor(self.run.workers) as pool:
            futures = [(batch, pool.submit(self.digest_batch, self.run.src_pool, batch),
                        pool.submit(self.digest_batch, self.run.dst_pool, batch)) for batch in batches]
            for batch, src_batch, dst_batch in futures:
                src_batch.add_done_callback(digested(batch))
                dst_batch.add_done_callback(digested(batch))
            results = [(table, src, dst) for batch, src_batch, dst_batch in futures
                       for table, src, dst in zip(batch, src_batch.result(), dst_batch.result(), strict=True)]
        mismatched = []
        for table, src, dst in results:
            name = table["qualname"]
            same_count = src["rows"] == dst["rows"]
            counts["items"].append({
                "table": name, "status": "pass" if same_count else "fail", "source_rows": src["rows"],
                "target_rows": dst["rows"],
                "detail": f"{src['rows']} rows" if same_count else
                f"source {src['rows']} rows, target {dst['rows']} rows ({dst['rows'] - src['rows']:+d})"})
            if src["digest"] == dst["digest"] and same_count:
                content["items"].append({"table": name, "status": "pass", "detail": "digests equal",
                                         "seconds": round(max(src["seconds"], dst["seconds"]), 3)})
            else:
                mismatched.append((table, src, dst))
        if "content" in self.run.enabled and mismatched:
            with ThreadPoolExecutor(min(self.run.workers, len(mismatched))) as pool:
                for item in pool.map(lambda m: self.differing_rows.pinpoint(*m), mismatched):
                    content["items"].append(item)
        elif mismatched:
            for table, _src, _dst in mismatched:
                content["items"].append({"table": table["qualname"], "status": "fail", "detail": "digests differ"})
        counts = _finish(counts, started, f"{len(self.run.common_tables)} tables, every count equal",
                         lambda f: f"{len(f)} table(s) differ: " + ", ".join(i["table"] for i in f))
        content = _finish(content, started, f"{len(self.run.common_tables)} tables, every digest equal",
                          lambda f: f"{len(f)} table(s) differ: " + ", ".join(i["table"] for i in f))
        checks = []
        if "row_counts" in self.run.enabled:
            checks.append(counts)
        if "content" in self.run.enabled:
            checks.append(content)
        return checks

