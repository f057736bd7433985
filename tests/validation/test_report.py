"""Validation reports (module_utils/pgmigrate/validation/report.py): the three files, a self-contained and escaped
HTML page, failing checks first, and the one-line failure message."""

import json
import re

import pytest
from markupsafe import escape

from conftest import connect
from pgmigrate.appchecks import app_checks
from pgmigrate.validation import report

HOSTILE = '<script>alert("x")</script> & | `code` *bold* [link]'


def sample_result(real_checks=()):
    checks = [
        {"name": "schema", "title": "Schema matches", "status": "pass", "summary": "21 tables match",
         "items": [{"table": "public.users", "status": "pass", "detail": "same columns"}], "seconds": 0.2},
        {"name": "row_counts", "title": "Row counts", "status": "fail", "summary": "2 of 3 tables differ",
         "items": [
             {"table": "public.audit", "status": "pass", "detail": "10 rows", "source_rows": 10, "target_rows": 10},
             {"table": "public.team", "status": "fail", "detail": "source 20 rows, target 19",
              "source_rows": 20, "target_rows": 19},
             {"table": "public.users", "status": "fail", "detail": HOSTILE, "source_rows": 120, "target_rows": 0},
             {"table": "public.users", "status": "fail", "detail": "listed twice, named once"},
         ], "seconds": 1.25},
        {"name": "sequences", "title": "Sequences", "status": "warn", "summary": "1 sequence behind",
         "items": [{"table": "public.role_permissions", "sequence": "role_permissions_id_seq", "status": "warn",
                    "detail": "last_value 3 < max(id) 384"}], "seconds": 0.01},
        {"name": "orphans", "title": "Orphan rows", "status": "fail", "summary": "1 foreign key with orphans",
         "items": [{"table": "public.team", "constraint": "team_created_by_fkey", "status": "fail",
                    "detail": "3 orphan rows: id=1; id=2; id=3", "keys": ["id=1", "id=2", "id=3"]},
                   {"table": "public.roles", "constraint": "roles_created_by_fkey", "status": "pass",
                    "detail": "no orphans"}], "seconds": 0.5},
        {"name": "extensions", "title": "Extensions", "status": "skip", "summary": "nothing to compare",
         "items": [], "seconds": 0.0},
        {"name": "connectivity", "title": "Connectivity", "status": "fail", "summary": "target <unreachable>",
         "items": [], "seconds": 0.0},
        *real_checks,
    ]
    return {"status": "fail", "source": "postgres@127.0.0.1:55432/cdp", "target": "postgres@127.0.0.1:55433/cdp",
            "started_at": "2024-05-01T12:00:00+00:00", "seconds": 3.5, "checks": checks}


@pytest.fixture
def real_checks(scratch, target_server):
    """Checks made on a real database: a missing index and a plaintext password."""
    params = scratch.create(target_server, "report")
    conn = connect(params)
    with conn, conn.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")
        cur.execute("CREATE TABLE public.members (id int PRIMARY KEY, email text, pw text)")
        cur.execute("INSERT INTO public.members VALUES (1, 'a@example.com', 'hunter2'), "
                    "(2, 'b@example.com', crypt('pw', gen_salt('bf', 4)))")
    checks = (app_checks.check_required_indexes(conn, [{"name": "idx_members_email", "table": "public.members"}]),
              app_checks.check_password_hashes(conn, [{"table": "public.members", "column": "pw", "key": ["id"]}]))
    conn.close()
    return checks


def test_write_reports_creates_the_three_files(tmp_path, real_checks):
    result = sample_result(real_checks)
    directory = tmp_path / "reports" / "validation"
    paths = report.write_reports(result, str(directory))
    assert set(paths) == {"json", "markdown", "html"}
    assert [p.split("/")[-1] for p in (paths["json"], paths["markdown"], paths["html"])] == [
        "validation.json", "validation.md", "validation.html"]
    assert json.loads(open(paths["json"], encoding="utf-8").read()) == result
    assert sorted(p.name for p in directory.iterdir()) == ["validation.html", "validation.json", "validation.md"]
    # Rewriting replaces them.
    result["status"] = "pass"
    report.write_reports(result, str(directory))
    assert json.loads(open(paths["json"], encoding="utf-8").read())["status"] == "pass"
    assert "hunter2" not in "".join(open(p, encoding="utf-8").read() for p in paths.values())


