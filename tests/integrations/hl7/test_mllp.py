"""MLLP end to end over real loopback sockets: the listener in a thread (several connections,
oversized frames) and ``manage.py mllp_listen`` as a process (SIGTERM stops it cleanly)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import quote

import pytest

from accounts.permissions import Role
from accounts.tenancy import tenant_scope
from audit.models import AuditEvent
from integrations.hl7.mllp import MllpServer, frame, read_frames
from patients.models import Appointment, Patient
from tests.factories import make_member, make_tenant
from tests.integrations.hl7.builders import adt, seg, siu

TIMEOUT = 15  # seconds; every socket and process wait is bounded
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def clinic(committed_db):
    tenant = make_tenant(name="MLLP Clinic", slug="mllp-clinic")
    make_member(tenant=tenant, role=Role.OWNER, email="owner@mllp-clinic.test")
    return tenant


@pytest.fixture
def listener(clinic):
    server = MllpServer(("127.0.0.1", 0), tenant=clinic, max_bytes=4096, idle_timeout=TIMEOUT)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.stop()
    thread.join(timeout=TIMEOUT)
    assert not thread.is_alive()


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)


def _exchange(sock: socket.socket, *messages: str) -> list[str]:
    for message in messages:
        sock.sendall(frame(message.encode()))
    answers = []
    frames = read_frames(sock, max_bytes=1 << 20)
    for _ in messages:
        answers.append(next(frames).decode())
    return answers


def test_each_message_gets_its_ack_on_one_connection(listener, clinic):
    with _connect(listener.server_address[1]) as sock:
        first, second = _exchange(sock, adt(control_id="M-1"), siu(control_id="M-2"))
    assert seg(first, "MSA")[1:3] == ["AA", "M-1"]
    assert seg(second, "MSA")[1:3] == ["AA", "M-2"]
    with tenant_scope(clinic):
        assert Patient.objects.count() == 1 and Appointment.objects.count() == 1
        # No user, no API key: the MLLP interface imported these, from this peer.
        events = AuditEvent.objects.filter(object_type="patients.Patient")
        assert {(e.actor_type, e.actor_label, e.ip_address) for e in events} \
            == {("system", f"mllp:{listener.server_address[1]}", "127.0.0.1")}
        assert all(e.request_id.startswith("mllp-") for e in events)


def test_several_connections_at_once(listener, clinic):
    port, results, errors = listener.server_address[1], {}, []

    def client(n: int) -> None:
        try:
            with _connect(port) as sock:
                [answer] = _exchange(sock, siu(appointment_id=f"APT-{n}", control_id=f"C-{n}"))
                results[n] = seg(answer, "MSA")[1:3]
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=TIMEOUT)
    assert errors == []
    # All four name the same new patient: the ones that lose the race to create it are retried.
    assert results == {n: ["AA", f"C-{n}"] for n in range(4)}
    with tenant_scope(clinic):
        assert Appointment.objects.count() == 4 and Patient.objects.count() == 1


def test_bytes_outside_frames_are_ignored_and_a_trailing_cr_is_optional(listener):
    with _connect(listener.server_address[1]) as sock:
        sock.sendall(b"noise\r\n" + b"\x0b" + adt(control_id="N-1").encode() + b"\x1c")
        answer = next(read_frames(sock, max_bytes=1 << 20)).decode()
    assert seg(answer, "MSA")[1:3] == ["AA", "N-1"]


def test_an_oversized_message_is_refused_and_the_connection_closed(listener, clinic):
    with _connect(listener.server_address[1]) as sock:
        sock.sendall(frame(adt(extra=("ZPI|" + "x" * 5000,)).encode()))
        frames = read_frames(sock, max_bytes=1 << 20)
        answer = next(frames).decode()
        assert seg(answer, "MSA")[1] == "AR"
        assert "larger than 4096 bytes" in seg(answer, "MSA")[3]
        assert list(frames) == []  # closed by the server
    with tenant_scope(clinic):
        assert not Patient.objects.exists()


def _database_url() -> str:
    from django.db import connection

    db = connection.settings_dict
    auth = quote(db["USER"], safe="") + (":" + quote(db["PASSWORD"], safe="") if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.mark.slow
def test_the_command_listens_for_its_clinic_and_stops_on_sigterm(clinic):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CARETEXT_TEST_DB"))}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings", "CARETEXT_TESTING": "1",
                "DATABASE_URL": _database_url(), "PYTHONUNBUFFERED": "1"})
    process = subprocess.Popen([sys.executable, "manage.py", "mllp_listen", "--tenant", clinic.slug, "--port", "0"],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = _read_line(process)
        assert line.startswith("MLLP listening on 127.0.0.1:"), line
        port = int(line.split(":")[1].split()[0])
        with _connect(port) as sock:
            [answer] = _exchange(sock, siu(control_id="P-1"))
        assert seg(answer, "MSA")[1:3] == ["AA", "P-1"]
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0, err[-2000:]
        assert "MLLP listener stopped" in out
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=TIMEOUT)
    with tenant_scope(clinic):
        assert Appointment.objects.count() == 1


def _read_line(process: subprocess.Popen) -> str:
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=TIMEOUT)
    if not found:
        process.kill()
        pytest.fail(f"the listener did not start: {process.stderr.read()[-2000:]}")
    return found[0].strip()


def test_an_unknown_clinic_is_a_command_error(db):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError):
        call_command("mllp_listen", "--tenant", "no-such-clinic", "--port", "0")
