"""Failures that reach web requests: a PostgreSQL connection killed in the middle of a request,
the key service (KEK provider) down, and Twilio status callbacks that come twice, out of order,
forged or replayed against the other clinic, many at once.

tests/integrations/test_webhooks.py checks each callback rule once, in one transaction; here
they arrive concurrently from several threads against committed rows the counting gateway sent,
and the scenario ends with the invariant checker.
"""

from __future__ import annotations

import random
import threading
import time
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test import Client
from twilio.request_validator import RequestValidator

from accounts.services import api_key_create
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from messaging.models import Message, OutboundSms, SmsStatus
from messaging.outbox import status_callback_url
from tests.factories import login_verified
from tests.reliability.drive import (
    LEASE_SECONDS,
    canary,
    count_in,
    enqueue_notices,
    rows_in,
    sweep_until_settled,
    tenants_of,
    textable_patients,
    wait_until,
)
from tests.reliability.invariants import assert_invariants, plant
from tests.reliability.kek import DOWN_FILE_ENV
from tests.reliability.processes import terminate_backends

pytestmark = [pytest.mark.slow, pytest.mark.reliability, pytest.mark.timeout(180)]


def _api_key(tenant, owner, scope: str) -> str:
    with tenant_scope(tenant):
        _key, raw = api_key_create(tenant=tenant, actor=owner, name=f"EHR {scope}", scopes=[scope])
    return raw


# --- PostgreSQL connection killed mid-request ---------------------------------------------------------


def _kill_own_connection_once(monkeypatch, module, name: str) -> list[int]:
    """Make ``module.name`` terminate this process's PostgreSQL connection (as a failover or an
    idle killer would) before doing its work, once. Returns the pids it killed."""
    original = getattr(module, name)
    killed = []

    def interrupted(*args, **kwargs):
        if not killed:
            pid = connection.connection.info.backend_pid
            killed.append(pid)
            assert terminate_backends(connection.settings_dict["NAME"], pids=[pid]) == 1
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, interrupted)
    return killed


def _send_with_connection_killed(clinics, monkeypatch):
    """The send API, its connection killed after the message row is written and before its
    audit event and SMS row. Returns (response, rows written, seconds)."""
    import messaging.services

    (tenant, owner), _ = clinics
    [patient] = textable_patients(tenant, owner, 1)
    raw_key = _api_key(tenant, owner, "messages:send")
    body = f"Your biopsy result for {canary('Befund')} is ready."
    plant(body)
    client = Client(raise_request_exception=False)
    killed = _kill_own_connection_once(monkeypatch, messaging.services, "audit_record")
    began = time.monotonic()
    response = client.post(f"/api/v1/patients/{patient.pk}/messages", {"body": body},
                           content_type="application/json",
                           headers={"Authorization": f"Bearer {raw_key}", "Idempotency-Key": "killed-1"})
    seconds = time.monotonic() - began
    connection.close()  # the test's own connection died with the request's: start a fresh one
    assert killed, "the request never reached the point where the connection is killed"
    with tenant_scope(tenant):
        written = (Message.objects.count(), OutboundSms.objects.count(),
                   AuditEvent.objects.filter(event_type=AuditEventType.MESSAGE_SENT).count())
    assert body.encode() not in response.content
    return response, written, seconds


def test_connection_killed_mid_request_writes_nothing_and_shows_nothing(clinics, monkeypatch, figures):
    """The transaction died with the connection: nothing of it remains, the error names no value,
    shows no traceback, and the trail still verifies."""
    response, written, seconds = _send_with_connection_killed(clinics, monkeypatch)
    figures(status=response.status_code, seconds=seconds, partial_writes=sum(written))
    assert written == (0, 0, 0)
    assert response.status_code in (500, 503)
    assert b"Traceback" not in response.content and b"OperationalError" not in response.content
    assert response.json()["error"]["request_id"]
    assert_invariants(tenants_of(clinics), _NoGateway())


def test_connection_killed_mid_request_is_a_503_the_client_may_retry(clinics, monkeypatch):
    response, _written, _seconds = _send_with_connection_killed(clinics, monkeypatch)
    assert response.status_code == 503, response.content[:300]
    assert response.json()["error"]["code"] != "server_error"
    assert response.has_header("Retry-After")


class _NoGateway:
    """A scenario without SMS: the provider accepted nothing."""

    def submissions(self):
        return {}

    def log(self):
        return []


# --- the key service down --------------------------------------------------------------------------


@pytest.fixture
def kek_switch(settings, monkeypatch, tmp_path, worker_env):
    """The KEK provider of this process and of the worker, switchable by a file; ``down()``,
    ``up()``. Data keys already unwrapped stay cached for PHI_KEY_CACHE_SECONDS in each process."""
    from phi import keys
    from phi.kek import reset_kek_provider

    flag = tmp_path / "kek-down"
    provider = "tests.reliability.kek.SwitchableKekProvider"
    monkeypatch.setenv(DOWN_FILE_ENV, str(flag))
    settings.PHI_KEK_PROVIDER = provider
    worker_env.update({"PHI_KEK_PROVIDER": provider, DOWN_FILE_ENV: str(flag), "PHI_KEY_CACHE_SECONDS": "60"})
    reset_kek_provider()
    keys.clear_cache()

    class Switch:
        @staticmethod
        def down():
            flag.touch()

        @staticmethod
        def up():
            flag.unlink(missing_ok=True)

    yield Switch
    flag.unlink(missing_ok=True)
    reset_kek_provider()
    keys.clear_cache()


