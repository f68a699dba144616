"""Signed webhooks to the clinic's systems, through an outbox (the design of messaging/outbox.py).

``event_emit`` writes one ``WebhookDelivery`` per active endpoint subscribed to the event, in the
caller's transaction (with the patient's answer or message and its audit event), and after
commit hands the ids to a worker. The row decides, the broker only wakes workers:

1. ``delivery_attempt`` claims a due row with ``SELECT … FOR UPDATE SKIP LOCKED`` and records the
   attempt (status "sending", a lease, attempts + 1) in a committed transaction BEFORE the POST.
2. The POST happens outside any transaction (short timeouts, no redirects).
3. The result is stored only if the row is still the one this attempt claimed (status
   "sending" and the same attempt number): a slow, older attempt never overwrites a newer one.

A worker killed between 1 and 3 leaves the row "sending"; when its lease runs out the sweeper
hands it out again and the event is POSTed again with the SAME ``X-Caretext-Event-Id``. So
delivery is at-least-once and receivers dedupe on the event id; we never send an event again
once a receiver answered 2xx. Retries live in the row (backoff with jitter, bounded attempts).

Signature: ``X-Caretext-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>`` with
``X-Caretext-Timestamp`` in unix seconds (fresh on every attempt); receivers reject timestamps
older than five minutes. Logs carry ids, status codes and error kinds: never a body or a URL.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import random
import secrets
import socket
import time
import uuid
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import certifi
import requests
import urllib3
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.errors import ApplicationError
from audit.events import AuditEventType
from audit.services import audit_record
from outbound import payloads
from outbound.models import DeliveryStatus, EventKind, WebhookDelivery, WebhookEndpoint

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 10
BACKOFF_BASE_SECONDS = 15
BACKOFF_MAX_SECONDS = 60 * 60
LEASE_SECONDS = 60  # longer than the whole HTTP call can take (CONNECT + READ timeouts)
CONNECT_TIMEOUT_SECONDS = 3
READ_TIMEOUT_SECONDS = 10
BATCH_SIZE = 100
URL_MAX = 500
MAX_ENDPOINTS = 10
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
USER_AGENT = "Caretext-Webhooks/1"


# --- endpoints ------------------------------------------------------------------------------------------


def _dev_mode() -> bool:
    return bool(settings.DEBUG or getattr(settings, "DEMO", False) or getattr(settings, "TESTING", False))


def url_problem(url: str) -> str:
    """Why ``url`` may not receive webhooks ("" if it may). Checked on creation and on every send."""
    if not url:
        return "Enter the endpoint's URL."
    if len(url) > URL_MAX:
        return f"Use at most {URL_MAX} characters."
    if any(c.isspace() or ord(c) < 32 for c in url):
        return "A URL cannot contain spaces or control characters."
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "This is not a valid URL."
    if parts.scheme not in ("https", "http") or not host:
        return "Enter a full https:// URL."
    if parts.username or parts.password:
        return "Do not put credentials in the URL; verify our signature instead."
    if parts.fragment:
        return "A URL for webhooks cannot have a #fragment."
    if parts.scheme == "http":
        if host in LOOPBACK_HOSTS and _dev_mode():
            return ""
        return "Use https:// — patient data is only sent over HTTPS."
    if not _dev_mode():
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is not None and not address.is_global:
            return "Use a public address; private and loopback addresses cannot receive webhooks."
    return ""


def _clean_events(events) -> list[str]:
    allowed = set(EventKind.values)
    chosen = [e for e in EventKind.values if e in set(events or [])]
    if not chosen or any(e not in allowed for e in events or []):
        raise ApplicationError("Choose the events to send.", fields={"events": ["Choose at least one known event."]})
    return chosen


@transaction.atomic
def endpoint_create(*, tenant, actor, url: str, events: list[str]) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint; returns (endpoint, secret). The secret is shown to the owner once."""
    url = (url or "").strip()
    problem = url_problem(url)
    if problem:
        raise ApplicationError("This URL cannot receive webhooks.", fields={"url": [problem]})
    chosen = _clean_events(events)
    if WebhookEndpoint.objects.filter(is_active=True).count() >= MAX_ENDPOINTS:
        raise ApplicationError(f"A clinic can have at most {MAX_ENDPOINTS} active endpoints.",
                               fields={"url": ["Deactivate an endpoint first."]}, code="conflict")
    secret = secrets.token_urlsafe(32)
    endpoint = WebhookEndpoint(tenant=tenant, url=url, secret=secret, events=chosen, created_by=actor)
    endpoint.full_clean(exclude=["secret", "created_by"])
    endpoint.save(force_insert=True)
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.TENANT_SETTINGS_CHANGED, target=endpoint,
                 details={"fields": ["webhooks"], "action": "create"})
    return endpoint, secret


