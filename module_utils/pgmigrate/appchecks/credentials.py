"""Columns that must hold encrypted credentials hold no readable secret."""

import base64
import binascii
import json
import math
import re
import time
from collections import Counter

from psycopg2 import sql

from .rules import (
    FETCH_ROWS,
    MAX_KEYS_SHOWN,
    _counts_summary,
    _finish,
    _key_label,
    _key_refs,
    _key_select,
    _resolve_column_rule,
    _run_rule,
)

_CREDENTIAL_WORDS = re.compile(
    r"passw(?:or)?d|passphrase|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential", re.I)


# user:password@host, alone or in a URL.
_USERINFO = re.compile(r"(?:^|[/\s])[A-Za-z0-9._%+-]+:[^\s@/]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


_BASE64_URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


_KEY_VALUE = re.compile(r"(?:^|[\s;&,?{(])[A-Za-z_][A-Za-z0-9_.-]*\s*=\s*[^\s=]")


_YAML_KEY = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_.-]*\s*:\s+\S", re.M)


_BINARY_WORDS = re.compile(rb"(?i)passw(?:or)?d|passphrase|secret|token|api[_-]?key|access[_-]?key|credential")


_PEM_PRIVATE_KEY = re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH )?PRIVATE KEY-----")


_PGP_MESSAGE = "-----BEGIN PGP MESSAGE-----"


_HEX = re.compile(r"(?:\\x)?[0-9A-Fa-f]+")


# Scheme prefixes of encrypted values: "vault:v1:", "enc:", "ENC(...)" (jasypt) and the like.
_PREFIX = re.compile(r"^(?:[A-Za-z][A-Za-z0-9_-]{0,20}:){1,3}")


_JASYPT = re.compile(r"^ENC\((.*)\)$", re.S)


def _expected_distinct(length, alphabet):
    return alphabet * (1 - (1 - 1 / alphabet) ** length)


def _entropy(symbols):
    counts = Counter(symbols)
    total = len(symbols)
    return -sum(n / total * math.log2(n / total) for n in counts.values())


