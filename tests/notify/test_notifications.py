"""Run notifications (callback_plugins/migration_notify.py, module_utils/pgmigrate/notify/notify.py).

Real parts only: ansible-playbook runs against the embedded servers, an SMTP sink speaking SMTP on a
loopback port (with AUTH PLAIN, so a vaulted login is seen arriving), and an HTTP receiver. Outcomes
are read from what the sink and the receiver got, and from the playbook's exit code and output.
"""

import http.server
import json
import signal
import socket
import subprocess
import threading
import time

import pytest
import yaml
from smtp_sink import SmtpSink

from cdp_reference import generate
from conftest import PROJECT_DIR, write_inventory
from pgmigrate.notify import notify

VENV_BIN = PROJECT_DIR / ".venv" / "bin"
SMTP_PASSWORD = "smtp-Pa55-never-shown-7d41"
WEBHOOK_TOKEN = "hook-T0ken-never-shown-92ac"
VAULT_PASSWORD = "vault-pass-for-the-notification-tests"


# ----------------------------------------------------------------------------------------------
# Local receivers


class WebhookReceiver(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, failures_first=0):
        super().__init__(("127.0.0.1", 0), WebhookHandler)
        self.posts = []
        self.failures_first = failures_first
        self.url = f"http://127.0.0.1:{self.server_address[1]}/hooks/pgmigrate"


class WebhookHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - the name http.server calls
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.failures_first > 0:
            self.server.failures_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        self.server.posts.append({"path": self.path, "headers": dict(self.headers), "raw": body.decode(),
                                  "json": json.loads(body)})
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def serving(server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture
def smtp_sink():
    sink = serving(SmtpSink())
    yield sink
    sink.shutdown()
    sink.server_close()


@pytest.fixture
def webhook():
    receiver = serving(WebhookReceiver())
    yield receiver
    receiver.shutdown()
    receiver.server_close()


def closed_port():
    """A loopback port nobody listens on: connections are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def silent_server():
    """Accepts TCP connections (the kernel's backlog) and never says a word: a hung peer."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield listener.getsockname()[1]
    listener.close()


# ----------------------------------------------------------------------------------------------
# Playbook runs


def vault_encrypt(tmp_path, name, value):
    """`name: !vault |` text made by ansible-vault itself; the value goes through stdin, not argv."""
    password_file = tmp_path / "vault.password"
    password_file.write_text(VAULT_PASSWORD)
    password_file.chmod(0o600)
    result = subprocess.run([str(VENV_BIN / "ansible-vault"), "encrypt_string", "--vault-password-file",
                             str(password_file), "--stdin-name", name], input=value, capture_output=True,
                            text=True, check=True, cwd=PROJECT_DIR)
    return result.stdout


def notification_inventory(tmp_path, src, dst, smtp_port, webhook_url, extra=None):
    """A write_inventory inventory plus notification settings; the SMTP password and the webhook's
    bearer token are vaulted, as in production."""
    settings = {
        "notify_environment": "staging-test",
        "notify_email_to": ["dba@example.test", "oncall@example.test"],
        "notify_email_from": "pgmigrate@example.test",
        "notify_smtp_host": "127.0.0.1",
        "notify_smtp_port": smtp_port,
        "notify_smtp_user": "notifier",
        "notify_webhook_url": webhook_url,
        "notify_webhook_headers": {"Authorization": "Bearer {{ vault_notify_webhook_token }}"},
        "notify_timeout_seconds": 3,
        "notify_retries": 1,
        "notify_retry_delay_seconds": 0.2,
        **(extra or {}),
    }
    inventory = write_inventory(tmp_path, src, dst, settings)
    (inventory / "group_vars" / "migration" / "vault.yml").write_text(
        vault_encrypt(tmp_path, "vault_notify_smtp_password", SMTP_PASSWORD)
        + vault_encrypt(tmp_path, "vault_notify_webhook_token", WEBHOOK_TOKEN))
    return inventory


def run_playbook(inventory, tmp_path, *args, playbook="migrate.yml", timeout=300):
    started = time.monotonic()
    result = subprocess.run([str(VENV_BIN / "ansible-playbook"), playbook, "-i", str(inventory),
                             "--vault-password-file", str(tmp_path / "vault.password"), *args],
                            cwd=PROJECT_DIR, capture_output=True, text=True, timeout=timeout, check=False)
    result.seconds = time.monotonic() - started
    return result


def assert_no_secret(secrets, *texts):
    for secret in secrets:
        for text in texts:
            assert secret not in text, f"a secret ({len(secret)} characters) leaked"


def delivered_texts(smtp_sink, webhook):
    return [m["raw"] for m in smtp_sink.messages] + [p["raw"] for p in webhook.posts]


@pytest.fixture
def cdp_pair(db_pair):
    src, dst = db_pair
    generate.load(src, 0.02)
    return src, dst


def test_a_successful_migration_sends_one_summary_by_email_and_webhook(cdp_pair, tmp_path, smtp_sink, webhook):
    src, dst = cdp_pair
    inventory = notification_inventory(tmp_path, src, dst, smtp_sink.port, webhook.url)
    result = run_playbook(inventory, tmp_path, "--skip-tags", "backup,validate")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]

    assert len(smtp_sink.messages) == 1 and len(webhook.posts) == 1
    mail = smtp_sink.messages[0]
    assert mail["message"]["Subject"] == "[pgmigrate] staging-test: migrate.yml SUCCESS"
    assert sorted(mail["envelope"]["to"]) == ["<dba@example.test>", "<oncall@example.test>"]
    body = mail["message"].get_content()
    assert "migrate.yml on staging-test: SUCCESS" in body
    assert "Copy complete: 21 tables" in body
    assert "(5/10) COPY" in body and str(tmp_path / "artifacts") in body
    # The vaulted login and bearer token arrived where they belong, rendered by the callback.
    assert smtp_sink.logins == [("notifier", SMTP_PASSWORD)]
    post = webhook.posts[0]
    assert post["headers"]["Authorization"] == f"Bearer {WEBHOOK_TOKEN}"
    payload = post["json"]
    assert payload["status"] == "success" and payload["environment"] == "staging-test"
    assert payload["playbook"] == "migrate.yml" and payload["failures"] == []
    assert payload["figures"]["copy"]["tables"] == 21 and payload["figures"]["copy"]["rows"] > 0
    assert payload["text"].startswith("pgmigrate migrate.yml on staging-test: SUCCESS")
    assert "NOTIFY [email]: success summary sent to 2 recipient(s)" in result.stdout
    assert_no_secret([src["password"], dst["password"], SMTP_PASSWORD, WEBHOOK_TOKEN, VAULT_PASSWORD],
                     result.stdout, result.stderr, *delivered_texts(smtp_sink, webhook))


def test_a_failed_migration_names_the_failed_task_and_error_and_keeps_its_exit_code(
        cdp_pair, tmp_path, smtp_sink, webhook):
    src, dst = cdp_pair
    wrong_password = "Wrong-target-Passw0rd-5521"
    inventory = notification_inventory(tmp_path, src, {**dst, "password": wrong_password}, smtp_sink.port,
                                       webhook.url)
    result = run_playbook(inventory, tmp_path, timeout=180)
    assert result.returncode != 0, result.stdout[-3000:]

    assert len(smtp_sink.messages) == 1 and len(webhook.posts) == 1
    mail = smtp_sink.messages[0]["message"]
    assert mail["Subject"] == "[pgmigrate] staging-test: migrate.yml FAILED"
    payload = webhook.posts[0]["json"]
    assert payload["status"] == "failed"
    [failure] = payload["failures"]
    assert failure["host"] == "localhost" and failure["task"] == "Assess the source and plan the copy"
    assert "password authentication failed" in failure["error"]
    body = mail.get_content()
    assert 'Failed: task "Assess the source and plan the copy" on localhost' in body
    assert "password authentication failed" in body
    assert "Copy" not in body.split("Phases run:", 1)[1]  # nothing was copied, and no figure says so
    assert_no_secret([src["password"], dst["password"], wrong_password, SMTP_PASSWORD, WEBHOOK_TOKEN],
                     result.stdout, result.stderr, *delivered_texts(smtp_sink, webhook))


def test_another_entry_playbook_notifies_only_on_failure_when_asked(cdp_pair, tmp_path, smtp_sink, webhook):
    """playbooks/rollback.yml with no backup to restore fails; the email goes out (failure only) and
    the webhook, set to success only, stays quiet."""
    src, dst = cdp_pair
    inventory = notification_inventory(tmp_path, src, dst, smtp_sink.port, webhook.url,
                                       {"notify_email_on": "failure", "notify_webhook_on": "success"})
    result = run_playbook(inventory, tmp_path, "-e", "rollback_mode=data", playbook="playbooks/rollback.yml",
                          timeout=180)
    assert result.returncode != 0, result.stdout[-3000:]
    assert webhook.posts == []
    [mail] = smtp_sink.messages
    assert mail["message"]["Subject"] == "[pgmigrate] staging-test: playbooks/rollback.yml FAILED"
    assert "(R2/3) ROLLBACK" in mail["message"].get_content()


def test_unreachable_destinations_are_warnings_and_do_not_hang_or_change_the_exit_code(
        cdp_pair, tmp_path, silent_server):
    src, dst = cdp_pair
    # SMTP: nobody listens (refused at once). Webhook: a peer that accepts and never answers (timeouts).
    inventory = notification_inventory(tmp_path, src, dst, closed_port(),
                                       f"http://127.0.0.1:{silent_server}/hook?token={WEBHOOK_TOKEN}",
                                       {"notify_timeout_seconds": 2})
    result = run_playbook(inventory, tmp_path, "--tags", "assess", timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "Notification by email not delivered" in output
    assert "Notification by webhook not delivered" in output and "timed out" in output
    assert "The run's result is unchanged" in output
    # Two attempts of at most 2 s each, plus the playbook: bounded, not hung.
    assert result.seconds < 60
    assert_no_secret([src["password"], dst["password"], SMTP_PASSWORD, WEBHOOK_TOKEN], output)

    failing = notification_inventory(tmp_path, src, {**dst, "port": closed_port()}, closed_port(),
                                     f"http://127.0.0.1:{closed_port()}/hook")
    failed = run_playbook(failing, tmp_path, "--tags", "assess", timeout=120)
    assert failed.returncode == 2, failed.stdout[-3000:]  # Ansible's "a host failed", as without notifications
    assert "Notification by webhook not delivered" in failed.stdout + failed.stderr


@pytest.mark.parametrize(("signum", "exit_code", "reason"), [
    (signal.SIGTERM, -signal.SIGTERM, "terminated by SIGTERM"),
    (signal.SIGINT, 99, "stopped before its end (interrupted"),
], ids=["sigterm", "ctrl-c"])
def test_a_terminated_or_interrupted_run_still_sends_an_aborted_summary(tmp_path, smtp_sink, webhook, signum,
                                                                        exit_code, reason):
    """SIGTERM (a systemd timeout, a cancelled AWX job) and Ctrl-C skip Ansible's end-of-run event."""
    playbook = tmp_path / "long.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "A long step", "hosts": "migration_controller", "gather_facts": False,
        "tasks": [{"name": "Wait a long time", "ansible.builtin.command": "sleep 120", "changed_when": False}]}]))
    inventory = notification_inventory(tmp_path, None, None, smtp_sink.port, webhook.url)
    process = subprocess.Popen([str(VENV_BIN / "ansible-playbook"), str(playbook), "-i", str(inventory),
                                "--vault-password-file", str(tmp_path / "vault.password")],
                               cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = ""
    while "TASK [Wait a long time]" not in output:
        line = process.stdout.readline()
        assert line, output
        output += line
    time.sleep(1)
    process.send_signal(signum)
    output += process.communicate(timeout=60)[0]
    assert process.returncode == exit_code, output  # the signal still ends the run as it did before
    [post] = webhook.posts
    assert post["json"]["status"] == "aborted"
    assert reason in post["json"]["aborted_reason"]
    assert smtp_sink.messages[0]["message"]["Subject"].endswith("long.yml ABORTED")


# ----------------------------------------------------------------------------------------------
# The core, without Ansible


def test_the_redactor_removes_known_secrets_and_credentials_in_urls_and_keywords():
    redactor = notify.Redactor(["s3cret-value-1", "short"])
    text = redactor.text("conn postgresql://migrator:hunter22@db:5432/cdp password=abc123 x s3cret-value-1"
                         " Authorization: Bearer abcdefghijkl short")
    assert "hunter22" not in text and "abc123" not in text and "s3cret-value-1" not in text
    assert "abcdefghijkl" not in text
    assert "postgresql://migrator:********@db:5432/cdp" in text
    assert "short" in text  # too short to be treated as a secret: it would garble every message


def test_secret_values_finds_nested_and_templated_secrets():
    variables = {
        "migration_source": {"host": "db", "password": "{{ vault_source }}"},
        "vault_source": "rendered-source-password",
        "notify_webhook_headers": {"Authorization": "Bearer abc"},
        "api_token": "plain-token-value",
        "migration_workers": 4,
        "broken_password": "{{ undefined_variable }}",
    }

    def render(value):
        if value == "{{ vault_source }}":
            return "rendered-source-password"
        if "{{" in str(value):
            raise ValueError("undefined")
        return value

    found = notify.secret_values(variables, render=render)
    assert {"rendered-source-password", "plain-token-value", "Bearer abc"} <= found
    assert "db" not in found and not any("{{" in value for value in found)


def test_webhook_retries_a_503_and_gives_up_on_a_4xx(webhook):
    webhook.failures_first = 1
    settings = notify.NotificationSettings.from_variables({"notify_webhook_url": webhook.url, "notify_retries": 2,
                                                           "notify_retry_delay_seconds": 0})
    record = notify.RunRecord("migrate.yml")
    summary = record.summary("success", environment="unit")
    [delivery] = notify.notify(summary, settings, notify.Redactor())
    assert delivery.delivered and delivery.attempts == 2 and len(webhook.posts) == 1

    missing = notify.NotificationSettings.from_variables({"notify_webhook_url": webhook.url + "/../404",
                                                          "notify_retries": 3})
    webhook.failures_first = 0
    WebhookHandler.do_POST, original = (lambda self: (self.send_response(404), self.end_headers())), \
        WebhookHandler.do_POST
    try:
        [refused] = notify.notify(summary, missing, notify.Redactor())
    finally:
        WebhookHandler.do_POST = original
    assert not refused.delivered and refused.attempts == 1 and "HTTP 404" in refused.detail


def test_nothing_is_sent_without_destinations_or_for_check_runs_unless_asked():
    assert notify.NotificationSettings.from_variables({}).destinations("failed") == []
    settings = notify.NotificationSettings.from_variables({"notify_email_to": ["a@example.test"],
                                                           "notify_on": "failure"})
    assert settings.destinations("failed") == ["email"] and settings.destinations("success") == []
    assert settings.destinations("aborted") == ["email"] and settings.destinations("failed", check_mode=True) == []
    with pytest.raises(notify.SettingsError):
        notify.NotificationSettings.from_variables({"notify_smtp_security": "tls13"})
