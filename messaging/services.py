"""Writes for messaging (R2): keyword-only, atomic, validated, audited in the same transaction.

``message_send`` is the one way a message reaches a patient: it checks the BAA, consent and the
patient's number BEFORE anything is written, then writes the message, a fresh secure link, the
audit event and the outbox row in one transaction; the SMS carries only the link.

Every function must be called inside ``tenant_scope(tenant)``.
"""

from __future__ import annotations

import re
import string
import unicodedata
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.errors import ApplicationError, ConflictError, NotFound
from audit.events import AuditEventType
from audit.services import PATIENT_ACTOR, audit_record
from consent.policy import SmsKind, staff_message_kind
from consent.selectors import can_sms
from messaging.links import is_user, link_create
from messaging.models import (
    Direction,
    InboundSms,
    Message,
    MessageKind,
    OutboundSms,
    PatientSession,
    ReplyTemplate,
    SmsStatus,
    Thread,
    ThreadStatus,
)
from messaging.outbox import sms_enqueue
from outbound.services import appointment_response_emit, message_received_emit
from patients.models import Appointment, AppointmentStatus, Patient

BODY_MAX = 2000
PATIENT_REPLY_MAX = 1000
TEMPLATE_NAME_MAX = 80
IDEMPOTENCY_KEY_RE = re.compile(r"^[A-Za-z0-9._:-]{8,100}$")

# Why a message cannot be sent, in words staff can act on (consent.selectors reason codes).
REFUSALS = {
    "no_baa": "Not sent: the clinic has not signed its Business Associate Agreement (Settings → BAA).",
    "no_phone": "Not sent: this patient has no mobile number on file.",
    "never_granted": "Not sent: the patient has not agreed to SMS. Record their consent first.",
    "number_changed": "Not sent: the patient's number changed; record consent for the new number first.",
    "revoked": "Not sent: the patient opted out of SMS (STOP). They can text START to opt back in.",
    "patient_inactive": "Not sent: this patient record is inactive.",
    "number_undeliverable": "Not sent: the carrier reported this number cannot receive SMS. Update the number.",
}

MESSAGE_SMS_KIND = {
    MessageKind.REMINDER: SmsKind.REMINDER,
    MessageKind.RESULT_NOTICE: SmsKind.RESULT_NOTICE,
    MessageKind.BROADCAST: SmsKind.BROADCAST,
}

# Placeholders a saved reply may use; filled in the message body (shown only after verification).
PLACEHOLDERS = ("first_name", "last_name", "clinic_name", "appointment_date", "appointment_time",
                "provider", "location")


def clean_text(value, *, field: str, max_length: int) -> str:
    text = unicodedata.normalize("NFC", value if isinstance(value, str) else "").strip()
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text:
        raise ApplicationError("Please write a message.", fields={field: ["This field is required."]})
    if len(text) > max_length:
        raise ApplicationError("The message is too long.",
                               fields={field: [f"Use at most {max_length} characters (this has {len(text)})."]})
    # isprintable() is False for every Cc/Cs/Co character: the per-character scan runs only then.
    if not text.replace("\n", "").replace("\t", "").isprintable() and any(
            unicodedata.category(c) in ("Cc", "Cs", "Co") and c not in "\n\t" for c in text):
        raise ApplicationError("The message contains characters we cannot store.",
                               fields={field: ["Remove the control characters."]})
    return text


def check_idempotency_key(key: str) -> str:
    key = (key or "").strip()
    if key and not IDEMPOTENCY_KEY_RE.fullmatch(key):
        raise ApplicationError("Idempotency-Key must be 8-100 letters, digits or . _ : -",
                               fields={"idempotency_key": ["Use 8-100 letters, digits or . _ : -"]})
    return key


