"""What must hold after every reliability scenario, whatever went wrong on the way.

``assert_invariants(tenants, gateway, canaries=...)`` is the one checker every scenario ends
with. It asserts:

1. the outbox: every SMS row is settled (sent, delivered, undelivered, failed, cancelled or
   waiting: none stuck "queued" or "sending", none lost); the provider accepted exactly once
   each row it took (sent, delivered, or reported undelivered/failed under its id) and never a
   refused, cancelled or waiting one, nor anything that is no row;
   every thread with an outbound message has an SMS pointing into it;
2. every tenant's audit chain verifies (``audit.verification.verify``);
3. no row of one tenant was changed by another tenant's actor: every audit event and every
   django-auditlog entry with a user as actor belongs to a tenant that user is a member of;
4. no canary (a PHI string planted in the scenario's patients and messages) in any sink: the
   log records of this process, every log file the test's processes wrote (worker, beat,
   redis-server), every key and value of the test's Redis servers (the broker with its
   base64 task bodies decoded, and the gateway's store of submissions), the gateway's
   submission records, and the audit trail's clear-text columns (django-auditlog changes and
   serialized data, audit event details). Patients' phone numbers are canaries too, except in
   the gateway's store: the provider has to know where to send.

The sinks are registered by the fixtures that create them (tests/reliability/conftest.py), so
a scenario needs to pass only what it planted itself beyond the patients (``drive`` registers
the canary names of every patient it creates).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from django.db import connection

from accounts.models import Membership
from accounts.tenancy import tenant_scope
from audit.models import AuditEvent
from audit.verification import verify
from integrations.sms.counting import CountingGateway
from integrations.sms.notification import KINDS as NOTIFICATION_KINDS
from messaging.models import Direction, Message, OutboundSms, SmsStatus

SENT_STATES = frozenset({SmsStatus.SENT, SmsStatus.DELIVERED})
SETTLED_STATES = SENT_STATES | {SmsStatus.UNDELIVERED, SmsStatus.FAILED, SmsStatus.CANCELLED, SmsStatus.WAITING}


# --- the sinks a scenario's PHI could leak into ------------------------------------------------------


class RecordingHandler(logging.Handler):
    """Keeps every formatted log record (with its traceback) of this process."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # noqa: BLE001 - a record that cannot format is still kept raw
            self.lines.append(repr(record.__dict__))


@dataclass
class Sinks:
    log: RecordingHandler | None = None
    log_dirs: list[Path] = field(default_factory=list)
    redis: dict[str, object] = field(default_factory=dict)  # name -> RedisServer
    canaries: set[str] = field(default_factory=set)
    phones: set[str] = field(default_factory=set)


SINKS = Sinks()


def reset_sinks(handler: RecordingHandler | None) -> Sinks:
    """Start a scenario's sinks afresh (the one ``SINKS`` object, emptied in place)."""
    fresh = Sinks(log=handler)
    for name in fresh.__dataclass_fields__:
        setattr(SINKS, name, getattr(fresh, name))
    return SINKS


def plant(*values: str, phone: bool = False) -> None:
    """Register strings that must never leave the database (``phone``: except to the provider)."""
    target = SINKS.phones if phone else SINKS.canaries
    target.update(v for v in values if v)


_BASE64_RE = re.compile(rb"[A-Za-z0-9+/]{16,}={0,2}")


def _expanded(blob: bytes) -> list[bytes]:
    """The value and every base64 run inside it decoded (kombu keeps task bodies base64)."""
    out = [blob]
    for match in _BASE64_RE.finditer(blob):
        token = match.group(0)
        try:
            out.append(base64.b64decode(token + b"=" * (-len(token) % 4)))
        except (binascii.Error, ValueError):
            continue
    return out


def _redis_values(server) -> list[tuple[str, bytes]]:
    """(key, value) for every key of every database of a test redis-server: SCAN plus a read by type."""
    import redis

    from tests.phi.canary_support import redis_entries

    found = []
    info = redis.Redis(port=server.port).info("keyspace")
    for db_name in info:
        found += redis_entries(redis.Redis(port=server.port, db=int(db_name.removeprefix("db"))))
    return found