@transaction.atomic
def endpoint_deactivate(*, tenant, actor, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    """Stop sending to an endpoint; its queued deliveries are cancelled (and their payloads erased)."""
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    if not endpoint.is_active:
        return endpoint
    endpoint.is_active = False
    endpoint.deactivated_at = timezone.now()
    endpoint.save(update_fields=["is_active", "deactivated_at", "updated_at"])
    cancelled = WebhookDelivery.objects.filter(endpoint=endpoint, status=DeliveryStatus.QUEUED).update(
        status=DeliveryStatus.CANCELLED, payload=None, error="The endpoint was deactivated.", updated_at=timezone.now())
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.TENANT_SETTINGS_CHANGED, target=endpoint,
                 details={"fields": ["webhooks"], "action": "deactivate", "count": cancelled})
    return endpoint


# --- events ---------------------------------------------------------------------------------------------


def event_emit(*, tenant, kind: str, resource: dict, patient_id=None) -> list[WebhookDelivery]:
    """Queue ``resource`` (a FHIR resource) for every active endpoint subscribed to ``kind``, in the
    caller's transaction; a rollback takes the deliveries with it. One event id for all of them."""
    if kind not in EventKind.values:
        raise ValueError(f"unknown webhook event kind {kind!r}")
    endpoints = [e for e in WebhookEndpoint.objects.filter(is_active=True).order_by("created_at")
                 if kind in (e.events or [])]
    if not endpoints:
        return []
    body = json.dumps(resource, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    event_id, now = uuid.uuid4(), timezone.now()
    rows = []
    for endpoint in endpoints:
        row = WebhookDelivery(tenant=tenant, endpoint=endpoint, event_id=event_id, kind=kind, payload=body,
                              patient_id=patient_id, next_attempt_at=now)
        row.save(force_insert=True)
        rows.append(row)
    enqueue_on_commit(tenant.pk, [r.pk for r in rows])
    return rows


def appointment_response_emit(*, tenant, appointment, action: str, note: str = "") -> list[WebhookDelivery]:
    """The hook for ``messaging.services.patient_appointment_action``."""
    resource = payloads.appointment_response(appointment=appointment, action=action, note=note,
                                             resource_id=str(uuid.uuid4()))
    return event_emit(tenant=tenant, kind=EventKind.APPOINTMENT_RESPONSE, resource=resource,
                      patient_id=appointment.patient_id)


def message_received_emit(*, tenant, message, patient, subscribed: bool | None = None) -> list[WebhookDelivery]:
    """The hook for a patient's message (secure page reply or SMS). ``subscribed``: False when
    the caller has just asked (``selectors.SUBSCRIBED_EXISTS_SQL``, in its own transaction) and
    no endpoint takes the event: then neither the payload nor the endpoint query is made."""
    if subscribed is False:
        return []
    return event_emit(tenant=tenant, kind=EventKind.MESSAGE_RECEIVED,
                      resource=payloads.communication(message=message, patient=patient), patient_id=patient.pk)


def enqueue_on_commit(tenant_id: int, ids: list) -> None:
    """After commit, ask a worker to deliver these rows. A broker that is down must not fail the
    caller that already committed: the rows are there and the sweeper hands them out."""
    id_strings = [str(i) for i in ids]

    def publish():
        from outbound.tasks import deliver

        try:
            deliver.apply_async(kwargs={"tenant_id": tenant_id, "delivery_ids": id_strings}, retry=False,
                                ignore_result=True)
        except Exception as exc:  # noqa: BLE001 - any broker failure: the sweeper will deliver them
            log.warning("webhooks: could not enqueue %d deliveries for tenant %s (%s); the sweeper will",
                        len(id_strings), tenant_id, type(exc).__name__)

    transaction.on_commit(publish)


# --- delivering -------------------------------------------------------------------------------------------


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>``."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def backoff(attempts: int) -> timedelta:
    """Exponential from 15 s, capped at an hour, with ±20 % jitter so retries do not stampede."""
    seconds = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1))
    return timedelta(seconds=seconds * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not a secret


_FINAL_EVENTS = {DeliveryStatus.DELIVERED: AuditEventType.WEBHOOK_DELIVERED,
                 DeliveryStatus.FAILED: AuditEventType.WEBHOOK_FAILED}


def _finish(row: WebhookDelivery, status: str, *, error: str = "", code: int | None = None) -> None:
    row.status, row.lease_until, row.payload = status, None, None
    row.error = error[:200]
    if code is not None:
        row.last_status_code = code
    if status == DeliveryStatus.DELIVERED:
        row.delivered_at = timezone.now()
    row.save(update_fields=["status", "lease_until", "payload", "error", "last_status_code", "delivered_at",
                            "updated_at"])
    if status in _FINAL_EVENTS:  # in the row's transaction: the outcome and its audit event stand or fall together
        details = {"kind": row.kind, "attempts": row.attempts}
        if row.last_status_code is not None:
            details["status"] = str(row.last_status_code)
        audit_record(tenant=row.tenant, actor=None, event_type=_FINAL_EVENTS[status], target=row.endpoint,
                     patient_id=row.patient_id, details=details)


def _retry_or_fail(row: WebhookDelivery, *, error: str, code: int | None = None) -> str:
    if row.attempts >= MAX_ATTEMPTS:
        _finish(row, DeliveryStatus.FAILED, error=f"{error}; gave up after {row.attempts} attempts", code=code)
        return "failed"
    row.status, row.lease_until, row.error = DeliveryStatus.QUEUED, None, error[:200]
    row.last_status_code = code
    row.next_attempt_at = timezone.now() + backoff(row.attempts)
    row.save(update_fields=["status", "lease_until", "error", "last_status_code", "next_attempt_at", "updated_at"])
    return "retry"


def _claim(delivery_id) -> WebhookDelivery | None:
    """Lock a due row and record the attempt (committed before the POST); None if not ours now."""
    now = timezone.now()
    row = WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",)).select_related("endpoint").filter(
        pk=delivery_id, status__in=[DeliveryStatus.QUEUED, DeliveryStatus.SENDING]).first()
    if row is None:
        return None
    if row.status == DeliveryStatus.SENDING and row.lease_until and row.lease_until > now:
        return None  # another worker holds it
    if row.status == DeliveryStatus.QUEUED and row.next_attempt_at > now:
        return None  # backing off
    if not row.endpoint.is_active:
        _finish(row, DeliveryStatus.CANCELLED, error="The endpoint was deactivated.")
        return None
    if row.attempts >= MAX_ATTEMPTS:  # its last attempt's worker died
        _finish(row, DeliveryStatus.FAILED, error=f"No answer recorded; gave up after {row.attempts} attempts")
        return None
    problem = url_problem(row.endpoint.url)
    if problem or not row.payload:
        _finish(row, DeliveryStatus.FAILED, error="The endpoint URL is not allowed." if problem else "No payload.")
        return None
    row.status = DeliveryStatus.SENDING
    row.attempts += 1
    row.last_attempt_at = now
    row.lease_until = now + timedelta(seconds=LEASE_SECONDS)
    row.save(update_fields=["status", "attempts", "last_attempt_at", "lease_until", "updated_at"])
    return row


