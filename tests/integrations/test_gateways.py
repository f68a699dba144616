import json
import threading
from datetime import timedelta
from io import StringIO
from types import SimpleNamespace
from unittest import mock

import pytest
import requests
from django.core.management import call_command
from django.utils import timezone
from twilio.base.exceptions import TwilioException, TwilioRestException
from urllib3.exceptions import NewConnectionError

from integrations.models import LocalSms
from integrations.sms import notification as n
from integrations.sms.faulty import FaultyGateway
from integrations.sms.gateway import (
    AmbiguousGatewayError,
    Gateway,
    GatewayError,
    PermanentGatewayError,
    SendResult,
    TransientGatewayError,
    get_gateway,
)
from integrations.sms.local import LocalGateway
from integrations.sms.twilio import TwilioGateway

TO = "+16175550123"
TOKEN = "k" * 43
CALLBACK = "https://app.caretext.example/integrations/twilio/status"


@pytest.fixture(autouse=True)
def _site(settings):
    settings.SITE_URL = "http://127.0.0.1:8000"


@pytest.fixture
def sms():
    return n.link_notice(to=TO, sender_label="Test Clinic", link=f"http://127.0.0.1:8000/s/{TOKEN}")


# --- get_gateway -------------------------------------------------------------------------------

def test_get_gateway_local(settings):
    settings.SMS_GATEWAY = "local"
    gateway = get_gateway()
    assert isinstance(gateway, LocalGateway) and isinstance(gateway, Gateway)


def test_get_gateway_twilio(settings, monkeypatch):
    settings.SMS_GATEWAY = "twilio"
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = "AC" + "0" * 32, "secret"
    settings.TWILIO_MESSAGING_SERVICE_SID, settings.TWILIO_FROM_NUMBER = "MG" + "1" * 32, ""
    gateway = get_gateway()
    assert isinstance(gateway, TwilioGateway) and isinstance(gateway, Gateway)
    assert gateway.messaging_service_sid == "MG" + "1" * 32


def test_get_gateway_twilio_needs_a_sender(settings, monkeypatch):
    settings.SMS_GATEWAY = "twilio"
    settings.TWILIO_MESSAGING_SERVICE_SID, settings.TWILIO_FROM_NUMBER = "", ""
    with pytest.raises(ValueError, match="TWILIO_FROM_NUMBER"):
        get_gateway()


def test_get_gateway_unknown(settings):
    settings.SMS_GATEWAY = "carrier-pigeon"
    with pytest.raises(ValueError):
        get_gateway()


def test_error_vocabulary():
    assert issubclass(TransientGatewayError, GatewayError)
    assert PermanentGatewayError("x", code="21610").permanent is True
    assert TransientGatewayError("x").permanent is False
    assert AmbiguousGatewayError("x").permanent is False
    assert GatewayError("x", code=429, permanent=True).code == "429"


# --- local ------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_local_records_and_is_idempotent(sms):
    gateway = LocalGateway()
    first = gateway.send(sms, status_callback=None, idempotency_key="outbound-1")
    again = gateway.send(sms, status_callback=CALLBACK, idempotency_key="outbound-1")
    assert first == again and first.provider_id.startswith("LS")
    other = gateway.send(sms, status_callback=None, idempotency_key="outbound-2")
    assert other.provider_id != first.provider_id
    assert LocalSms.objects.count() == 2
    row = LocalSms.objects.get(idempotency_key="outbound-1")
    assert (row.to, row.body, row.kind, row.provider_id) == (TO, sms.body, "link_notice", first.provider_id)
    assert gateway.lookup(first.provider_id) == first
    assert gateway.lookup("LSnope") is None
    assert gateway.reconcile(sms, idempotency_key="outbound-1", since=timezone.now()) == first
    assert gateway.reconcile(sms, idempotency_key="outbound-9", since=timezone.now()) is None


@pytest.mark.django_db
def test_local_key_reuse_for_another_sms_is_refused(sms):
    gateway = LocalGateway()
    gateway.send(sms, status_callback=None, idempotency_key="k1")
    code = n.one_time_code(to=TO, sender_label="Test Clinic", code="123456")
    with pytest.raises(ValueError, match="different SMS"):
        gateway.send(code, status_callback=None, idempotency_key="k1")
    assert LocalSms.objects.count() == 1


@pytest.mark.django_db
def test_local_refuses_anything_but_a_notification():
    gateway = LocalGateway()
    with pytest.raises(TypeError):
        gateway.send("Jane, your results are in", status_callback=None, idempotency_key="k")
    with pytest.raises(ValueError):
        gateway.send(n.urgent_notice(to=TO, sender_label="Test Clinic"), status_callback=None, idempotency_key="")
    assert LocalSms.objects.count() == 0