def _bump(thread: Thread, *, now, inbound: bool = False, urgent: bool = False) -> None:
    """New activity on ``thread`` (one UPDATE); ``inbound`` counts one more unread message for
    staff, ``urgent`` flags the thread. The caller holds the thread's row lock
    (``select_for_update``, or it has just inserted it), so the count read with the row is
    current and is incremented here, not in SQL: the instance stays as stored, no read-back."""
    thread.last_activity_at = now
    fields = ["last_activity_at", "updated_at"]
    if inbound:
        thread.last_inbound_at = now
        thread.staff_unread += 1
        fields += ["last_inbound_at", "staff_unread"]
    if urgent and not thread.urgent:
        thread.urgent = True
        fields.append("urgent")
    if thread.status == ThreadStatus.CLOSED:
        thread.status, thread.closed_at = ThreadStatus.OPEN, None
        fields += ["status", "closed_at"]
    thread.save(update_fields=fields)


# --- threads ---------------------------------------------------------------------------------------


def thread_get(*, tenant, thread_id) -> Thread:
    """The clinic's thread; NotFound for unknown ids and other clinics' alike."""
    from accounts.selectors import _uuid_or_404

    thread = Thread.objects.select_related("patient", "assigned_to", "appointment").filter(
        pk=_uuid_or_404(thread_id)).first()
    if thread is None:
        raise NotFound()
    return thread


def thread_for_patient(*, tenant, patient: Patient, kind: str = MessageKind.GENERAL, appointment=None) -> Thread:
    """The patient's newest open thread of this kind (and appointment), or a new one."""
    threads = Thread.objects.select_for_update().filter(patient=patient, kind=kind, status=ThreadStatus.OPEN)
    if appointment is not None:
        threads = threads.filter(appointment=appointment)
    thread = threads.order_by("-last_activity_at").first()
    if thread is None:
        thread = Thread(tenant=tenant, patient=patient, kind=kind, appointment=appointment,
                        last_activity_at=timezone.now())
        thread.save(force_insert=True)
    return thread


# --- sending -----------------------------------------------------------------------------------------


def sms_kind_for(thread: Thread, kind: str, now) -> str:
    if kind in MESSAGE_SMS_KIND:
        return MESSAGE_SMS_KIND[kind]
    return staff_message_kind(last_inbound_at=thread.last_inbound_at, now=now)


def send_refusal(*, tenant, patient: Patient, sms_kind: str) -> str | None:
    """Why a message to ``patient`` cannot be sent now (staff-readable), or None if it can."""
    allowed, reason = can_sms(tenant, patient, kind=sms_kind)
    if allowed:
        return None
    return REFUSALS.get(reason, "Not sent: SMS to this patient is not allowed.")


