"""Reads for consent: the derived state, the send gate (``can_sms``) and the BAA.

Every function must be called inside ``tenant_scope(tenant)``; the scoped managers and RLS
keep other clinics' rows out, and ids of other clinics raise NotFound like unknown ids.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.db import connection, models, transaction
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet
from django.db.models.functions import Now

from accounts.errors import NotFound
from accounts.selectors import _uuid_or_404
from audit.events import AuditEventType
from audit.services import audit_record
from consent.models import BusinessAssociateAgreement, ConsentAction, ConsentChannel, ConsentEvent
from consent.policy import kind_rule
from patients.models import Patient


class ConsentStatus(models.TextChoices):
    GRANTED = "granted", "May be texted"
    REVOKED = "revoked", "Opted out"
    NONE = "none", "No consent for this number"


# Why the status is what it is (``ConsentSummary.reason`` and ``can_sms`` reason codes).
REASON_GRANTED = "granted"
REASON_REVOKED = "revoked"
REASON_NEVER_GRANTED = "never_granted"
REASON_NUMBER_CHANGED = "number_changed"  # consent exists only for an earlier number
REASON_NO_PHONE = "no_phone"
REASON_NO_BAA = "no_baa"
REASON_PATIENT_INACTIVE = "patient_inactive"
REASON_NUMBER_UNDELIVERABLE = "number_undeliverable"  # the carrier refused the number
REASON_EXEMPT = "exempt"  # a keyword reply or a requested one-time code: no consent needed


@dataclass(frozen=True)
class ConsentSummary:
    status: str  # ConsentStatus
    reason: str
    event: ConsentEvent | None  # the ledger row the status rests on, if any


def _newest_first(queryset: QuerySet[ConsentEvent]) -> QuerySet[ConsentEvent]:
    # occurred_at decides (an EHR import may be back-dated); created_at breaks ties between
    # rows of the same instant, which services append under the patient's row lock.
    return queryset.order_by("-occurred_at", "-created_at", "-id")


def consent_event_list(*, tenant, patient: Patient) -> QuerySet[ConsentEvent]:
    """The patient's whole ledger, newest first, with who captured each row."""
    return _newest_first(ConsentEvent.objects.filter(patient=patient).select_related("captured_by"))


def consent_summary(tenant, patient: Patient) -> ConsentSummary:
    """The SMS consent state for the patient's CURRENT number, derived from the ledger.

    Only rows for the current number count. The newest decides; a grant older than the
    patient's last phone change does not count either (the number may have been reassigned:
    consent must be captured again for it).
    """
    if not patient.phone_index:
        return ConsentSummary(ConsentStatus.NONE, REASON_NO_PHONE, None)
    rows = ConsentEvent.objects.filter(patient=patient, channel=ConsentChannel.SMS)
    latest = _newest_first(rows.filter(phone_index=patient.phone_index)).first()
    status, reason = _decide(patient, rows, None if latest is None else (latest.action, latest.occurred_at))
    return ConsentSummary(status, reason, latest)


def _decide(patient: Patient, rows: QuerySet[ConsentEvent] | None, latest) -> tuple[str, str]:
    """(status, reason) from the newest SMS row for the current number, ``latest`` = (action,
    occurred_at) or None; ``rows``: the patient's SMS rows, asked only when there is none."""
    if latest is None:
        earlier = rows.filter(action=ConsentAction.GRANT).exists()
        return ConsentStatus.NONE, REASON_NUMBER_CHANGED if earlier else REASON_NEVER_GRANTED
    action, occurred_at = latest
    if action == ConsentAction.REVOKE:
        return ConsentStatus.REVOKED, REASON_REVOKED
    if patient.phone_changed_at is not None and patient.phone_changed_at > occurred_at:
        return ConsentStatus.NONE, REASON_NUMBER_CHANGED
    return ConsentStatus.GRANTED, REASON_GRANTED


def consent_state(tenant, patient: Patient) -> str:
    """"granted", "revoked" or "none" for the patient's current number (``consent_summary``)."""
    return consent_summary(tenant, patient).status


# Clinics known to have signed a BAA, per database: (database name, tenant id). A signed BAA is
# never changed or removed (no service does it and the database refuses it, ``consent.dbsql``),
# so once one is committed the answer is "yes" for good and every send gate (the outbox claims
# each row, inbound SMS, bulk sends) can skip the query. A "no" is never remembered. A "yes" is
# remembered only from a row created before the current transaction began (``Now()`` is its start;
# the margin covers clock skew between the app and the database), so it cannot be this
# transaction's own uncommitted row, which a rollback could still take away.
_BAA_SIGNED: set[tuple[str, int]] = set()
BAA_SETTLED = datetime.timedelta(seconds=10)


def tenant_has_baa(tenant) -> bool:
    """Whether the clinic has signed a Business Associate Agreement (any version)."""
    key = (connection.settings_dict.get("NAME") or "", tenant.pk)
    if key in _BAA_SIGNED:
        return True
    settled = BusinessAssociateAgreement.objects.annotate(settled=ExpressionWrapper(
        Q(created_at__lt=Now() - BAA_SETTLED), output_field=BooleanField())).order_by("-settled").values_list(
        "settled", flat=True).first()
    if settled is None:
        return False
    if settled:
        _BAA_SIGNED.add(key)
    return True


