"""Real alert receivers for the tests: an SMTP server (aiosmtpd) and an HTTP server that keep what they get.

Both listen on 127.0.0.1 on a free port, in a thread of the test process, and are started once
per session by the fixtures that use them. Tests read what arrived for one run by its run id.
"""

from __future__ import annotations

import email
import json
import threading
import time
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from batchscore.local.embedded_pg import free_ports


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: Message

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        """The decoded text of every part, joined."""
        parts = self.message.walk() if self.message.is_multipart() else [self.message]
        texts = []
        for part in parts:
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                texts.append(payload.decode(part.get_content_charset() or "utf-8"))
        return "\n".join(texts)


@dataclass
class _MailHandler:
    mails: list[Mail] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"


class SmtpReceiver:
    """A real SMTP server on 127.0.0.1 (no TLS, no auth), keeping every mail it accepts."""

    def __init__(self) -> None:
        (self.port,) = free_ports(1)
        self._handler = _MailHandler()
        self._controller = Controller(self._handler, hostname="127.0.0.1", port=self.port)

    def start(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def mails_about(self, run_id: str) -> list[Mail]:
        return [m for m in self._handler.mails if run_id in m.body]

    def connection(self, sender: str = "batchscore@example.com") -> str:
        """The Airflow connection (JSON form) that reaches this server."""
        extra = {"disable_tls": True, "disable_ssl": True, "from_email": sender, "retry_limit": 0, "timeout": 5}
        return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": self.port, "extra": extra})


class HttpReceiver:
    """A real HTTP server on 127.0.0.1 keeping every POSTed JSON body (answers 200)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"_raw": raw.decode(errors="replace")}
                received.bodies.append(body)
                received.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> HttpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def bodies_about(self, run_id: str) -> list[dict[str, Any]]:
        return [b for b in self.bodies if run_id in json.dumps(b)]

    def connection(self, endpoint: str = "/alerts") -> str:
        return json.dumps(
            {"conn_type": "http", "host": f"http://127.0.0.1:{self.port}", "extra": {"endpoint": endpoint}}
        )


def wait_for(predicate: Any, timeout: float = 30.0) -> bool:
    """Poll ``predicate`` until it is truthy or ``timeout`` seconds pass; its last value's truth."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return bool(predicate())