@transaction.atomic
def message_send(*, tenant, actor, patient: Patient | None = None, thread: Thread | None = None, body: str,
                 kind: str = MessageKind.GENERAL, appointment: Appointment | None = None, idempotency_key: str = "",
                 source: str = "web", release_now: bool = False) -> Message:
    """Send ``body`` to the patient through the secure page, notifying them by SMS.

    Give ``thread`` (a reply) or ``patient`` (a new conversation, or the newest open one of
    ``kind``). The same ``idempotency_key`` twice returns the first message and writes nothing
    (a double click, or an API client retrying). Refuses with ApplicationError naming why (no
    BAA, no consent, opted out, no number) before anything is written.

    A result notice is held for the clinic's ``result_release_minutes`` (the clinician may call
    first): the patient sees it, and is texted, only from ``release_at`` on, unless
    ``release_now`` or ``message_release`` says otherwise.
    """
    if kind not in MessageKind.values:
        raise ApplicationError("Unknown message kind.", fields={"kind": [f"Choose one of: {', '.join(MessageKind.values)}."]})
    body = clean_text(body, field="body", max_length=BODY_MAX)
    key = check_idempotency_key(idempotency_key)
    if key:
        existing = Message.objects.select_related("thread").filter(idempotency_key=key).first()
        if existing is not None:
            target = thread.patient_id if thread is not None else (patient.pk if patient is not None else None)
            if existing.thread.patient_id != target or existing.body != body:
                raise ConflictError("This Idempotency-Key was already used for a different message.")
            return existing
    if thread is not None:
        thread = Thread.objects.select_for_update().select_related("patient").get(pk=thread.pk)
        patient = thread.patient
    elif patient is None:
        raise ApplicationError("Choose a patient.", fields={"patient": ["This field is required."]})
    patient = Patient.objects.select_for_update().get(pk=patient.pk)  # one sender at a time per patient
    now = timezone.now()
    probe = thread or Thread(last_inbound_at=None)
    sms_kind = sms_kind_for(probe, kind, now)
    refusal = send_refusal(tenant=tenant, patient=patient, sms_kind=sms_kind)
    if refusal:
        raise ApplicationError(refusal, fields={"patient": [refusal]}, code="not_sendable")
    if thread is None:
        thread = thread_for_patient(tenant=tenant, patient=patient, kind=kind, appointment=appointment)
        sms_kind = sms_kind_for(thread, kind, now)
    release_at = None
    if kind == MessageKind.RESULT_NOTICE and tenant.result_release_minutes and not release_now:
        release_at = now + timedelta(minutes=tenant.result_release_minutes)
    message = Message(tenant=tenant, thread=thread, direction=Direction.OUTBOUND, kind=kind, body=body,
                      sender=actor if is_user(actor) else None, source=source, idempotency_key=key,
                      release_at=release_at)
    try:
        with transaction.atomic():
            message.save(force_insert=True)
    except IntegrityError:
        raise ConflictError("This Idempotency-Key is being used by another request; retry.") from None
    _bump(thread, now=now)
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.MESSAGE_SENT, target=message,
                 patient_id=patient.pk, details={"thread_id": str(thread.pk), "kind": kind, "direction": "outbound",
                                                 "source": source})
    notify_patient(tenant=tenant, thread=thread, patient=patient, sms_kind=sms_kind, message=message, actor=actor,
                   not_before=release_at)
    return message


@transaction.atomic
def message_release(*, tenant, actor, message: Message) -> Message:
    """Release a held result notice now: the patient sees it and is texted (quiet hours and the
    cap still apply to the SMS). Releasing one already released changes nothing."""
    from messaging.outbox import sms_release

    message = Message.objects.select_for_update().get(pk=message.pk)
    now = timezone.now()
    if message.release_at is None or message.release_at <= now:
        return message
    message.release_at = now
    message.save(update_fields=["release_at", "updated_at"])
    sms_release(tenant=tenant, message=message)
    thread = Thread.objects.get(pk=message.thread_id)
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.THREAD_CHANGED, target=thread,
                 patient_id=thread.patient_id, details={"action": "release", "message_id": str(message.pk)})
    return message


def message_get(*, tenant, message_id) -> Message:
    """The clinic's message; NotFound for unknown ids and other clinics' alike."""
    from accounts.selectors import _uuid_or_404

    message = Message.objects.select_related("thread").filter(pk=_uuid_or_404(message_id)).first()
    if message is None:
        raise NotFound()
    return message


def notify_patient(*, tenant, thread: Thread, patient: Patient, sms_kind: str, message: Message | None = None,
                   actor=None, not_before=None) -> OutboundSms:
    """A fresh link for the thread and a link notice to the patient. An unsent notice for the
    same thread is reused (one SMS, the newest link) instead of texting twice."""
    link, token = link_create(tenant=tenant, thread=thread, actor=actor, supersede=False)
    pending = OutboundSms.objects.select_for_update().filter(
        link__thread=thread, notification="link_notice", status__in=[SmsStatus.QUEUED, SmsStatus.WAITING]).first()
    if pending is not None:
        pending.link, pending.payload = link, token
        fields = ["link", "payload", "updated_at"]
        if message is not None:  # otherwise it keeps its message (not loaded just to write it back)
            pending.message = message
            fields.append("message")
        pending.save(update_fields=fields)
        return pending
    return sms_enqueue(tenant=tenant, to=patient.phone, notification="link_notice", sms_kind=sms_kind, payload=token,
                       patient=patient, message=message, link=link, language=patient.preferred_language,
                       not_before=not_before)


