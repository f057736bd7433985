"""The HTML reports, from the templates (templates.py, Jinja2 with autoescape) and the charts (svg.py):

    render_copy_html(summary)                           the copy's report.html beside its summary.json
    render_validation_html(result, copy_summary=None)   validation.html: the validation, and the copy it checks
    find_copy_summary(artifacts_dir, source, target)    that copy: the newest run summary between the same databases
    render_run_html(run, ...)                           the whole run's phases (callback plugin migration_run_report)

Each file stands alone: inline CSS and SVG, no script, no external URL; it opens offline in any browser."""

import glob
import json
import os
import re

from ..common.units import human_bytes, human_duration
from . import svg, templates

# Statuses a badge knows (others are drawn as "skip").
KNOWN_STATUSES = ("pass", "fail", "warn", "skip", "success", "complete", "failed")
STATUS_ORDER = {"fail": 0, "warn": 1, "pass": 2, "skip": 3}
# How many tables a chart shows at most (the rest are in the tables below it).
MAX_TABLE_LANES = 30
MAX_GRID_ROWS = 40
# The timelines' label column: the same for both, so that their time axes line up.
LABEL_WIDTH = 190
# The engine's phases (clone/progress.py) in the order they run.
PHASE_ORDER = ("setup", "starting", "schema", "prepare", "data", "post-data", "sequences", "materialized views",
               "analyze", "finishing", "validation")


