"""FHIR R4 read-only exports of one patient (searchset Bundles), audited as PATIENT_EXPORTED
in the same transaction as the read (R12). Must be called inside ``tenant_scope(tenant)``.

Ids in the exported resources are Caretext's own (opaque UUIDs); an EHR may reference the
patient back as ``Patient/<id>`` in later writes.
"""

from __future__ import annotations

from django.db import transaction

from audit.events import AuditEventType
from audit.services import audit_record
from messaging.models import Direction, Message
from patients.models import Appointment, AppointmentStatus
from patients.selectors import patient_get

# patients.AppointmentStatus → https://hl7.org/fhir/R4/valueset-appointmentstatus.html
FHIR_APPOINTMENT_STATUS = {
    AppointmentStatus.BOOKED: "booked", AppointmentStatus.CONFIRMED: "booked",
    AppointmentStatus.RESCHEDULE_REQUESTED: "booked", AppointmentStatus.CANCELLED: "cancelled",
    AppointmentStatus.NO_SHOW: "noshow", AppointmentStatus.COMPLETED: "fulfilled",
}
# The patient's own answer, as an AppointmentResponse participantStatus.
PATIENT_RESPONSE = {AppointmentStatus.CONFIRMED: "accepted", AppointmentStatus.CANCELLED: "declined",
                    AppointmentStatus.RESCHEDULE_REQUESTED: "tentative"}


def _searchset(resources: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                      for r in resources]}


def _audit(*, tenant, actor, patient, report: str, count: int) -> None:
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.PATIENT_EXPORTED, target=patient,
                 patient_id=patient.pk, details={"format": "fhir", "report": report, "row_count": count})


def _communication(message: Message, patient_ref: dict) -> dict:
    inbound = message.direction == Direction.INBOUND
    resource = {"resourceType": "Communication", "id": str(message.pk), "status": "completed",
                "subject": patient_ref, "sent": message.created_at.isoformat(),
                "category": [{"coding": [{"system": "https://caretext.example/fhir/message-kind",
                                          "code": message.kind}]}],
                "payload": [{"contentString": message.body}]}
    resource["sender" if inbound else "recipient"] = patient_ref if inbound else [patient_ref]
    return resource


@transaction.atomic
def fhir_communication_export(*, tenant, actor, patient_id) -> dict:
    """The patient's messages (not staff notes) as Communication resources; NotFound for
    unknown and other clinics' patients."""
    patient = patient_get(tenant=tenant, patient_id=patient_id)
    messages = (Message.objects.filter(thread__patient=patient).exclude(direction=Direction.NOTE)
                .order_by("created_at", "id"))
    ref = {"reference": f"Patient/{patient.pk}"}
    resources = [_communication(m, ref) for m in messages]
    _audit(tenant=tenant, actor=actor, patient=patient, report="communication", count=len(resources))
    return _searchset(resources)


def _appointment(appointment: Appointment, patient_ref: dict) -> list[dict]:
    resource = {"resourceType": "Appointment", "id": str(appointment.pk),
                "status": FHIR_APPOINTMENT_STATUS.get(appointment.status, "booked"),
                "start": appointment.starts_at.isoformat(), "end": appointment.ends_at.isoformat(),
                "participant": [{"actor": patient_ref, "status": PATIENT_RESPONSE.get(appointment.status,
                                                                                      "needs-action")}]}
    if appointment.external_id:
        resource["identifier"] = [{"value": appointment.external_id}]
    if appointment.appointment_type:
        resource["appointmentType"] = {"text": appointment.appointment_type}
    answer = PATIENT_RESPONSE.get(appointment.status)
    if answer is None:
        return [resource]
    response = {"resourceType": "AppointmentResponse", "id": str(appointment.pk),
                "appointment": {"reference": f"Appointment/{appointment.pk}"}, "actor": patient_ref,
                "participantStatus": answer}
    return [resource, response]


@transaction.atomic
def fhir_appointment_export(*, tenant, actor, patient_id) -> dict:
    """The patient's appointments, with an AppointmentResponse for each answered one."""
    patient = patient_get(tenant=tenant, patient_id=patient_id)
    ref = {"reference": f"Patient/{patient.pk}"}
    resources = []
    for appointment in Appointment.objects.filter(patient=patient).order_by("starts_at", "id"):
        resources += _appointment(appointment, ref)
    _audit(tenant=tenant, actor=actor, patient=patient, report="appointment", count=len(resources))
    return _searchset(resources)