def test_key_service_down_phi_reads_fail_closed_and_the_outbox_loses_nothing(
        clinics, worker, gateway, kek_switch, figures):
    """The KMS stops answering. Pages and API reads that need a patient's PHI answer 503 and
    show nothing. SMS need the recipient's number, which is PHI too (encrypted): a worker that
    unwrapped its clinic keys before the outage keeps sending on its cached keys; a worker
    without them (restarted during the outage) sends nothing, gives nothing up and marks
    nothing failed, and sends each SMS exactly once when the key service is back."""
    from phi import keys

    tenants = tenants_of(clinics)
    (tenant_a, owner_a), (tenant_b, owner_b) = clinics
    patients = {tenant.pk: textable_patients(tenant, owner, 2) for tenant, owner in clinics}
    read_key = _api_key(tenant_a, owner_a, "patients:read")
    staff = login_verified(Client(raise_request_exception=False), owner_a, tenant=tenant_a)
    worker.concurrency = 1  # one pool process: "its cache" is one cache
    worker.start()
    first = [k for tenant, _ in clinics for p in patients[tenant.pk] for k in enqueue_notices(tenant, p, 2)]
    wait_until(lambda: count_in(tenants, status=SmsStatus.SENT) == len(first), timeout=30,
               what="the first batch (the worker unwraps both clinics' keys)")

    kek_switch.down()
    # This process still holds its keys too (it just wrote the first batch): the clinics queue more.
    during = [k for tenant, _ in clinics for p in patients[tenant.pk] for k in enqueue_notices(tenant, p, 2)]
    wait_until(lambda: count_in(tenants, status=SmsStatus.SENT) == len(first) + len(during), timeout=30,
               what="the worker with cached keys to keep sending during the outage")
    worker.kill()  # the next worker starts during the outage, without keys
    late = [k for tenant, _ in clinics for p in patients[tenant.pk] for k in enqueue_notices(tenant, p, 2)]

    # PHI reads in a process without cached keys (any web process after PHI_KEY_CACHE_SECONDS).
    keys.clear_cache()
    patient = patients[tenant_a.pk][0]
    page = staff.get(f"/patients/{patient.pk}/")
    api = Client(raise_request_exception=False).get(f"/api/v1/patients/{patient.pk}",
                                                    headers={"Authorization": f"Bearer {read_key}"})
    assert page.status_code == 503, page.content[:300]
    assert api.status_code == 503 and api.json()["error"]["code"] == "phi_unavailable"
    for response in (page, api):
        assert patient.given_name.encode() not in response.content
        assert patient.family_name.encode() not in response.content

    # A worker without cached keys: the late batch fails closed.
    worker.start()
    time.sleep(LEASE_SECONDS + 1.5)
    from messaging.tasks import outbox_sweep

    outbox_sweep()  # hand out what the failed attempts left behind: it fails closed again
    time.sleep(1.5)
    assert gateway.accepted() == len(first) + len(during)
    assert count_in(tenants, pk__in=late, status__in=[SmsStatus.FAILED, SmsStatus.CANCELLED]) == 0
    waiting_during_outage = count_in(tenants, pk__in=late, status__in=[SmsStatus.QUEUED, SmsStatus.SENDING])
    assert waiting_during_outage == len(late)

    kek_switch.up()
    back_at = time.monotonic()
    sweep_until_settled(tenants, timeout=60, every=LEASE_SECONDS + 1)
    recovery = time.monotonic() - back_at
    assert staff.get(f"/patients/{patient.pk}/").status_code == 200

    tally = assert_invariants(tenants, gateway)
    assert tally.by_status == {SmsStatus.SENT: len(first) + len(during) + len(late)}
    figures(sent_on_cached_keys=len(during), held_without_keys=waiting_during_outage, page_status=page.status_code,
            api_status=api.status_code, lost=tally.lost, duplicated=tally.duplicated, recovery_seconds=recovery)


# --- Twilio status callbacks: duplicated, reordered, forged, replayed ------------------------------------

TOKEN = "reliability-twilio-token"
SITE = "https://ct.example.org"


def _signed_post(client, url: str, params: dict, *, sign_for: str | None = None, token: str = TOKEN):
    signature = RequestValidator(token).compute_signature(sign_for or url, params)
    return client.post(url.removeprefix(SITE), urlencode(params), content_type="application/x-www-form-urlencoded",
                       headers={"X-Twilio-Signature": signature})


def _callback(sid: str, word: str, error_code: str = "") -> dict:
    params = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": word, "SmsStatus": word,
              "AccountSid": "AC" + "0" * 32, "ApiVersion": "2010-04-01"}
    if error_code:
        params["ErrorCode"] = error_code
    return params


