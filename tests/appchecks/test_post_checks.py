"""The plan's success criteria as post-migration checks (role post_checks, playbooks/post_checks.yml), run
against a real migrated CDP database and the stand-in application (app/cdp_app.py) running as a process,
with a local SMTP sink for report emails and a local HTTP receiver standing in for Amplitude and Braze.

A good migration passes; then one thing at a time is broken and the failure must name it: a dropped
role_permissions row (the member and the permission), an endpoint answering 500, a slow query, a plaintext
credential (encrypted by the hardening, idempotently), a plaintext password, a new error during the watch.
"""

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from smtp_sink import SmtpSink

import dbcompare
from cdp_reference import generate
from conftest import PROJECT_DIR, ScratchDatabases, _server, execute, query, write_inventory
from pgmigrate.appchecks import post_checks
from pgmigrate.clone.copier import migrate
from pgmigrate.common import connection

ANSIBLE_PLAYBOOK = str(PROJECT_DIR / ".venv" / "bin" / "ansible-playbook")
REFERENCE_DOMAINS = ["gmail.com", "acme-retail.com", "outlook.com", "example.org", "yahoo.co.jp", "web.de",
                     "proton.me", "acme-cdp.example"]


class Receiver(BaseHTTPRequestHandler):
    """Amplitude/Braze stand-in: keeps every POST (path, JSON body), answers 200."""

    received = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append((self.path, json.loads(body or b"{}")))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method, url, body=None):
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture(scope="module")
def cdp(tmp_path_factory):
    """A migrated CDP target, the application on it, the SMTP sink and the receiver, and an inventory."""
    tmp_path = tmp_path_factory.mktemp("post_checks")
    scratch = ScratchDatabases()
    src = scratch.create(_server("source", 55432), "src")
    dst = scratch.create(_server("target", 55433), "dst")
    generate.load(src, 0.01)
    migrate(src, dst, workers=2, artifacts_dir=str(tmp_path / "engine"))
    smtp = SmtpSink()
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    for server in (smtp, receiver):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    port = free_port()
    error_log = tmp_path / "cdp-errors.log"
    env_file = tmp_path / "cdp.env"
    env_file.write_text(
        f"DATABASE_URL=postgresql://{dst['user']}:{dst['password']}@{dst['host']}:{dst['port']}/{dst['dbname']}\n"
        f"CDP_HTTP_PORT={port}\nCDP_SMTP_PORT={smtp.server_address[1]}\n"
        f"CDP_AMPLITUDE_URL=http://127.0.0.1:{receiver.server_address[1]}/amplitude/cohorts\n"
        f"CDP_BRAZE_URL=http://127.0.0.1:{receiver.server_address[1]}/braze/segments\n"
        f"CDP_CREDENTIALS_KEY={generate.CREDENTIALS_KEY}\nCDP_ERROR_LOG={error_log}\n")
    env_file.chmod(0o600)
    app_output = open(tmp_path / "app.out", "w")  # noqa: SIM115 (closed at teardown)
    app = subprocess.Popen([sys.executable, str(PROJECT_DIR / "app" / "cdp_app.py"), "--env-file", str(env_file)],
                           stdout=app_output, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    for _ in range(50):
        try:
            if http("GET", base_url + "/health")[0] == 200:
                break
        except OSError:
            time.sleep(0.2)
    inventory = write_inventory(tmp_path, src, dst, {
        "migration_profile": "cdp",
        "post_checks_base_url": base_url,
        "post_checks_allowed_recipient_domains": REFERENCE_DOMAINS,
        "post_checks_error_log_paths": [str(error_log)],
        "post_checks_error_log_journal_units": [],
        "post_checks_error_log_window_seconds": 2,
        "post_checks_error_log_poll_seconds": 0.5,
        "post_checks_report_dir": str(tmp_path / "reports"),
    })
    yield {"src": src, "dst": dst, "inventory": inventory, "tmp_path": tmp_path, "base_url": base_url,
           "smtp": smtp, "received": Receiver.received, "error_log": error_log}
    app.terminate()
    app.wait(timeout=10)
    app_output.close()
    smtp.shutdown()
    receiver.shutdown()
    scratch.drop_all()


def run_post_checks(cdp, extra=None, background=False, options=()):
    args = [ANSIBLE_PLAYBOOK, "playbooks/post_checks.yml", "-i", str(cdp["inventory"]), *options]
    if extra:
        extra_file = cdp["tmp_path"] / f"extra-{time.monotonic_ns()}.json"
        extra_file.write_text(json.dumps(extra))
        extra_file.chmod(0o600)
        args += ["-e", f"@{extra_file}"]
    if background:
        return subprocess.Popen(args, cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(args, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300, check=False)


def latest_report(cdp):
    reports = sorted((cdp["tmp_path"] / "reports").glob("post_checks-*.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(reports[-1].read_text())


def test_a_good_migration_passes_every_check(cdp):
    jobs_before = query(cdp["dst"], "SELECT count(*) FROM campaign_jobs")[0][0]
    messages_before, received_before = len(cdp["smtp"].messages), len(cdp["received"])
    result = run_post_checks(cdp)
    assert result.returncode == 0, result.stdout[-4000:]
    report = latest_report(cdp)
    assert report["status"] == "pass"
    checks = {c["name"]: c for c in report["checks"]}
    assert {"access_control", "report_recipients", "query_times", "plaintext_credentials", "password_hashes",
            "functional", "page_load", "error_log"} <= set(checks)
    assert all(c["status"] in ("pass", "warn") for c in checks.values()), checks
    # Every endpoint is timed and reported; every team member's permissions compared.
    assert {i["name"] for i in checks["page_load"]["items"]} >= {"user authentication works", "a campaign executes"}
    assert all(i["seconds"] < 3 for i in checks["page_load"]["items"])
    members = query(cdp["dst"], "SELECT count(*) FROM team")[0][0]
    assert len(checks["access_control"]["items"]) == members
    # The application really did it: a campaign job recorded, an email received, cohorts sent to both.
    assert query(cdp["dst"], "SELECT count(*) FROM campaign_jobs")[0][0] == jobs_before + 1
    assert len(cdp["smtp"].messages) == messages_before + 1
    mail = cdp["smtp"].messages[-1]
    assert mail["envelope"]["to"] and mail["message"]["Subject"].startswith("[CDP report]")
    assert {path for path, _ in cdp["received"][received_before:]} <= {"/amplitude/cohorts", "/braze/segments"}
    assert len(cdp["received"]) > received_before
    # The check's segment was removed again; no secret in the output.
    assert query(cdp["dst"], "SELECT count(*) FROM segments WHERE name = 'pgmigrate post-migration check'")[0][0] == 0
    assert "password-0" not in result.stdout


def test_a_dropped_permission_row_names_the_member_and_the_permission(cdp):
    dst = cdp["dst"]
    row = query(dst, """
        SELECT rp.id, rp.role_id, rp.permission_id, p.code, t.email FROM role_permissions rp
        JOIN roles r ON r.id = rp.role_id JOIN permissions p ON p.id = rp.permission_id
        JOIN team t ON t.role = 'analyst' AND r.slug = 'data-analyst'
        WHERE NOT (p.code = ANY(t.permissions)) ORDER BY rp.id, t.email LIMIT 1""")[0]
    ident, role_id, permission_id, code, email = row
    execute(dst, f"DELETE FROM role_permissions WHERE id = {ident}")
    try:
        result = run_post_checks(cdp, {"post_checks_http_checks": []})
    finally:
        execute(dst, f"INSERT INTO role_permissions (id, role_id, permission_id) "
                     f"VALUES ({ident}, '{role_id}', '{permission_id}')")
    assert result.returncode != 0
    assert "access_control" in result.stdout
    assert f"{email}: lost {code}" in result.stdout


def test_an_endpoint_answering_500_is_named_and_its_logged_error_counts_in_the_watch(cdp):
    execute(cdp["dst"], "ALTER TABLE campaign_jobs RENAME TO campaign_jobs_moved")
    try:
        result = run_post_checks(cdp, {"post_checks_error_log_window_seconds": 1})
    finally:
        execute(cdp["dst"], "ALTER TABLE campaign_jobs_moved RENAME TO campaign_jobs")
    assert result.returncode != 0
    assert "a campaign executes (POST " in result.stdout
    assert "/api/campaigns/execute): answered 500, expected 201" in result.stdout
    assert "user authentication works" not in result.stdout.split("Post-migration checks failed")[-1]
    # The application logged the failure while the endpoints were checked, before the watch's window began:
    # the watch reads the logs from where they ended before the checks.
    [watch] = [c for c in latest_report(cdp)["checks"] if c["name"] == "error_log"]
    assert watch["status"] == "fail" and "POST /api/campaigns/execute" in watch["summary"], watch


def test_a_slow_query_is_named_with_its_time(cdp):
    queries = [{"name": "segments list", "sql": "SELECT id FROM public.segments LIMIT 10"},
               {"name": "slow tiles", "sql": "SELECT pg_sleep(1.3), count(*) FROM public.dashboard_tiles"}]
    result = run_post_checks(cdp, {"post_checks_queries": queries, "post_checks_query_limit_seconds": 1,
                                   "post_checks_http_checks": [], "post_checks_database_checks": ["query_times"]})
    assert result.returncode != 0
    assert "query 'slow tiles' took 1." in result.stdout and "over the limit of 1 s" in result.stdout
    assert "query 'segments list' took" not in result.stdout


def test_a_plaintext_credential_is_named_then_encrypted_by_the_hardening_idempotently(cdp):
    dst = cdp["dst"]
    execute(dst, "UPDATE integrations SET encrypted_credentials = convert_to("
                 "'{\"api_key\": \"sk_live_plain\", \"password\": \"hunter2\"}', 'UTF8') "
                 "WHERE name = 'Braze (production)'")
    failing = run_post_checks(cdp, {"post_checks_error_log_window_seconds": 0})
    assert failing.returncode != 0
    assert "plaintext_credentials" in failing.stdout and "name=Braze (production)" in failing.stdout
    assert "integrations connect" in failing.stdout and "Braze (production)" in failing.stdout
    assert "hunter2" not in failing.stdout

    # The application's side is checked once below (integrations connect); the reruns are about the database.
    hardening = {"post_checks_encrypt_credentials": True, "post_checks_credentials_key": generate.CREDENTIALS_KEY,
                 "post_checks_http_checks": [], "post_checks_database_checks": ["security"]}
    fixed = run_post_checks(cdp, hardening)
    assert fixed.returncode == 0, fixed.stdout[-4000:]
    report = latest_report(cdp)
    assert report["hardening"][0]["changed"] and report["hardening"][0]["rows"] == ["name=Braze (production)"]
    assert generate.CREDENTIALS_KEY not in fixed.stdout and generate.CREDENTIALS_KEY not in json.dumps(report)
    # The application reads it with its key.
    assert http("POST", cdp["base_url"] + "/api/integrations/connect", {})[0] == 200

    again = run_post_checks(cdp, hardening)
    assert again.returncode == 0
    assert latest_report(cdp)["hardening"][0]["changed"] is False
    assert "nothing to encrypt" in again.stdout


def test_a_plaintext_password_is_named_then_hashed_with_bcrypt(cdp):
    dst = cdp["dst"]
    constraint = query(dst, "SELECT conname FROM pg_constraint WHERE conrelid = 'team'::regclass AND contype = 'c' "
                            "AND pg_get_constraintdef(oid) LIKE '%password_hash%'")[0][0]
    email = query(dst, "SELECT email FROM team WHERE is_active AND role = 'viewer' ORDER BY email LIMIT 1")[0][0]
    execute(dst, f'ALTER TABLE team DROP CONSTRAINT "{constraint}"',
            f"UPDATE team SET password_hash = 'plain-secret-7' WHERE email = '{email}'")
    rules = _group_var("post_checks_password_hash_columns")
    _, hashes = post_checks.check_security(dst, [], rules)
    assert hashes["status"] == "fail"
    assert f"email={email}" in post_checks.failure_message([hashes])
    assert "plain-secret-7" not in json.dumps(hashes)
    for expected in ([f"email={email}"], []):  # hashed once, then nothing left to hash
        conn = connection.connect(dst)
        try:
            item = post_checks.harden_passwords(conn, rules)[0]
        finally:
            conn.close()
        assert item["rows"] == expected and item["changed"] == bool(expected)
    assert post_checks.check_security(dst, [], rules)[1]["status"] == "pass"
    assert http("POST", cdp["base_url"] + "/api/login", {"email": email, "password": "plain-secret-7"})[0] == 200


def test_a_new_error_during_the_watch_window_fails_the_run_or_alerts(cdp):
    watch = {"post_checks_http_checks": [], "post_checks_database_checks": [],
             "post_checks_error_log_window_seconds": 6}
    run = run_post_checks(cdp, watch, background=True)
    output = []
    for line in run.stdout:
        output.append(line)
        if "Watch the error log for the window" in line:
            break
    # While the run watches: a request the application fails on (jsonb refuses \u0000), so it logs an ERROR
    # line; repeated until the run ends, whenever exactly the module began reading.
    stop = threading.Event()

    def fail_requests():
        while not stop.is_set():
            assert http("POST", cdp["base_url"] + "/api/segments", {"name": "x", "rules": {"a": "\u0000"}})[0] == 500
            stop.wait(0.5)
    failing = threading.Thread(target=fail_requests)
    failing.start()
    try:
        output.append(run.stdout.read())
        assert run.wait(timeout=120) != 0
    finally:
        stop.set()
        failing.join()
    text = "".join(output)
    assert "New errors in the application's logs" in text and "POST /api/segments: query failed" in text


def test_recipients_outside_the_allowed_domains_are_named(cdp):
    check = post_checks.check_recipients(cdp["dst"], _group_var("post_checks_recipients_query"),
                                         [d for d in REFERENCE_DOMAINS if d != "gmail.com"])
    assert check["status"] == "fail"
    assert "@gmail.com" in check["summary"] and "outside the allowed domains" in check["summary"]


def test_check_mode_reports_the_hardening_and_changes_nothing(cdp):
    dst = cdp["dst"]
    execute(dst, "UPDATE integrations SET encrypted_credentials = convert_to('{\"token\": \"plain\"}', 'UTF8') "
                 "WHERE name = 'Slack (production)'")
    before = dbcompare.table_digests(dst)
    hardening = {"post_checks_encrypt_credentials": True, "post_checks_credentials_key": "check-mode-key-0123",
                 "post_checks_database_checks": ["access_control"]}
    result = run_post_checks(cdp, hardening, options=["--check"])
    assert result.returncode == 0, result.stdout[-3000:]
    assert "would encrypt 1 plaintext values with pgcrypto: name=Slack (production)" in result.stdout
    assert dbcompare.table_digests(dst) == before


def _group_var(name):
    import yaml
    profile = yaml.safe_load((PROJECT_DIR / "group_vars" / "all" / "profile_cdp.yml").read_text())
    return profile["migration_profile_cdp"][name]
