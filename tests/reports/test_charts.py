"""The reports' parts in plain Python: the one unit style (common/units.py), the SVG chart builders
(reports/svg.py) and the templates' rendering (reports/render.py), without a database or a browser."""

import json
import os
import re
import xml.etree.ElementTree as ET

import pytest

from pgmigrate.common.units import human_bytes, human_duration
from pgmigrate.reports import render, svg
from pgmigrate.validation import report


@pytest.mark.parametrize("seconds, text", [
    (0, "0 ms"), (0.0004, "0 ms"), (0.85, "850 ms"), (0.9996, "1.0 s"), (1, "1.0 s"), (12.34, "12.3 s"),
    (59.94, "59.9 s"), (59.96, "1 min 00 s"), (245, "4 min 05 s"), (3599.4, "59 min 59 s"), (3600, "1 h 00 min"),
    (3720, "1 h 02 min"), (90061, "25 h 01 min"), (None, "-"), ("soon", "-"), (-2.5, "-2.5 s")])
def test_durations_have_one_style(seconds, text):
    assert human_duration(seconds) == text


def test_sizes_and_durations_in_the_reports_use_the_one_style():
    assert human_bytes(19.2 * 1024 * 1024) == "19.2 MB"
    assert report._seconds(1.25) == human_duration(1.25) == "1.2 s"
    assert report._seconds("") == report._seconds(None) == "-"


def parse(markup):
    """The SVG as XML: well-formed, every text escaped."""
    return ET.fromstring(markup)


def bars(root):
    return [r for r in root.iter("rect") if r.get("class") == "bar"]


def test_the_timeline_draws_a_bar_per_job_at_its_time_with_a_tooltip():
    lanes = [("worker 1", [{"start": 0.0, "end": 2.0, "step": "data", "label": "orders", "tip": "orders <data>"},
                           {"start": 2.0, "end": 3.0, "step": "indexes", "label": "orders", "tip": "idx & key"}]),
             ("worker 2", [{"start": 1.0, "end": 4.0, "step": "constraints", "label": "a_very_long_table_name_here",
                            "tip": "fk"}])]
    root = parse(svg.lanes_chart(lanes, width=1000, label_width=100, bands=[("data", 0, 4)]))
    drawn = bars(root)
    assert len(drawn) == 3
    plot = 1000 - 100 - 20
    # x and width in proportion to the times (axis 0..4 s over the plot's width)
    assert float(drawn[0].get("x")) == pytest.approx(100)
    assert float(drawn[0].get("width")) == pytest.approx(plot / 2, abs=0.1)
    assert float(drawn[2].get("x")) == pytest.approx(100 + plot / 4, abs=0.1)
    assert [b.get("fill") for b in drawn] == [svg.STEP_COLOURS[s] for s in ("data", "indexes", "constraints")]
    assert [b.find("title").text for b in drawn] == ["orders <data>", "idx & key", "fk"]
    texts = [t.text for t in root.iter("text")]
    assert "worker 1" in texts and "worker 2" in texts and "0 ms" in texts and "2.0 s" in texts
    assert "orders" in texts  # the label fits inside its bar
    assert all(not t or len(t) < 40 for t in texts)  # a long label is cut to its bar, not spilled over
    assert {"data", "indexes", "constraints"} <= set(texts)  # the legend names the steps drawn


def test_two_timelines_given_one_end_share_their_axis():
    short = [("a", [{"start": 0, "end": 1, "step": "data"}])]
    long = [("b", [{"start": 0, "end": 4, "step": "data"}])]
    first = bars(parse(svg.lanes_chart(short, end=4)))[0]
    second = bars(parse(svg.lanes_chart(long, end=4)))[0]
    assert float(first.get("width")) * 4 == pytest.approx(float(second.get("width")), abs=0.5)


def test_phase_bars_are_in_proportion_and_name_their_duration_and_share():
    root = parse(svg.bar_chart([("schema", 0.5), ("data", 12.5), ("post-data", 65)], width=900))
    drawn = bars(root)
    widths = [float(b.get("width")) for b in drawn]
    assert widths[2] > widths[1] > widths[0] and widths[1] / widths[2] == pytest.approx(12.5 / 65, rel=0.01)
    texts = [t.text for t in root.iter("text")]
    assert "500 ms (1%)" in texts and "12.5 s (16%)" in texts and "1 min 05 s (83%)" in texts


def test_the_status_grid_colours_each_cell_and_leaves_blank_what_a_check_does_not_say():
    rows = [("public.a", {"row_counts": {"status": "fail", "tip": "public.a <differs>"}}),
            ("public.b", {"row_counts": {"status": "pass", "tip": "ok"}, "orphans": {"status": "warn", "tip": "w"}})]
    root = parse(svg.status_grid(rows, ["row_counts", "orphans"]))
    cells = [r for r in root.iter("rect") if (r.get("class") or "").startswith("cell")]
    assert [(c.get("class"), c.get("fill")) for c in cells] == [
        ("cell fail", svg.STATUS_COLOURS["fail"]), ("cell pass", svg.STATUS_COLOURS["pass"]),
        ("cell warn", svg.STATUS_COLOURS["warn"])]
    assert cells[0].find("title").text == "public.a <differs>"
    blank = [r for r in root.iter("rect") if r.get("fill") == "none"]
    assert len(blank) == 2  # public.a's orphans cell, and the legend's