# ``can_sms``'s one read, for a written-out query that loads the patient anyway (PostgreSQL;
# messaging.inbound): the newest SMS ledger row for the patient's current number as a LATERAL
# join, its columns ``<alias>.action`` and ``<alias>.occurred_at`` passed on as ``latest``. The
# arguments are the caller's SQL column references (never values); names from _meta.
def latest_sms_consent_join(*, tenant_id: str, patient_id: str, phone_index: str, alias: str) -> str:
    return (f"LEFT JOIN LATERAL (SELECT c.action, c.occurred_at FROM {ConsentEvent._meta.db_table} c "  # noqa: S608  # nosec B608  # names from _meta
            f"WHERE c.tenant_id = {tenant_id} AND c.patient_id = {patient_id} "
            f"AND c.channel = '{ConsentChannel.SMS.value}' AND c.phone_index = {phone_index} "
            f"ORDER BY c.occurred_at DESC, c.created_at DESC, c.id DESC LIMIT 1) {alias} ON true")


_ASK = object()


def can_sms(tenant, patient: Patient, *, kind: str, latest=_ASK) -> tuple[bool, str]:
    """(allowed, reason) for one SMS of ``kind`` (``consent.policy.SmsKind``) to ``patient`` now.

    ``latest``: (action, occurred_at) of the newest SMS row for the patient's current number, or
    None for none, when the caller has just read it with the patient (``latest_sms_consent_join``);
    by default it is read here.

    The outbox calls this when it claims each row, so a revoke committed before then always
    wins. Reasons: "no_baa" (the clinic has not signed its BAA: nothing may be sent),
    "exempt" (keyword reply or requested code: allowed without consent), "patient_inactive",
    "number_undeliverable", "no_phone", "never_granted", "number_changed", "revoked", or "granted". Quiet hours and
    the frequency cap are timing (``consent.policy``), not permission, and are not checked here.
    """
    rule = kind_rule(kind)
    if not tenant_has_baa(tenant):
        return False, REASON_NO_BAA
    if not rule.needs_consent:
        return True, REASON_EXEMPT
    if not patient.is_active:
        return False, REASON_PATIENT_INACTIVE
    if patient.phone_undeliverable_at is not None:
        return False, REASON_NUMBER_UNDELIVERABLE
    # ``consent_summary``'s rule, reading only the two columns that decide (every SMS asks this).
    if not patient.phone_index:
        return False, REASON_NO_PHONE
    rows = None  # the patient's SMS rows: asked only when there is none for the number (``_decide``)
    if latest is _ASK or latest is None:
        rows = ConsentEvent.objects.filter(patient=patient, channel=ConsentChannel.SMS)
        if latest is _ASK:
            latest = _newest_first(rows.filter(phone_index=patient.phone_index)).values_list(
                "action", "occurred_at").first()
    status, reason = _decide(patient, rows, latest)
    return status == ConsentStatus.GRANTED, reason


def consent_patient_get(*, tenant, patient_id) -> Patient:
    """The clinic's patient by id; NotFound for unknown ids and other clinics' alike."""
    patient = Patient.objects.filter(pk=_uuid_or_404(patient_id)).first()
    if patient is None:
        raise NotFound()
    return patient


def consent_page_viewed(*, tenant, actor, patient: Patient) -> None:
    """Record that the consent page (name, number ending, ledger notes) was shown."""
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.PATIENT_VIEWED, target=patient,
                 patient_id=patient.pk, details={"path_name": "consent-patient"})


@transaction.atomic
def consent_patient_open(*, tenant, actor, patient_id) -> Patient:
    """``consent_patient_get`` for showing the consent page; records PATIENT_VIEWED."""
    patient = consent_patient_get(tenant=tenant, patient_id=patient_id)
    consent_page_viewed(tenant=tenant, actor=actor, patient=patient)
    return patient


def baa_list(*, tenant) -> QuerySet[BusinessAssociateAgreement]:
    return BusinessAssociateAgreement.objects.select_related("signed_by").order_by("-signed_at")


@dataclass(frozen=True)
class HistoryRow:
    """One ledger row as staff see it (page and CSV)."""

    event: ConsentEvent
    number: str  # "current" or "previous": which of the patient's numbers it was for
    captured_by: str  # the staff member's email, or how it arrived

    @property
    def evidence(self) -> str:
        return self.event.evidence or ""


_ARRIVED_BY = {"sms_keyword": "Patient (SMS keyword)", "ehr_import": "EHR import", "web_form": "Patient (web form)"}


def consent_history_rows(*, tenant, patient: Patient) -> list[HistoryRow]:
    """The ledger for display or export; the caller audits the PHI read (evidence notes)."""
    return [
        HistoryRow(event=event, number="current" if event.phone_index == patient.phone_index else "previous",
                   captured_by=event.captured_by.email if event.captured_by else _ARRIVED_BY.get(event.method, "System"))
        for event in consent_event_list(tenant=tenant, patient=patient)
    ]
