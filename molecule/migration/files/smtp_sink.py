#!/usr/bin/env python3
"""SMTP relay stand-in for the Molecule scenario `migration`: accepts every message (no authentication, no
delivery) and appends {"mail_from", "recipients", "message"} as one JSON line to RECORD, so the tests can
see the report emails the application sent.

  python3 smtp_sink.py HOST PORT RECORD

Standard library only (it runs on the scenario's monitoring host, as a systemd service).
"""

import json
import socketserver
import sys
import threading

LOCK = threading.Lock()


class Session(socketserver.StreamRequestHandler):
    record = None

    def reply(self, line):
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self):
        self.reply("220 smtp-sink ESMTP")
        sender, recipients = None, []
        while line := self.rfile.readline():
            command, _, argument = line.decode("utf-8", "replace").strip().partition(" ")
            command = command.upper()
            if command in ("EHLO", "HELO"):
                self.reply("250 smtp-sink")
            elif command == "MAIL":
                sender, recipients = argument.partition(":")[2].strip().strip("<>"), []
                self.reply("250 ok")
            elif command == "RCPT":
                recipients.append(argument.partition(":")[2].strip().strip("<>"))
                self.reply("250 ok")
            elif command == "DATA":
                self.reply("354 end with <CRLF>.<CRLF>")
                self.keep(sender, recipients, self.message())
                self.reply("250 queued")
            elif command == "QUIT":
                self.reply("221 bye")
                return
            else:  # RSET, NOOP and the rest: nothing to do
                self.reply("250 ok")

    def message(self):
        lines = []
        while (line := self.rfile.readline()) not in (b".\r\n", b".\n", b""):
            lines.append(line[1:] if line.startswith(b"..") else line)  # undo dot-stuffing
        return b"".join(lines).decode("utf-8", "replace")

    def keep(self, sender, recipients, message):
        with LOCK, open(self.record, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"mail_from": sender, "recipients": recipients, "message": message}) + "\n")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    host, port, Session.record = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    Server((host, port), Session).serve_forever()


if __name__ == "__main__":
    main()