@transaction.atomic
def link_resend(*, tenant, actor, thread: Thread) -> OutboundSms:
    """Staff "Re-send link": a new link (the old ones stop working) and a new notice."""
    thread = Thread.objects.select_for_update().select_related("patient").get(pk=thread.pk)
    patient = thread.patient
    sms_kind = sms_kind_for(thread, thread.kind, timezone.now())
    refusal = send_refusal(tenant=tenant, patient=patient, sms_kind=sms_kind)
    if refusal:
        raise ApplicationError(refusal, fields={"patient": [refusal]}, code="not_sendable")
    Thread.objects.filter(pk=thread.pk).update(link_locked_at=None)
    # The older links keep working until the new notice actually goes (the outbox supersedes
    # them then): a notice held by quiet hours or the cap must not leave the patient with no
    # working link. To stop a link at once, revoke it.
    return notify_patient(tenant=tenant, thread=thread, patient=patient, sms_kind=sms_kind, actor=actor)


@transaction.atomic
def note_add(*, tenant, actor, thread: Thread, body: str) -> Message:
    """An internal note: staff only, never shown to the patient, never an SMS."""
    body = clean_text(body, field="body", max_length=BODY_MAX)
    thread = Thread.objects.select_for_update().get(pk=thread.pk)
    note = Message(tenant=tenant, thread=thread, direction=Direction.NOTE, kind=thread.kind, body=body,
                   sender=actor if is_user(actor) else None, source="web")
    note.save(force_insert=True)
    thread.last_activity_at = timezone.now()
    thread.save(update_fields=["last_activity_at", "updated_at"])
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.NOTE_ADDED, target=note,
                 patient_id=thread.patient_id, details={"thread_id": str(thread.pk)})
    return note


# --- inbox actions --------------------------------------------------------------------------------------


@transaction.atomic
def thread_assign(*, tenant, actor, thread: Thread, assignee) -> Thread:
    """Assign to ``assignee`` (a member of this clinic who may read messages) or unassign (None)."""
    from accounts import permissions as perms
    from accounts.models import Membership

    if assignee is not None:
        membership = Membership.objects.filter(user=assignee, is_active=True).first()
        if membership is None or perms.MESSAGES_VIEW not in membership.permissions:
            raise ApplicationError("Choose a colleague who can read messages.",
                                   fields={"assignee": ["Not a member of this clinic who can read messages."]})
    thread = Thread.objects.select_for_update().get(pk=thread.pk)
    if thread.assigned_to_id == (assignee.pk if assignee else None):
        return thread
    thread.assigned_to = assignee
    thread.save(update_fields=["assigned_to", "updated_at"])
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.THREAD_CHANGED, target=thread,
                 patient_id=thread.patient_id,
                 details={"action": "assign", "assignee_id": str(assignee.pk) if assignee else ""})
    return thread


@transaction.atomic
def thread_set_status(*, tenant, actor, thread: Thread, status: str) -> Thread:
    if status not in ThreadStatus.values:
        raise ApplicationError("Unknown status.", fields={"status": ["Choose open or closed."]})
    thread = Thread.objects.select_for_update().get(pk=thread.pk)
    if thread.status == status:
        return thread
    thread.status = status
    thread.closed_at = timezone.now() if status == ThreadStatus.CLOSED else None
    if status == ThreadStatus.CLOSED:
        thread.staff_unread, thread.urgent = 0, False
    thread.save(update_fields=["status", "closed_at", "staff_unread", "urgent", "updated_at"])
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.THREAD_CHANGED, target=thread,
                 patient_id=thread.patient_id, details={"action": "close" if status == ThreadStatus.CLOSED else "reopen"})
    return thread


