"""A table's rows moved: streamed from the source (masked on the way) into the target or a stage, upserted,
the rows the source lacks deleted, and digests to verify a copy."""

import os
import threading

from psycopg2 import sql

from . import masking

CHUNK = 1 << 20


def _qual(name):
    return sql.SQL(name)


def _cols(columns):
    return sql.SQL(", ").join(sql.Identifier(c) for c in columns)


class _PipeWriter:
    """COPY TO's output, masked when the table has rules, into a pipe the target's COPY FROM reads."""

    def __init__(self, fd, masker):
        self.fd = fd
        self.masker = masker
        self.bytes = 0

    def write(self, data):
        data = bytes(data)
        if self.masker:
            data = self.masker.feed(data)
        self.bytes += len(data)
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]


def _stream_table(source_conn, target_cur, table, into):
    """COPY the table's columns from the source snapshot into `into` (a table or a temp table)."""
    source_select = sql.SQL("COPY (SELECT {} FROM {}{}) TO STDOUT").format(
        _cols(table["columns"]), sql.SQL("" if table["partitioned"] else "ONLY "), _qual(table["table"]))
    target_copy = sql.SQL("COPY {} ({}) FROM STDIN").format(into, _cols(table["columns"]))
    positions = {table["columns"].index(c): m for c, m in table["masks"].items() if m.rule != "keep"}
    read_fd, write_fd = os.pipe()
    writer = _PipeWriter(write_fd, masking.RowMasker(positions) if positions else None)
    failure = []

    def produce():
        try:
            with source_conn.cursor() as cur:
                cur.copy_expert(source_select.as_string(source_conn), writer, size=CHUNK)
            if writer.masker:
                writer.masker.finish()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(error)
        finally:
            os.close(write_fd)

    thread = threading.Thread(target=produce, name=f"sync {table['table']}", daemon=True)
    thread.start()
    try:
        with os.fdopen(read_fd, "rb", buffering=0) as reader:
            target_cur.copy_expert(target_copy.as_string(target_cur.connection), reader, size=CHUNK)
    finally:
        thread.join()
    if failure:
        raise failure[0]
    return target_cur.rowcount, writer.bytes


def _digest_sql(table, columns):
    row = sql.SQL("ROW({})::text").format(_cols(columns)) if columns else sql.SQL("''")
    return sql.SQL("SELECT count(*), COALESCE(sum(('x' || substr(md5({}), 1, 16))::bit(64)::bigint::numeric), 0)"
                   " FROM {}{}").format(row, sql.SQL("" if table["partitioned"] else "ONLY "), _qual(table["table"]))


def _table_digest(cur, table, columns):
    cur.execute(_digest_sql(table, columns))
    count, total = cur.fetchone()
    return int(count), str(total)


def _upsert(cur, table, stage):
    key = table["key"]
    others = [c for c in table["columns"] if c not in key]
    action = (sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in others)) if others else sql.SQL("DO NOTHING"))
    overriding = sql.SQL(" OVERRIDING SYSTEM VALUE") if table["identity_always"] else sql.SQL("")
    cur.execute(sql.SQL(
        "WITH upserted AS (INSERT INTO {table} ({cols}){overriding} SELECT {cols} FROM {stage} "
        "ON CONFLICT ({key}) {action} RETURNING (xmax = 0) AS inserted) "
        "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM upserted").format(
        table=_qual(table["table"]), cols=_cols(table["columns"]), overriding=overriding, stage=stage,
        key=_cols(key), action=action))
    return cur.fetchone()


def _delete_missing(cur, table, stage):
    match = sql.SQL(" AND ").join(sql.SQL("s.{0} = t.{0}").format(sql.Identifier(c)) for c in table["key"])
    cur.execute(sql.SQL("DELETE FROM {} t WHERE NOT EXISTS (SELECT 1 FROM {} s WHERE {})").format(
        _qual(table["table"]), stage, match))
    return cur.rowcount


def t_changes(table):
    return table["mode"] in ("reload", "upsert")


def _stage_name(table, what):
    return sql.Identifier(f"_pgmigrate_{what}_{table['number']}")
