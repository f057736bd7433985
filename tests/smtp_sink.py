"""An SMTP sink for the tests: a local server speaking just enough SMTP (EHLO, AUTH PLAIN, MAIL, RCPT,
DATA, QUIT) to receive and keep messages, so that a test reads what was really sent. Used by the
notification tests and the post-checks' report-email check."""

import base64
import email
import email.policy
import socketserver


class SmtpSink(socketserver.ThreadingTCPServer):
    """Just enough SMTP (EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT) to receive and keep messages."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), SmtpSession)
        self.messages = []
        self.logins = []
        self.port = self.server_address[1]


class SmtpSession(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self):
        envelope = {"from": None, "to": []}
        self.reply("220 sink ESMTP")
        while line := self.rfile.readline():
            command = line.decode(errors="replace").rstrip("\r\n")
            verb = command.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self.reply("250-sink")
                self.reply("250 AUTH PLAIN")
            elif verb == "HELO":
                self.reply("250 sink")
            elif verb == "AUTH":
                _user_zero, user, password = base64.b64decode(command.split()[2]).decode().split("\0")
                self.server.logins.append((user, password))
                self.reply("235 2.7.0 Authentication successful")
            elif verb == "MAIL":
                envelope["from"] = command.split(":", 1)[1].strip()
                self.reply("250 OK")
            elif verb == "RCPT":
                envelope["to"].append(command.split(":", 1)[1].strip())
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                data = []
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                message = email.message_from_bytes(b"".join(data), policy=email.policy.default)
                self.server.messages.append({"envelope": dict(envelope), "message": message,
                                             "raw": b"".join(data).decode(errors="replace")})
                self.reply("250 OK queued")
            elif verb == "QUIT":
                self.reply("221 Bye")
                return
            else:
                self.reply("250 OK")
