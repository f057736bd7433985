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

  python3 cdp_app.py [--env-file PATH]   (default: the systemd credential cdp.env, else /etc/cdp/cdp.env)
"""

import argparse
import json
import logging
import signal
import threading
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
            self.reply(200, {"application": "cdp stand-in", "endpoints": ["/health", "/health/write"]})
        else:
            self.reply(404, {"status": "not found", "path": path})

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
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        LOG.info("%s %s", self.address_string(), format % args)


def first_line(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", help="KEY=VALUE file with DATABASE_URL and CDP_* settings")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    settings = load_config(args.env_file)
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