def _readable(data):
    """data as text when it is valid UTF-8 and (almost) all printable, else None."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(1 for ch in text if ch.isprintable() or ch in "\t\n\r")
    return text if printable >= 0.95 * len(text) else None


def _high_entropy(data):
    """Bytes as diverse as random bytes (ciphertext, keys, digests) of the same length."""
    return len(data) >= 12 and len(set(data)) >= 0.5 * _expected_distinct(len(data), 256)


def _decode_token(token):
    """The bytes of a hex or base64 token, or None when it is neither (or too short to be a cipher block)."""
    if len(token) >= 32 and _HEX.fullmatch(token):
        digits = token[2:] if token.startswith("\\x") else token
        if len(digits) % 2 == 0 and re.search(r"[0-9]", digits) and re.search(r"[A-Fa-f]", digits):
            return bytes.fromhex(digits)
    if len(token) >= 16 and (_BASE64.fullmatch(token) or _BASE64_URL.fullmatch(token)):
        core = token.rstrip("=")
        if len(core) % 4 == 1 or not (re.search(r"[A-Z]", core) and re.search(r"[a-z]", core)):
            return None
        if len(set(core)) < 0.6 * _expected_distinct(len(core), 64):
            return None  # a word-like string that merely uses the base64 alphabet
        padded = core + "=" * (-len(core) % 4)
        try:
            if "-" in core or "_" in core:
                return base64.urlsafe_b64decode(padded)
            return base64.b64decode(padded, validate=True)
        except (ValueError, binascii.Error):
            return None
    return None


def _encoded_payload(text):
    """The bytes an encoded value stands for (base64, hex, with a scheme prefix such as vault:v1:, several
    parts joined by "--" or "." as Rails and JWE do), or None when text is not such an encoding."""
    match = _JASYPT.match(text)
    if match:
        text = match.group(1)
    text = _PREFIX.sub("", text, count=1)
    text = re.sub(r"\s+", "", text)  # PEM-style line breaks
    whole = _decode_token(text)
    if whole is not None:
        return whole
    parts = [part for part in re.split(r"--|\.", text) if part]
    if len(parts) < 2:
        return None
    decoded = []
    for part in parts:
        data = _decode_token(part)
        if data is None and len(part) >= 16:
            return None
        decoded.append(data or b"")
    payload = max(decoded, key=len)
    return payload if payload else None


def _char_class(ch):
    return "d" if ch.isdigit() else "u" if ch.isupper() else "l" if ch.islower() else "p"


def _looks_random(text):
    """Printable ASCII as diverse as an encoding of random bytes (base85 ciphertext, say): at least three of
    digits, upper case, lower case and punctuation, interleaved, and a high character entropy."""
    if len(text) < 16 or not text.isascii() or " " in text:
        return False
    classes = [_char_class(ch) for ch in text]
    if len(set(classes)) < 3:
        return False
    switches = sum(1 for a, b in zip(classes, classes[1:], strict=False) if a != b) / (len(text) - 1)
    return switches >= 0.4 and _entropy(text) >= 0.75 * math.log2(min(len(text), 85))


def plaintext_reason(value, _depth=0):
    """Why value (bytes or str) looks like a readable credential, or None when it looks encrypted.

    Passes: binary data (pgcrypto encrypt(), pgp_sym_encrypt()), PGP armor, base64 or hex of high-entropy
    bytes (optionally prefixed, e.g. vault:v1:...), JWE, text as diverse as random bytes. Flags: a JSON
    object, key=value or password/secret/token patterns, a JWT, an unencrypted PEM private key, readable
    text, base64/hex of any of these, and binary data carrying credential field names (a serialised map).
    The reason never quotes the value.
    """
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if not data.strip():
        return None
    text = _readable(data)
    if text is None:
        if _BINARY_WORDS.search(data):
            return "binary data with readable credential field names"
        return None
    stripped = text.strip()
    if stripped.startswith(_PGP_MESSAGE):
        return None
    if _PEM_PRIVATE_KEY.search(stripped):
        return "an unencrypted PEM private key"
    parts = stripped.split(".")
    if stripped.startswith("eyJ") and len(parts) == 3:
        return "a JWT (bearer token)"
    if stripped.startswith("eyJ") and len(parts) == 5:
        return None  # JWE: encrypted
    payload = _encoded_payload(stripped)
    if payload is not None:
        inner = _readable(payload)
        if inner is None and _high_entropy(payload):
            return None
        if inner is not None and _depth < 2:
            reason = plaintext_reason(payload, _depth + 1)
            return f"base64/hex encoding of {reason}" if reason else None
    if stripped.startswith("{"):
        try:
            if isinstance(json.loads(stripped), dict):
                return "a JSON object"
        except ValueError:
            pass
    if _CREDENTIAL_WORDS.search(stripped):
        return "a password/secret/token pattern"
    if _USERINFO.search(stripped):
        return "a user:password@host pattern"
    if _looks_random(stripped):
        return None
    if _KEY_VALUE.search(stripped) or _YAML_KEY.search(stripped):
        return "a key=value pattern"
    return "readable text"


def _check_plaintext_rule(conn, rule):
    with conn.cursor() as cur:
        spec = _resolve_column_rule(cur, rule, "encrypted column")
    column = sql.Identifier(spec["column"])
    value = column if spec["type"] == "bytea" else sql.SQL("{}::text").format(column)
    query = sql.SQL("SELECT {key_text}, v FROM (SELECT {keys}, {value} AS v FROM {table} "
                    "WHERE {column} IS NOT NULL) s ORDER BY {key_refs}").format(
        key_text=_key_refs(spec["keys"], cast_text=True), keys=_key_select(spec["keys"]), value=value,
        table=spec["relation"], column=column, key_refs=_key_refs(spec["keys"]))
    width = max(1, len(spec["keys"]))
    checked = failing = 0
    offenders, reasons = [], Counter()
    # A server-side cursor: values stream through in batches and are never kept.
    with conn.cursor(name="pgmigrate_plaintext_scan", withhold=conn.autocommit) as cur:
        cur.itersize = FETCH_ROWS
        cur.execute(query)
        for row in cur:
            checked += 1
            reason = plaintext_reason(row[width])
            if reason:
                failing += 1
                reasons[reason] += 1
                if len(offenders) < MAX_KEYS_SHOWN:
                    offenders.append(_key_label(spec["keys"], row[:width]))
    where = f"{spec['table']}.{spec['column']}"
    item = {"table": spec["table"], "column": spec["column"], "rows_checked": checked, "rows_failing": failing,
            "keys": offenders, "reasons": dict(reasons)}
    if failing:
        why = ", ".join(f"{reason}: {count}" for reason, count in reasons.most_common())
        shown = "; ".join(offenders) + (f"; and {failing - len(offenders)} more" if failing > len(offenders) else "")
        item.update(status="fail", detail=(
            f"{failing} of {checked} non-NULL values of {where} look like plaintext credentials, not ciphertext "
            f"({why}): rows {shown}"))
    else:
        item.update(status="pass", detail=f"all {checked} non-NULL values of {where} look encrypted")
    return item


def check_plaintext_credentials(conn, rules):
    """No value of each rule's column (bytea or text) is a readable credential: each must look encrypted.

    rules: [{"table": "public.integrations", "column": "encrypted_credentials", "key": ["id"]}].
    See plaintext_reason for what counts as plaintext. Values are classified client-side, streamed in
    batches through a server-side cursor and never kept.
    """
    started = time.monotonic()
    items = [_run_rule(conn, rule, _check_plaintext_rule) for rule in rules or []]
    summary = (_counts_summary(items, "encrypted columns") if items
               else "no encrypted columns configured (validation_encrypted_columns)")
    return _finish("plaintext_credentials", "Encrypted credentials are not plaintext", items, started, summary)
