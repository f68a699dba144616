"""Reads for broadcasts. No patient is named on any broadcast page: counts and reason codes
only, so these reads need no audit event. Call inside ``tenant_scope(tenant)``."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Count, QuerySet

from accounts.errors import NotFound
from accounts.selectors import _uuid_or_404
from broadcasts.models import Broadcast, BroadcastRecipient, RecipientStatus
from messaging.models import OutboundSms, SmsStatus
from messaging.services import REFUSALS
from patients.selectors import descriptor_choices

LIST_LIMIT = 100


def broadcast_list(*, tenant) -> QuerySet[Broadcast]:
    """The clinic's newest broadcasts (counters are on the row: no per-row queries)."""
    return Broadcast.objects.select_related("created_by").order_by("-created_at", "-id")[:LIST_LIMIT]


def broadcast_get(*, tenant, broadcast_id) -> Broadcast:
    """The clinic's broadcast; NotFound for unknown ids and other clinics' alike."""
    broadcast = Broadcast.objects.select_related("created_by", "cancelled_by").filter(
        pk=_uuid_or_404(broadcast_id)).first()
    if broadcast is None:
        raise NotFound()
    return broadcast


@dataclass(frozen=True)
class Progress:
    recipients: dict[str, int]  # RecipientStatus → count
    skipped_reasons: list[tuple[str, str, int]]  # (code, staff-readable text, count)
    sms: list[tuple[str, str, int]]  # (SmsStatus, label, count), every status shown
    done_percent: int = 0
    failed_reasons: list[tuple[str, int]] = field(default_factory=list)

    @property
    def open_sms(self) -> int:
        """Texts that have not left yet (queued or waiting): what a cancel still stops."""
        return sum(n for value, _, n in self.sms if value in (SmsStatus.QUEUED, SmsStatus.WAITING))


def _reason_text(code: str) -> str:
    if code == "cancelled":
        return "The broadcast was cancelled first."
    return REFUSALS.get(code, "Not sent: SMS to this patient is not allowed.")


def broadcast_progress(*, tenant, broadcast: Broadcast) -> Progress:
    """Counts by recipient status, why recipients were skipped, and where their SMS are."""
    recipients = BroadcastRecipient.objects.filter(broadcast=broadcast)
    by_status = {r["status"]: r["n"] for r in recipients.values("status").annotate(n=Count("id"))}
    skipped = recipients.filter(status=RecipientStatus.SKIPPED).values("reason").annotate(n=Count("id")).order_by(
        "-n", "reason")
    failed = recipients.filter(status=RecipientStatus.FAILED).values("reason").annotate(n=Count("id")).order_by("-n")
    message_ids = recipients.filter(message__isnull=False).values("message_id")
    sms_counts = {r["status"]: r["n"] for r in OutboundSms.objects.filter(message_id__in=message_ids).values(
        "status").annotate(n=Count("id"))}
    total = sum(by_status.values())
    handled = total - by_status.get(RecipientStatus.PENDING, 0)
    return Progress(
        recipients={s: by_status.get(s, 0) for s in RecipientStatus.values},
        skipped_reasons=[(r["reason"], _reason_text(r["reason"]), r["n"]) for r in skipped],
        sms=[(value, label, sms_counts.get(value, 0)) for value, label in SmsStatus.choices],
        done_percent=(handled * 100 // total) if total else 100,
        failed_reasons=[(r["reason"], r["n"]) for r in failed],
    )


def location_choices(*, tenant) -> list[str]:
    """The clinic's distinct appointment locations (encrypted: see ``descriptor_choices``)."""
    return descriptor_choices(name="location_name")


def appointment_type_choices(*, tenant) -> list[str]:
    return descriptor_choices(name="appointment_type")