def test_html_is_self_contained_and_escaped(tmp_path, real_checks):
    result = sample_result(real_checks)
    page = open(report.write_reports(result, str(tmp_path))["html"], encoding="utf-8").read()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # no external assets, no script at all
    assert not re.search(r"https?://", page)
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    assert "src=" not in page and "url(" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; |" in page
    assert "target &lt;unreachable&gt;" in page
    assert "<style>" in page and ".status.fail" in page
    # every check is there with its items and timings, failing checks first
    for check in result["checks"]:
        assert str(escape(check["title"])) in page  # as the template's autoescape writes it
    positions = [page.index(f"<code>{name}</code>") for name in ("row_counts", "sequences", "schema", "extensions")]
    assert positions == sorted(positions)
    assert "public.team.team_created_by_fkey" in page  # in the failure message
    assert "1.2 s" in page and "3.5 s" in page
    assert "source_rows</b>: 20" in page


def test_markdown_lists_failing_checks_first_and_escapes_cells(tmp_path):
    result = sample_result()
    text = open(report.write_reports(result, str(tmp_path))["markdown"], encoding="utf-8").read()
    assert text.startswith("# Migration validation: FAIL")
    headings = [line for line in text.splitlines() if line.startswith("## ") and line != "## Checks"]
    assert [h.split(":")[-1].strip() for h in headings] == ["FAIL", "FAIL", "FAIL", "WARN", "PASS", "SKIP"]
    assert "<script>" not in text and r"\<script\>" in text
    assert r"& \| \`code\` \*bold\*".replace("&", r"\&") in text
    for line in text.splitlines():
        if line.startswith("| public.users | FAIL"):
            assert line.count(" | ") == 3  # the pipe in the detail does not add a column


def test_failure_message_names_every_failing_check_and_table(real_checks):
    message = report.failure_message(sample_result(real_checks))
    assert message == (
        "Validation failed: row_counts (public.team, public.users): source 20 rows, target 19 (public.team); "
        f"{HOSTILE} (public.users); listed twice, named once (public.users) | "
        "orphans (public.team.team_created_by_fkey): 3 orphan rows: id=1; id=2; id=3 | "
        "connectivity: target <unreachable> | "
        "required_indexes (public.members.idx_members_email): index idx_members_email on public.members is missing "
        "on the target | password_hashes (public.members.pw): 1 of 2 non-NULL values of public.members.pw do not "
        "look like a password hash (bcrypt, argon2, scrypt, pbkdf2): rows id=1")
    assert "hunter2" not in message


def test_failure_message_of_a_passing_result_is_empty_and_queries_are_named():
    assert report.failure_message({"status": "pass", "checks": [{"name": "schema", "status": "pass",
                                                                 "items": []}]}) == ""
    result = {"status": "fail", "checks": [{"name": "query_performance", "status": "fail", "summary": "",
                                            "items": [{"table": None, "name": "team by email", "status": "fail",
                                                       "detail": "slow"},
                                                      {"table": None, "name": "segments", "status": "pass",
                                                       "detail": "ok"}]}]}
    assert report.failure_message(result) == "Validation failed: query_performance (team by email): slow"


def test_failure_message_names_the_first_differences_of_each_check_and_how_many_more():
    differences = [f"index i{n} missing in the target" for n in range(7)]
    result = {"status": "fail", "checks": [
        {"name": "schema", "status": "fail", "items": [
            {"table": "public.staff", "status": "fail", "detail": "; ".join(differences), "differences": differences},
            {"table": "(database)", "status": "fail", "detail": "x", "differences": ["extension hstore missing"]}]},
        {"name": "content", "status": "fail", "items": [
            {"table": "public.big", "status": "fail", "detail": "1 changed (id: " + "7" * 400 + ")"}]}]}
    message = report.failure_message(result)
    schema, content = message.removeprefix("Validation failed: ").split(" | ")
    assert schema == ("schema (public.staff, (database)): " + "; ".join(f"{d} (public.staff)" for d in differences[:5])
                      + "; and 3 more")
    assert content.startswith("content (public.big): 1 changed (id: 777") and content.endswith("7…")
    assert len(content) < 350
