"""Validation reports: validation.json, validation.md and a self-contained validation.html, and the
one-line message of a failed validation.

A validation result is
    {"status": "pass"|"fail", "source": "user@host:port/db", "target": "...", "started_at": iso string,
     "seconds": float, "checks": [check, ...]}
and a check
    {"name", "title", "status": "pass"|"fail"|"warn"|"skip", "summary", "seconds",
     "items": [{"table": str|None, "status": "pass"|"fail"|"warn", "detail": str, ...extra keys}]}.
Checks never hold secrets nor the values of sensitive columns; the reports print what the checks hold,
escaped (HTML and Markdown). The HTML comes from the reports package's templates (Jinja2, autoescaped) with
its charts, and shows the copy that the validation checks when its summary.json is found (reports.render).
"""

import json
import os
import re

from ..common.files import replace_atomically
from ..common.units import human_duration
from ..reports import render as html_reports

JSON_FILE = "validation.json"
MARKDOWN_FILE = "validation.md"
HTML_FILE = "validation.html"

# Failing checks first, then warnings, passes and skips.
STATUS_ORDER = {"fail": 0, "warn": 1, "pass": 2, "skip": 3}
# An item names the object it is about by its table, plus one of these when present
# (public.team.team_created_by_fkey), or by its name when it has no table (a query).
OBJECT_KEYS = ("constraint", "foreign_key", "index", "sequence", "column")
ITEM_KEYS = ("table", "status", "detail")
MAX_EXTRA_CHARS = 600



def ordered_checks(result):
    """The result's checks, failing ones first (stable within each status)."""
    checks = list(result.get("checks") or [])
    return sorted(checks, key=lambda check: STATUS_ORDER.get(check.get("status"), len(STATUS_ORDER)))


def _ordered_items(check):
    items = list(check.get("items") or [])
    return sorted(items, key=lambda item: STATUS_ORDER.get(item.get("status"), len(STATUS_ORDER)))


def item_label(item):
    """What an item is about: public.team, public.team.team_created_by_fkey, or a query's name."""
    table = item.get("table")
    if table:
        for key in OBJECT_KEYS:
            if item.get(key):
                return f"{table}.{item[key]}"
        return str(table)
    for key in ("name",) + OBJECT_KEYS:
        if item.get(key):
            return str(item[key])
    return None


# The one-line message names, per failing check, its first differences (what an AWX job log shows).
MESSAGE_DIFFERENCES = 5
MESSAGE_DIFFERENCE_CHARS = 300


def _failing_labels(check):
    labels = []
    for item in check.get("items") or []:
        label = item_label(item) if item.get("status") == "fail" else None
        if label and label not in labels:
            labels.append(label)
    return labels


def _differences(check, name_objects):
    """What differs in a check, in its items' order: each failing item's differences (the schema's
    "constraint staff_email_key missing in the target") or else its detail, followed by the object it is
    about when name_objects and the text does not already name it."""
    differences = []
    for item in check.get("items") or []:
        if item.get("status") != "fail":
            continue
        label = item_label(item)
        for text in item.get("differences") or [item.get("detail") or "differs"]:
            text = " ".join(str(text).split())
            if len(text) > MESSAGE_DIFFERENCE_CHARS:
                text = text[:MESSAGE_DIFFERENCE_CHARS - 1] + "…"
            if name_objects and label and label not in text:
                text += f" {label}" if label.startswith("(") else f" ({label})"
            differences.append(text)
    return differences


def failure_message(result):
    """One message naming every failing check, every failing table (object) in it and its first
    differences, e.g. "Validation failed: schema (public.staff): constraint staff_email_key missing in the
    target | orphans (public.team.team_created_by_fkey): public.team.team_created_by_fkey: 3 orphan row(s) …".
    At most MESSAGE_DIFFERENCES differences per check, then "and N more". A failing check without failing
    items is named with its summary. "" when the validation passed."""
    failing = [check for check in result.get("checks") or [] if check.get("status") == "fail"]
    if not failing:
        return "Validation failed" if result.get("status") == "fail" else ""
    parts = []
    for check in failing:
        labels = _failing_labels(check)
        name = check.get("name") or check.get("title") or "check"
        differences = _differences(check, name_objects=len(labels) > 1)
        if labels:
            shown = differences[:MESSAGE_DIFFERENCES]
            more = len(differences) - len(shown)
            parts.append(f"{name} ({', '.join(labels)}): " + "; ".join(shown) + (f"; and {more} more" if more else ""))
        elif check.get("summary"):
            summary = " ".join(str(check["summary"]).split())
            parts.append(f"{name}: {summary[:200]}")
        else:
            parts.append(name)
    return "Validation failed: " + " | ".join(parts)


# --- formatting helpers ----------------------------------------------------------------------------------


def _seconds(value):
    return human_duration(None if value == "" else value)


