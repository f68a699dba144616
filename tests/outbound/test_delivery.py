"""Delivery through the webhook outbox against a real HTTP server on 127.0.0.1: signatures,
retries, leases, bounded attempts, permanent failures, and never a second send after a 2xx."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from outbound import services
from outbound.models import DeliveryStatus, WebhookDelivery
from outbound.tasks import deliver, outbound_sweep
from tests.outbound.conftest import verify

RESOURCE = {"resourceType": "Communication", "id": "c1", "status": "completed",
            "payload": [{"contentString": "Can I come at 3pm instead?"}]}


def _endpoint(tenant, actor, url, events=("appointment.response", "message.received")):
    return services.endpoint_create(tenant=tenant, actor=actor, url=url, events=list(events))


def _emit(tenant, capture, kind="message.received"):
    with capture(execute=True):
        rows = services.event_emit(tenant=tenant, kind=kind, resource=RESOURCE)
    return rows


def _make_due():
    WebhookDelivery.objects.filter(status=DeliveryStatus.QUEUED).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1))


def _row(row) -> WebhookDelivery:
    return WebhookDelivery.objects.get(pk=row.pk)


def test_post_is_signed_fhir_json_with_a_stable_event_id(tenant_a, alice, in_a, receiver,
                                                         django_capture_on_commit_callbacks):
    _endpoint_row, secret = _endpoint(tenant_a, alice, receiver.url)
    [row] = _emit(tenant_a, django_capture_on_commit_callbacks)
    [got] = receiver.requests
    assert got.path == "/hooks/caretext"
    assert got.headers["Content-Type"] == "application/fhir+json"
    assert got.headers["X-Caretext-Event-Id"] == str(row.event_id)
    assert got.headers["X-Caretext-Event"] == "message.received"
    assert abs(int(got.headers["X-Caretext-Timestamp"]) - time.time()) < 60
    assert verify(secret, got)
    assert not verify("another-secret", got)
    assert not verify(secret, got, now=time.time() + 301)  # a replay five minutes later is refused
    tampered = type(got)(path=got.path, headers=got.headers, body=got.body.replace(b"3pm", b"4pm"))
    assert not verify(secret, tampered)
    assert json.loads(got.body) == RESOURCE
    done = _row(row)
    assert done.status == DeliveryStatus.DELIVERED and done.attempts == 1 and done.last_status_code == 200
    assert done.payload is None  # erased once final
    assert done.delivered_at is not None


def test_500_then_200_is_delivered_once_after_a_retry(tenant_a, alice, in_a, receiver,
                                                      django_capture_on_commit_callbacks):
    _endpoint(tenant_a, alice, receiver.url)
    receiver.script(500)
    [row] = _emit(tenant_a, django_capture_on_commit_callbacks)
    queued = _row(row)
    assert queued.status == DeliveryStatus.QUEUED and queued.error == "HTTP 500" and queued.attempts == 1
    assert queued.next_attempt_at > timezone.now() + timedelta(seconds=10)  # backing off
    assert services.sweep_tenant(tenant_a) == 0  # not due yet
    _make_due()
    assert services.sweep_tenant(tenant_a) == 1
    assert _row(row).status == DeliveryStatus.DELIVERED and _row(row).attempts == 2
    assert receiver.event_ids() == [str(row.event_id)] * 2
    # Delivered: no worker, sweep or duplicate task sends it again.
    assert deliver(tenant_id=tenant_a.pk, delivery_ids=[str(row.pk)]) == {"skipped": 1}
    _make_due()
    assert services.sweep_tenant(tenant_a) == 0
    assert outbound_sweep() == 0
    assert len(receiver.requests) == 2


@pytest.mark.parametrize("status", [408, 429, 502, 503])
def test_retryable_statuses_are_retried(tenant_a, alice, in_a, receiver, django_capture_on_commit_callbacks, status):
    _endpoint(tenant_a, alice, receiver.url)
    receiver.script(status)
    [row] = _emit(tenant_a, django_capture_on_commit_callbacks)
    assert _row(row).status == DeliveryStatus.QUEUED and _row(row).last_status_code == status


@pytest.mark.parametrize("status", [400, 401, 404, 410, 301])
def test_other_4xx_and_redirects_fail_at_once(tenant_a, alice, in_a, receiver, django_capture_on_commit_callbacks,
                                              status):
    _endpoint(tenant_a, alice, receiver.url)
    receiver.script(status)
    receiver.redirect_to = receiver.url  # a redirect is never followed, even to the same place
    [row] = _emit(tenant_a, django_capture_on_commit_callbacks)
    failed = _row(row)
    assert failed.status == DeliveryStatus.FAILED and failed.attempts == 1 and failed.last_status_code == status
    assert failed.error.startswith(f"HTTP {status}") and failed.payload is None
    _make_due()
    assert services.sweep_tenant(tenant_a) == 0
    assert len(receiver.requests) == 1


def test_attempts_are_bounded_then_failed(tenant_a, alice, in_a, receiver, django_capture_on_commit_callbacks):
    _endpoint(tenant_a, alice, receiver.url)
    receiver.script(*[503] * (services.MAX_ATTEMPTS + 5))
    [row] = _emit(tenant_a, django_capture_on_commit_callbacks)
    for _ in range(services.MAX_ATTEMPTS + 3):
        _make_due()
        services.sweep_tenant(tenant_a)
    failed = _row(row)
    assert failed.status == DeliveryStatus.FAILED
    assert failed.attempts == services.MAX_ATTEMPTS == len(receiver.requests) == 10
    assert "gave up after 10 attempts" in failed.error and failed.payload is None


def test_timeouts_and_refused_connections_are_retried(tenant_a, alice, in_a, receiver, monkeypatch,
                                                      django_capture_on_commit_callbacks):
    monkeypatch.setattr(services, "READ_TIMEOUT_SECONDS", 0.2)
    _endpoint(tenant_a, alice, receiver.url)
    receiver.delays.append(1.0)
    [row] = _emit(tenant_a, django_capture_on_commit_callbacks)
    assert _row(row).status == DeliveryStatus.QUEUED and _row(row).error == "Timed out"

    import socket

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    _endpoint(tenant_a, alice, f"http://127.0.0.1:{port}/hook")
    rows = _emit(tenant_a, django_capture_on_commit_callbacks)
    refused = [r for r in rows if r.endpoint.url.endswith("/hook")][0]
    assert _row(refused).status == DeliveryStatus.QUEUED and _row(refused).error == "Could not connect"


def test_a_worker_dying_after_the_post_is_resent_with_the_same_event_id(tenant_a, alice, in_a, receiver, monkeypatch,
                                                                         django_capture_on_commit_callbacks):
    _endpoint(tenant_a, alice, receiver.url)
    real_store = services._store
    calls = []

    def die_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise SystemError("worker killed after the HTTP call")
        return real_store(*args, **kwargs)

    monkeypatch.setattr(services, "_store", die_once)
    [row] = _emit(tenant_a, django_capture_on_commit_callbacks)
    stuck = _row(row)
    assert stuck.status == DeliveryStatus.SENDING and stuck.attempts == 1 and stuck.lease_until > timezone.now()
    assert len(receiver.requests) == 1
    assert services.sweep_tenant(tenant_a) == 0  # the lease still holds: nobody else sends it
    WebhookDelivery.objects.filter(pk=row.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert services.sweep_tenant(tenant_a) == 1
    done = _row(row)
    assert done.status == DeliveryStatus.DELIVERED and done.attempts == 2
    # At least once: the receiver saw the event twice, with the same id to dedupe on.
    assert receiver.event_ids() == [str(row.event_id)] * 2
    assert receiver.requests[0].body == receiver.requests[1].body


def test_a_stale_attempt_never_overwrites_a_newer_one(tenant_a, alice, in_a, receiver,
                                                      django_capture_on_commit_callbacks):
    _endpoint(tenant_a, alice, receiver.url)
    [row] = _emit(tenant_a, django_capture_on_commit_callbacks)
    # Attempt 1 was stored as delivered; a late writer for attempt 1 finds nothing to change.
    assert services._store(row.pk, 1, lambda r: services._finish(r, DeliveryStatus.FAILED) or "failed") == "stale"
    assert _row(row).status == DeliveryStatus.DELIVERED


def test_a_broker_failure_does_not_fail_the_caller_and_the_sweeper_delivers(tenant_a, alice, in_a, receiver,
                                                                            monkeypatch,
                                                                            django_capture_on_commit_callbacks):
    from kombu.exceptions import OperationalError

    _endpoint(tenant_a, alice, receiver.url)

    def down(*args, **kwargs):
        raise OperationalError("broker down")

    monkeypatch.setattr(deliver, "apply_async", down)
    [row] = _emit(tenant_a, django_capture_on_commit_callbacks)
    assert _row(row).status == DeliveryStatus.QUEUED and not receiver.requests
    monkeypatch.undo()
    assert outbound_sweep() == 1
    assert _row(row).status == DeliveryStatus.DELIVERED and len(receiver.requests) == 1


def test_each_endpoint_gets_its_own_delivery_and_signature(tenant_a, alice, in_a, receiver,
                                                           django_capture_on_commit_callbacks):
    _first, secret_1 = _endpoint(tenant_a, alice, receiver.url)
    _second, secret_2 = _endpoint(tenant_a, alice, receiver.url + "/two", events=["message.received"])
    _third, _ = _endpoint(tenant_a, alice, receiver.url + "/three", events=["appointment.response"])
    rows = _emit(tenant_a, django_capture_on_commit_callbacks)
    assert len(rows) == 2 and len({r.event_id for r in rows}) == 1
    by_path = {r.path: r for r in receiver.requests}
    assert set(by_path) == {"/hooks/caretext", "/hooks/caretext/two"}
    assert verify(secret_1, by_path["/hooks/caretext"]) and verify(secret_2, by_path["/hooks/caretext/two"])
    assert not verify(secret_1, by_path["/hooks/caretext/two"])


def test_deactivated_endpoint_gets_nothing_and_its_queue_is_cancelled(tenant_a, alice, in_a, receiver,
                                                                      django_capture_on_commit_callbacks):
    endpoint, _ = _endpoint(tenant_a, alice, receiver.url)
    receiver.script(503)
    [row] = _emit(tenant_a, django_capture_on_commit_callbacks)
    services.endpoint_deactivate(tenant=tenant_a, actor=alice, endpoint=endpoint)
    cancelled = _row(row)
    assert cancelled.status == DeliveryStatus.CANCELLED and cancelled.payload is None
    assert _emit(tenant_a, django_capture_on_commit_callbacks) == []
    _make_due()
    assert services.sweep_tenant(tenant_a) == 0
    assert len(receiver.requests) == 1


def test_nothing_about_the_payload_or_url_query_is_logged(tenant_a, alice, in_a, receiver, caplog,
                                                          django_capture_on_commit_callbacks):
    _endpoint(tenant_a, alice, receiver.url + "?token=s3cr3t-query")
    receiver.script(500)
    with caplog.at_level("DEBUG"):
        _emit(tenant_a, django_capture_on_commit_callbacks)
    assert "3pm" not in caplog.text and "s3cr3t-query" not in caplog.text
    assert "answered 500" in caplog.text  # the failure is logged, by id


# --- outcomes are audited; outside dev mode the POST goes only to a checked, public address -----


def test_a_final_outcome_is_an_audit_event_against_the_patient(tenant_a, alice, in_a, receiver,
                                                               django_capture_on_commit_callbacks):
    from audit.events import AuditEventType
    from audit.models import AuditEvent

    endpoint, _ = _endpoint(tenant_a, alice, receiver.url)
    patient_id = uuid.uuid4()
    with django_capture_on_commit_callbacks(execute=True):
        [ok] = services.event_emit(tenant=tenant_a, kind="message.received", resource=RESOURCE,
                                   patient_id=patient_id)
    event = AuditEvent.objects.get(event_type=AuditEventType.WEBHOOK_DELIVERED)
    assert (event.patient_id, event.object_id, event.actor_type) == (patient_id, str(endpoint.pk), "system")
    assert event.details == {"kind": "message.received", "attempts": 1, "status": "200"}
    receiver.script(404)
    with django_capture_on_commit_callbacks(execute=True):
        [bad] = services.event_emit(tenant=tenant_a, kind="message.received", resource=RESOURCE)
    assert _row(bad).status == DeliveryStatus.FAILED
    failed = AuditEvent.objects.get(event_type=AuditEventType.WEBHOOK_FAILED)
    assert failed.details["status"] == "404" and failed.object_id == str(endpoint.pk)


def _resolving_to(monkeypatch, *addresses):
    def fake(host, port, *args, **kwargs):
        return [(2, 1, 6, "", (address, port)) for address in addresses]

    monkeypatch.setattr(services.socket, "getaddrinfo", fake)


@pytest.mark.parametrize("addresses", [("10.0.0.5",), ("93.184.215.14", "127.0.0.1"), ("169.254.169.254",),
                                       ("::1",), ("fd00::1",)])
def test_a_host_name_that_resolves_inside_is_never_posted_to(tenant_a, alice, in_a, settings, monkeypatch,
                                                            django_capture_on_commit_callbacks, addresses):
    endpoint, _ = _endpoint(tenant_a, alice, "https://ehr.example.com/in")
    settings.TESTING = settings.DEBUG = False
    _resolving_to(monkeypatch, *addresses)
    monkeypatch.setattr(services.urllib3, "HTTPSConnectionPool", lambda *a, **k: pytest.fail("connected"))
    with django_capture_on_commit_callbacks(execute=True):
        [row] = services.event_emit(tenant=tenant_a, kind="message.received", resource=RESOURCE)
    done = _row(row)
    assert done.status == DeliveryStatus.FAILED and "private address" in done.error
    assert done.payload is None


def test_a_public_host_is_posted_to_the_checked_address_with_tls_for_its_name(
        tenant_a, alice, in_a, settings, monkeypatch, django_capture_on_commit_callbacks):
    _endpoint(tenant_a, alice, "https://ehr.example.com:8443/in?clinic=1")
    settings.TESTING = settings.DEBUG = False
    _resolving_to(monkeypatch, "93.184.215.14")
    seen = {}

    class Pool:
        def __init__(self, host, port, **kwargs):
            seen.update(host=host, port=port, **kwargs)

        def urlopen(self, method, path, **kwargs):
            seen.update(method=method, path=path, headers=kwargs["headers"], redirect=kwargs["redirect"])
            seen["preload_content"] = kwargs["preload_content"]
            return type("R", (), {"status": 202, "release_conn": lambda self: seen.update(released=True)})()

        def close(self):
            seen["closed"] = True

    monkeypatch.setattr(services.urllib3, "HTTPSConnectionPool", Pool)
    with django_capture_on_commit_callbacks(execute=True):
        [row] = services.event_emit(tenant=tenant_a, kind="message.received", resource=RESOURCE)
    assert _row(row).status == DeliveryStatus.DELIVERED
    assert (seen["host"], seen["port"], seen["server_hostname"], seen["assert_hostname"]) == \
        ("93.184.215.14", 8443, "ehr.example.com", "ehr.example.com")
    assert seen["cert_reqs"] == "CERT_REQUIRED" and seen["redirect"] is False and seen["closed"]
    assert seen["preload_content"] is False and seen["released"]  # a huge answer is never read into memory
    assert (seen["method"], seen["path"], seen["headers"]["Host"]) == ("POST", "/in?clinic=1", "ehr.example.com:8443")


def test_a_name_that_does_not_resolve_is_retried(tenant_a, alice, in_a, settings, monkeypatch,
                                                 django_capture_on_commit_callbacks):
    import socket

    _endpoint(tenant_a, alice, "https://ehr.example.com/in")
    settings.TESTING = settings.DEBUG = False

    def no_dns(*args, **kwargs):
        raise socket.gaierror("no")

    monkeypatch.setattr(services.socket, "getaddrinfo", no_dns)
    with django_capture_on_commit_callbacks(execute=True):
        [row] = services.event_emit(tenant=tenant_a, kind="message.received", resource=RESOURCE)
    queued = _row(row)
    assert queued.status == DeliveryStatus.QUEUED and queued.error == "The host name does not resolve"
