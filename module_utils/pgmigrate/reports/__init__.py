"""The HTML reports: the copy's report.html (beside its summary.json) and the validation's validation.html, built
from Jinja2 templates (templates.py, autoescaped) with inline SVG charts (svg.py): a timeline of the copy by
worker and by table, the phases of the run, the validation per table at a glance. Sizes and durations are
written by common/units.py. See docs/reports.md."""
