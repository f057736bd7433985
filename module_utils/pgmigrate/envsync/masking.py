"""Masking of personal data while rows stream from one database to another (COPY text format).

Rules are per column. Every rule is deterministic: the same input gives the same output under the same
key (an HMAC-SHA256 of the value), so a value masked in two tables still joins, and a rerun next week gives
the same staging data. Rules marked unique-preserving map distinct inputs to distinct outputs (128 bits of
the HMAC: a collision is as likely as guessing the key), so unique columns such as emails stay unique.

Rows are masked in the controller's memory between the source's COPY TO and the target's COPY FROM: the
personal data never reaches the target, not even inside a transaction that is later rolled back.
"""

import hashlib
import hmac

from ..common.errors import PgmigrateError

# name -> (needs a value option, unique-preserving, description)
RULES = {
    "email": (False, True, "an address <prefix>-<hash>@<domain>, lower case"),
    "name": (False, False, "'Person <hash>' (8 hex digits; 32 on a unique column)"),
    "phone": (False, False, "+1-555-<7 digits>"),
    "hash": (False, True, "<prefix><32 hex digits>"),
    "constant": (True, False, "the given value for every non-NULL value"),
    "null": (False, False, "NULL"),
    "keep": (False, False, "the value unchanged (documents that the column was reviewed)"),
}
DEFAULT_EMAIL_DOMAIN = "example.invalid"


class MaskingError(PgmigrateError):
    """A masking rule that cannot be applied: says what is wrong and how to fix it."""


def digest(key, value):
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()


class ColumnMask:
    """How one column is masked: rule, options, and whether the column is an array of such values."""

    def __init__(self, key, rule, value=None, prefix=None, domain=None, unique=False, is_array=False):
        if rule not in RULES:
            raise MaskingError(f"unknown masking rule {rule!r}; use one of {', '.join(sorted(RULES))}")
        self.key = key
        self.rule = rule
        self.value = value
        self.prefix = prefix
        self.domain = domain or DEFAULT_EMAIL_DOMAIN
        self.unique = unique
        self.is_array = is_array

    def mask_value(self, value):
        """One value (never NULL) -> its masked value (None for NULL)."""
        rule = self.rule
        if rule == "keep":
            return value
        if rule == "null":
            return None
        if rule == "constant":
            return str(self.value)
        hexdigest = digest(self.key, value)
        if rule == "email":
            return f"{self.prefix or 'user'}-{hexdigest[:32]}@{self.domain}"
        if rule == "name":
            return f"{self.prefix or 'Person'} {hexdigest[:32] if self.unique else hexdigest[:8]}"
        if rule == "phone":
            return f"+1-555-{int(hexdigest[:12], 16) % 10_000_000:07d}"
        return f"{self.prefix or ''}{hexdigest[:32]}"

    def mask_field(self, field):
        """A COPY text field (escaped; \\N for NULL) -> the masked field."""
        if field == r"\N":
            return field
        value = decode_copy_text(field)
        if self.is_array:
            masked = format_array(_map_array(parse_array(value), self.mask_value))
        else:
            masked = self.mask_value(value)
        return r"\N" if masked is None else encode_copy_text(masked)


def _map_array(items, function):
    return [(_map_array(item, function) if isinstance(item, list) else None if item is None else function(item))
            for item in items]


COPY_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def decode_copy_text(field):
    """Undo COPY's text-format escaping of one field."""
    if "\\" not in field:
        return field
    out, i, n = [], 0, len(field)
    while i < n:
        char = field[i]
        if char != "\\" or i + 1 == n:
            out.append(char)
            i += 1
            continue
        nxt = field[i + 1]
        if nxt in COPY_ESCAPES:
            out.append(COPY_ESCAPES[nxt])
            i += 2
        elif nxt in "01234567":
            j = i + 1
            while j < n and j < i + 4 and field[j] in "01234567":
                j += 1
            out.append(chr(int(field[i + 1:j], 8)))
            i = j
        elif nxt == "x" and i + 2 < n and field[i + 2] in "0123456789abcdefABCDEF":
            j = i + 2
            while j < n and j < i + 4 and field[j] in "0123456789abcdefABCDEF":
                j += 1
            out.append(chr(int(field[i + 2:j], 16)))
            i = j
        else:
            out.append(nxt)
            i += 2
    return "".join(out)


def encode_copy_text(value):
    return (value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"))


def parse_array(text):
    """A PostgreSQL array literal ('{a,"b c",NULL,{d}}') -> nested lists of str or None."""
    text = text.strip()
    if text.startswith("["):
        raise MaskingError(f"array literals with explicit bounds are not supported: {text[:40]!r}")
    items, pos = _parse_array_at(text, 0)
    if text[pos:].strip():
        raise MaskingError(f"unexpected text after the array literal: {text[:40]!r}")
    return items


def _parse_array_at(text, pos):
    if pos >= len(text) or text[pos] != "{":
        raise MaskingError(f"not an array literal: {text[:40]!r}")
    pos += 1
    items = []
    if text[pos:pos + 1] == "}":
        return items, pos + 1
    while True:
        while text[pos] == " ":
            pos += 1
        if text[pos] == "{":
            item, pos = _parse_array_at(text, pos)
            items.append(item)
        elif text[pos] == '"':
            pos += 1
            chars = []
            while text[pos] != '"':
                if text[pos] == "\\":
                    pos += 1
                chars.append(text[pos])
                pos += 1
            pos += 1
            items.append("".join(chars))
        else:
            chars = []
            while text[pos] not in ",}":
                if text[pos] == "\\":
                    pos += 1
                chars.append(text[pos])
                pos += 1
            raw = "".join(chars).strip()
            items.append(None if raw.upper() == "NULL" else raw)
        while text[pos] == " ":
            pos += 1
        if text[pos] == "}":
            return items, pos + 1
        if text[pos] != ",":
            raise MaskingError(f"malformed array literal: {text[:40]!r}")
        pos += 1


def format_array(items):
    parts = []
    for item in items:
        if isinstance(item, list):
            parts.append(format_array(item))
        elif item is None:
            parts.append("NULL")
        else:
            parts.append('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(parts) + "}"


class RowMasker:
    """Masks whole COPY text lines: fields at the given positions go through their ColumnMask."""

    def __init__(self, masks_by_position):
        self.masks = sorted(masks_by_position.items())
        self.pending = b""

    def mask_line(self, line):
        fields = line.split("\t")
        for position, mask in self.masks:
            fields[position] = mask.mask_field(fields[position])
        return "\t".join(fields)

    def feed(self, chunk):
        """Bytes from COPY TO (any boundaries) -> masked bytes of the complete lines seen so far."""
        data = self.pending + chunk
        cut = data.rfind(b"\n") + 1
        self.pending = data[cut:]
        if not cut:
            return b""
        lines = data[:cut].decode("utf-8").split("\n")[:-1]
        return ("\n".join(self.mask_line(line) for line in lines) + "\n").encode("utf-8")

    def finish(self):
        if self.pending:
            raise MaskingError("the source's COPY stream ended inside a row")
        return b""