# --- saved replies ------------------------------------------------------------------------------------


def _template_placeholders(body: str) -> list[str]:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(body) if name is not None]
    except ValueError:
        raise ApplicationError("Check the braces in the template.",
                               fields={"body": ["Use {placeholder} with matching braces; write {{ for a brace."]}) from None
    unknown = sorted({n for n in names if n not in PLACEHOLDERS})
    if unknown:
        raise ApplicationError("Unknown placeholder.", fields={"body": [
            f"Unknown placeholder {{{unknown[0]}}}. Use: " + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)]})
    return names


@transaction.atomic
def reply_template_create(*, tenant, actor, name: str, body: str) -> ReplyTemplate:
    name = clean_text(name, field="name", max_length=TEMPLATE_NAME_MAX)
    body = clean_text(body, field="body", max_length=BODY_MAX)
    _template_placeholders(body)
    if ReplyTemplate.objects.filter(name=name).exists():
        raise ApplicationError("A saved reply has this name.", fields={"name": ["Choose another name."]})
    template = ReplyTemplate(tenant=tenant, name=name, body=body, created_by=actor if is_user(actor) else None)
    template.save(force_insert=True)
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.REPLY_TEMPLATE_CHANGED, target=template,
                 details={"action": "create"})
    return template


@transaction.atomic
def reply_template_delete(*, tenant, actor, template: ReplyTemplate) -> None:
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.REPLY_TEMPLATE_CHANGED, target=template,
                 details={"action": "delete"})
    template.delete()


def reply_template_render(*, tenant, template: ReplyTemplate, patient: Patient, appointment=None) -> str:
    """The template with its placeholders filled for ``patient`` (becomes a message body,
    shown only on the secure page after verification)."""
    from patients.services import clinic_zone

    values = {p: "" for p in PLACEHOLDERS}
    values.update(first_name=patient.given_name, last_name=patient.family_name, clinic_name=tenant.name)
    if appointment is not None:
        local = timezone.localtime(appointment.starts_at, clinic_zone(tenant))
        values.update(appointment_date=local.strftime("%A %-d %B %Y"), appointment_time=local.strftime("%-I:%M %p"),
                      provider=appointment.provider_name, location=appointment.location_name)
    _template_placeholders(template.body)
    return template.body.format(**values)


# --- the patient's side -----------------------------------------------------------------------------------


@transaction.atomic
def patient_reply(*, tenant, session: PatientSession, body: str, idempotency_key: str = "") -> Message:
    """The verified patient's reply. A closed thread reopens (nothing is lost); urgent words
    flag it for staff and answer once with where to get help now."""
    from messaging.inbound import answer_urgent, is_urgent

    body = clean_text(body, field="body", max_length=PATIENT_REPLY_MAX)
    key = check_idempotency_key(idempotency_key)
    if key:
        existing = Message.objects.filter(idempotency_key=key, thread_id=session.thread_id).first()
        if existing is not None:
            return existing
    thread = Thread.objects.select_for_update().select_related("patient").get(pk=session.thread_id)
    urgent = is_urgent(body)
    message = Message(tenant=tenant, thread=thread, direction=Direction.INBOUND, kind=thread.kind, body=body,
                      source="patient", urgent=urgent, idempotency_key=key)
    try:
        with transaction.atomic():
            message.save(force_insert=True)
    except IntegrityError:  # a double submit that passed the check above while the first was in flight
        existing = Message.objects.filter(idempotency_key=key, thread_id=session.thread_id).first()
        if existing is not None:
            return existing
        raise ConflictError("This reply could not be saved; reload the page and send it again.") from None
    _bump(thread, now=timezone.now(), inbound=True, urgent=urgent)
    audit_record(tenant=tenant, actor=PATIENT_ACTOR, event_type=AuditEventType.MESSAGE_RECEIVED, target=message,
                 patient_id=thread.patient_id, details={"thread_id": str(thread.pk), "source": "patient",
                                                        "urgent": urgent})
    message_received_emit(tenant=tenant, message=message, patient=thread.patient)  # webhooks (outbound/)
    if urgent:
        answer_urgent(tenant=tenant, patient=thread.patient, thread=thread)
    return message