def _leaks(name: str, blob: bytes, needles: set[str]) -> list[str]:
    hits = []
    for text in _expanded(blob):
        lowered = text.lower()
        hits += [f"{name} contains a canary ({needle[:4]}…)" for needle in needles
                 if needle.lower().encode() in lowered]
    return hits


_AUDIT_TEXT_SQL = {
    "django-auditlog rows": "SELECT concat_ws(' ', object_repr, changes::text, changes_text, additional_data::text, "
                            "serialized_data::text) FROM auditlog_logentry WHERE tenant_id = %s",
    "audit events": "SELECT concat_ws(' ', details::text, actor_label, object_id, user_agent) "
                    "FROM audit_auditevent WHERE tenant_id = %s",
}


def audit_trail_leaks(tenants, extra: tuple[str, ...] = ()) -> list[str]:
    """Canaries in the audit trail's own columns (field history and event details are stored in
    clear: only ids and statuses may be there)."""
    needles = SINKS.canaries | SINKS.phones | set(extra)
    if not needles:
        return []
    problems = []
    for tenant in tenants:
        with tenant_scope(tenant), connection.cursor() as cursor:
            for name, sql in _AUDIT_TEXT_SQL.items():
                cursor.execute(sql, [tenant.pk])
                blob = "\n".join(row[0] or "" for row in cursor.fetchall()).encode()
                problems += _leaks(f"{name} of tenant {tenant.pk}", blob, needles)
    return sorted(set(problems))


def canary_leaks(extra: tuple[str, ...] = ()) -> list[str]:
    """Where a planted canary (or a patient's phone, outside the gateway's store) was found."""
    canaries = SINKS.canaries | set(extra)
    everywhere = canaries | SINKS.phones
    if not everywhere:
        return []
    problems = []
    if SINKS.log is not None:
        problems += _leaks("a log record of the test process", "\n".join(SINKS.log.lines).encode(), everywhere)
    for directory in SINKS.log_dirs:
        for path in sorted(directory.glob("*.log")):
            problems += _leaks(f"log file {path.name}", path.read_bytes(), everywhere)
    for server_name, server in SINKS.redis.items():
        if getattr(server, "proc", None) is None:
            continue  # stopped at the end of the scenario: nothing left in it
        needles = canaries if server_name == "gateway" else everywhere
        for key, blob in _redis_values(server):
            problems += _leaks(f"redis {server_name} key {key[:60]}", blob, needles)
    return sorted(set(problems))


# --- the outbox -------------------------------------------------------------------------------------


@dataclass
class OutboxTally:
    rows: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    lost: int = 0  # rows that ended sent without the provider ever accepting them, or stuck open
    duplicated: int = 0  # extra provider submissions beyond one per row
    unexpected: int = 0  # submissions for keys that are no outbox row, or for rows that never went


def _accepted(row: OutboundSms) -> bool:
    """The provider took this SMS: it is sent or delivered, or the carrier reported on it later
    (undelivered, failed) under the provider's id. Refused and cancelled rows have no id."""
    return row.status in SENT_STATES or (row.status in (SmsStatus.UNDELIVERED, SmsStatus.FAILED)
                                         and bool(row.provider_id))


def outbox_rows(tenants) -> list[OutboundSms]:
    rows = []
    for tenant in tenants:
        with tenant_scope(tenant):
            rows.extend(OutboundSms.objects.order_by("created_at"))
    return rows


def tally(tenants, gateway: CountingGateway) -> OutboxTally:
    submissions = gateway.submissions()
    result = OutboxTally()
    keys = set()
    for row in outbox_rows(tenants):
        key = str(row.pk)
        keys.add(key)
        count = submissions.get(key, 0)
        result.rows += 1
        result.by_status[row.status] = result.by_status.get(row.status, 0) + 1
        if row.status in (SmsStatus.QUEUED, SmsStatus.SENDING) or (row.status in SENT_STATES and count == 0):
            result.lost += 1
        if _accepted(row):
            result.duplicated += max(0, count - 1)
        elif count:
            result.unexpected += count
    result.unexpected += sum(count for key, count in submissions.items() if key not in keys)
    return result


