#!/usr/bin/env python3
"""The CDP stand-in web application: what the migration's application-side steps act on and check.

Python's http.server and psycopg2, nothing else. Listens on CDP_HTTP_HOST:CDP_HTTP_PORT (loopback; nginx
proxies to it) and opens a new database session through DATABASE_URL for each request, so a restart
is what makes it follow a new DATABASE_URL (the plan's "Update database connection strings" then
"Restart application services").

  GET /health        200 {"status": "ok", "database", "server_port", "team_members", "read_only"}
                     503 when the database cannot be reached, 500 when a query fails
  GET /health/write  a write the database must accept (an UPDATE of one team row, rolled back):
                     200 when accepted, 503 when the database refuses writes (read-only) or cannot be
                     reached, 500 on any other error
  GET /              what this is

The CDP's functions, against its database (JSON bodies; what the post-migration checks call, role
post_checks). Each opens its own session and commits only when it succeeded; a failing query answers 500,
an unreachable database 503, a failing external service (SMTP, Amplitude/Braze, an integration's endpoint)
502, and every such error is logged at ERROR (also appended to CDP_ERROR_LOG when set):

  POST /api/login                  {"email", "password"}: the team member's bcrypt hash checked with
                                   pgcrypto's crypt(); 200 {"status": "ok", "member"}, 401, 403 (inactive)
  GET  /api/dashboards/tiles       [?dashboard_id=] the tiles of a dashboard (default: the first with
                                   visible tiles) and their data; 200 {"status": "ok", "tile_count",
                                   "tiles_with_data"}, 404 when it has none
  POST /api/segments               {"name", "rules"?, "description"?}: 201 {"status": "created", "id"}
  POST /api/segments/<id>/refresh  recomputes estimated_size and last_refreshed_at: 200 {"status": "refreshed"}
  GET|DELETE /api/segments/<id>    the segment; deletes it (200 {"status": "deleted"})
  POST /api/cohorts/sync           {"cohort_id"?}: POSTs the cohort to CDP_AMPLITUDE_URL and/or CDP_BRAZE_URL
                                   (as the cohort's sync flags ask; all configured when it asks none) and
                                   records last_synced_at: 200 {"status": "synced", "destinations"}
  POST /api/campaigns/execute      {"campaign_id"?}: records a campaign_jobs row: 201 {"status": "executed",
                                   "job_id", "campaign_id"}
  POST /api/reports/generate       {"report_id"?}: builds the report (row counts), emails it over SMTP
                                   (CDP_SMTP_HOST:CDP_SMTP_PORT) to its recipients and cc, records a
                                   report_executions row: 200 {"status": "sent", "recipients", "execution_id"}
  POST /api/integrations/connect   {"integration_id"?}: each integration's credentials must decrypt with
                                   CDP_CREDENTIALS_KEY (pgcrypto) into a JSON object, and its config's
                                   "endpoint" (when set) must answer 2xx: 200 {"status": "connected",
                                   "connected"}, 502 {"status": "error", "failed": [names]}

Without an id the endpoints act on the first suitable row (by id), so a smoke test needs no ids.

  python3 cdp_app.py [--env-file PATH]   (default: the systemd credential cdp.env, else /etc/cdp/cdp.env)
"""

import argparse
import json
import logging
import re
import signal
import smtplib
import threading
import time
import urllib.error
import urllib.request
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2
import psycopg2.errors
from cdp_env import connect, load_config, redact

LOG = logging.getLogger("cdp-web")

HEALTH_SQL = """
SELECT current_database(), inet_server_port(), current_setting('transaction_read_only') = 'on',
       (SELECT count(*) FROM public.team)
"""
# Touches one row and is rolled back: proves the application's role may write, changes nothing.
WRITE_PROBE_SQL = (
    "UPDATE public.team SET updated_at = updated_at WHERE id = (SELECT id FROM public.team ORDER BY id LIMIT 1)"
)
MAX_BODY = 64 * 1024
UUID = r"[0-9a-fA-F-]{36}"
REPORT_TABLES = ("team", "segments", "cohorts", "campaigns", "campaign_jobs", "report_executions")


class ApiError(Exception):
    """An answer other than success, with its HTTP status and body."""

    def __init__(self, status, body, log=None):
        super().__init__(body.get("error") or body.get("status"))
        self.status, self.body, self.log = status, body, log


