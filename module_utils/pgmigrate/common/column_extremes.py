"""The highest (or lowest) value of each column a sequence feeds, small tables read together.

The copy warns, and the validation reports, a sequence whose next value a column it feeds already holds.
One statement per column was the cost on thousands of small tables (2,400 sequences: 3 s); a table up to
SMALL_TABLE_BYTES is read with others, up to BATCH_FEEDS columns and BATCH_BYTES in one UNION ALL.
"""

from concurrent.futures import ThreadPoolExecutor

from psycopg2 import sql

from .batching import consecutive_groups

SMALL_TABLE_BYTES = 1 << 20
BATCH_FEEDS = 100
BATCH_BYTES = 8 << 20


def read(feeds, table_bytes, run, workers=1):
    """{(table, column, highest): max (or min when not highest) of the column as numeric} for the feeds.

    table_bytes: {table qualname: bytes}. run(feeds, statement) executes the statement on a connection of
    its own thread and returns its rows (index in feeds, value); it may raise. A batch that raises is read
    again column by column, so the error raised names its column."""
    feeds = sorted(set(feeds))

    def size(feed):
        return table_bytes.get(feed[0], 0)

    batches = [[feed] for feed in feeds if size(feed) > SMALL_TABLE_BYTES]
    batches += consecutive_groups([f for f in feeds if size(f) <= SMALL_TABLE_BYTES], size, BATCH_FEEDS, BATCH_BYTES)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return {feed: value for batch in pool.map(lambda b: _read_batch(b, run), batches) for feed, value in batch}


def statement(feeds):
    return sql.SQL(" UNION ALL ").join(
        sql.SQL("(SELECT {} AS i, {}({})::numeric FROM {})").format(
            sql.Literal(i), sql.SQL("max" if highest else "min"), sql.Identifier(column), sql.SQL(table))
        for i, (table, column, highest) in enumerate(feeds))


def _read_batch(feeds, run):
    try:
        values = dict(run(feeds, statement(feeds)))
    except Exception:
        if len(feeds) == 1:
            raise
        return [pair for feed in feeds for pair in _read_batch([feed], run)]
    return [(feed, values[i]) for i, feed in enumerate(feeds)]
