#!/usr/bin/env python3
"""The application's clients during the blue-green scenario (converge.yml): for each host, a writer that POSTs
a new segment (POST /api/segments, named <host>-<n>) every INTERVAL seconds, and a watcher that asks its
/health every 0.2 s. Every request is one JSON line of OUT, flushed at once:

  {"kind": "write", "host", "name", "sent", "done", "status", "id", "error"}
  {"kind": "health", "host", "sent", "done", "status", "server_port", "read_only", "database", "error"}

(times: seconds since the epoch; status 0 when no HTTP answer came). Runs until STOP_FILE exists, or for
MAX_SECONDS at most.

    bg_writer.py OUT STOP_FILE INTERVAL MAX_SECONDS HOST=WRITE_BASE_URL=HEALTH_URL...

Standard library only.
"""

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request

LOCK = threading.Lock()


def request(url, payload=None, timeout=5):
    """(status, JSON body or {}, error text) of one request; status 0 when no HTTP answer came."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:  # noqa: S310 (the scenario's own URLs)
            return answer.status, parse(answer.read()), None
    except urllib.error.HTTPError as error:
        body = parse(error.read())
        return error.code, body, str(body.get("error") or body.get("status") or error)[:300]
    except (OSError, ValueError) as error:  # refused, reset, timed out
        return 0, {}, f"{type(error).__name__}: {error}"[:300]


def parse(raw):
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return {"error": raw[:200].decode("utf-8", "replace")}
    return body if isinstance(body, dict) else {}


class Clients:
    def __init__(self, out, stop_file, interval, max_seconds):
        self.out, self.stop_file, self.interval = out, stop_file, interval
        self.deadline = time.time() + max_seconds

    def running(self):
        return time.time() < self.deadline and not os.path.exists(self.stop_file)

    def record(self, line):
        with LOCK:
            self.out.write(json.dumps(line) + "\n")
            self.out.flush()

    def writer(self, host, base_url):
        n = 0
        while self.running():
            n += 1
            name = f"{host}-{n}"
            sent = time.time()
            status, body, error = request(f"{base_url}/api/segments",
                                          {"name": name, "description": "blue_green scenario writer"})
            self.record({"kind": "write", "host": host, "name": name, "sent": sent, "done": time.time(),
                         "status": status, "id": body.get("id") if 200 <= status < 300 else None, "error": error})
            time.sleep(max(0.0, sent + self.interval - time.time()))

    def watcher(self, host, health_url):
        while self.running():
            sent = time.time()
            status, body, error = request(health_url)
            self.record({"kind": "health", "host": host, "sent": sent, "done": time.time(), "status": status,
                         "server_port": body.get("server_port"), "read_only": body.get("read_only"),
                         "database": body.get("database"), "error": error})
            time.sleep(max(0.0, sent + 0.2 - time.time()))


def main(out_path, stop_file, interval, max_seconds, *hosts):
    with open(out_path, "a", encoding="utf-8") as out:
        clients = Clients(out, stop_file, float(interval), float(max_seconds))
        threads = []
        for spec in hosts:
            host, write_url, health_url = spec.split("=", 2)
            threads.append(threading.Thread(target=clients.writer, args=(host, write_url.rstrip("/"))))
            threads.append(threading.Thread(target=clients.watcher, args=(host, health_url)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