def _outbox_problems(tenants, gateway: CountingGateway) -> list[str]:
    submissions = gateway.submissions()
    problems = []
    for row in outbox_rows(tenants):
        count = submissions.get(str(row.pk), 0)
        if row.status not in SETTLED_STATES:
            problems.append(f"SMS {row.pk} is stuck in {row.status!r} after {row.attempts} attempts")
        elif _accepted(row) and count != 1:
            problems.append(f"SMS {row.pk} is {row.status!r} but the provider accepted it {count} times")
        elif not _accepted(row) and count != 0:
            problems.append(f"SMS {row.pk} is {row.status!r} ({row.error_code}) but the provider accepted it "
                            f"{count} times")
    for tenant in tenants:
        with tenant_scope(tenant):
            # Notices coalesce (one unsent SMS per thread carries the newest link), so "not lost"
            # is per thread: every thread staff wrote in has an SMS that points into it.
            written = set(Message.objects.filter(direction=Direction.OUTBOUND).values_list("thread_id", flat=True))
            notified = set(OutboundSms.objects.filter(link__isnull=False).values_list("link__thread_id", flat=True))
        if written - notified:
            problems.append(f"{len(written - notified)} threads of tenant {tenant.pk} got a message but no SMS "
                            f"(lost before the outbox)")
    result = tally(tenants, gateway)
    if result.unexpected and not problems:
        problems.append(f"{result.unexpected} provider submissions match no outbox row")
    odd_kinds = {record["kind"] for record in gateway.log()} - set(NOTIFICATION_KINDS)
    if odd_kinds:
        problems.append(f"the provider got SMS of kinds {sorted(odd_kinds)}, not sealed notices")
    return problems


# --- audit: chains and who changed what -------------------------------------------------------------


def _audit_problems(tenants) -> list[str]:
    problems = [f"audit chain {report.chain}: {report.problem}"
                for report in verify(list(tenants), platform=False) if report.problem is not None]
    for tenant in tenants:
        with tenant_scope(tenant):
            members = set(Membership.objects.values_list("user_id", flat=True))
            actors = set(AuditEvent.objects.filter(actor_user__isnull=False).values_list("actor_user_id", flat=True))
            # django-auditlog rows carry the tenant of the scope they were written in (audit.dbsql).
            with connection.cursor() as cursor:
                cursor.execute("SELECT DISTINCT actor_id FROM auditlog_logentry "
                               "WHERE tenant_id = %s AND actor_id IS NOT NULL", [tenant.pk])
                field_actors = {row[0] for row in cursor.fetchall()}
        for user_id in sorted(actors - members):
            problems.append(f"audit events of tenant {tenant.pk} name user {user_id}, not a member of it")
        for user_id in sorted(field_actors - members):
            problems.append(f"auditlog rows of tenant {tenant.pk} were changed by user {user_id}, not a member of it")
    return problems


# --- the checker -----------------------------------------------------------------------------------


def assert_invariants(tenants, gateway: CountingGateway, *, canaries: tuple[str, ...] = ()) -> OutboxTally:
    """The one end-of-scenario check (see the module docstring); returns the outbox tally for figures."""
    tenants = list(tenants)
    problems = (_outbox_problems(tenants, gateway) + _audit_problems(tenants) + canary_leaks(tuple(canaries))
                + audit_trail_leaks(tenants, tuple(canaries)))
    assert not problems, "invariants broken:\n" + "\n".join(problems[:30])
    return tally(tenants, gateway)


def assert_outbox_invariants(tenants, gateway: CountingGateway) -> OutboxTally:
    """Kept for callers that predate ``assert_invariants``: the same full check."""
    return assert_invariants(tenants, gateway)