def _plural(count, noun):
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _extra_value(value):
    if isinstance(value, float):
        text = f"{value:.4f}".rstrip("0").rstrip(".")
    elif isinstance(value, (list, tuple)):
        text = ", ".join(str(v) if not isinstance(v, (dict, list)) else json.dumps(v, default=str) for v in value)
    elif isinstance(value, dict):
        text = json.dumps(value, ensure_ascii=False, default=str)
    else:
        text = str(value)
    return text if len(text) <= MAX_EXTRA_CHARS else text[:MAX_EXTRA_CHARS] + " ..."


def _extras(item):
    """[(key, text)] of an item's keys besides table, status and detail."""
    return [(key, _extra_value(value)) for key, value in item.items()
            if key not in ITEM_KEYS and value is not None and value != [] and value != {}]


def _counts(checks):
    counts = {status: 0 for status in STATUS_ORDER}
    for check in checks:
        counts[check.get("status")] = counts.get(check.get("status"), 0) + 1
    return counts


def _failing_count(check):
    items = check.get("items") or []
    return sum(1 for item in items if item.get("status") == "fail"), len(items)


# --- JSON ------------------------------------------------------------------------------------------------


def render_json(result):
    return json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n"


# --- Markdown --------------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*|<>\[\]&])")


def _md(value):
    """A Markdown table cell: escaped, on one line."""
    text = _MD_SPECIAL.sub(r"\\\1", "" if value is None else str(value))
    return "<br>".join(line.strip() for line in text.splitlines()) if "\n" in text else text


def render_markdown(result):
    checks = ordered_checks(result)
    counts = _counts(checks)
    status = str(result.get("status", "")).upper()
    lines = [f"# Migration validation: {_md(status)}", "",
             "| | |", "|---|---|",
             f"| Source | {_md(result.get('source'))} |",
             f"| Target | {_md(result.get('target'))} |",
             f"| Started | {_md(result.get('started_at'))} |",
             f"| Duration | {_md(_seconds(result.get('seconds')))} |",
             "| Checks | " + _md(", ".join(f"{n} {s}" for s, n in counts.items() if n)) + " |", ""]
    message = failure_message(result)
    if message:
        lines += [f"**{_md(message)}**", ""]
    lines += ["## Checks", "", "| Check | Status | Summary | Failing items | Time |", "|---|---|---|---:|---:|"]
    for check in checks:
        failing, total = _failing_count(check)
        lines.append(f"| {_md(check.get('title') or check.get('name'))} (`{_md(check.get('name'))}`) | "
                     f"{_md(str(check.get('status', '')).upper())} | {_md(check.get('summary'))} | "
                     f"{failing} / {total} | {_md(_seconds(check.get('seconds')))} |")
    for check in checks:
        items = _ordered_items(check)
        lines += ["", f"## {_md(check.get('title') or check.get('name'))}: {_md(str(check.get('status', '')).upper())}",
                  "", _md(check.get("summary")), "",
                  f"Check `{_md(check.get('name'))}`, {_plural(len(items), 'item')}, "
                  f"{_md(_seconds(check.get('seconds')))}."]
        if not items:
            continue
        lines += ["", "| Table | Status | Detail | More |", "|---|---|---|---|"]
        for item in items:
            extra = "; ".join(f"{key}: {text}" for key, text in _extras(item))
            lines.append(f"| {_md(item.get('table') or item_label(item) or '-')} | "
                         f"{_md(str(item.get('status', '')).upper())} | {_md(item.get('detail'))} | {_md(extra)} |")
    return "\n".join(lines) + "\n"


# --- HTML ------------------------------------------------------------------------------------------------


def render_html(result, copy_summary=None):
    """validation.html (reports/templates.py): the checks, a grid of every table's results and, given the
    copy's summary.json, the copy's phases and timelines."""
    checks = ordered_checks(result)
    return html_reports.render_validation_html(
        result, checks, _counts(checks), failure_message(result), _ordered_items, _extras, item_label,
        copy_summary=copy_summary)


# --- files -----------------------------------------------------------------------------------------------


def _write(path, text):
    """A reader sees the old report or the new one, never half of one."""
    replace_atomically(path, text, mode=0o644)


def write_reports(result, directory, copy_summary=None):
    """Write validation.json, validation.md and validation.html into directory (created if missing).
    copy_summary: the copy's summary.json, shown in the HTML; by default the newest one between the same
    databases under the artifacts directory that holds directory (<artifacts>/validation/<timestamp>).
    Returns {"json": path, "markdown": path, "html": path}."""
    if copy_summary is None and os.path.basename(os.path.dirname(os.path.abspath(directory))) == "validation":
        copy_summary = html_reports.find_copy_summary(os.path.dirname(os.path.dirname(os.path.abspath(directory))),
                                                      result.get("source"), result.get("target"))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    paths = {"json": os.path.join(directory, JSON_FILE), "markdown": os.path.join(directory, MARKDOWN_FILE),
             "html": os.path.join(directory, HTML_FILE)}
    _write(paths["json"], render_json(result))
    _write(paths["markdown"], render_markdown(result))
    _write(paths["html"], render_html(result, copy_summary))
    return paths
