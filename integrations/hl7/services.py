"""Receive HL7 v2: one entry point for HTTP and MLLP, one ACK per message.

``hl7_receive`` splits a payload (message, batch or file), handles each message in its own
transaction (a refused message writes nothing; its neighbours in a batch are unaffected) and
returns the ACK, or the batch of ACKs. Must be called inside ``tenant_scope``.
"""

from __future__ import annotations

import logging

from django.db import transaction

from accounts.errors import ApplicationError
from integrations.hl7 import ack as acks
from integrations.hl7 import er7
from integrations.hl7.er7 import (
    DATA_TYPE_ERROR,
    INTERNAL_ERROR,
    REQUIRED_FIELD_MISSING,
    UNSUPPORTED_EVENT_CODE,
    UNSUPPORTED_MESSAGE_TYPE,
    Hl7Error,
    Location,
)
from integrations.hl7.handlers import FIELD_LOCATIONS, HANDLERS
from integrations.hl7.patients import FIELD_LOCATIONS as PATIENT_FIELD_LOCATIONS
from patients.services import DUPLICATE_MRN

logger = logging.getLogger(__name__)
SUPPORTED_TYPES = frozenset(t for t, _ in HANDLERS)


def hl7_receive(*, tenant, actor, payload: str) -> str:
    """The ACK (ER7, CR between segments) for ``payload``: one message, a batch or a file."""
    envelope = er7.split_payload(payload)
    results = [hl7_message_handle(tenant=tenant, actor=actor, text=text) for text in envelope.messages]
    if envelope.is_batch:
        return acks.build_batch_ack(envelope, results)
    if not results:
        error = Hl7Error("The payload holds no HL7 message.", location=Location("MSH", 1),
                         code=er7.SEGMENT_SEQUENCE_ERROR, ack="AR")
        return acks.build_ack(acks.Header(), "AR", error.message, (error,))
    return "\r".join(results)


def hl7_message_handle(*, tenant, actor, text: str) -> str:
    """Handle one message; returns its ACK. Never raises for bad input."""
    header = acks.Header.from_message(text)
    try:
        note = _handle_with_retry(tenant=tenant, actor=actor, text=text, header=header)
    except Hl7Error as exc:
        _log(header, exc.ack, exc.code)
        _rejected(tenant, actor, exc.ack, exc.code)
        return acks.build_ack(header, exc.ack, exc.message, exc.all)
    except ApplicationError as exc:
        errors = _service_errors(exc, header)
        _log(header, "AE", errors[0].code)
        _rejected(tenant, actor, "AE", errors[0].code)
        return acks.build_ack(header, "AE", errors[0].message, tuple(errors))
    except Exception as exc:  # a bug must not kill an MLLP connection or leak data: AE, logged without values
        logger.error("hl7 message %s failed: %s", header.control_id[:40], type(exc).__name__)
        _rejected(tenant, actor, "AE", INTERNAL_ERROR)
        error = Hl7Error("Internal error; the message was not processed. Resend later.", location=None,
                         code=INTERNAL_ERROR)
        return acks.build_ack(header, "AE", error.message, (error,))
    _log(header, "AA", 0)
    if isinstance(note, er7.Accepted):
        return acks.build_ack(header, "AA", note.text, note.warnings)
    return acks.build_ack(header, "AA", note)


def _is_unique_race(exc: ApplicationError) -> bool:
    """Another connection created the same patient or appointment a moment ago."""
    messages = [str(m) for ms in (exc.fields or {}).values() for m in ms]
    return exc.code == "duplicate" or DUPLICATE_MRN in messages or any("Another appointment has" in m for m in messages)


def _handle_with_retry(*, tenant, actor, text: str, header: acks.Header) -> str:
    """Interface engines send on several connections at once: two messages for one new patient
    race to create it, and the loser sees a uniqueness error. Its rollback left nothing behind,
    and the winner has committed, so running it again finds the row and updates it."""
    try:
        return _handle(tenant=tenant, actor=actor, text=text, header=header)
    except ApplicationError as exc:
        if not _is_unique_race(exc):
            raise
    return _handle(tenant=tenant, actor=actor, text=text, header=header)


def _handle(*, tenant, actor, text: str, header: acks.Header) -> str:
    message = er7.parse_message(text)
    msh = message.segment("MSH")
    kind, event = er7.value(msh, 9, 1).upper(), er7.value(msh, 9, 2).upper()
    if not header.control_id:
        raise Hl7Error("Required: the message control id (MSH-10).", location=Location("MSH", 10),
                       code=REQUIRED_FIELD_MISSING, ack="AR")
    handler = HANDLERS.get((kind, event))
    if handler is None:
        code = UNSUPPORTED_EVENT_CODE if kind in SUPPORTED_TYPES else UNSUPPORTED_MESSAGE_TYPE
        what = "event" if kind in SUPPORTED_TYPES else "message type"
        raise Hl7Error(f"Unsupported {what}: {kind[:3]}^{event[:3]} is not supported.",
                       location=Location("MSH", 9, 2 if kind in SUPPORTED_TYPES else 1), code=code, ack="AR")
    with transaction.atomic():
        return handler(tenant=tenant, actor=actor, message=message, event=event)


def _service_errors(exc: ApplicationError, header: acks.Header) -> list[Hl7Error]:
    """ApplicationError.fields (service argument names) → ERR entries naming HL7 fields."""
    locations = {**PATIENT_FIELD_LOCATIONS, **FIELD_LOCATIONS.get(header.message_type, {})}
    errors = []
    for name, messages in (exc.fields or {}).items():
        location = locations.get(name)
        label = location.label if location else name
        text = " ".join(str(m) for m in messages)[:200]
        code = REQUIRED_FIELD_MISSING if "required" in text.lower() else DATA_TYPE_ERROR
        errors.append(Hl7Error(f"{label}: {text}", location=location, code=code))
    return errors or [Hl7Error(exc.message[:200], location=None, code=DATA_TYPE_ERROR)]


def _rejected(tenant, actor, ack: str, error) -> None:
    """The audit event for a refused message (AE/AR): the ACK code and the HL7 error code only."""
    from integrations.ehr import ehr_import_rejected

    try:
        ehr_import_rejected(tenant=tenant, actor=actor, source="hl7", status=ack, reason=f"hl7-{error}")
    except Exception as exc:  # noqa: BLE001 - the ACK must still go out
        logger.error("hl7 rejection not audited: %s", type(exc).__name__)


def _log(header: acks.Header, code: str, error: int) -> None:
    # Ids and codes only: never segment contents.
    logger.info("hl7 message %s answered %s (%s)", header.control_id[:40], code, error)
