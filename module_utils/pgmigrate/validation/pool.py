"""The validator's connections: one per thread and side, each read in a transaction always rolled back, and
row-level security read past where the login may, refused with its fix where it may not."""

import threading
from contextlib import contextmanager

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from ..common.connection import connect, rollback_quietly
from .checks import ValidationError

# Every setting an output function or a catalog function's rendering depends on, fixed in each of the
# validator's sessions so that source and target render alike whatever their servers, databases or
# roles set: definitions name every object with its schema (search_path), values look as COPY sends them.
# jit off: a digest spends its time in output and hash functions, which JIT does not speed up, while each
# parallel worker compiles the plan again (about a quarter of a second of CPU each).
SESSION_SETTINGS = (
    ("search_path", "pg_catalog"), ("DateStyle", "ISO, YMD"), ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"), ("TimeZone", "UTC"), ("lc_monetary", "C"), ("bytea_output", "hex"),
    ("default_transaction_read_only", "on"), ("row_security", "off"), ("statement_timeout", "0"),
    ("jit", "off"),
)


# How long a read waits for the lock that lifts FORCE ROW LEVEL SECURITY inside its own transaction.
LIFT_LOCK_TIMEOUT = "60s"


def _first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class ConnectionPool:
    """One connection per thread and side, reused across tasks, each with SESSION_SETTINGS."""

    def __init__(self, params, application_name, side="database"):
        self.params = params
        self.application_name = application_name
        self.side = side
        # Tables under FORCE ROW LEVEL SECURITY that the login owns: read past it (see reading()).
        self.lifted = set()
        self.local = threading.local()
        self.all = []
        self.lock = threading.Lock()

    def get(self):
        conn = getattr(self.local, "conn", None)
        if conn is None or conn.closed:
            conn = connect(self.params, application_name=self.application_name)
            with conn.cursor() as cur:
                for name, value in SESSION_SETTINGS:
                    cur.execute("SELECT set_config(%s, %s, false)", (name, value))
            conn.commit()
            self.local.conn = conn
            with self.lock:
                self.all.append(conn)
        return conn

    @contextmanager
    def reading(self, what, tables=()):
        """This thread's connection in a read transaction, always rolled back. The tables in it that are
        under FORCE ROW LEVEL SECURITY and owned by the login are read past it, as the copier writes them:
        NO FORCE inside this transaction only, never committed, so no other session ever sees it lifted.
        A database error becomes a ValidationError naming what was read and where."""
        conn = self.get()
        try:
            lift = sorted(set(tables) & self.lifted)  # always in the same order: no deadlock between workers
            if lift:
                self._lift_forced_row_security(conn, lift)
            yield conn
        except psycopg2.Error as error:
            rollback_quietly(conn)
            raise ValidationError(f"{what} on the {self.side} failed: {_first_line(error)}") from error
        except BaseException:
            rollback_quietly(conn)
            raise
        try:
            conn.rollback()
        except psycopg2.Error as error:
            raise ValidationError(f"{what} on the {self.side} failed: {_first_line(error)}") from error

    def _lift_forced_row_security(self, conn, tables):
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION READ WRITE")
            cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LIFT_LOCK_TIMEOUT)))
            for table in tables:
                try:
                    cur.execute(sql.SQL("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY").format(sql.SQL(table)))
                except psycopg2.errors.LockNotAvailable:
                    raise ValidationError(
                        f"{table} on the {self.side} is under FORCE ROW LEVEL SECURITY, and reading it whole "
                        f"needs a moment's exclusive lock (inside the validator's own transaction, rolled "
                        f"back): another session held a lock on it for {LIFT_LOCK_TIMEOUT}. Rerun when it "
                        f"is done, or give the login BYPASSRLS.") from None

    def close(self):
        for conn in self.all:
            if not conn.closed:
                conn.close()


# The tables whose rows row-level security would hide from this session (row_security_active), and
# whether that is only FORCE ROW LEVEL SECURITY on a table the login owns (which it may lift).
ROW_SECURITY_QUERY = """
SELECT current_user::text, format('%%I.%%I', n.nspname, c.relname),
       c.relforcerowsecurity AND pg_has_role(c.relowner, 'USAGE')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND c.relrowsecurity AND row_security_active(c.oid) AND n.nspname NOT IN %s
ORDER BY 2
"""


def row_security_refusal(refused):
    """The message of tables that row-level security keeps the validator from reading whole:
    refused is [(side, login, table, owned under FORCE)]."""
    parts = []
    for side, login, table, forced_owner in refused:
        why = ("FORCE ROW LEVEL SECURITY applies its policies to the owner too, and the validator changes "
               "nothing on the source" if forced_owner else "it neither owns the table nor has BYPASSRLS")
        parts.append(f"{table} on the {side} (login {login}: {why})")
    logins = sorted({(side, login) for side, login, _table, _forced in refused})
    fix = "; ".join(f"ALTER ROLE {_quote(login)} "
                    f"BYPASSRLS on the {side}" for side, login in logins)
    return ("Validation cannot read every row of " + "; ".join(parts) + ": row-level security policies "
            "would hide rows from it, and a partial read proves nothing. Give the login the BYPASSRLS attribute "
            f"({fix}, as a superuser) or validate as a superuser.")


def _quote(name):
    """A role name as SQL writes it (quoted unless a plain lower-case identifier)."""
    plain = name.isidentifier() and name.isascii() and name.lower() == name
    return name if plain else '"' + name.replace('"', '""') + '"'
