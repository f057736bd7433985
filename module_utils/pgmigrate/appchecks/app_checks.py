"""The migration plan's application checks on the target: security and performance.

* check_password_hashes: columns that must hold password hashes (bcrypt, argon2, scrypt, pbkdf2) hold
  nothing else;
* check_plaintext_credentials: columns that must hold encrypted credentials hold no readable secret;
* check_queries: the application's representative queries are fast on the target, and not much slower
  than on the source;
* check_required_indexes: the indexes the plan relies on exist on their tables and are valid.

Each returns a check: {"name", "title", "status": "pass"|"fail"|"warn"|"skip", "summary",
"items": [{"table", "status", "detail", ...}], "seconds"} (see report.py). The cell values of the columns
inspected never appear in a check, nor in an error message: offending rows are named by their key only
(the rule's "key" columns, else the primary key, else the ctid).

Table names are SQL names as PostgreSQL reads them ("public.team", '"Mixed".table'); column and index
names are exact names. The checks only read. On a connection inside a transaction, each rule runs under
a savepoint, so an error (a missing table, a bad name) is reported as a failing item and leaves the
caller's transaction usable.

The checks, each a module of this package: password_hashes, credentials, query_times, required_indexes
(with rules: what they share). This module is their one entry point.
"""



from .credentials import check_plaintext_credentials, plaintext_reason
from .password_hashes import PASSWORD_HASH_FORMATS, check_password_hashes, password_hash_pattern
from .query_times import check_queries, statement_timeout_for
from .required_indexes import check_required_indexes
from .rules import FETCH_ROWS, MAX_KEYS_SHOWN, RuleError

__all__ = [
    "FETCH_ROWS",
    "MAX_KEYS_SHOWN",
    "PASSWORD_HASH_FORMATS",
    "RuleError",
    "check_password_hashes",
    "check_plaintext_credentials",
    "check_queries",
    "check_required_indexes",
    "password_hash_pattern",
    "plaintext_reason",
    "statement_timeout_for",
]
