"""The whole run's phases (reports/run_timeline.py and render.run_view): each play's time and outcome as the
callback plugin migration_run_report feeds them, with a given clock."""

import xml.etree.ElementTree as ET

from pgmigrate.reports.render import render_run_html, run_view
from pgmigrate.reports.run_timeline import PlayTimeline


def a_run():
    timeline = PlayTimeline("migrate.yml", started=100.0)
    timeline.play_started("(1/10) ASSESS", 100.5)
    timeline.task_done()
    timeline.play_started("(4/10) MAINTENANCE ON", 103.0)  # every task skipped: no app_servers
    timeline.play_started("(5/10) COPY", 103.2)
    timeline.task_done()
    timeline.task_done(failed=True)
    return timeline.finish("failed", 160.0)


def test_each_play_ends_when_the_next_starts_and_says_how_it_went():
    run = a_run()
    assert run["status"] == "failed" and run["seconds"] == 60.0
    assert [(p["play"], p["start"], p["end"], p["status"], p["tasks"]) for p in run["plays"]] == [
        ("(1/10) ASSESS", 0.5, 3.0, "ok", 1),
        ("(4/10) MAINTENANCE ON", 3.0, 3.2, "skipped", 0),
        ("(5/10) COPY", 3.2, 60.0, "failed", 2),
    ]


def test_an_ignored_failure_is_not_a_failed_play():
    timeline = PlayTimeline("p.yml", started=0.0)
    timeline.play_started("one", 0.0)
    timeline.task_done(failed=False)
    assert timeline.finish("success", 1.0)["plays"][0]["status"] == "ok"


def test_the_page_draws_a_bar_per_play_and_a_duration_bar_per_play_that_ran():
    view = run_view(a_run(), reports=[{"label": "The copy: runs/x/report.html", "href": "../runs/x/report.html"}])
    timeline = ET.fromstring(str(view["timeline_svg"]))
    bars = ET.fromstring(str(view["bars_svg"]))
    assert len([r for r in timeline.iter("rect") if r.get("class") == "bar"]) == 3
    assert len([r for r in bars.iter("rect") if r.get("class") == "bar"]) == 2  # the skipped play has no bar
    assert ("took", "1 min 00 s") in view["cards"] and ("plays run", "2 of 3") in view["cards"]
    html = render_run_html(a_run(), reports=[{"label": "<copy>", "href": "../runs/x/report.html"}])
    assert "Run of migrate.yml" in html and "&lt;copy&gt;" in html and 'href="../runs/x/report.html"' in html
