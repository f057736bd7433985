#!/usr/bin/env python3
"""Amplitude/Braze stand-in for the Molecule scenario `migration`: answers every POST with 200 and appends
{"path", "body"} as one JSON line to RECORD, so the tests can see what the application synced.

  python3 integration_receiver.py HOST PORT RECORD

Standard library only (it runs on the scenario's monitoring host, as a systemd service).
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()


class Recorder(BaseHTTPRequestHandler):
    record = None

    def do_POST(self):  # noqa: N802 (http.server's naming)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = raw.decode("utf-8", "replace")
        with LOCK, open(self.record, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"path": self.path, "body": body}) + "\n")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


def main():
    host, port, Recorder.record = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ThreadingHTTPServer((host, port), Recorder).serve_forever()


if __name__ == "__main__":
    main()
