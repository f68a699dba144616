"""The FHIR R4 resources our webhooks carry, as plain dicts (JSON-ready).

- ``appointment.response``: an AppointmentResponse. ``appointment`` references our appointment
  id and, when the appointment came from the EHR, carries its external id as an identifier, so
  the receiver can match it without a lookup. confirm → accepted, cancel → declined,
  reschedule → tentative; ``comment`` is the patient's note.
- ``message.received``: a Communication from the patient (``subject`` and ``sender`` reference
  our patient id with the MRN as identifier; ``payload[0].contentString`` is the message body).

Both are PHI: they are stored encrypted and sent only to endpoints the clinic's owner registered.
"""

from __future__ import annotations

from datetime import datetime

MRN_TYPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}], "text": "MRN"}
APPOINTMENT_SOURCE_SYSTEM = "urn:caretext:appointment-source:"  # + "fhir" | "hl7" | "manual"
PARTICIPANT_STATUS = {"confirm": "accepted", "cancel": "declined", "reschedule": "tentative"}


def _instant(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def patient_reference(patient) -> dict:
    return {"reference": f"Patient/{patient.pk}", "type": "Patient",
            "identifier": {"type": MRN_TYPE, "value": patient.mrn}}


def appointment_reference(appointment) -> dict:
    reference = {"reference": f"Appointment/{appointment.pk}", "type": "Appointment"}
    if appointment.external_id:
        reference["identifier"] = {"system": f"{APPOINTMENT_SOURCE_SYSTEM}{appointment.source}",
                                   "value": appointment.external_id}
    return reference


def appointment_response(*, appointment, action: str, note: str = "", resource_id: str) -> dict:
    resource = {
        "resourceType": "AppointmentResponse",
        "id": resource_id,
        "appointment": appointment_reference(appointment),
        "start": _instant(appointment.starts_at),
        "end": _instant(appointment.ends_at),
        "actor": patient_reference(appointment.patient),
        "participantStatus": PARTICIPANT_STATUS[action],
    }
    if note:
        resource["comment"] = note
    return resource


def communication(*, message, patient) -> dict:
    resource = {
        "resourceType": "Communication",
        "id": str(message.pk),
        "status": "completed",
        "subject": patient_reference(patient),
        "sender": patient_reference(patient),
        "sent": _instant(message.created_at),
        "payload": [{"contentString": message.body}],
    }
    thread = getattr(message, "thread", None)
    if thread is not None and thread.appointment_id:
        resource["about"] = [{"reference": f"Appointment/{thread.appointment_id}", "type": "Appointment"}]
    return resource