def _environment():
    import jinja2  # a dependency of ansible-core: wherever a module runs under Ansible, it is there
    from markupsafe import Markup

    env = jinja2.Environment(loader=jinja2.DictLoader(templates.TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals.update(style=Markup(templates.STYLE), known_statuses=KNOWN_STATUSES)
    return env, Markup


def _render(name, **values):
    env, _ = _environment()
    return env.get_template(name).render(**values)


def _markup(text):
    return _environment()[1](text) if text else ""


# --- the copy ---------------------------------------------------------------------------------------------


def _tip(job):
    return (f"{job.get('table') or job.get('key')}: {job.get('step')} on worker {job.get('worker')}, "
            f"{human_duration(job['start'])} → {human_duration(job['end'])} "
            f"({human_duration(job['end'] - job['start'])})")


def worker_lanes(summary):
    """[(label, segments)]: one lane per worker, a segment per job, labelled with its table."""
    lanes = {}
    for job in summary.get("timeline") or []:
        lanes.setdefault(job.get("worker"), []).append(
            {"start": job["start"], "end": job["end"], "step": job.get("step"),
             "label": (job.get("table") or job.get("step") or "").split(".")[-1], "tip": _tip(job)})
    return [(f"worker {worker}", segments) for worker, segments in sorted(lanes.items(), key=lambda kv: str(kv[0]))]


def table_lanes(summary, limit=MAX_TABLE_LANES):
    """[(table, segments)] of the tables that took longest (first start to last end), in order of start;
    and how many tables were left out."""
    spans = {}
    for job in summary.get("timeline") or []:
        if not job.get("table"):
            continue
        spans.setdefault(job["table"], []).append(
            {"start": job["start"], "end": job["end"], "step": job.get("step"),
             "label": f"w{job.get('worker')}", "tip": _tip(job)})
    longest = sorted(spans, key=lambda t: -(max(s["end"] for s in spans[t]) - min(s["start"] for s in spans[t])))
    shown = sorted(longest[:limit], key=lambda t: min(s["start"] for s in spans[t]))
    return [(table, spans[table]) for table in shown], max(len(spans) - limit, 0)


def phase_rows(summary, validation_seconds=None):
    """[(phase, seconds)] of the copy's phases (summary.json's "phases") in the order they ran, plus the
    validation's when given; phases under 1 ms left out."""
    phases = dict(summary.get("phases") or {})
    if validation_seconds is not None:
        phases["validation"] = validation_seconds
    order = {name: index for index, name in enumerate(PHASE_ORDER)}
    rows = [(name, float(value)) for name, value in phases.items()
            if isinstance(value, (int, float)) and value >= 0.001]
    return sorted(rows, key=lambda row: order.get(row[0], len(order)))


def phase_bands(summary):
    """[(phase, start, end)] of the copy's phases from the run's start, in the order they began (summary.json's
    "phases" holds each phase's seconds in that order; a phase entered twice counts once, with its total)."""
    bands, at = [], 0.0
    for name, seconds in (summary.get("phases") or {}).items():
        if isinstance(seconds, (int, float)) and seconds > 0:
            bands.append((name, at, at + seconds))
            at += seconds
    return bands


def _step_time(step_seconds, table, step):
    seconds = step_seconds.get((table, step))
    return human_duration(seconds) if seconds is not None else "-"


PHASE_COLOURS = {"data": svg.STEP_COLOURS["data"], "post-data": svg.STEP_COLOURS["constraints"],
                 "analyze": svg.STEP_COLOURS["analyze"], "validation": svg.STEP_COLOURS["validation"],
                 "setup": "#6e7781", "starting": "#6e7781", "schema": "#54aeff", "prepare": "#54aeff",
                 "sequences": "#bf3989", "materialized views": "#bf3989", "finishing": "#6e7781"}


def copy_view(summary, validation_seconds=None):
    """What the templates show of a copy's summary.json, every size and duration written once here."""
    tables = sorted(summary.get("tables") or [], key=lambda t: -(t.get("seconds") or 0))
    step_seconds = {}
    for job in summary.get("timeline") or []:
        key = (job.get("table"), job.get("step"))
        step_seconds[key] = step_seconds.get(key, 0.0) + job["end"] - job["start"]
    lanes = worker_lanes(summary)
    by_table, hidden = table_lanes(summary)
    phases = phase_rows(summary, validation_seconds)
    bands = phase_bands(summary)
    axis_end = max([job["end"] for job in summary.get("timeline") or []] + [b[2] for b in bands] + [0.001])
    large_objects = summary.get("large_objects") or {}
    cards = [("tables", f"{len(tables):,}"), ("rows", f"{summary.get('rows') or 0:,}"),
             ("streamed", human_bytes(summary.get("bytes"))), ("copy time", human_duration(summary.get("seconds"))),
             ("workers", str(summary.get("workers") or "-"))]
    if large_objects.get("count"):
        cards.append(("large objects", f"{large_objects['count']:,} ({human_bytes(large_objects.get('bytes'))})"))
    if validation_seconds is not None:
        cards.append(("validation time", human_duration(validation_seconds)))
    return {
        "status": summary.get("status") or "", "run_id": summary.get("run_id"), "resumed": summary.get("resumed"),
        "source": summary.get("source"), "target": summary.get("target"),
        "schema_mode": summary.get("schema_mode"), "workers": summary.get("workers"), "cards": cards,
        "phases_svg": _markup(svg.bar_chart(phases, colours=PHASE_COLOURS)) if phases else "",
        "workers_svg": _markup(svg.lanes_chart(lanes, bands=bands, label_width=LABEL_WIDTH, end=axis_end))
        if lanes else "",
        "tables_svg": _markup(svg.lanes_chart(by_table, lane_height=22, label_width=LABEL_WIDTH, end=axis_end))
        if by_table else "",
        "tables_shown": len(by_table), "tables_hidden": hidden,
        "tables": [{"table": t.get("table"), "rows": f"{t.get('rows') or 0:,}", "bytes": human_bytes(t.get("bytes")),
                    "seconds": human_duration(t.get("seconds")),
                    "indexes": _step_time(step_seconds, t.get("table"), "indexes"),
                    "constraints": _step_time(step_seconds, t.get("table"), "constraints"),
                    "workers": ", ".join(str(w) for w in t.get("workers") or []) or "-",
                    "parts": t.get("parts")} for t in tables],
        "warnings": [str(w) for w in summary.get("warnings") or []],
    }


def render_copy_html(summary):
    view = copy_view(summary)
    return _render("copy.html", page_title=f"Migration copy {view['run_id']}: {view['status']}", kind="copy",
                   copy=view, in_validation=False)


# --- the validation ---------------------------------------------------------------------------------------


def _item_status(item):
    return item.get("status") if item.get("status") in STATUS_ORDER else "skip"


def grid_rows(result, limit=MAX_GRID_ROWS):
    """(rows, columns, hidden): a row per table that a check's items name, a column per such check, each
    cell the worst status of the check's items about that table; the worst tables first."""
    columns, cells = [], {}
    for check in result.get("checks") or []:
        name = check.get("name") or check.get("title") or "check"
        for item in check.get("items") or []:
            table = item.get("table")
            if not table:
                continue
            if name not in columns:
                columns.append(name)
            status = _item_status(item)
            cell = cells.setdefault(str(table), {}).get(name)
            if cell is None or STATUS_ORDER[status] < STATUS_ORDER[cell["status"]]:
                cells[str(table)][name] = {"status": status,
                                           "tip": f"{table} · {name}: {status.upper()} — {item.get('detail') or ''}"}
    worst = {table: min(STATUS_ORDER[c["status"]] for c in found.values()) for table, found in cells.items()}
    ordered = sorted(cells, key=lambda table: (worst[table], table))
    return [(table, cells[table]) for table in ordered[:limit]], columns, max(len(ordered) - limit, 0)


def _anchor(check, index):
    return f"check-{index}-" + re.sub(r"[^A-Za-z0-9_-]+", "-", str(check.get("name") or "check"))


def render_validation_html(result, checks, counts, message, items_of, extras_of, label_of, copy_summary=None):
    """validation.html. checks: in the report's order; counts: {status: n}; message: the failure message;
    items_of(check), extras_of(item), label_of(item): the report's own ordering and wording (validation/report.py)."""
    rows, columns, hidden = grid_rows(result)
    checks_view = []
    for index, check in enumerate(checks):
        items = items_of(check)
        checks_view.append({
            "name": check.get("name"), "title": check.get("title") or check.get("name"),
            "status": check.get("status") or "", "summary": check.get("summary"), "anchor": _anchor(check, index),
            "failing": sum(1 for i in check.get("items") or [] if i.get("status") == "fail"),
            "total": len(check.get("items") or []), "seconds": human_duration(check.get("seconds")),
            "items_text": f"{len(items)} item" + ("" if len(items) == 1 else "s"),
            "entries": [{"status": i.get("status") or "", "label": i.get("table") or label_of(i) or "-",
                       "detail": i.get("detail"), "extras": extras_of(i)} for i in items]})
    status = str(result.get("status") or "")
    return _render(
        "validation.html", kind="validation",
        page_title=f"Migration validation: {status.upper()} ({result.get('source')} -> {result.get('target')})",
        status=status, source=result.get("source"), target=result.get("target"), started_at=result.get("started_at"),
        duration=human_duration(result.get("seconds")), counts=[(s, n) for s, n in counts.items() if n],
        message=message, checks=checks_view,
        grid_svg=_markup(svg.status_grid(rows, columns)) if rows else "",
        grid_shown=len(rows), grid_hidden=hidden,
        copy=copy_view(copy_summary, validation_seconds=result.get("seconds")) if copy_summary else None,
        in_validation=True)


def find_copy_summary(artifacts_dir, source, target):
    """The newest copy summary (artifacts_dir/runs/*/summary.json) between the same source and target
    (as common.connection.describe writes them), or None."""
    if not artifacts_dir:
        return None
    paths = sorted(glob.glob(os.path.join(artifacts_dir, "runs", "*", "summary.json")), key=os.path.getmtime,
                   reverse=True)
    for path in paths:
        try:
            with open(path) as handle:
                summary = json.load(handle)
        except (OSError, ValueError):
            continue
        if isinstance(summary, dict) and summary.get("source") == source and summary.get("target") == target:
            return summary
    return None


# --- the whole run ----------------------------------------------------------------------------------------

# A play's status (run_timeline.PlayTimeline) as the charts colour it and the badge names it.
PLAY_COLOURS = {"ok": svg.STATUS_COLOURS["pass"], "failed": svg.STATUS_COLOURS["fail"],
                "skipped": svg.STATUS_COLOURS["skip"]}
PLAY_BADGES = {"ok": "pass", "failed": "fail", "skipped": "skip"}


def run_view(run, started_at="", inventory="", reports=()):
    """What run.html shows of run_timeline.PlayTimeline.finish(): the plays on one time axis, their seconds,
    and links to the reports the run wrote (reports: [{"label", "href"}])."""
    plays = run["plays"]
    lanes = [(p["play"], [{"start": p["start"], "end": max(p["end"], p["start"] + 0.001), "step": p["status"],
                           "label": human_duration(p["seconds"]),
                           "tip": f"{p['play']}: {p['status']}, {human_duration(p['seconds'])}"}])
             for p in plays]
    ran = [p for p in plays if p["status"] != "skipped"]
    return {
        "playbook": run["playbook"], "status": run["status"], "started_at": started_at, "inventory": inventory or "-",
        "cards": [("took", human_duration(run["seconds"])), ("plays run", f"{len(ran)} of {len(plays)}"),
                  ("failed plays", sum(p["status"] == "failed" for p in plays))],
        "timeline_svg": _markup(svg.lanes_chart(lanes, label_width=420, colours=PLAY_COLOURS,
                                                end=max(run["seconds"], 0.001))) if plays else "",
        "bars_svg": _markup(svg.bar_chart([(p["play"], p["seconds"]) for p in ran], label_width=420,
                                          colours={p["play"]: PLAY_COLOURS[p["status"]] for p in ran}))
        if ran else "",
        "reports": list(reports),
        "plays": [{"play": p["play"], "status": p["status"], "badge": PLAY_BADGES[p["status"]], "tasks": p["tasks"],
                   "start": human_duration(p["start"]), "seconds": human_duration(p["seconds"])} for p in plays],
    }


def render_run_html(run, started_at="", inventory="", reports=()):
    view = run_view(run, started_at, inventory, reports)
    return _render("run.html", page_title=f"Run of {view['playbook']}: {view['status']}", kind="run", run=view)
