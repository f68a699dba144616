"""Writes for consent (R2): the ledger, SMS keywords, the BAA and the clinic's SMS settings.

Keyword-only, atomic, validated, audited in the same transaction. Every function must be
called inside ``tenant_scope(tenant)``. The ledger is append-only: there is no service that
changes or removes a ``ConsentEvent`` or a ``BusinessAssociateAgreement`` (the database
refuses it too, see ``consent.dbsql``). Ledger writes lock the patient's row, so two writers
(say, two STOPs arriving together) see each other's rows and act once.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timedelta

import phonenumbers
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.errors import ApplicationError, ConflictError, validation_fields
from accounts.models import Tenant, User
from accounts.services import tenant_setting_put
from audit.events import AuditEventType
from audit.services import audit_record
from consent.documents import (
    BAA_TEMPLATES,
    CURRENT_BAA_VERSION,
    KEYWORD_DISCLOSURE_VERSION,
    baa_document,
)
from consent.keywords import CONTACT_PHONE_REGION, Keyword, ReplyKind, classify_inbound
from consent.models import (
    METHODS_NEEDING_EVIDENCE,
    BusinessAssociateAgreement,
    ConsentAction,
    ConsentChannel,
    ConsentEvent,
    ConsentMethod,
)
from consent.policy import NoticeCap, notice_cap_validate
from consent.selectors import ConsentStatus, consent_state
from patients.models import Patient

NOT_RECORDED = "Consent was not recorded: please correct the highlighted fields."
EVIDENCE_MAX = 1000
NAME_MAX = 200
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
# Clocks of EHRs and browsers drift; a consent time later than this is a mistake.
FUTURE_TOLERANCE = timedelta(minutes=5)


def _has_control_chars(value: str) -> bool:
    return any(unicodedata.category(c) == "Cc" and c not in "\n\r\t" for c in value)


def _evidence_errors(evidence: str, method: str) -> list[str]:
    if method in METHODS_NEEDING_EVIDENCE and not evidence:
        return ["Add a note: who gave consent and how (for a paper form, where it is filed)."]
    if len(evidence) > EVIDENCE_MAX:
        return [f"Use at most {EVIDENCE_MAX} characters."]
    if _has_control_chars(evidence):
        return ["Remove the control characters."]
    return []


def _ledger_errors(*, channel, action, method, disclosure_version: str, evidence: str,
                   occurred_at: datetime | None) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if channel not in ConsentChannel.values:
        errors["channel"] = [f"Choose one of: {', '.join(ConsentChannel.values)}."]
    if action not in ConsentAction.values:
        errors["action"] = [f"Choose one of: {', '.join(ConsentAction.values)}."]
    if method not in ConsentMethod.values:
        errors["method"] = [f"Choose one of: {', '.join(ConsentMethod.values)}."]
    elif method == ConsentMethod.SMS_KEYWORD:
        errors["method"] = ["SMS keywords are recorded from the patient's own text, not by hand."]
    elif evidence_errors := _evidence_errors(evidence, method):
        errors["evidence"] = evidence_errors
    if action == ConsentAction.GRANT and not disclosure_version:
        errors["disclosure_version"] = ["Say which disclosure the patient was given."]
    elif disclosure_version and not _VERSION_RE.match(disclosure_version):
        errors["disclosure_version"] = ["Use up to 40 letters, digits, dots, dashes or underscores."]
    if occurred_at is not None and (occurred_at.tzinfo is None or occurred_at > timezone.now() + FUTURE_TOLERANCE):
        errors["occurred_at"] = ["Give a time with its time zone, not in the future."]
    return errors


def _lock_patient(patient: Patient) -> Patient:
    """The patient's row, locked until the transaction ends, with its current phone."""
    return Patient.objects.select_for_update().get(pk=patient.pk)


def _append(*, tenant, actor, patient: Patient, action: str, method: str, disclosure_version: str,
            evidence: str, occurred_at: datetime | None) -> ConsentEvent:
    event = ConsentEvent(tenant=tenant, patient=patient, channel=ConsentChannel.SMS, action=action, method=method,
                         disclosure_version=disclosure_version, phone_index=patient.phone_index,
                         captured_by=actor if isinstance(actor, User) else None, evidence=evidence or None,
                         occurred_at=occurred_at or timezone.now())
    try:
        event.full_clean(exclude=["tenant", "patient", "captured_by", "evidence"])
    except ValidationError as exc:
        raise ApplicationError(NOT_RECORDED, fields=validation_fields(exc)) from None
    event.save(force_insert=True)
    details = {"action": action, "method": method, "channel": event.channel}
    if disclosure_version:
        details["version"] = disclosure_version
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.CONSENT_CHANGED, target=event,
                 patient_id=patient.pk, details=details)
    if action == ConsentAction.REVOKE:
        consent_revoked_hook(tenant=tenant, patient=patient, event=event)
    return event