def _store(delivery_id, attempt: int, apply) -> str:
    """Run ``apply(row)`` if the row is still claimed by attempt ``attempt``."""
    with transaction.atomic():
        row = WebhookDelivery.objects.select_for_update(of=("self",)).filter(
            pk=delivery_id, status=DeliveryStatus.SENDING, attempts=attempt).first()
        if row is None:
            return "stale"
        return apply(row)


class UnsafeAddress(Exception):
    """The endpoint's host name resolves to a private, loopback or otherwise non-public address."""


class ResolveFailed(Exception):
    """The endpoint's host name does not resolve (now)."""


def public_address(host: str, port: int) -> str:
    """One address of ``host`` to connect to, after checking that EVERY address it resolves to is
    public: a clinic's endpoint must not be a way to make our workers reach the private network
    (SSRF), whether by an IP literal or by a name whose DNS points inside."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise ResolveFailed() from None
    addresses = [info[4][0] for info in infos]
    if not addresses:
        raise ResolveFailed()
    for address in addresses:
        if not ipaddress.ip_address(address.split("%", 1)[0]).is_global:
            raise UnsafeAddress()
    return addresses[0]


def _post(url: str, *, body: bytes, headers: dict) -> int:
    """POST and return the HTTP status code. Outside the demo and tests the connection goes to the
    address ``public_address`` checked (pinned: a DNS answer that changes between the check and the
    connect cannot redirect it), with TLS verified for the endpoint's host name."""
    if _dev_mode():  # loopback receivers in the demo and the tests
        response = requests.post(url, data=body, headers=headers, allow_redirects=False,
                                 timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS))
        response.close()
        return response.status_code
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    address = public_address(host, port)
    pool = urllib3.HTTPSConnectionPool(
        address, port, server_hostname=host, assert_hostname=host, cert_reqs="CERT_REQUIRED",
        ca_certs=certifi.where(), retries=False,
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_SECONDS, read=READ_TIMEOUT_SECONDS))
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        response = pool.urlopen("POST", path, body=body, headers={**headers, "Host": parts.netloc},
                                redirect=False, retries=False, preload_content=False)  # the body is never read
        response.release_conn()
        return response.status
    finally:
        pool.close()


