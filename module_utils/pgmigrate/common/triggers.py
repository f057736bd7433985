"""A table's own triggers turned off inside one transaction: rows written by the tool must not fire the
target's triggers (an updated_at or an audit trigger would change what was copied), and no other session
ever sees them disabled."""

from psycopg2 import sql


def disable_user_triggers_locally(cur, qualname):
    """Disable the enabled user triggers of the table qualname (as SQL writes it) in cur's transaction.
    Returns [(qualname, trigger, tgenabled)] for restore_triggers_locally."""
    cur.execute("SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal "
                "AND tgenabled <> 'D' ORDER BY tgname", (qualname,))
    disabled = [(qualname, name, enabled) for name, enabled in cur.fetchall()]
    for _table, name, _enabled in disabled:
        cur.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(sql.SQL(qualname), sql.Identifier(name)))
    return disabled


def restore_triggers_locally(cur, disabled):
    """Enable again what disable_user_triggers_locally disabled, each as it was (ALWAYS, REPLICA or origin)."""
    for qualname, name, enabled in disabled:
        cur.execute(sql.SQL("ALTER TABLE {} ENABLE {}TRIGGER {}").format(
            sql.SQL(qualname), sql.SQL({"A": "ALWAYS ", "R": "REPLICA "}.get(enabled, "")), sql.Identifier(name)))