class Handler(BaseHTTPRequestHandler):
    server_version = "cdp-app/1"
    settings = {}

    def do_GET(self):  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/health":
            self.health(write=False)
        elif path == "/health/write":
            self.health(write=True)
        elif path == "/":
            self.reply(200, {"application": "cdp stand-in", "endpoints": ["/health", "/health/write", "/api/..."]})
        elif path == "/api/dashboards/tiles":
            self.api(dashboard_tiles)
        elif re.fullmatch(f"/api/segments/{UUID}", path):
            self.api(segment_get, path.rsplit("/", 1)[1])
        else:
            self.reply(404, {"status": "not found", "path": path})

    def do_POST(self):  # noqa: N802
        path = self.path.split("?", 1)[0].rstrip("/")
        routes = {"/api/login": login, "/api/segments": segment_create, "/api/cohorts/sync": cohort_sync,
                  "/api/campaigns/execute": campaign_execute, "/api/reports/generate": report_generate,
                  "/api/integrations/connect": integrations_connect}
        if path in routes:
            self.api(routes[path])
        elif re.fullmatch(f"/api/segments/{UUID}/refresh", path):
            self.api(segment_refresh, path.split("/")[3])
        else:
            self.reply(404, {"status": "not found", "path": path})

    def do_DELETE(self):  # noqa: N802
        path = self.path.split("?", 1)[0].rstrip("/")
        if re.fullmatch(f"/api/segments/{UUID}", path):
            self.api(segment_delete, path.rsplit("/", 1)[1])
        else:
            self.reply(404, {"status": "not found", "path": path})

    def request_json(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ApiError(413, {"status": "error", "error": "request body too large"})
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError as error:
            raise ApiError(400, {"status": "error", "error": "the body is not JSON"}) from error
        if not isinstance(body, dict):
            raise ApiError(400, {"status": "error", "error": "the body must be a JSON object"})
        return body

    def query_args(self):
        query = self.path.split("?", 1)[1] if "?" in self.path else ""
        return dict(part.split("=", 1) for part in query.split("&") if "=" in part)

    def api(self, function, *args):
        """Runs function(cur, request, settings, *args) in one transaction: committed on success."""
        endpoint = f"{self.command} {self.path.split('?', 1)[0]}"
        try:
            request = self.request_json() if self.command == "POST" else self.query_args()
        except ApiError as error:
            self.reply(error.status, error.body)
            return
        try:
            conn = connect(self.settings, "cdp-web")
        except psycopg2.OperationalError as error:
            LOG.error("%s: database unavailable: %s", endpoint, first_line(error))
            self.reply(503, {"status": "unavailable", "error": first_line(error)})
            return
        try:
            with conn.cursor() as cur:
                status, body = function(cur, request, self.settings, *args)
            conn.commit()
            self.reply(status, body)
        except ApiError as error:
            conn.rollback()
            if error.status >= 500:
                LOG.error("%s: %s", endpoint, error.log or error)
            self.reply(error.status, error.body)
        except psycopg2.OperationalError as error:
            LOG.error("%s: database unavailable: %s", endpoint, first_line(error))
            self.reply(503, {"status": "unavailable", "error": first_line(error)})
        except psycopg2.Error as error:
            conn.rollback()
            LOG.error("%s: query failed: %s", endpoint, first_line(error))
            self.reply(500, {"status": "error", "error": first_line(error)})
        finally:
            conn.close()

    def health(self, write):
        try:
            conn = connect(self.settings, "cdp-web")
        except psycopg2.OperationalError as error:
            self.reply(503, {"status": "unavailable", "error": first_line(error)})
            return
        try:
            with conn.cursor() as cur:
                cur.execute(HEALTH_SQL)
                database, port, read_only, team_members = cur.fetchone()
                body = {"status": "ok", "database": database, "server_port": port,
                        "team_members": team_members, "read_only": read_only}
                if write:
                    cur.execute(WRITE_PROBE_SQL)
                    body["write"] = "accepted"
            self.reply(200, body)
        except psycopg2.errors.ReadOnlySqlTransaction as error:
            self.reply(503, {"status": "read_only", "error": first_line(error)})
        except psycopg2.OperationalError as error:
            self.reply(503, {"status": "unavailable", "error": first_line(error)})
        except psycopg2.Error as error:
            self.reply(500, {"status": "error", "error": first_line(error)})
        finally:
            conn.rollback()
            conn.close()

    def reply(self, status, body):
        payload = json.dumps(body, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        LOG.info("%s %s", self.address_string(), format % args)


# --- the CDP's functions --------------------------------------------------------------------------------


def _uuid_arg(request, key):
    value = request.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(UUID, value):
        raise ApiError(400, {"status": "error", "error": f"{key} must be a uuid"})
    return value


def login(cur, request, _settings):
    email, password = request.get("email"), request.get("password")
    if not isinstance(email, str) or not isinstance(password, str) or not email or not password:
        raise ApiError(400, {"status": "error", "error": "email and password are required"})
    # pgcrypto's crypt() with the stored hash as salt re-hashes the password the same way (bcrypt).
    cur.execute("SELECT id, email, role, is_active FROM public.team "
                "WHERE lower(email) = lower(%s) AND password_hash = public.crypt(%s, password_hash)",
                (email, password))
    row = cur.fetchone()
    if row is None:
        raise ApiError(401, {"status": "denied", "error": "unknown email or wrong password"})
    if not row[3]:
        raise ApiError(403, {"status": "inactive", "error": "this team member is deactivated"})
    return 200, {"status": "ok", "member": {"id": row[0], "email": row[1], "role": row[2]}}


def dashboard_tiles(cur, request, _settings):
    dashboard = _uuid_arg(request, "dashboard_id")
    if dashboard is None:
        cur.execute("SELECT dashboard_id FROM public.dashboard_tile_instances WHERE is_visible "
                    "ORDER BY dashboard_id LIMIT 1")
        row = cur.fetchone()
        if row is None:
            raise ApiError(404, {"status": "empty", "error": "no dashboard has visible tiles"})
        dashboard = row[0]
    cur.execute("""
        SELECT ti.id, coalesce(ti.title, t.name), t.tile_type,
               coalesce(ti.cached_result, t.default_config || ti.config_overrides) AS data
        FROM public.dashboard_tile_instances ti
        JOIN public.dashboard_tiles t ON t.id = ti.tile_id
        JOIN public.dashboard_configurations d ON d.id = ti.dashboard_id
        WHERE ti.dashboard_id = %s AND ti.is_visible
        ORDER BY ti.position_y, ti.position_x""", (dashboard,))
    tiles = [{"id": r[0], "title": r[1], "type": r[2], "data": r[3]} for r in cur.fetchall()]
    if not tiles:
        raise ApiError(404, {"status": "empty", "error": f"dashboard {dashboard} has no visible tiles"})
    return 200, {"status": "ok", "dashboard_id": dashboard, "tile_count": len(tiles),
                 "tiles_with_data": sum(1 for tile in tiles if tile["data"] is not None), "tiles": tiles}


def segment_create(cur, request, _settings):
    name = request.get("name")
    rules = request.get("rules", {"all": []})
    if not isinstance(name, str) or not name.strip() or not isinstance(rules, dict):
        raise ApiError(400, {"status": "error", "error": "name (text) and rules (object) are required"})
    cur.execute("INSERT INTO public.segments (name, description, rules, tags) VALUES (%s, %s, %s, %s) "
                "RETURNING id", (name, request.get("description"), json.dumps(rules), ["post-check"]))
    return 201, {"status": "created", "id": cur.fetchone()[0], "name": name}


def segment_refresh(cur, _request, _settings, segment):
    # The stand-in evaluates no rule tree: a segment's size is the number of users.
    cur.execute("UPDATE public.segments SET estimated_size = (SELECT count(*) FROM public.users), "
                "last_refreshed_at = now(), updated_at = now() WHERE id = %s "
                "RETURNING estimated_size, last_refreshed_at", (segment,))
    row = cur.fetchone()
    if row is None:
        raise ApiError(404, {"status": "not found", "error": f"no segment {segment}"})
    return 200, {"status": "refreshed", "id": segment, "estimated_size": row[0], "last_refreshed_at": row[1]}


def segment_get(cur, _request, _settings, segment):
    cur.execute("SELECT id, name, estimated_size, last_refreshed_at, is_active FROM public.segments WHERE id = %s",
                (segment,))
    row = cur.fetchone()
    if row is None:
        raise ApiError(404, {"status": "not found", "error": f"no segment {segment}"})
    return 200, {"status": "ok", "id": row[0], "name": row[1], "estimated_size": row[2],
                 "last_refreshed_at": row[3], "is_active": row[4]}


def segment_delete(cur, _request, _settings, segment):
    cur.execute("DELETE FROM public.segments WHERE id = %s RETURNING id", (segment,))
    if cur.fetchone() is None:
        raise ApiError(404, {"status": "not found", "error": f"no segment {segment}"})
    return 200, {"status": "deleted", "id": segment}


def _post_json(url, payload, timeout=10):
    request = urllib.request.Request(url, data=json.dumps(payload, default=str).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 (configured URLs)
        answer.read()
        return answer.status


def cohort_sync(cur, request, settings):
    cohort = _uuid_arg(request, "cohort_id")
    cur.execute("SELECT id, name, user_count, sync_to_amplitude, sync_to_braze FROM public.cohorts "
                "WHERE (%(id)s::uuid IS NULL OR id = %(id)s::uuid) "
                "ORDER BY (sync_to_amplitude OR sync_to_braze) DESC, id LIMIT 1", {"id": cohort})
    row = cur.fetchone()
    if row is None:
        raise ApiError(404, {"status": "not found", "error": "no cohort to sync"})
    cohort, name, users, to_amplitude, to_braze = row
    configured = {"amplitude": settings.get("CDP_AMPLITUDE_URL"), "braze": settings.get("CDP_BRAZE_URL")}
    wanted = [d for d, flag in (("amplitude", to_amplitude), ("braze", to_braze)) if flag] or list(configured)
    destinations = [d for d in wanted if configured[d]]
    if not destinations:
        raise ApiError(503, {"status": "error", "error": "no Amplitude/Braze endpoint configured"},
                       log="cohort sync: CDP_AMPLITUDE_URL and CDP_BRAZE_URL are not set")
    for destination in destinations:
        try:
            _post_json(configured[destination], {"destination": destination, "cohort_id": cohort, "name": name,
                                                  "user_count": users})
        except (OSError, urllib.error.URLError) as error:
            raise ApiError(502, {"status": "error", "error": f"{destination} sync failed: {error}"},
                           log=f"cohort {cohort}: {destination} sync failed: {error}") from error
    cur.execute("UPDATE public.cohorts SET last_synced_at = now(), sync_error = NULL WHERE id = %s", (cohort,))
    return 200, {"status": "synced", "cohort_id": cohort, "destinations": destinations}


def campaign_execute(cur, request, _settings):
    campaign = _uuid_arg(request, "campaign_id")
    cur.execute("SELECT ca.id, least(co.user_count, 1000000)::integer FROM public.campaigns ca "
                "JOIN public.cohorts co ON co.id = ca.cohort_id "
                "WHERE (%(id)s::uuid IS NULL OR ca.id = %(id)s::uuid) ORDER BY ca.id LIMIT 1", {"id": campaign})
    row = cur.fetchone()
    if row is None:
        raise ApiError(404, {"status": "not found", "error": "no campaign to execute"})
    campaign, recipients = row
    cur.execute("""
        INSERT INTO public.campaign_jobs (campaign_id, status, scheduled_for, started_at, finished_at,
                                          recipients_count, delivered_count, result)
        VALUES (%s, 'succeeded', now(), now(), now(), %s, %s, '{"triggered_by": "api"}')
        RETURNING id""", (campaign, recipients, recipients))
    job = cur.fetchone()[0]
    cur.execute("SELECT count(*) FROM public.campaign_jobs WHERE id = %s", (job,))
    return 201, {"status": "executed", "campaign_id": campaign, "job_id": job, "recipients": recipients,
                 "recorded": cur.fetchone()[0] == 1}


def report_generate(cur, request, settings):
    report = _uuid_arg(request, "report_id")
    began = time.time()
    cur.execute("SELECT id, name, recipients, coalesce(cc_recipients, '{}') FROM public.scheduled_reports "
                "WHERE (%(id)s::uuid IS NULL AND status = 'active' AND cardinality(recipients) > 0) "
                "OR id = %(id)s::uuid ORDER BY id LIMIT 1", {"id": report})
    row = cur.fetchone()
    if row is None:
        raise ApiError(404, {"status": "not found", "error": "no scheduled report with recipients"})
    report, name, recipients, cc = row
    counts = {}
    for table in REPORT_TABLES:
        cur.execute(f"SELECT count(*) FROM public.{table}")  # fixed names from REPORT_TABLES
        counts[table] = cur.fetchone()[0]
    message = EmailMessage()
    message["Subject"] = f"[CDP report] {name}"
    message["From"] = settings["CDP_MAIL_FROM"]
    message["To"] = ", ".join(recipients)
    if cc:
        message["Cc"] = ", ".join(cc)
    message.set_content(f"Report {name} ({report})\n\n"
                        + "\n".join(f"{table}: {count}" for table, count in counts.items()) + "\n")
    try:
        with smtplib.SMTP(settings["CDP_SMTP_HOST"], int(settings["CDP_SMTP_PORT"]), timeout=10) as smtp:
            refused = smtp.send_message(message, to_addrs=list(recipients) + list(cc))
    except (OSError, smtplib.SMTPException) as error:
        raise ApiError(502, {"status": "error", "error": f"sending the report's email failed: {error}"},
                       log=f"report {report}: sending its email failed: {error}") from error
    cur.execute("""
        INSERT INTO public.report_executions (scheduled_report_id, status, triggered_by, started_at, finished_at,
                                              duration_ms, row_count, metadata)
        VALUES (%s, 'succeeded', 'api', to_timestamp(%s), now(), %s, %s, %s) RETURNING id""",
                (report, began, int((time.time() - began) * 1000), sum(counts.values()),
                 json.dumps({"recipients": len(recipients) + len(cc), "refused": len(refused)})))
    execution = cur.fetchone()[0]
    cur.execute("UPDATE public.scheduled_reports SET last_run_at = now(), last_status = 'succeeded' WHERE id = %s",
                (report,))
    return 200, {"status": "sent", "report_id": report, "recipients": len(recipients) + len(cc) - len(refused),
                 "execution_id": execution}


def integrations_connect(cur, request, settings):
    key = settings.get("CDP_CREDENTIALS_KEY")
    if not key:
        raise ApiError(503, {"status": "error", "error": "CDP_CREDENTIALS_KEY is not configured"},
                       log="integrations connect: CDP_CREDENTIALS_KEY is not set")
    integration = _uuid_arg(request, "integration_id")
    cur.execute("SELECT id, name, config->>'endpoint' FROM public.integrations "
                "WHERE encrypted_credentials IS NOT NULL AND (%(id)s::uuid IS NULL OR id = %(id)s::uuid) "
                "ORDER BY name", {"id": integration})
    rows = cur.fetchall()
    if not rows:
        raise ApiError(404, {"status": "not found", "error": "no integration with credentials"})
    connected, failed = [], []
    for ident, name, endpoint in rows:
        cur.execute("SAVEPOINT credentials")
        try:
            cur.execute("SELECT jsonb_typeof(convert_from(public.decrypt(encrypted_credentials, "
                        "convert_to(%s, 'UTF8'), 'aes'), 'UTF8')::jsonb) FROM public.integrations WHERE id = %s",
                        (key, ident))
            usable = cur.fetchone()[0] == "object"
            cur.execute("RELEASE SAVEPOINT credentials")
        except psycopg2.OperationalError:
            raise
        except psycopg2.Error:  # pgcrypto's "Wrong key or corrupt data", not UTF-8, not JSON
            cur.execute("ROLLBACK TO SAVEPOINT credentials")
            usable = False
        if usable and endpoint:
            try:
                _post_json(endpoint, {"integration": name, "check": "connect"})
            except (OSError, urllib.error.URLError):
                usable = False
        (connected if usable else failed).append((ident, name))
    if connected:
        cur.execute("UPDATE public.integrations SET status = 'connected', last_verified_at = now() "
                    "WHERE id = ANY(%s::uuid[])", ([i for i, _ in connected],))
    if failed:
        names = [name for _, name in failed]
        raise ApiError(502, {"status": "error", "failed": names, "connected": len(connected),
                             "error": "credentials that do not decrypt, or an endpoint that does not answer"},
                       log=f"integrations that do not connect: {', '.join(names)}")
    return 200, {"status": "connected", "connected": len(connected)}


def first_line(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", help="KEY=VALUE file with DATABASE_URL and CDP_* settings")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    settings = load_config(args.env_file)
    if settings.get("CDP_ERROR_LOG"):
        # Errors also go to a file of their own (what the post-migration error-log watch reads).
        errors = logging.FileHandler(settings["CDP_ERROR_LOG"], encoding="utf-8")
        errors.setLevel(logging.ERROR)
        errors.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logging.getLogger().addHandler(errors)
    Handler.settings = settings
    server = ThreadingHTTPServer((settings["CDP_HTTP_HOST"], int(settings["CDP_HTTP_PORT"])), Handler)
    server.daemon_threads = True
    # systemd stops the service with SIGTERM: finish the request in flight, then exit 0.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    LOG.info("listening on http://%s:%s, database %s", settings["CDP_HTTP_HOST"], settings["CDP_HTTP_PORT"],
             redact(settings["DATABASE_URL"]))
    server.serve_forever()
    server.server_close()
    LOG.info("stopped")


if __name__ == "__main__":
    main()