def delivery_attempt(*, tenant, delivery_id) -> str:
    """One attempt at one row: "delivered", "retry", "failed", "stale" or "skipped"."""
    with transaction.atomic():
        row = _claim(delivery_id)
    if row is None:
        return "skipped"
    attempt, endpoint = row.attempts, row.endpoint
    body = row.payload.encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/fhir+json",
        "User-Agent": USER_AGENT,
        "X-Caretext-Event": row.kind,
        "X-Caretext-Event-Id": str(row.event_id),
        "X-Caretext-Timestamp": str(timestamp),
        "X-Caretext-Signature": signature(endpoint.secret, timestamp, body),
    }
    try:
        code = _post(endpoint.url, body=body, headers=headers)
    except UnsafeAddress:
        log.warning("webhooks: endpoint %s resolves to a non-public address; not sent", endpoint.pk)
        return _store(row.pk, attempt, lambda r: _finish(
            r, DeliveryStatus.FAILED, error="The endpoint's host resolves to a private address.") or "failed")
    except ResolveFailed:
        log.info("webhooks: delivery %s: endpoint %s does not resolve", row.pk, endpoint.pk)
        return _store(row.pk, attempt, lambda r: _retry_or_fail(r, error="The host name does not resolve"))
    except (requests.Timeout, urllib3.exceptions.TimeoutError):
        log.info("webhooks: delivery %s to endpoint %s timed out", row.pk, endpoint.pk)
        return _store(row.pk, attempt, lambda r: _retry_or_fail(r, error="Timed out"))
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        log.info("webhooks: delivery %s to endpoint %s: %s", row.pk, endpoint.pk, type(exc).__name__)
        return _store(row.pk, attempt, lambda r: _retry_or_fail(r, error="Could not connect"))
    if 200 <= code < 300:
        return _store(row.pk, attempt, lambda r: _finish(r, DeliveryStatus.DELIVERED, code=code) or "delivered")
    log.info("webhooks: delivery %s to endpoint %s answered %s", row.pk, endpoint.pk, code)
    if code in (408, 429) or code >= 500:
        return _store(row.pk, attempt, lambda r: _retry_or_fail(r, error=f"HTTP {code}", code=code))
    error = f"HTTP {code} (redirects are not followed)" if 300 <= code < 400 else f"HTTP {code}"
    return _store(row.pk, attempt, lambda r: _finish(r, DeliveryStatus.FAILED, error=error, code=code) or "failed")


# --- the sweeper -------------------------------------------------------------------------------------------


def due_ids(*, now: datetime | None = None, limit: int = 5000) -> list:
    """This tenant's rows a worker should try now: due queued rows and rows whose lease ran out."""
    now = now or timezone.now()
    rows = WebhookDelivery.objects.filter(
        Q(status=DeliveryStatus.QUEUED, next_attempt_at__lte=now)
        | Q(status=DeliveryStatus.SENDING, lease_until__lt=now)
    ).order_by("next_attempt_at").values_list("pk", flat=True)[:limit]
    return list(rows)


def sweep_tenant(tenant, *, now: datetime | None = None) -> int:
    """Hand every due row of this tenant to the workers, in batches; returns how many."""
    from outbound.tasks import deliver

    ids = due_ids(now=now)
    for start in range(0, len(ids), BATCH_SIZE):
        batch = [str(i) for i in ids[start:start + BATCH_SIZE]]
        deliver.apply_async(kwargs={"tenant_id": tenant.pk, "delivery_ids": batch}, ignore_result=True)
    return len(ids)