def consent_revoked_hook(*, tenant, patient: Patient, event: ConsentEvent) -> int:
    """Called inside every revoke's transaction, right after the ledger row is written: cancels
    the patient's queued and waiting SMS that need consent, in this same transaction, and
    returns how many. Cancelling here is the courtesy; the guarantee is that the outbox calls
    ``consent.selectors.can_sms`` when it claims each row for sending, so a revoke committed
    before that moment always stops the send.
    """
    from messaging.outbox import sms_cancel_for_patient

    return sms_cancel_for_patient(tenant=tenant, patient=patient, reason="revoked")


@transaction.atomic
def consent_record(*, tenant, actor, patient: Patient, action: str, method: str, disclosure_version: str = "",
                   evidence: str = "", occurred_at: datetime | None = None,
                   channel: str = ConsentChannel.SMS) -> ConsentEvent:
    """Append a grant or revoke for the patient's current number (staff, EHR import, web form).

    ``actor`` is the staff user (stored as ``captured_by``), an ApiKey or None for imports.
    Verbal and paper-form consent need an ``evidence`` note; grants need the
    ``disclosure_version`` the patient was given. ``occurred_at`` (default now) may be in the
    past, for consent captured earlier; never in the future. Raises ApplicationError with
    the bad fields; nothing is saved then.
    """
    evidence, disclosure_version = (evidence or "").strip(), (disclosure_version or "").strip()
    if action == ConsentAction.REVOKE:
        disclosure_version = ""  # a revoke needs no disclosure; don't let a form default suggest one
    errors = _ledger_errors(channel=channel, action=action, method=method, disclosure_version=disclosure_version,
                            evidence=evidence, occurred_at=occurred_at)
    if errors:
        raise ApplicationError(NOT_RECORDED, fields=errors)
    locked = _lock_patient(patient)
    if not locked.phone_index:
        raise ApplicationError("This patient has no mobile number to record consent for.",
                               fields={"patient": ["No mobile number on file."]})
    return _append(tenant=tenant, actor=actor, patient=locked, action=action, method=method,
                   disclosure_version=disclosure_version, evidence=evidence, occurred_at=occurred_at)


def consent_grant(*, tenant, actor, patient: Patient, method: str, disclosure_version: str, evidence: str = "",
                  occurred_at: datetime | None = None) -> ConsentEvent:
    """``consent_record`` with action "grant"."""
    return consent_record(tenant=tenant, actor=actor, patient=patient, action=ConsentAction.GRANT, method=method,
                          disclosure_version=disclosure_version, evidence=evidence, occurred_at=occurred_at)


def consent_revoke(*, tenant, actor, patient: Patient, method: str, evidence: str = "",
                   occurred_at: datetime | None = None) -> ConsentEvent:
    """``consent_record`` with action "revoke"; runs ``consent_revoked_hook`` in its transaction."""
    return consent_record(tenant=tenant, actor=actor, patient=patient, action=ConsentAction.REVOKE, method=method,
                          evidence=evidence, occurred_at=occurred_at)


@transaction.atomic
def consent_apply_keyword(*, tenant, patient: Patient, text, evidence: str, actor=None) -> str | None:
    """Act on an inbound SMS from ``patient``'s current number; returns the reply to send.

    STOP (or a plain-language request to stop) records a revoke, START a grant, both with
    method "sms_keyword"; ``evidence`` names the inbound message (e.g. "inbound SM…", never
    the body). Returns a ``ReplyKind`` or None:

    - an opt-out confirmation exactly once per opt-out: a STOP while already revoked records
      nothing and asks for no second reply (carriers allow one confirmation);
    - an opt-in confirmation when START changes the state (nothing while already granted);
    - the help text for HELP, whatever the state;
    - None when the message is not a keyword (it is an ordinary message for the care team).

    Reply text: ``consent.keywords.keyword_reply_text``. Keyword replies need no consent.
    """
    keyword = classify_inbound(text)
    if keyword is None:
        return None
    if keyword == Keyword.HELP:
        return ReplyKind.HELP
    evidence = (evidence or "").strip()
    if not evidence or len(evidence) > EVIDENCE_MAX or _has_control_chars(evidence):
        raise ApplicationError("Name the inbound message.", fields={"evidence": ["Give the inbound message id."]})
    locked = _lock_patient(patient)
    if not locked.phone_index:
        return None
    state = consent_state(tenant, locked)
    if keyword == Keyword.STOP:
        if state == ConsentStatus.REVOKED:
            return None
        _append(tenant=tenant, actor=actor, patient=locked, action=ConsentAction.REVOKE,
                method=ConsentMethod.SMS_KEYWORD, disclosure_version="", evidence=evidence, occurred_at=None)
        return ReplyKind.STOP_CONFIRMATION
    if state == ConsentStatus.GRANTED:
        return None
    _append(tenant=tenant, actor=actor, patient=locked, action=ConsentAction.GRANT, method=ConsentMethod.SMS_KEYWORD,
            disclosure_version=KEYWORD_DISCLOSURE_VERSION, evidence=evidence, occurred_at=None)
    return ReplyKind.START_CONFIRMATION


