"""Webhook fixtures: a real HTTP receiver on 127.0.0.1 that records requests and answers with
scripted statuses, and a textable patient of clinic A with an appointment thread."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from accounts.tenancy import tenant_scope
from tests.factories import make_textable_patient


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answered in order; then 200
    delays: list[float] = field(default_factory=list)  # seconds to wait before answering, in order
    redirect_to: str = ""

    def script(self, *statuses: int) -> None:
        self.statuses.extend(statuses)

    def event_ids(self) -> list[str]:
        return [r.headers["X-Caretext-Event-Id"] for r in self.requests]


def _handler(receiver: Receiver):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            receiver.requests.append(Received(path=self.path, headers=dict(self.headers.items()), body=body))
            if receiver.delays:
                time.sleep(receiver.delays.pop(0))
            status = receiver.statuses.pop(0) if receiver.statuses else 200
            try:
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", receiver.redirect_to or "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                pass

        def log_message(self, format, *args):  # noqa: A002 - tests print nothing
            pass

    return Handler


@pytest.fixture
def receiver():
    holder = Receiver(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(holder))
    server.daemon_threads = True
    holder.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/caretext"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield holder
    server.shutdown()
    server.server_close()


def verify(secret: str, received: Received, *, now: float | None = None, tolerance: int = 300) -> bool:
    """What a receiver does (the README snippet)."""
    timestamp = received.headers["X-Caretext-Timestamp"]
    if abs((now or time.time()) - int(timestamp)) > tolerance:
        return False
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + received.body,
                                    hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, received.headers["X-Caretext-Signature"])


@pytest.fixture
def patient(tenant_a, alice):
    return make_textable_patient(tenant=tenant_a, owner=alice, given_name="Ada", family_name="Quill",
                                 birth_date=datetime.date(1984, 3, 9), phone="+12025550171", mrn="MRN-0042")


@pytest.fixture
def in_a(tenant_a):
    with tenant_scope(tenant_a):
        yield tenant_a
