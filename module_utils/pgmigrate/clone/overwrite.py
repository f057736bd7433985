"""migration_target_overwrite in schema mode copy: drop the target's schemas that the source's copy will
create, in transactions small enough for the server's lock table.

One DROP SCHEMA ... CASCADE locks every table, index, TOAST table and sequence of the schema in one
transaction: a target holding a few thousand tables runs out of shared memory ("increase
max_locks_per_transaction"). The schema's tables are dropped DROP_BATCH at a time first, each batch
committed, then the schema itself.
"""

from psycopg2 import sql

# Tables per transaction: each also locks its indexes, TOAST table and owned sequences (about 6 locks on a
# table with a key and a serial column); the server's lock table holds max_locks_per_transaction (64) times
# max_connections (100) by default.
DROP_BATCH = 200

TABLES_OF_SCHEMA = """
SELECT format('%%I.%%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind IN ('r', 'p')
  -- an extension's own tables go with the extension, when DROP SCHEMA ... CASCADE drops it
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')
ORDER BY c.relkind = 'p', c.oid
LIMIT %s
"""


def drop_schema(conn, name):
    """Drop schema name and all in it, committing every DROP_BATCH tables. public is recreated as
    initdb makes it. False when the schema does not exist."""
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (name,))
        if not cur.fetchone():
            conn.rollback()
            return False
        while True:
            cur.execute(TABLES_OF_SCHEMA, (name, DROP_BATCH))
            tables = [row[0] for row in cur.fetchall()]
            if not tables:
                break
            # IF EXISTS: dropping an inheritance parent with CASCADE drops its children in the same batch.
            cur.execute("DROP TABLE IF EXISTS " + ", ".join(tables) + " CASCADE")
            conn.commit()
        cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
        if name == "public":
            cur.execute("CREATE SCHEMA public AUTHORIZATION pg_database_owner")
            cur.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")
            cur.execute("COMMENT ON SCHEMA public IS 'standard public schema'")
    conn.commit()
    return True
