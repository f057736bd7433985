"""The reports' HTML templates (Jinja2, autoescaped). They live here as Python strings, not as .html files, so
that a module shipped by Ansible (AnsiballZ zips module_utils as Python) finds them wherever it runs.

Charts arrive as markupsafe.Markup built by svg.py (their text escaped there); everything else is escaped by
the environment."""

STYLE = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1f2328;
       margin: 1.5em auto; max-width: 1160px; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .3em; }
h2 { font-size: 1.25em; margin-top: 1.3em; border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
table { border-collapse: collapse; width: 100%; margin: .6em 0; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
table.meta { width: auto; }
table.meta th { width: 9em; }
td.num, th.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.detail { word-break: break-word; }
td.extra { font-size: 12px; color: #57606a; word-break: break-word; }
.status { display: inline-block; min-width: 3.2em; text-align: center; font-weight: 600; border-radius: 3px;
          padding: 0 .4em; font-size: 12px; letter-spacing: .03em; }
.status.pass, .status.success, .status.complete { background: #dafbe1; color: #116329; }
.status.fail, .status.failed { background: #ffebe9; color: #a40e26; }
.status.warn { background: #fff8c5; color: #7d4e00; }
.status.skip { background: #eaeef2; color: #57606a; }
tr.fail td { background: #fff5f5; }
tr.warn td { background: #fffdf0; }
p.message { padding: .6em .8em; border-left: 4px solid #cf222e; background: #ffebe9; }
p.summary { margin: .3em 0; }
p.timing, p.note { color: #57606a; font-size: 12px; margin: .2em 0; }
code.muted { color: #57606a; margin-left: .4em; }
h3 { font-size: 1.05em; margin: 1em 0 .3em; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
.cards { display: flex; flex-wrap: wrap; gap: .8em; margin: 1em 0; }
.card { border: 1px solid #d0d7de; border-radius: 6px; padding: .5em .9em; min-width: 8.5em; background: #f6f8fa; }
.card .value { font-size: 1.35em; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .label { color: #57606a; font-size: 12px; }
.chart-box { overflow-x: auto; margin: .4em 0 1em; }
.side-by-side { display: flex; flex-wrap: wrap; gap: 2.5em; align-items: flex-start; }
.side-by-side > div { min-width: 0; max-width: 100%; }
h3.inline { margin: .2em 0; font-size: 1.05em; }
svg.chart rect.bar:hover, svg.chart rect.cell:hover { opacity: .8; }
"""

BASE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ page_title }}</title>
<style>{{ style }}</style>
</head>
<body>
{% block body %}{% endblock %}
<p class="note">pgmigrate {{ kind }} report &middot; one self-contained file: no script, no external resource.</p>
</body>
</html>
"""

MACROS = """{% macro badge(status) -%}
<span class="status {{ status if status in known_statuses else 'skip' }}">{{ (status or '') | upper }}</span>
{%- endmacro %}
{% macro cards(items) -%}
<div class="cards">{% for label, value in items %}<div class="card"><div class="value">{{ value }}</div>
<div class="label">{{ label }}</div></div>{% endfor %}</div>
{%- endmacro %}
"""

COPY_SECTION = """{% from "macros.html" import badge, cards %}
{% if in_validation %}<h2 id="copy">The copy it checks {{ badge(copy.status) }}</h2>{% endif %}
<p class="summary">Run <code>{{ copy.run_id }}</code>{% if copy.resumed %} (resumed){% endif %}:
<code>{{ copy.source }}</code> &rarr; <code>{{ copy.target }}</code>, schema mode {{ copy.schema_mode }},
{{ copy.workers }} workers.</p>
{{ cards(copy.cards) }}
{% if copy.phases_svg %}<h3>Where the time went: the phases</h3>
<div class="chart-box">{{ copy.phases_svg }}</div>{% endif %}
{% if copy.workers_svg %}<h3>Timeline by worker</h3>
<p class="note">Each bar is one job of the worker pool: a table's data (with, for small tables, its indexes and
keys in the same transaction), its indexes, its constraints, its statistics; behind them, the copy's phases.
Hover a bar for its table and times.</p>
<div class="chart-box">{{ copy.workers_svg }}</div>{% endif %}
{% if copy.tables_svg %}<h3>Timeline by table</h3>
{% if copy.tables_hidden %}<p class="note">The {{ copy.tables_shown }} tables that took longest;
{{ copy.tables_hidden }} more in the table below.</p>{% endif %}
<div class="chart-box">{{ copy.tables_svg }}</div>{% endif %}
{% if not copy.workers_svg %}<p class="note">No timeline: this run's summary has none (a run made before the
timeline was recorded, or a resumed run whose jobs were all done before).</p>{% endif %}
<h3>Tables</h3>
<table class="tables">
<tr><th>Table</th><th class="num">Rows</th><th class="num">Size streamed</th><th class="num">Data</th>
<th class="num">Indexes</th><th class="num">Constraints</th><th>Workers</th><th class="num">Parts</th></tr>
{% for t in copy.tables %}<tr><td><code>{{ t.table }}</code></td><td class="num">{{ t.rows }}</td>
<td class="num">{{ t.bytes }}</td><td class="num">{{ t.seconds }}</td><td class="num">{{ t.indexes }}</td>
<td class="num">{{ t.constraints }}</td><td>{{ t.workers }}</td>
<td class="num">{{ t.parts }}</td></tr>
{% endfor %}</table>
{% if copy.warnings %}<h3>Warnings</h3><ul>{% for w in copy.warnings %}<li>{{ w }}</li>{% endfor %}</ul>{% endif %}
"""

COPY = """{% extends "base.html" %}
{% from "macros.html" import badge %}
{% block body %}
<h1>Migration copy {{ badge(copy.status) }}</h1>
{% include "copy_section.html" %}
{% endblock %}
"""

VALIDATION = """{% extends "base.html" %}
{% from "macros.html" import badge, cards %}
{% block body %}
<h1>Migration validation {{ badge(status) }}</h1>
<div class="side-by-side"><div>
<table class="meta">
<tr><th>Source</th><td><code>{{ source }}</code></td></tr>
<tr><th>Target</th><td><code>{{ target }}</code></td></tr>
<tr><th>Started</th><td>{{ started_at }}</td></tr>
<tr><th>Duration</th><td>{{ duration }}</td></tr>
<tr><th>Checks</th><td>{% for s, n in counts %}{{ badge(s) }} {{ n }} {% endfor %}</td></tr>
</table>
{% if message %}<p class="message">{{ message }}</p>{% endif %}
</div>
{% if grid_svg %}<div><h3 class="inline">Every table at a glance</h3>
<p class="note">A cell per table and check{% if grid_hidden %}; the {{ grid_shown }} tables with the worst
results, {{ grid_hidden }} more left out (the checks below list every one){% endif %}. Hover a cell for its
detail.</p>
<div class="chart-box">{{ grid_svg }}</div></div>{% endif %}
</div>
<h2>Checks</h2>
<table class="summary">
<tr><th>Check</th><th>Status</th><th>Summary</th><th>Failing items</th><th>Time</th></tr>
{% for c in checks %}<tr class="{{ c.status }}"><td><a href="#{{ c.anchor }}">{{ c.title }}</a>
<code class="muted">{{ c.name }}</code></td><td>{{ badge(c.status) }}</td><td>{{ c.summary }}</td>
<td class="num">{{ c.failing }} / {{ c.total }}</td><td class="num">{{ c.seconds }}</td></tr>
{% endfor %}</table>
{% if copy %}{% include "copy_section.html" %}{% endif %}
{% for c in checks %}
<h2 id="{{ c.anchor }}">{{ c.title }} {{ badge(c.status) }}</h2>
<p class="summary">{{ c.summary }}</p>
<p class="timing"><code>{{ c.name }}</code> &middot; {{ c.items_text }} &middot; {{ c.seconds }}</p>
{% if c.entries %}<table class="items">
<tr><th>Table</th><th>Status</th><th>Detail</th><th>More</th></tr>
{% for i in c.entries %}<tr class="{{ i.status }}"><td><code>{{ i.label }}</code></td><td>{{ badge(i.status) }}</td>
<td class="detail">{{ i.detail }}</td><td class="extra">{% for key, text in i.extras %}<b>{{ key }}</b>: {{ text }}
{%- if not loop.last %}<br>{% endif %}{% endfor %}</td></tr>
{% endfor %}</table>{% endif %}
{% endfor %}
{% endblock %}
"""

RUN = """{% extends "base.html" %}
{% from "macros.html" import badge, cards %}
{% block body %}
<h1>Run of {{ run.playbook }} {{ badge(run.status) }}</h1>
<table class="meta">
<tr><th>Started</th><td>{{ run.started_at }}</td></tr>
<tr><th>Inventory</th><td><code>{{ run.inventory }}</code></td></tr>
</table>
{{ cards(run.cards) }}
<h2>The phases of the whole run</h2>
<p class="note">One bar per play, at its time; hover a bar for its duration. Plays in which every task was
skipped (by their conditions or the tags) are grey.</p>
<div class="chart-box">{{ run.timeline_svg }}</div>
<div class="chart-box">{{ run.bars_svg }}</div>
{% if run.reports %}<h2>This run's reports</h2>
<ul>{% for report in run.reports %}<li><a href="{{ report.href }}">{{ report.label }}</a></li>{% endfor %}</ul>
{% endif %}
<h2>Plays</h2>
<table>
<tr><th>Play</th><th>Status</th><th class="num">Tasks</th><th class="num">Started at</th><th class="num">Took</th></tr>
{% for p in run.plays %}<tr class="{{ 'fail' if p.status == 'failed' else '' }}"><td>{{ p.play }}</td>
<td>{{ badge(p.badge) }}</td><td class="num">{{ p.tasks }}</td><td class="num">{{ p.start }}</td>
<td class="num">{{ p.seconds }}</td></tr>
{% endfor %}</table>
{% endblock %}
"""

TEMPLATES = {"base.html": BASE, "macros.html": MACROS, "copy_section.html": COPY_SECTION, "copy.html": COPY,
             "validation.html": VALIDATION, "run.html": RUN}
