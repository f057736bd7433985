"""Row counts and content: every table's digest, by buckets where they differ, down to the rows."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from psycopg2 import sql

from ..common.batching import consecutive_groups
from .checks import ValidationError, _check, _finish
from .digests import (
    BUCKETS_PER_PASS,
    DIGEST_BATCH_BYTES,
    DIGEST_BATCH_TABLES,
    DIGEST_SMALL_TABLE_BYTES,
    TYPES_QUERY,
    Column,
    _bucket_expression,
    _uuid_ranges_condition,
    row_hash_expression,
    table_key,
    uuid_key_column,
)


class RowChecks:
    def __init__(self, run):
        self.run = run  # context.ValidationRun

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
                for item in pool.map(lambda m: self.pinpoint(*m), mismatched):
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

    def pinpoint(self, table, src, dst):
        """The content check's item of a table whose digests differ (src, dst: row_checks' digests)."""
        name = table["qualname"]
        key = src["key"]
        src_buckets, dst_buckets = src["buckets"], dst["buckets"]
        differing = {b for b in set(src_buckets) | set(dst_buckets) if src_buckets.get(b) != dst_buckets.get(b)}
        item = {"table": name, "status": "fail", "source_rows": src["rows"], "target_rows": dst["rows"],
                "differing_buckets": len(differing)}
        if key:
            missing, extra, changed = self._merge_keyed(table, src, dst, key, differing)
            item.update({"key": key, "missing": missing["sample"], "missing_count": missing["count"],
                         "extra": extra["sample"], "extra_count": extra["count"], "changed": changed["sample"],
                         "changed_count": changed["count"]})
            parts = []
            for label, data in (("missing in target", missing), ("extra in target", extra), ("changed", changed)):
                if data["count"]:
                    keys = "; ".join(", ".join(k) for k in data["sample"])
                    parts.append(f"{data['count']} {label} ({'/'.join(key)}: {keys}"
                                 f"{' …' if data['count'] > len(data['sample']) else ''})")
            item["detail"] = "; ".join(parts) or "digests differ"
        else:
            diffs = self._compare_multisets(table, src, dst, differing)
            item.update({"multiset_differences": diffs[: self.run.sample_limit], "difference_count": len(diffs)})
            item["detail"] = (f"table has no key; {len(diffs)} distinct row(s) occur a different number of times "
                              + "(" + "; ".join(f"row hash {d['row_hash']}: source ×{d['source_count']}, target "
                                                f"×{d['target_count']}" for d in diffs[:5]) + ")")
        return item

    def _merge_keyed(self, table, src, dst, key, buckets):
        results = {k: {"count": 0, "sample": []} for k in ("missing", "extra", "changed")}

        def note(kind, key_value):
            entry = results[kind]
            entry["count"] += 1
            if len(entry["sample"]) < self.run.sample_limit:
                entry["sample"].append(list(key_value))

        # Differing buckets are compared a few at a time, so memory stays bounded (a bucket holds
        # 1/1024 of the rows) even when every bucket differs.
        ordered = sorted(buckets)
        for start in range(0, len(ordered), BUCKETS_PER_PASS):
            chunk = ordered[start:start + BUCKETS_PER_PASS]
            with ThreadPoolExecutor(2) as pool:
                src_future = pool.submit(lambda c=chunk: dict(
                    self._stream(self.run.src_pool, table, src["columns"], key, c)))
                dst_future = pool.submit(lambda c=chunk: list(
                    self._stream(self.run.dst_pool, table, dst["columns"], key, c)))
                src_rows, dst_rows = src_future.result(), dst_future.result()
            for key_value, row_hash in dst_rows:
                if key_value not in src_rows:
                    note("extra", key_value)
                    continue
                if src_rows.pop(key_value) != row_hash:
                    note("changed", key_value)
            for key_value in sorted(src_rows):
                note("missing", key_value)
        for entry in results.values():
            entry["sample"].sort()
        return results["missing"], results["extra"], results["changed"]

    def _compare_multisets(self, table, src, dst, buckets):
        def grouped(pool, columns):
            row_hash = row_hash_expression(columns, utf8=self.run.digest_statements.utf8)
            bucket = _bucket_expression(None, columns, row_hash)
            with pool.reading(f"reading the differing rows of {table['qualname']}", (table["qualname"],)) as conn, \
                    conn.cursor() as cur:
                cur.execute(sql.SQL("SELECT {} AS h, count(*) FROM ONLY {} r WHERE {} = ANY(%s) GROUP BY 1")
                            .format(row_hash, sql.SQL(table["qualname"]), bucket), (sorted(buckets),))
                return dict(cur.fetchall())

        with ThreadPoolExecutor(2) as pool:
            s = pool.submit(grouped, self.run.src_pool, src["columns"])
            d = pool.submit(grouped, self.run.dst_pool, dst["columns"])
            src_counts, dst_counts = s.result(), d.result()
        diffs = []
        for row_hash in sorted(set(src_counts) | set(dst_counts)):
            if src_counts.get(row_hash, 0) != dst_counts.get(row_hash, 0):
                diffs.append({"row_hash": row_hash, "source_count": src_counts.get(row_hash, 0),
                              "target_count": dst_counts.get(row_hash, 0)})
        return diffs

    def _stream(self, pool, table, columns, key_columns, buckets):
        """Yield (key tuple as text, row hash) for the rows in the given buckets, streamed."""
        utf8 = self.run.digest_statements.utf8
        row_hash = row_hash_expression(columns, utf8=utf8)
        keys_text = sql.SQL(", ").join(sql.SQL("r.{}::text").format(sql.Identifier(c)) for c in key_columns)
        uuid_column = uuid_key_column(key_columns, columns)
        if uuid_column:
            condition = _uuid_ranges_condition(uuid_column, buckets)
        else:
            condition = sql.SQL("{} = ANY({})").format(
                _bucket_expression(key_columns, columns, row_hash, utf8=utf8), sql.Literal(sorted(buckets)))
        query = sql.SQL("SELECT ARRAY[{}], {} FROM ONLY {} r WHERE {}").format(
            keys_text, row_hash, sql.SQL(table["qualname"]), condition)
        with pool.reading(f"reading the differing rows of {table['qualname']}", (table["qualname"],)) as conn, \
                conn.cursor(name=f"pinpoint_{id(self)}_{threading.get_ident()}") as cursor:
            cursor.itersize = 20000
            cursor.execute(query)
            for key, row_hash_value in cursor:
                yield tuple(key), row_hash_value
