"""Foreign keys (no orphans) and sequences (each ahead of the columns it feeds)."""

import time
from concurrent.futures import ThreadPoolExecutor

from psycopg2 import sql

from ..common import column_extremes
from .checks import _check, _finish


class IntegrityChecks:
    def __init__(self, run):
        self.run = run  # context.ValidationRun

    def check_orphans(self):
        started = time.monotonic()
        check = _check("orphans", "Referential integrity: orphan rows for every foreign key (NOT VALID included)")
        with self.run.dst_pool.reading("reading the foreign keys") as conn, conn.cursor() as cur:
            cur.execute("""
                SELECT con.conname, format('%%I.%%I', n.nspname, c.relname), format('%%I.%%I', fn.nspname, fc.relname),
                       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, o)
                             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.o),
                       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, o)
                             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.o),
                       con.convalidated, con.confmatchtype
                FROM pg_constraint con
                JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                JOIN pg_class fc ON fc.oid = con.confrelid JOIN pg_namespace fn ON fn.oid = fc.relnamespace
                WHERE con.contype = 'f' AND con.conparentid = 0 AND n.nspname NOT IN %s
                ORDER BY 2, 1""", (self.run.excluded(),))
            foreign_keys = cur.fetchall()

        def orphans(fk, pool=self.run.dst_pool):
            name, child, parent, columns, parent_columns, validated, match = fk
            child_cols = [sql.SQL("c.{}").format(sql.Identifier(col)) for col in columns]
            join = sql.SQL(" AND ").join(
                sql.SQL("p.{} = c.{}").format(sql.Identifier(pc), sql.Identifier(cc))
                for cc, pc in zip(columns, parent_columns, strict=True))
            if match == "f":  # MATCH FULL: all NULL is fine, any NULL with a value is an orphan already
                null_test = sql.SQL("NOT ({})").format(
                    sql.SQL(" AND ").join(sql.SQL("{} IS NULL").format(c) for c in child_cols))
            else:  # MATCH SIMPLE: a row with any NULL in the key references nothing
                null_test = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(c) for c in child_cols)
            query = sql.SQL("SELECT {} FROM {} c WHERE {} AND NOT EXISTS (SELECT 1 FROM {} p WHERE {})").format(
                sql.SQL(", ").join(sql.SQL("{}::text").format(c) for c in child_cols), sql.SQL(child), null_test,
                sql.SQL(parent), join)
            with pool.reading(f"looking for orphans of {child}.{name}", (child, parent)) as conn, \
                    conn.cursor() as cur:
                cur.execute(sql.SQL("SELECT count(*) FROM ({}) o").format(query))
                count = cur.fetchone()[0]
                sample = []
                if count:
                    cur.execute(sql.SQL("{} LIMIT {}").format(query, sql.Literal(self.run.sample_limit)))
                    sample = [list(r) for r in cur.fetchall()]
            label = f"{child}.{name}"
            status = "fail" if count else "pass"
            detail = (f"{count} orphan row(s) referencing {parent}: {', '.join(columns)} = "
                      + "; ".join(", ".join(str(v) for v in r) for r in sample) if count
                      else f"no orphans ({'validated' if validated else 'NOT VALID: checked here'})")
            return {"table": child, "constraint": name, "status": status, "detail": f"{label}: {detail}",
                    "orphans": count, "sample": sample, "validated": validated}

        def both(fk):
            item = orphans(fk)
            if item["orphans"] and not item["validated"]:
                # A NOT VALID constraint may hold orphans in the source already: only new ones count.
                try:
                    source_item = orphans(fk, self.run.src_pool)
                except Exception:  # noqa: BLE001 - the constraint may not exist in the source
                    source_item = None
                if source_item and source_item["orphans"] == item["orphans"] and \
                        source_item["sample"] == item["sample"]:
                    item["status"] = "warn"
                    item["detail"] += " (NOT VALID; the source holds the same orphans)"
            return item

        with ThreadPoolExecutor(self.run.workers) as pool:
            check["items"] = list(pool.map(both, foreign_keys))
        return _finish(check, started, f"{len(foreign_keys)} foreign keys, no orphan rows",
                       lambda f: f"{sum(i['orphans'] for i in f)} orphan row(s) in "
                                 + ", ".join(f"{i['table']}.{i['constraint']}" for i in f))

    def check_sequences(self):
        started = time.monotonic()
        check = _check("sequences", "Sequences and identity columns: source state, and ahead of every column fed")
        target_seqs = {s["qualname"]: s for s in self.run.dst_catalog["sequences"]}
        extremes = self._column_extremes([(feed["table"], feed["column"], tseq["increment"] > 0)
                                          for tseq in target_seqs.values() for feed in tseq["feeds"]])
        for seq in self.run.src_catalog["sequences"]:
            name = seq["qualname"]
            tseq = target_seqs.get(name)
            if tseq is None:
                check["items"].append({"table": name, "status": "fail", "detail": f"{name} missing in the target"})
                continue
            problems, warnings = [], []
            same_state = (tseq["last_value"], tseq["is_called"]) == (seq["last_value"], seq["is_called"])
            if self.run.sequences_exact and not same_state:
                problems.append(f"state (last_value {tseq['last_value']}, is_called {tseq['is_called']}) differs "
                                f"from the source's ({seq['last_value']}, {seq['is_called']})")
            next_value = tseq["last_value"] + tseq["increment"] if tseq["is_called"] else tseq["last_value"]
            for feed in tseq["feeds"]:
                extreme = extremes[(feed["table"], feed["column"], tseq["increment"] > 0)]
                behind = extreme is not None and (next_value <= extreme if tseq["increment"] > 0
                                                  else next_value >= extreme)
                if behind:
                    message = (f"next value {next_value} collides with {feed['table']}.{feed['column']} "
                               f"(holds {extreme}); fix: SELECT setval('{name}', {extreme})")
                    if same_state:
                        # A faithful copy of the source's own defect: reported, not blamed on the copy.
                        warnings.append(message + " (the source has the same defect)")
                    else:
                        problems.append(message)
            status = "fail" if problems else ("warn" if warnings else "pass")
            check["items"].append({"table": name, "status": status,
                                   "detail": "; ".join(problems + warnings) or
                                   f"last_value {tseq['last_value']}, is_called {tseq['is_called']}, "
                                   f"feeds {len(tseq['feeds'])} column(s)"})
        return _finish(check, started, f"{len(self.run.src_catalog['sequences'])} sequences in order",
                       lambda f: f"{len(f)} sequence(s) wrong: " + ", ".join(i["table"] for i in f))

    def _column_extremes(self, feeds):
        """{(table, column, highest): the target's max (or min) of each column sequences feed}."""
        def read_batch(batch, statement):
            what = f"reading {batch[0][0]}.{batch[0][1]}" + (
                f" and {len(batch) - 1} other column(s) fed by sequences" if len(batch) > 1 else "")
            with self.run.dst_pool.reading(what, sorted({f[0] for f in batch})) as conn, conn.cursor() as cur:
                cur.execute(statement)
                return cur.fetchall()
        sizes = {t["qualname"]: t["table_bytes"] for t in self.run.dst_catalog["tables"]}
        return column_extremes.read(feeds, sizes, read_batch, self.run.workers)