def test_callbacks_duplicated_reordered_forged_and_replayed_move_forward_only(
        clinics, gateway, settings, figures):
    settings.SITE_URL, settings.TWILIO_AUTH_TOKEN = SITE, TOKEN
    settings.SMS_GATEWAY = "counting"  # Celery is eager here: each SMS goes to the counting gateway on commit
    tenants = tenants_of(clinics)
    (tenant_a, owner_a), (tenant_b, owner_b) = clinics
    sent = {}
    for tenant, owner in clinics:
        for patient in textable_patients(tenant, owner, 2):
            enqueue_notices(tenant, patient, 6)
        sent[tenant.pk] = {str(r.pk): r for r in rows_in([tenant])}
        assert {r.status for r in sent[tenant.pk].values()} == {SmsStatus.SENT}
        assert {r.provider_id for r in sent[tenant.pk].values()} <= {rec["provider_id"] for rec in gateway.log()}
    rows_a, rows_b = sent[tenant_a.pk], sent[tenant_b.pk]
    url_a, url_b = status_callback_url(tenant_a), status_callback_url(tenant_b)

    rng = random.Random(11)
    calls, final = [], {}
    for n, row in enumerate(rows_a.values()):
        word, code = ("delivered", "") if n % 2 else ("undelivered", "30003")
        final[str(row.pk)] = word
        story = [("queued", ""), ("sent", ""), ("sent", ""), (word, code), (word, code)]
        rng.shuffle(story)  # duplicated and out of order: "delivered" may come before "sent"
        calls += [("genuine", url_a, _callback(row.provider_id, w, c), None) for w, c in story]
        # Forged: a "failed" nobody signed with our token.
        calls.append(("forged", url_a, _callback(row.provider_id, "failed", "30008"), "forged"))
        # Replayed for clinic B: A's signed callback sent to B's URL (the signature covers ?t=) ...
        calls.append(("replayed", url_b, _callback(row.provider_id, "failed", "30008"), url_a))
        # ... and a validly signed callback for B's URL that names A's message: unknown there.
        calls.append(("foreign", url_b, _callback(row.provider_id, "failed", "30008"), None))
    for row in rows_b.values():  # B's own SMS only ever hear "sent" (no change from "sent")
        calls.append(("genuine", url_b, _callback(row.provider_id, "sent"), None))
    rng.shuffle(calls)

    statuses: dict[str, list[int]] = {}
    lock = threading.Lock()

    def deliver(batch):
        from django.db import connection as thread_connection

        client = Client(raise_request_exception=False)
        try:
            for label, url, params, sign_for in batch:
                if sign_for == "forged":
                    response = _signed_post(client, url, params, token="not-our-token")
                else:
                    response = _signed_post(client, url, params, sign_for=sign_for)
                with lock:
                    statuses.setdefault(label, []).append(response.status_code)
        finally:
            thread_connection.close()

    began = time.monotonic()
    threads = [threading.Thread(target=deliver, args=(calls[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    seconds = time.monotonic() - began

    assert set(statuses["genuine"]) == {200} and set(statuses["foreign"]) == {200}
    assert set(statuses["forged"]) == {403} and set(statuses["replayed"]) == {403}
    after_a = {str(r.pk): r for r in rows_in([tenant_a])}
    expected = {SmsStatus.DELIVERED if word == "delivered" else SmsStatus.UNDELIVERED for word in final.values()}
    wrong_final = [k for k, word in final.items()
                   if after_a[k].status != (SmsStatus.DELIVERED if word == "delivered" else SmsStatus.UNDELIVERED)]
    after_b = {str(r.pk): r for r in rows_in([tenant_b])}
    b_changed = [k for k, r in after_b.items() if (r.status, r.status_at) != (rows_b[k].status, rows_b[k].status_at)]
    assert expected == {SmsStatus.DELIVERED, SmsStatus.UNDELIVERED}
    assert wrong_final == []  # the final word won, whatever came after it
    assert b_changed == []  # nothing in B moved
    with tenant_scope(tenant_a):
        rejected_a = AuditEvent.objects.filter(event_type=AuditEventType.WEBHOOK_REJECTED).count()
        failed_a = sorted(AuditEvent.objects.filter(event_type=AuditEventType.SMS_FAILED)
                          .values_list("details__sms_id", flat=True))
    with tenant_scope(tenant_b):
        rejected_b = AuditEvent.objects.filter(event_type=AuditEventType.WEBHOOK_REJECTED).count()
        failed_b = AuditEvent.objects.filter(event_type=AuditEventType.SMS_FAILED).count()
    assert rejected_a == len(statuses["forged"]) and rejected_b == len(statuses["replayed"])
    assert failed_a == sorted(k for k, w in final.items() if w == "undelivered")  # once each, despite duplicates
    assert failed_b == 0

    tally = assert_invariants(tenants, gateway)
    figures(callbacks=len(calls), forged_refused=len(statuses["forged"]), replays_refused=len(statuses["replayed"]),
            foreign_ignored=len(statuses["foreign"]), wrong_final_state=len(wrong_final),
            other_tenant_changed=len(b_changed),
            lost=tally.lost, duplicated=tally.duplicated, seconds=seconds)