def messages_mark_read_by_patient(*, tenant, session: PatientSession) -> int:
    from django.db.models import Q

    now = timezone.now()
    return (Message.objects.filter(thread_id=session.thread_id, direction=Direction.OUTBOUND,
                                   patient_read_at__isnull=True)
            .filter(Q(release_at__isnull=True) | Q(release_at__lte=now)).update(patient_read_at=now))


APPOINTMENT_ACTIONS = {
    "confirm": AppointmentStatus.CONFIRMED,
    "cancel": AppointmentStatus.CANCELLED,
    "reschedule": AppointmentStatus.RESCHEDULE_REQUESTED,
}


@transaction.atomic
def patient_appointment_action(*, tenant, session: PatientSession, action: str, note: str = "") -> Appointment:
    """Confirm, cancel or ask to reschedule the thread's appointment from the secure page.

    A second click with the same answer changes nothing. The answer (and an optional note)
    lands in the thread as the patient's message, so staff see it in the inbox.
    """
    from patients.services import STATUS_TRANSITIONS

    if action not in APPOINTMENT_ACTIONS:
        raise ApplicationError("Choose confirm, cancel or reschedule.", fields={"action": ["Unknown choice."]})
    note = (note or "").strip()
    if len(note) > PATIENT_REPLY_MAX:
        raise ApplicationError("The note is too long.", fields={"note": [f"Use at most {PATIENT_REPLY_MAX} characters."]})
    thread = Thread.objects.select_for_update().get(pk=session.thread_id)
    if thread.appointment_id is None:
        raise ApplicationError("This conversation has no appointment.", fields={"action": ["No appointment here."]})
    appointment = Appointment.objects.select_for_update().get(pk=thread.appointment_id)
    target = APPOINTMENT_ACTIONS[action]
    if appointment.status == target:
        return appointment  # a second click: nothing to do
    if target not in STATUS_TRANSITIONS.get(appointment.status, frozenset()) or appointment.starts_at <= timezone.now():
        raise ApplicationError("This appointment can no longer be changed here. Please call the clinic.",
                               fields={"action": ["Not possible for this appointment any more."]}, code="conflict")
    appointment.status = target
    appointment.save(update_fields=["status", "updated_at"])
    audit_record(tenant=tenant, actor=PATIENT_ACTOR, event_type=AuditEventType.PATIENT_APPOINTMENT_ACTION,
                 target=appointment, patient_id=appointment.patient_id,
                 details={"action": action, "status": target, "thread_id": str(thread.pk)})
    appointment_response_emit(tenant=tenant, appointment=appointment, action=action, note=note)  # webhooks
    words = {"confirm": "Confirmed the appointment.", "cancel": "Cancelled the appointment.",
             "reschedule": "Asked to reschedule the appointment."}[action]
    body = f"{words}\n\n{note}" if note else words
    message = Message(tenant=tenant, thread=thread, direction=Direction.INBOUND, kind=thread.kind, body=body,
                      source="patient")
    message.save(force_insert=True)
    _bump(thread, now=timezone.now(), inbound=True)
    audit_record(tenant=tenant, actor=PATIENT_ACTOR, event_type=AuditEventType.MESSAGE_RECEIVED, target=message,
                 patient_id=thread.patient_id, details={"thread_id": str(thread.pk), "source": "patient"})
    return appointment


@transaction.atomic
def inbound_triage(*, tenant, actor, inbound: InboundSms) -> InboundSms:
    """Mark a message from an unknown number as handled."""
    if inbound.triaged_at is None:
        inbound.triaged_at = timezone.now()
        inbound.save(update_fields=["triaged_at", "updated_at"])
        audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.INBOUND_TRIAGED, target=inbound)
    return inbound