def validation_result():
    return {"status": "fail", "source": "u@s:1/db", "target": "u@t:2/db", "started_at": "2026-01-01T00:00:00Z",
            "seconds": 75.2, "checks": [
                {"name": "row_counts", "title": "Row counts", "status": "fail", "summary": "1 differs", "seconds": 2,
                 "items": [{"table": "public.ok", "status": "pass", "detail": "10 rows"},
                           {"table": "public.<b>bad</b>", "status": "fail", "detail": "3 != 4"}]},
                {"name": "orphans", "title": "Orphans", "status": "warn", "summary": "source has orphans",
                 "seconds": 0.5, "items": [{"table": "public.ok", "status": "warn", "detail": "1 orphan"}]}]}


def copy_summary():
    return {"status": "complete", "run_id": "r1", "source": "u@s:1/db", "target": "u@t:2/db", "workers": 2,
            "schema_mode": "copy", "seconds": 9.5, "rows": 14, "bytes": 3 * 1024 * 1024,
            "phases": {"setup": 0.5, "schema": 1.0, "data": 6.0, "post-data": 2.0},
            "tables": [{"table": "public.ok", "rows": 10, "bytes": 2048, "seconds": 4.0, "workers": [1], "parts": 1},
                       {"table": "public.<b>bad</b>", "rows": 4, "bytes": 1024, "seconds": 1.0, "workers": [2],
                        "parts": 1}],
            "timeline": [{"table": "public.ok", "step": "data", "worker": 1, "start": 1.5, "end": 5.5},
                         {"table": "public.ok", "step": "indexes", "worker": 2, "start": 5.5, "end": 6.5},
                         {"table": "public.<b>bad</b>", "step": "data", "worker": 2, "start": 1.5, "end": 2.5},
                         {"table": "public.ok", "step": "constraints", "worker": 1, "start": 7.5, "end": 9.0}],
            "warnings": ["<careful>"]}


def test_the_grid_puts_the_worst_tables_first():
    rows, columns, hidden = render.grid_rows(validation_result())
    assert [table for table, _ in rows] == ["public.<b>bad</b>", "public.ok"]
    assert columns == ["row_counts", "orphans"] and hidden == 0
    assert rows[1][1]["orphans"]["status"] == "warn"


def test_the_validation_page_escapes_everything_and_shows_the_copy_it_checks():
    page = report.render_html(validation_result(), copy_summary())
    assert "<b>bad</b>" not in page and "public.&lt;b&gt;bad&lt;/b&gt;" in page
    assert "&lt;careful&gt;" in page
    assert not re.search(r"https?://|<script|<link|url\(", page)
    assert page.count("<svg") == 4  # the grid, the phases, the timelines by worker and by table
    assert "1 min 15 s" in page and "3.0 MB" in page and "9.5 s" in page  # the one unit style
    assert page.index("Every table at a glance") < page.index("The copy it checks") < page.index("Timeline by worker")


def test_the_copy_page_draws_its_phases_and_timelines():
    page = render.render_copy_html(copy_summary())
    assert page.startswith("<!DOCTYPE html>") and "Migration copy" in page
    assert page.count('<rect class="bar"') == 4 + 4 + 4  # phases, by worker, by table
    view = render.copy_view(copy_summary())
    assert [(t["table"], t["indexes"], t["constraints"]) for t in view["tables"]] == [
        ("public.ok", "1.0 s", "1.5 s"), ("public.<b>bad</b>", "-", "-")]


def test_a_summary_without_a_timeline_still_renders():
    summary = {k: v for k, v in copy_summary().items() if k != "timeline"}
    page = render.render_copy_html(summary)
    assert "No timeline" in page and page.count("<svg") == 1


def test_the_validation_finds_the_copy_between_the_same_databases(tmp_path):
    for run_id, target in (("old", "u@t:2/db"), ("other", "u@x:3/db")):
        run_dir = tmp_path / "runs" / run_id
        run_dir.mkdir(parents=True)
        (run_dir / "summary.json").write_text(json.dumps({**copy_summary(), "run_id": run_id, "target": target}))
    os.utime(tmp_path / "runs" / "old" / "summary.json", (1, 1))
    assert render.find_copy_summary(str(tmp_path), "u@s:1/db", "u@t:2/db")["run_id"] == "old"
    assert render.find_copy_summary(str(tmp_path), "u@s:1/db", "u@nowhere:1/db") is None
    paths = report.write_reports(validation_result(), str(tmp_path / "validation" / "20260101T000000"))
    assert "Run <code>old</code>" in open(paths["html"]).read()


def test_the_grid_keeps_the_worst_tables_when_there_are_too_many():
    checks = [{"name": "row_counts", "status": "fail", "items": [
        {"table": f"public.t{i:03d}", "status": "fail" if i in (7, 93) else "pass", "detail": ""} for i in range(100)]}]
    rows, columns, hidden = render.grid_rows({"checks": checks}, limit=10)
    assert [table for table, _ in rows[:2]] == ["public.t007", "public.t093"] and len(rows) == 10 and hidden == 90
    page = report.render_html({"status": "fail", "checks": checks})
    assert page.count("<rect class=\"cell") == render.MAX_GRID_ROWS and "60 more left out" in page
