"""Contract tests: our TwilioGateway, through the real Twilio SDK over HTTP, against Twilio's
published OpenAPI spec for the 2010-04-01 API (Messages).

The spec ships in the npm package @twilio/cli-core; Prism (@stoplight/prism-cli) serves it as a
mock on loopback with ``--errors``, so a request that breaks the contract (a missing required
field, a malformed SID or URL, no Basic auth) gets an error instead of a happy example. Both
are pinned in tools/twilio-contract/package-lock.json; the session fixture runs ``npm ci`` there
when node_modules is missing (``make twilio-contract-tools`` does the same ahead of time).

The SDK is pointed at Prism with ``TwilioGateway.from_settings(api_base_url=...)``, which
rewrites https://api.twilio.com to the mock's origin (an explicit argument, never a setting).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from integrations.sms import notification as n
from integrations.sms.gateway import PermanentGatewayError, SendResult, TransientGatewayError
from integrations.sms.twilio import TWILIO_API_ORIGIN, TwilioGateway
from messaging.outbox import PROVIDER_STATUS, status_callback_url

pytestmark = pytest.mark.slow  # Prism takes ~15 s to load the spec

TOOLS = Path(__file__).resolve().parents[2] / "tools" / "twilio-contract"
SPEC = TOOLS / "node_modules" / "@twilio" / "cli-core" / "src" / "services" / "twilio-api" / "twilio_api_v2010.json"
PRISM = TOOLS / "node_modules" / "@stoplight" / "prism-cli" / "dist" / "index.js"
START_TIMEOUT = 180

ACCOUNT = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "contract-test-auth-token"
SERVICE = "MG" + "1" * 32
SENDER = "+12025550100"
TO = "+16175550123"
SITE = "https://ct.example.org"
LINK_TOKEN = "k" * 43
_SID_RE = re.compile(r"SM[0-9a-fA-F]{32}")


# --- Prism ------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _install_tools() -> None:
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        pytest.fail("Node.js and npm are needed for the Twilio contract tests (apt-get install nodejs npm)")
    if SPEC.exists() and PRISM.exists():
        return
    result = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=TOOLS, capture_output=True, text=True,
                            timeout=600, check=False)
    if result.returncode != 0:
        pytest.fail(f"npm ci in {TOOLS} failed:\n{result.stderr[-2000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)  # Prism's own group (start_new_session), nothing else
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


@pytest.fixture(scope="session")
def prism(tmp_path_factory):
    """The origin (``http://127.0.0.1:<port>``) of a Prism mock of Twilio's 2010 API."""
    _install_tools()
    port = _free_port()
    log_path = tmp_path_factory.mktemp("prism") / "prism.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [shutil.which("node"), str(PRISM), "mock", "--errors", "--host", "127.0.0.1", "--port", str(port),
             str(SPEC)], cwd=TOOLS, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Prism did not start:\n{log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.25)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(process)


# --- the gateway ------------------------------------------------------------------------------------------


class Recorder:
    """Every request the gateway's SDK client made, and Prism's answer (wraps its HTTP client)."""

    def __init__(self, http_client) -> None:
        self.calls: list[SimpleNamespace] = []
        self._request = http_client.request
        http_client.request = self

    def __call__(self, method, url, **kwargs):
        response = self._request(method, url, **kwargs)
        self.calls.append(SimpleNamespace(method=method, url=url, response=response, **kwargs))
        return response

    @property
    def last(self) -> SimpleNamespace:
        return self.calls[-1]


@pytest.fixture
def twilio_settings(settings):
    settings.SITE_URL = SITE
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = ACCOUNT, AUTH_TOKEN
    settings.TWILIO_MESSAGING_SERVICE_SID, settings.TWILIO_FROM_NUMBER = SERVICE, ""
    return settings


@pytest.fixture
def gateway(prism, twilio_settings):
    gateway = TwilioGateway.from_settings(api_base_url=prism)
    gateway.recorder = Recorder(gateway.client.http_client)
    return gateway


@pytest.fixture
def sms(twilio_settings):
    return n.link_notice(to=TO, sender_label="Test Clinic", link=f"{SITE}/s/{LINK_TOKEN}")


def _callback() -> str:
    return status_callback_url(SimpleNamespace(pk=7))  # what the outbox passes: SITE_URL/…/status?t=<id>


def _validation(response) -> list[dict]:
    return json.loads(response.text).get("validation", [])


# --- the contract -------------------------------------------------------------------------------------------


