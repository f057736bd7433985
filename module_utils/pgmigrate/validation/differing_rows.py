"""The rows behind a content mismatch: a second scan per side, of the differing buckets only, names the
missing, extra and changed keys (a table without a key: the rows occurring a different number of times)."""

import threading
from concurrent.futures import ThreadPoolExecutor

from psycopg2 import sql

from .digests import BUCKETS_PER_PASS, _bucket_expression, _uuid_ranges_condition, row_hash_expression, uuid_key_column


class DifferingRows:
    def __init__(self, run):
        self.run = run  # context.ValidationRun

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
