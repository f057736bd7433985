"""A backup's checksum manifest (SHA256SUMS), its record (backup.json), and its verification."""

import hashlib
import json
import os
import re
import subprocess

from .base import ARCHIVE_DIR, CHUNK, DUMP_COMPLETE_MARKER, MANIFEST, PLAIN_FILES, RECORD, BackupError, tool


def _files(directory):
    """Relative paths of every file below directory, sorted; symlinks are not followed."""
    found = []
    for root, dirs, names in os.walk(directory):
        dirs.sort()
        for name in names:
            found.append(os.path.relpath(os.path.join(root, name), directory))
    return sorted(found)


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(unit):
    """Write SHA256SUMS (the format of `sha256sum`, so `sha256sum -c SHA256SUMS` checks it too)."""
    lines = [f"{sha256_file(os.path.join(unit, name))}  {name}\n" for name in _files(unit) if name != MANIFEST]
    temporary = os.path.join(unit, MANIFEST + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.writelines(lines)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, os.path.join(unit, MANIFEST))
    return len(lines)


def read_manifest(unit):
    entries = {}
    with open(os.path.join(unit, MANIFEST), encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            match = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)\n?", line)
            if not match:
                raise BackupError(f"{MANIFEST} line {number} is not '<sha256>  <file>'")
            entries[match[2]] = match[1]
    return entries


def verify_manifest(unit):
    """Problems found comparing the files of a backup with its manifest ([] when they all match)."""
    if not os.path.isfile(os.path.join(unit, MANIFEST)):
        return [f"no {MANIFEST} in {unit}: the backup never finished, or its manifest was removed"]
    try:
        expected = read_manifest(unit)
    except (BackupError, UnicodeDecodeError) as error:
        return [f"{MANIFEST} is unreadable: {error}"]
    problems = []
    present = set(_files(unit)) - {MANIFEST}
    for name, digest in sorted(expected.items()):
        path = os.path.join(unit, name)
        if name not in present:
            problems.append(f"{name} is missing")
            continue
        found = sha256_file(path)
        if found != digest:
            problems.append(f"{name} does not match its checksum (sha256 {found}, manifest says {digest})")
    problems += [f"{name} is not in the manifest" for name in sorted(present - set(expected))]
    if RECORD not in expected:
        problems.append(f"{RECORD} is not in the manifest")
    return problems


def plain_dump_problems(path):
    """A plain SQL dump must be non-empty and end with pg_dump's 'dump complete' marker."""
    name = os.path.basename(path)
    if not os.path.isfile(path):
        return [f"{name} is missing"]
    size = os.path.getsize(path)
    if size == 0:
        return [f"{name} is empty"]
    with open(path, "rb") as handle:
        handle.seek(max(0, size - 64 * 1024))
        tail = handle.read().decode("utf-8", errors="replace")
    position = tail.rfind(DUMP_COMPLETE_MARKER)
    # After the marker pg_dump writes only comment dashes, blank lines and psql's \unrestrict line.
    rest = tail[position + len(DUMP_COMPLETE_MARKER):].splitlines() if position >= 0 else None
    if rest is None or any(line.strip() not in ("", "--") and not line.startswith("\\unrestrict ") for line in rest):
        return [f"{name} does not end with pg_dump's '{DUMP_COMPLETE_MARKER}' marker: the dump is truncated"]
    return []


def archive_problems(directory, pg_bin_dir=None):
    """A directory-format archive must list with pg_restore --list, and each table's data file exist."""
    if not os.path.isfile(os.path.join(directory, "toc.dat")):
        return [f"{ARCHIVE_DIR}/toc.dat is missing"]
    result = subprocess.run([tool("pg_restore", pg_bin_dir), "--list", directory],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return [f"pg_restore --list {ARCHIVE_DIR} failed: {result.stderr.strip()[-1000:]}"]
    # <dump id>.dat, or compressed <dump id>.dat.gz (.lz4, ...): the dump ids that have a data file.
    with_data = {name.split(".", 1)[0] for name in os.listdir(directory)
                 if name.split(".", 2)[1:2] == ["dat"]}
    problems = []
    for match in re.finditer(r"^(\d+); \d+ \d+ TABLE DATA (.*)$", result.stdout, re.MULTILINE):
        if match[1] not in with_data:
            problems.append(f"{ARCHIVE_DIR}/{match[1]}.dat* (data of {match[2].rsplit(' ', 1)[0]}) is missing")
    return problems


def read_record(unit):
    try:
        with open(os.path.join(unit, RECORD), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as error:
        raise BackupError(f"cannot read {os.path.join(unit, RECORD)}: {error}") from None


def verify_backup(unit, pg_bin_dir=None):
    """Check a backup: its manifest first, then its content. Returns {path, kind, ok, problems, record}."""
    unit = os.path.realpath(unit)  # what a latest/ symlink designates
    if not os.path.isdir(unit):
        return {"path": unit, "kind": None, "ok": False, "problems": [f"{unit} does not exist"], "record": {}}
    problems = verify_manifest(unit)
    record = {}
    if not problems:
        record = read_record(unit)
        kind = record.get("kind")
        if kind == "complete":
            problems += archive_problems(os.path.join(unit, ARCHIVE_DIR), pg_bin_dir)
        elif kind in PLAIN_FILES:
            problems += plain_dump_problems(os.path.join(unit, PLAIN_FILES[kind]))
        else:
            problems.append(f"{RECORD} names an unknown kind of backup {kind!r}")
    summary = {key: record.get(key) for key in ("label", "kind", "database", "run_id", "finished_at", "bytes",
                                                 "files", "snapshot", "server_version")}
    if "tables" in record:
        summary["table_count"] = len(record["tables"])
        summary["rows"] = sum(table["rows"] for table in record["tables"])
    return {"path": unit, "kind": record.get("kind"), "ok": not problems, "problems": problems, "record": summary}