def test_send_of_a_link_notice_is_accepted_by_the_contract(gateway, sms):
    result = gateway.send(sms, status_callback=_callback(), idempotency_key="outbox-row-1")

    call = gateway.recorder.last
    assert call.response.status_code == 201, call.response.text
    assert call.url == f"{TWILIO_API_ORIGIN}/2010-04-01/Accounts/{ACCOUNT}/Messages.json"  # rewritten below it
    assert call.method == "POST" and call.auth == (ACCOUNT, AUTH_TOKEN)
    assert call.data == {"To": TO, "Body": sms.body, "MessagingServiceSid": SERVICE,
                         "StatusCallback": f"{SITE}/integrations/twilio/status?t=7"}
    assert isinstance(result, SendResult)
    assert _SID_RE.fullmatch(result.provider_id)
    assert result.status in PROVIDER_STATUS  # a status word the outbox understands ("queued")


def test_send_from_a_number_is_accepted_by_the_contract(prism, twilio_settings, sms):
    twilio_settings.TWILIO_MESSAGING_SERVICE_SID, twilio_settings.TWILIO_FROM_NUMBER = "", SENDER
    gateway = TwilioGateway.from_settings(api_base_url=prism)
    recorder = Recorder(gateway.client.http_client)
    result = gateway.send(sms, status_callback=None, idempotency_key="outbox-row-2")
    assert recorder.last.response.status_code == 201, recorder.last.response.text
    assert recorder.last.data == {"To": TO, "Body": sms.body, "From": SENDER}
    assert _SID_RE.fullmatch(result.provider_id)


def test_lookup_reads_a_message_by_sid(gateway):
    sid = "SM" + "b" * 32
    result = gateway.lookup(sid)
    call = gateway.recorder.last
    assert call.response.status_code == 200, call.response.text
    assert call.method == "GET" and call.url.endswith(f"/Accounts/{ACCOUNT}/Messages/{sid}.json")
    assert result is not None and _SID_RE.fullmatch(result.provider_id)
    assert result.status in PROVIDER_STATUS


def test_reconcile_request_conforms(gateway, sms):
    """``reconcile`` lists messages to the recipient. The request side conforms; Twilio's own
    example list response (relative ``*_uri`` values under ``format: uri``) fails its schema in
    Prism's ``--errors`` mode, which the gateway reports as a transient lookup failure."""
    since = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    with pytest.raises(TransientGatewayError):
        gateway.reconcile(sms, idempotency_key="outbox-row-3", since=since)
    call = gateway.recorder.last
    assert call.method == "GET" and call.params == {"To": TO, "PageSize": 50}
    violations = _validation(call.response)
    assert violations and all(v["location"][0] == "response" for v in violations), violations


# --- the mock checks: requests that break the contract are refused -------------------------------------------


def _messages_url() -> str:
    return f"{TWILIO_API_ORIGIN}/2010-04-01/Accounts/{ACCOUNT}/Messages.json"


def test_a_message_without_to_is_rejected(gateway, sms):
    response = gateway.client.request("POST", _messages_url(), data={"Body": sms.body, "MessagingServiceSid": SERVICE})
    assert response.status_code == 422
    assert any(v["location"] == ["body"] and "To" in v["message"] for v in _validation(response))


def test_a_malformed_messaging_service_sid_is_rejected(gateway, sms):
    response = gateway.client.request("POST", _messages_url(),
                                      data={"To": TO, "Body": sms.body, "MessagingServiceSid": "MG-not-a-sid"})
    assert response.status_code == 422
    assert any(v["location"] == ["body", "MessagingServiceSid"] for v in _validation(response))


def test_a_relative_status_callback_is_refused_and_maps_to_a_permanent_error(gateway, sms):
    with pytest.raises(PermanentGatewayError) as exc:
        gateway.send(sms, status_callback="/integrations/twilio/status?t=7", idempotency_key="outbox-row-4")
    assert exc.value.code == "422"
    assert any(v["location"] == ["body", "StatusCallback"] for v in _validation(gateway.recorder.last.response))


def test_a_request_without_basic_auth_is_refused(gateway, prism, sms):
    http = gateway.client.http_client
    response = http.request("POST", _messages_url(), data={"To": TO, "Body": sms.body, "MessagingServiceSid": SERVICE},
                            auth=None)
    assert response.status_code == 401


# --- no PHI in logs ---------------------------------------------------------------------------------------


def test_the_sdk_logs_no_phone_numbers(gateway, sms, caplog):
    """The SDK's HTTP client logs request URLs with their query string at INFO; ``reconcile``
    filters by the patient's number. Our client's logger is held at WARNING."""
    caplog.set_level(logging.INFO)
    gateway.send(sms, status_callback=_callback(), idempotency_key="outbox-row-5")
    with pytest.raises(TransientGatewayError):
        gateway.reconcile(sms, idempotency_key="outbox-row-5", since=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
    assert gateway.recorder.calls  # the requests were made
    assert "6175550123" not in caplog.text
    assert LINK_TOKEN not in caplog.text