# --- the Business Associate Agreement ---------------------------------------------------------


def _person_text(value, *, required: bool = True) -> tuple[str, list[str]]:
    value = unicodedata.normalize("NFC", value if isinstance(value, str) else "").strip()
    if required and not value:
        return value, ["This field is required."]
    if len(value) > NAME_MAX:
        return value, [f"Use at most {NAME_MAX} characters."]
    if _has_control_chars(value):
        return value, ["Remove the control characters."]
    return value, []


@transaction.atomic
def baa_sign(*, tenant, actor: User, signer_name: str, signer_title: str, agreed: bool, document_sha256: str,
             ip: str | None, version: str = CURRENT_BAA_VERSION) -> BusinessAssociateAgreement:
    """Record the clinic's signature of BAA ``version``; audited as BAA_SIGNED.

    ``document_sha256`` is the hash of the text the signer was shown; if the deployed text
    differs now, nothing is signed (ConflictError: read it again). Signing a version twice
    is a ConflictError too. Field errors (``signer_name``, ``signer_title``, ``agree``) are
    an ApplicationError naming them.
    """
    if version not in BAA_TEMPLATES:
        raise ApplicationError("Unknown agreement version.", fields={"version": ["Unknown version."]})
    signer_name, name_errors = _person_text(signer_name)
    signer_title, title_errors = _person_text(signer_title)
    errors = {key: value for key, value in (("signer_name", name_errors), ("signer_title", title_errors)) if value}
    if agreed is not True:
        errors["agree"] = ["Tick the box to agree to the agreement."]
    if errors:
        raise ApplicationError("The agreement was not signed: please correct the highlighted fields.", fields=errors)
    document = baa_document(version)
    if document_sha256 != document.sha256:
        raise ConflictError("The agreement's text changed since the page was opened. Read it again, then sign.",
                            code="document_changed")
    if BusinessAssociateAgreement.objects.filter(version=version).exists():
        raise ConflictError(f"This clinic has already signed version {version}.", code="already_signed")
    record = BusinessAssociateAgreement(tenant=tenant, version=version, document_sha256=document.sha256,
                                        signer_name=signer_name, signer_title=signer_title, signed_by=actor,
                                        signed_at=timezone.now(), ip=ip or None)
    try:
        record.full_clean(exclude=["tenant", "signed_by"])
    except ValidationError as exc:
        raise ApplicationError("The agreement was not signed.", fields=validation_fields(exc)) from None
    try:
        with transaction.atomic():
            record.save(force_insert=True)
    except IntegrityError:  # signed by another owner a moment ago
        raise ConflictError(f"This clinic has already signed version {version}.", code="already_signed") from None
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.BAA_SIGNED, target=record,
                 details={"version": version})
    return record


# --- the clinic's SMS settings (Tenant.settings) ---------------------------------------------


@transaction.atomic
def notice_cap_set(*, tenant: Tenant, actor, per_day: int, per_week: int) -> NoticeCap:
    """Lower the clinic's automated-notice cap; above the defaults (1/day, 3/week) is refused."""
    cap = notice_cap_validate({"per_day": per_day, "per_week": per_week})
    tenant_setting_put(tenant=tenant, actor=actor, key="notice_cap",
                        value={"per_day": cap.per_day, "per_week": cap.per_week})
    return cap


@transaction.atomic
def contact_phone_set(*, tenant: Tenant, actor, contact_phone: str | None) -> str | None:
    """The number the HELP reply gives patients (stored E.164); None or blank removes it."""
    if contact_phone is None or not str(contact_phone).strip():
        tenant_setting_put(tenant=tenant, actor=actor, key="contact_phone", value=None)
        return None
    try:
        number = phonenumbers.parse(str(contact_phone)[:40], CONTACT_PHONE_REGION)
        valid = phonenumbers.is_valid_number(number)
    except phonenumbers.NumberParseException:
        valid = False
    if not valid:
        raise ApplicationError("Enter the clinic's phone number.",
                               fields={"contact_phone": ["Enter a valid phone number (with + and country code "
                                                        "outside the US)."]})
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    tenant_setting_put(tenant=tenant, actor=actor, key="contact_phone", value=e164)
    return e164
