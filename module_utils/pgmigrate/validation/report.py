"""Validation reports: validation.json, validation.md and a self-contained validation.html, and the
one-line message of a failed validation.

A validation result is
    {"status": "pass"|"fail", "source": "user@host:port/db", "target": "...", "started_at": iso string,
     "seconds": float, "checks": [check, ...]}
and a check
    {"name", "title", "status": "pass"|"fail"|"warn"|"skip", "summary", "seconds",
     "items": [{"table": str|None, "status": "pass"|"fail"|"warn", "detail": str, ...extra keys}]}.
Checks never hold secrets nor the values of sensitive columns; the reports print what the checks hold,
escaped (HTML and Markdown). Plain standard library.
"""

import html
import json
import os
import re

from ..common.files import replace_atomically

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

STYLE = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1f2328;
       margin: 2em auto; max-width: 1200px; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .3em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
table { border-collapse: collapse; width: 100%; margin: .6em 0; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
table.meta { width: auto; }
table.meta th { width: 9em; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.detail { word-break: break-word; }
td.extra { font-size: 12px; color: #57606a; word-break: break-word; }
.status { display: inline-block; min-width: 3.2em; text-align: center; font-weight: 600; border-radius: 3px;
          padding: 0 .4em; font-size: 12px; letter-spacing: .03em; }
.status.pass { background: #dafbe1; color: #116329; }
.status.fail { background: #ffebe9; color: #a40e26; }
.status.warn { background: #fff8c5; color: #7d4e00; }
.status.skip { background: #eaeef2; color: #57606a; }
tr.fail td { background: #fff5f5; }
tr.warn td { background: #fffdf0; }
p.message { padding: .6em .8em; border-left: 4px solid #cf222e; background: #ffebe9; }
p.summary { margin: .3em 0; }
p.timing { color: #57606a; font-size: 12px; margin: .2em 0; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
"""


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
    if value is None or value == "":
        return "-"
    try:
        return f"{float(value):.3f} s"
    except (TypeError, ValueError):
        return str(value)


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


def _h(value):
    return html.escape("" if value is None else str(value), quote=True)


def _badge(status):
    status = str(status or "")
    css = status if status in STATUS_ORDER else "skip"
    return f'<span class="status {css}">{_h(status.upper())}</span>'


def _anchor(check, index):
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", str(check.get("name") or "check"))
    return f"check-{index}-{name}"


def render_html(result):
    checks = ordered_checks(result)
    counts = _counts(checks)
    status = str(result.get("status", ""))
    title = f"Migration validation: {status.upper()} ({result.get('source')} -> {result.get('target')})"
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_h(title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
           f"<h1>Migration validation {_badge(status)}</h1>",
           '<table class="meta">',
           f"<tr><th>Source</th><td><code>{_h(result.get('source'))}</code></td></tr>",
           f"<tr><th>Target</th><td><code>{_h(result.get('target'))}</code></td></tr>",
           f"<tr><th>Started</th><td>{_h(result.get('started_at'))}</td></tr>",
           f"<tr><th>Duration</th><td>{_h(_seconds(result.get('seconds')))}</td></tr>",
           "<tr><th>Checks</th><td>" + " ".join(f"{_badge(s)} {n}" for s, n in counts.items() if n) + "</td></tr>",
           "</table>"]
    message = failure_message(result)
    if message:
        out.append(f'<p class="message">{_h(message)}</p>')
    out += ["<h2>Checks</h2>", '<table class="summary">',
            "<tr><th>Check</th><th>Status</th><th>Summary</th><th>Failing items</th><th>Time</th></tr>"]
    for index, check in enumerate(checks):
        failing, total = _failing_count(check)
        out.append(f'<tr class="{_h(check.get("status"))}">'
                   f'<td><a href="#{_anchor(check, index)}">{_h(check.get("title") or check.get("name"))}</a><br>'
                   f'<code>{_h(check.get("name"))}</code></td>'
                   f"<td>{_badge(check.get('status'))}</td><td>{_h(check.get('summary'))}</td>"
                   f'<td class="num">{failing} / {total}</td>'
                   f'<td class="num">{_h(_seconds(check.get("seconds")))}</td></tr>')
    out.append("</table>")
    for index, check in enumerate(checks):
        items = _ordered_items(check)
        out += [f'<h2 id="{_anchor(check, index)}">{_h(check.get("title") or check.get("name"))} '
                f"{_badge(check.get('status'))}</h2>",
                f'<p class="summary">{_h(check.get("summary"))}</p>',
                f'<p class="timing"><code>{_h(check.get("name"))}</code> &middot; '
                f'{_plural(len(items), "item")} &middot; {_h(_seconds(check.get("seconds")))}</p>']
        if not items:
            continue
        out += ['<table class="items">', "<tr><th>Table</th><th>Status</th><th>Detail</th><th>More</th></tr>"]
        for item in items:
            extra = "<br>".join(f"<b>{_h(key)}</b>: {_h(text)}" for key, text in _extras(item))
            out.append(f'<tr class="{_h(item.get("status"))}">'
                       f"<td><code>{_h(item.get('table') or item_label(item) or '-')}</code></td>"
                       f"<td>{_badge(item.get('status'))}</td>"
                       f'<td class="detail">{_h(item.get("detail"))}</td><td class="extra">{extra}</td></tr>')
        out.append("</table>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


# --- files -----------------------------------------------------------------------------------------------


def _write(path, text):
    """A reader sees the old report or the new one, never half of one."""
    replace_atomically(path, text, mode=0o644)


def write_reports(result, directory):
    """Write validation.json, validation.md and validation.html into directory (created if missing).
    Returns {"json": path, "markdown": path, "html": path}."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    paths = {"json": os.path.join(directory, JSON_FILE), "markdown": os.path.join(directory, MARKDOWN_FILE),
             "html": os.path.join(directory, HTML_FILE)}
    _write(paths["json"], render_json(result))
    _write(paths["markdown"], render_markdown(result))
    _write(paths["html"], render_html(result))
    return paths
