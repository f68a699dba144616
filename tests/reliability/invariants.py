"""What must hold after every reliability scenario, whatever went wrong on the way."""

from __future__ import annotations

from dataclasses import dataclass, field

from accounts.tenancy import tenant_scope
from audit.verification import verify
from integrations.sms.counting import CountingGateway
from messaging.models import OutboundSms, SmsStatus

SENT_STATES = frozenset({SmsStatus.SENT, SmsStatus.DELIVERED})
SETTLED_STATES = SENT_STATES | {SmsStatus.UNDELIVERED, SmsStatus.FAILED, SmsStatus.CANCELLED, SmsStatus.WAITING}


@dataclass
class OutboxTally:
    rows: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    lost: int = 0  # rows that ended sent without the provider ever accepting them, or stuck open
    duplicated: int = 0  # extra provider submissions beyond one per row
    unexpected: int = 0  # submissions for keys that are no outbox row, or for rows that never went


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
        if row.status in SENT_STATES:
            result.duplicated += max(0, count - 1)
        elif count:
            result.unexpected += count
    result.unexpected += sum(count for key, count in submissions.items() if key not in keys)
    return result


def assert_outbox_invariants(tenants, gateway: CountingGateway) -> OutboxTally:
    """Every SMS row is settled (none stuck "queued" or "sending"); the provider accepted each
    sent row exactly once and never a cancelled, failed or waiting one, nor anything that is not
    an outbox row; every tenant's audit chain verifies."""
    submissions = gateway.submissions()
    problems = []
    for row in outbox_rows(tenants):
        count = submissions.get(str(row.pk), 0)
        if row.status not in SETTLED_STATES:
            problems.append(f"SMS {row.pk} is stuck in {row.status!r} after {row.attempts} attempts")
        elif row.status in SENT_STATES and count != 1:
            problems.append(f"SMS {row.pk} is {row.status!r} but the provider accepted it {count} times")
        elif row.status not in SENT_STATES and count != 0:
            problems.append(f"SMS {row.pk} is {row.status!r} ({row.error_code}) but the provider accepted it "
                            f"{count} times")
    result = tally(tenants, gateway)
    if result.unexpected and not problems:
        problems.append(f"{result.unexpected} provider submissions match no outbox row")
    for report in verify(list(tenants), platform=False):
        if report.problem is not None:
            problems.append(f"audit chain {report.chain}: {report.problem}")
    assert not problems, "outbox invariants broken:\n" + "\n".join(problems[:30])
    return result