def test_local_concurrent_same_key_one_row(committed_db, sms):
    results, errors = [], []

    def send():
        try:
            results.append(LocalGateway().send(sms, status_callback=None, idempotency_key="race"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            from django.db import connection

            connection.close()

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({r.provider_id for r in results}) == 1
    assert LocalSms.objects.filter(idempotency_key="race").count() == 1


@pytest.mark.django_db
def test_sms_outbox_json(sms):
    gateway = LocalGateway()
    first = gateway.send(sms, status_callback=None, idempotency_key="a")
    code = n.one_time_code(to="+447911123456", sender_label="Test Clinic", code="654321")
    second = gateway.send(code, status_callback=None, idempotency_key="b")
    out = StringIO()
    call_command("sms_outbox", "--json", stdout=out)
    records = json.loads(out.getvalue())
    assert [r["provider_id"] for r in records] == [first.provider_id, second.provider_id]
    assert records[0] == {
        "to": TO, "body": sms.body, "kind": "link_notice", "status": "delivered",
        "time": records[0]["time"], "provider_id": first.provider_id, "idempotency_key": "a",
    }
    assert records[1]["body"] == "Test Clinic: Your code is 654321. It expires in 10 minutes."
    text = StringIO()
    call_command("sms_outbox", stdout=text)
    assert sms.body in text.getvalue() and first.provider_id in text.getvalue()


@pytest.mark.django_db
def test_sms_outbox_empty():
    out = StringIO()
    call_command("sms_outbox", "--json", stdout=out)
    assert json.loads(out.getvalue()) == []


# --- twilio -------------------------------------------------------------------------------------

def _twilio(**kwargs):
    client = mock.MagicMock()
    client.messages.create.return_value = SimpleNamespace(sid="SM" + "a" * 32, status="queued")
    kwargs.setdefault("messaging_service_sid", "MG" + "1" * 32)
    return TwilioGateway(client=client, **kwargs), client


def test_twilio_payload_with_messaging_service(sms):
    gateway, client = _twilio()
    result = gateway.send(sms, status_callback=CALLBACK, idempotency_key="k")
    assert result == SendResult(provider_id="SM" + "a" * 32, status="queued")
    client.messages.create.assert_called_once_with(
        to=TO, body=sms.body, messaging_service_sid="MG" + "1" * 32, status_callback=CALLBACK)


def test_twilio_payload_with_from_number_and_no_callback(sms):
    gateway, client = _twilio(messaging_service_sid="", from_number="+16175550100")
    gateway.send(sms, status_callback=None, idempotency_key="k")
    client.messages.create.assert_called_once_with(to=TO, body=sms.body, from_="+16175550100")


@pytest.mark.parametrize("sender,expected", [
    ("MG" + "2" * 32, {"messaging_service_sid": "MG" + "2" * 32}),
    ("+12025550100", {"from_": "+12025550100"}),
])
def test_twilio_sends_from_the_clinics_own_sender(sms, sender, expected):
    gateway, client = _twilio()
    gateway.send(sms, status_callback=None, idempotency_key="k", sender=sender)
    client.messages.create.assert_called_once_with(to=TO, body=sms.body, **expected)


def test_twilio_refuses_free_text():
    gateway, client = _twilio()
    with pytest.raises(TypeError):
        gateway.send(SimpleNamespace(to=TO, body="Jane: HIV result"), status_callback=None, idempotency_key="k")
    client.messages.create.assert_not_called()


def test_twilio_sdk_over_http_is_blocked_in_tests(settings, monkeypatch, sms):
    """The real SDK client, no mock: the request would go to api.twilio.com and the test socket
    guard stops it before it leaves, which the gateway reports as never having connected."""
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = "AC" + "0" * 32, "secret"
    settings.TWILIO_FROM_NUMBER, settings.TWILIO_MESSAGING_SERVICE_SID = "+16175550100", ""
    gateway = TwilioGateway.from_settings()
    with mock.patch("socket.getaddrinfo", side_effect=OSError("no DNS in tests")):
        with pytest.raises(TransientGatewayError):
            gateway.send(sms, status_callback=None, idempotency_key="k")


def _rest(status, code=None):
    return TwilioRestException(status, "https://api.twilio.com/2010-04-01/Accounts/AC/Messages.json",
                               msg="error", code=code, method="POST")


@pytest.mark.parametrize(("exc", "expected", "code"), [
    (_rest(429, 20429), TransientGatewayError, "20429"),
    (_rest(500), TransientGatewayError, "500"),
    (_rest(503), TransientGatewayError, "503"),
    (_rest(400, 21610), PermanentGatewayError, "21610"),
    (_rest(400, 21211), PermanentGatewayError, "21211"),
    (_rest(400, 21614), PermanentGatewayError, "21614"),
    (_rest(400, 21612), PermanentGatewayError, "21612"),
    (_rest(400, 21602), PermanentGatewayError, "21602"),
    (_rest(401, 20003), TransientGatewayError, "20003"),
    (requests.exceptions.ConnectTimeout("connect timed out"), TransientGatewayError, "connect"),
    (requests.exceptions.ConnectionError(NewConnectionError(None, "refused")), TransientGatewayError, "connect"),
    (requests.exceptions.ReadTimeout("read timed out"), AmbiguousGatewayError, "timeout"),
    (requests.exceptions.ConnectionError("Connection aborted: RemoteDisconnected"), AmbiguousGatewayError, "connection"),
    (TwilioException("Credentials are required"), TransientGatewayError, "client"),
])
def test_twilio_error_mapping(sms, exc, expected, code):
    gateway, client = _twilio()
    client.messages.create.side_effect = exc
    with pytest.raises(expected) as info:
        gateway.send(sms, status_callback=None, idempotency_key="k")
    assert type(info.value) is expected
    assert info.value.code == code
    assert sms.body not in str(info.value)


def test_twilio_lookup_and_reconcile(sms):
    gateway, client = _twilio()
    client.messages.return_value.fetch.return_value = SimpleNamespace(sid="SMx", status="delivered")
    assert gateway.lookup("SMx") == SendResult("SMx", "delivered")
    client.messages.assert_called_with("SMx")
    client.messages.return_value.fetch.side_effect = _rest(404, 20404)
    assert gateway.lookup("SMy") is None

    since = timezone.now()
    client.messages.list.return_value = [
        SimpleNamespace(sid="SMold", body=sms.body, status="delivered", date_created=since - timedelta(hours=1)),
        SimpleNamespace(sid="SMother", body="something else", status="queued", date_created=since),
        SimpleNamespace(sid="SMnew", body=sms.body, status="queued", date_created=since + timedelta(seconds=1)),
    ]
    assert gateway.reconcile(sms, idempotency_key="k", since=since) == SendResult("SMnew", "queued")
    client.messages.list.assert_called_with(to=TO, limit=50)
    client.messages.list.return_value = []
    assert gateway.reconcile(sms, idempotency_key="k", since=since) is None


def test_only_twilio_module_imports_the_sdk():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        if rel.startswith((".venv/", "tests/")) or rel == "integrations/sms/twilio.py":
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        if "import twilio" in text or "from twilio" in text:
            offenders.append(rel)
    assert offenders == []


# --- faulty -------------------------------------------------------------------------------------

def test_faulty_script(sms):
    gateway = FaultyGateway(["429", "500", "timeout", "ok"])
    for expected in (TransientGatewayError, TransientGatewayError, TransientGatewayError):
        with pytest.raises(expected):
            gateway.send(sms, status_callback=None, idempotency_key="k")
    result = gateway.send(sms, status_callback=None, idempotency_key="k")
    assert gateway.lookup(result.provider_id) == result
    assert gateway.attempts["k"] == 4 and gateway.submissions["k"] == 1
    assert gateway.outcomes == ["429", "500", "timeout", "ok"]


def test_faulty_ambiguous_success_is_found_by_reconcile(sms):
    gateway = FaultyGateway(["ambiguous"])
    since = timezone.now()
    with pytest.raises(AmbiguousGatewayError):
        gateway.send(sms, status_callback=None, idempotency_key="k")
    assert gateway.submissions["k"] == 1
    found = gateway.reconcile(sms, idempotency_key="k", since=since)
    assert found is not None and gateway.lookup(found.provider_id) == found
    assert gateway.reconcile(sms, idempotency_key="other", since=since) is None
    # resending blindly after an ambiguous failure is what the counter catches
    gateway.send(sms, status_callback=None, idempotency_key="k")
    assert gateway.submissions["k"] == 2


def test_faulty_permanent_and_default(sms):
    gateway = FaultyGateway(["permanent"], default="500")
    with pytest.raises(PermanentGatewayError) as info:
        gateway.send(sms, status_callback=None, idempotency_key="k")
    assert info.value.code == "21211"
    with pytest.raises(TransientGatewayError):
        gateway.send(sms, status_callback=None, idempotency_key="k")
    assert gateway.submissions["k"] == 0


def test_faulty_rejects_unknown_outcomes_and_free_text():
    with pytest.raises(ValueError):
        FaultyGateway(["boom"])
    with pytest.raises(TypeError):
        FaultyGateway().send("free text", status_callback=None, idempotency_key="k")


def test_faulty_counts_under_threads(sms):
    gateway = FaultyGateway()
    threads = [threading.Thread(target=lambda i=i: gateway.send(sms, status_callback=None, idempotency_key=f"k{i % 10}"))
               for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(gateway.submissions.values()) == 100
    assert all(count == 10 for count in gateway.submissions.values())
    assert isinstance(gateway, Gateway)
