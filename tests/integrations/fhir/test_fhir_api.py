"""FHIR R4 API: Bundles (transaction / batch / collection), upserts, official examples, errors,
tenant isolation and the audited exports."""

from __future__ import annotations

import json

import pytest

from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from consent.models import ConsentEvent
from integrations.fhir.parsers import MAX_BODY_BYTES
from messaging.models import Message
from messaging.services import message_send
from patients.models import Appointment, Patient
from tests.factories import make_appointment, make_patient, make_textable_patient
from tests.integrations.fhir.conftest import (
    appointment_resource,
    bundle,
    example,
    fetch,
    key_for,
    patient_resource,
    send,
)


def _statuses(response):
    return [e["response"]["status"] for e in response.json()["entry"]]


def _count(tenant, model):
    with tenant_scope(tenant):
        return model.objects.count()


def _is_outcome(response, status, expression=None):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert all({"severity", "code", "diagnostics"} <= set(i) for i in body["issue"])
    if expression:
        assert any(expression in x for i in body["issue"] for x in i.get("expression", [])), body


# --- bundle types ---------------------------------------------------------------------------------


def test_batch_writes_the_good_entries_and_rejects_the_bad_one(tenant_a, fhir_key):
    bad = patient_resource(mrn="MRN-F-2")
    bad["identifier"] = []
    data = bundle("batch", appointment_resource(), patient_resource(), bad, full_urls=[None, "urn:uuid:p1", None])
    response = send(fhir_key, "", data)
    assert response.status_code == 200, response.content
    assert response.json()["type"] == "batch-response"
    assert _statuses(response) == ["201 Created", "201 Created", "422"]
    rejected = response.json()["entry"][2]["response"]["outcome"]["issue"]
    assert rejected[0]["expression"] == ["Patient.identifier"]
    assert _count(tenant_a, Patient) == 1 and _count(tenant_a, Appointment) == 1


def test_transaction_is_all_or_nothing(tenant_a, fhir_key):
    data = bundle("transaction", patient_resource(), appointment_resource(patient_ref="urn:uuid:nobody"),
                  patient_resource(mrn="MRN-F-3", birthDate="not-a-date"), full_urls=["urn:uuid:p1", None, None])
    response = send(fhir_key, "", data)
    _is_outcome(response, 400, "Appointment.participant[0].actor")
    expressions = [x for i in response.json()["issue"] for x in i.get("expression", [])]
    assert any("birthDate" in x for x in expressions)
    assert _count(tenant_a, Patient) == 0 and _count(tenant_a, Appointment) == 0


def test_good_transaction_commits_and_answers_a_transaction_response(tenant_a, fhir_key):
    data = bundle("transaction", patient_resource(), appointment_resource(), full_urls=["urn:uuid:p1", None])
    response = send(fhir_key, "", data)
    assert response.status_code == 200, response.content
    assert response.json()["type"] == "transaction-response"
    assert _statuses(response) == ["201 Created", "201 Created"]
    location = response.json()["entry"][0]["response"]["location"]
    with tenant_scope(tenant_a):
        assert location == f"Patient/{Patient.objects.get().pk}"
        assert Appointment.objects.get().source == "fhir"


def test_resending_the_same_bundle_updates_without_duplicates(tenant_a, fhir_key):
    data = bundle("collection", patient_resource(), appointment_resource(), full_urls=["urn:uuid:p1", None])
    assert _statuses(send(fhir_key, "", data)) == ["201 Created", "201 Created"]
    data["entry"][1]["resource"]["status"] = "cancelled"
    again = send(fhir_key, "", data)
    assert _statuses(again) == ["200 OK", "200 OK"]
    assert _count(tenant_a, Patient) == 1 and _count(tenant_a, Appointment) == 1
    with tenant_scope(tenant_a):
        assert Appointment.objects.get().status == "cancelled"


@pytest.mark.parametrize("fhir_status,ours", [("noshow", "no_show"), ("fulfilled", "completed"),
                                               ("checked-in", "confirmed"), ("proposed", "booked")])
def test_appointment_status_is_mapped(tenant_a, fhir_key, fhir_status, ours):
    data = bundle("batch", patient_resource(), appointment_resource(status=fhir_status),
                  full_urls=["urn:uuid:p1", None])
    assert _statuses(send(fhir_key, "", data)) == ["201 Created", "201 Created"]
    with tenant_scope(tenant_a):
        assert Appointment.objects.get().status == ours


# --- the official HL7 examples (tests/integrations/fhir/data, CC0) --------------------------------


def test_official_patient_and_appointment_examples_are_accepted_unchanged(tenant_a, fhir_key):
    response = send(fhir_key, "", bundle("batch", example("Patient-example"), example("Appointment-example")))
    assert _statuses(response) == ["201 Created", "201 Created"], response.content
    # The example's only mobile is Australian without a country code: imported without a number
    # (never texted), and the entry's outcome says so as a warning.
    [warning] = response.json()["entry"][0]["response"]["outcome"]["issue"]
    assert warning["severity"] == "warning" and warning["expression"] == ["Patient.telecom"]
    assert "will not be texted" in warning["diagnostics"] and "0491" not in warning["diagnostics"]
    with tenant_scope(tenant_a):
        stored = Patient.objects.get()
        assert (stored.mrn, stored.family_name, str(stored.birth_date)) == ("12345", "Chalmers", "1974-12-25")
        assert stored.phone == "" and stored.phone_index == ""
        appointment = Appointment.objects.get()
        assert appointment.patient == stored and appointment.external_id == "Appointment/example"
        assert appointment.provider_name == "Dr Adam Careful"


def test_official_patient_example_with_a_textable_mobile_keeps_it(tenant_a, fhir_key):
    patient = example("Patient-example")
    patient["telecom"][2]["value"] = "+12025550143"
    response = send(fhir_key, "", bundle("batch", patient))
    assert _statuses(response) == ["201 Created"] and "outcome" not in response.json()["entry"][0]["response"]
    with tenant_scope(tenant_a):
        assert Patient.objects.get().phone == "+12025550143"


def test_official_patient_f001_single_resource_is_accepted_with_a_warning(tenant_a, fhir_key):
    response = send(fhir_key, "Patient", example("Patient-f001"))
    assert response.status_code == 201, response.content
    severities = [i["severity"] for i in response.json()["issue"]]
    assert severities == ["information", "warning"]
    with tenant_scope(tenant_a):
        stored = Patient.objects.get()
        assert stored.family_name == "van de Heuvel" and stored.phone == ""


def test_official_consent_examples_are_recorded_once(tenant_a, alice, fhir_key):
    from tests.factories import sign_baa

    sign_baa(tenant=tenant_a, owner=alice)
    patient = example("Patient-f001")
    patient["telecom"][0]["value"] = "+12025550144"
    data = bundle("batch", patient, example("Consent-consent-example-Out"), example("Consent-consent-example-basic"))
    assert _statuses(send(fhir_key, "", data)) == ["201 Created", "201 Created", "201 Created"]
    assert _statuses(send(fhir_key, "", data)) == ["200 OK", "200 OK", "200 OK"]
    with tenant_scope(tenant_a):
        events = list(ConsentEvent.objects.order_by("occurred_at"))
        assert [(e.action, e.method) for e in events] == [("revoke", "ehr_import"), ("grant", "ehr_import")]
        assert events[1].disclosure_version == "ehr"


@pytest.mark.parametrize("name", ["DiagnosticReport-f201", "DiagnosticReport-102"])
def test_official_report_examples_become_result_notices(tenant_a, alice, fhir_key, name):
    known = make_textable_patient(tenant=tenant_a, owner=alice)
    report = example(name)
    report["subject"] = {"reference": f"Patient/{known.pk}"}  # our id, as the exports give it
    first = send(fhir_key, "", bundle("batch", report))
    assert _statuses(first) == ["201 Created"], first.content
    assert _statuses(send(fhir_key, "", bundle("batch", report))) == ["200 OK"]
    again = send(fhir_key, "DiagnosticReport", report, method="put")
    assert again.status_code == 200
    with tenant_scope(tenant_a):
        message = Message.objects.get(kind="result_notice")
        assert message.thread.patient == known


def test_report_for_a_patient_who_cannot_be_texted_is_rejected_and_writes_nothing(tenant_a, fhir_key):
    make_patient(tenant=tenant_a, mrn="MRN-F-9")
    report = example("DiagnosticReport-f201")
    report["subject"] = {"identifier": {"value": "MRN-F-9"}}
    response = send(fhir_key, "DiagnosticReport", report)
    _is_outcome(response, 422, "DiagnosticReport.subject")
    assert _count(tenant_a, Message) == 0


# --- errors: always an OperationOutcome, never a 500, nothing written -----------------------------


def test_malformed_json_is_a_400_outcome(tenant_a, fhir_key):
    _is_outcome(send(fhir_key, "", b'{"resourceType": "Bundle", '), 400)


def test_deeply_nested_json_is_a_400_outcome_not_a_recursion_error(tenant_a, fhir_key):
    _is_outcome(send(fhir_key, "", b"[" * 100_000 + b"]" * 100_000), 400)


def test_wrong_content_type_is_a_415_outcome(tenant_a, fhir_key):
    _is_outcome(send(fhir_key, "", "<Bundle/>", content_type="application/fhir+xml"), 415)
    _is_outcome(send(fhir_key, "Patient", json.dumps(patient_resource()), content_type="text/plain"), 415)
    assert _count(tenant_a, Patient) == 0


def test_oversized_body_is_a_413_outcome(tenant_a, fhir_key):
    data = patient_resource(text={"status": "generated", "div": "<div>" + "x" * MAX_BODY_BYTES + "</div>"})
    _is_outcome(send(fhir_key, "", bundle("batch", data)), 413)
    assert _count(tenant_a, Patient) == 0


@pytest.mark.parametrize("data,expression", [
    ({"resourceType": "Patient"}, "resourceType"),
    ({"resourceType": "Bundle", "type": "searchset", "entry": []}, "Bundle.type"),
])
def test_not_an_importable_bundle_is_a_400_outcome(tenant_a, fhir_key, data, expression):
    _is_outcome(send(fhir_key, "", data), 400, expression)


def test_unsupported_resource_in_a_batch_is_rejected_alone(tenant_a, fhir_key):
    data = bundle("batch", {"resourceType": "Observation", "status": "final"}, patient_resource())
    response = send(fhir_key, "", data)
    assert _statuses(response) == ["422", "201 Created"]


def test_wrong_resource_type_on_a_typed_endpoint(tenant_a, fhir_key):
    _is_outcome(send(fhir_key, "Patient", appointment_resource()), 400, "resourceType")
    _is_outcome(send(fhir_key, "Observation", {"resourceType": "Observation"}), 404)


def test_invalid_fhir_names_the_element(tenant_a, fhir_key):
    response = send(fhir_key, "Patient", patient_resource(name=[{"given": "Ana"}]))
    _is_outcome(response, 400, "Patient.name[0].given")


def test_unknown_patient_is_named(tenant_a, fhir_key):
    response = send(fhir_key, "Appointment", appointment_resource(patient_ref="Patient/example"))
    _is_outcome(response, 422, "Appointment.participant[0].actor")
    assert "Patient/example" in response.json()["issue"][0]["diagnostics"]


def test_single_resource_put_upserts_by_identifier(tenant_a, fhir_key):
    assert send(fhir_key, "Patient", patient_resource(), method="put").status_code == 201
    response = send(fhir_key, "Patient", patient_resource(birthDate="1984-03-10"), method="put")
    assert response.status_code == 200 and response["Location"].startswith("Patient/")
    with tenant_scope(tenant_a):
        assert str(Patient.objects.get().birth_date) == "1984-03-10"
    ref = {"identifier": {"value": "MRN-F-1"}}
    appointment = appointment_resource()
    appointment["participant"][0]["actor"] = ref | {"type": "Patient"}
    assert send(fhir_key, "Appointment", appointment).status_code == 201


# --- permissions and tenants ----------------------------------------------------------------------


def test_keys_without_fhir_write_cannot_import(tenant_a, alice):
    reader = key_for(tenant_a, alice, scopes=("patients:read",))
    _is_outcome(send(reader, "", bundle("batch", patient_resource())), 403)
    assert _count(tenant_a, Patient) == 0
    with tenant_scope(tenant_a):
        assert AuditEvent.objects.filter(event_type=AuditEventType.PERMISSION_DENIED).count() == 1


def test_no_key_is_a_401_outcome(tenant_a):
    from django.test import Client

    response = Client().post("/api/v1/fhir/", "{}", content_type="application/fhir+json")
    assert response.status_code in (401, 403)
    assert response.json()["resourceType"] == "OperationOutcome"


def test_a_clinic_cannot_write_to_or_resolve_another_clinics_patients(tenant_a, tenant_b, charlie, fhir_key):
    theirs = make_patient(tenant=tenant_b, mrn="MRN-B-1")
    by_id = send(fhir_key, "Appointment", appointment_resource(patient_ref=f"Patient/{theirs.pk}"))
    _is_outcome(by_id, 422, "Appointment.participant[0].actor")
    by_mrn = appointment_resource()
    by_mrn["participant"][0]["actor"] = {"identifier": {"value": "MRN-B-1"}, "type": "Patient"}
    _is_outcome(send(fhir_key, "Appointment", by_mrn), 422)
    # The same MRN in clinic A is a new patient of A, never an update of B's.
    assert send(fhir_key, "Patient", patient_resource(mrn="MRN-B-1")).status_code == 201
    with tenant_scope(tenant_b):
        assert Patient.objects.get().pk == theirs.pk and Appointment.objects.count() == 0
    assert _count(tenant_a, Appointment) == 0


# --- exports --------------------------------------------------------------------------------------


def test_communication_export_lists_only_this_patients_messages_and_is_audited(tenant_a, tenant_b, alice, charlie):
    mine = make_textable_patient(tenant=tenant_a, owner=alice)
    with tenant_scope(tenant_a):
        message_send(tenant=tenant_a, actor=alice, patient=mine, body="Your forms are ready.")
    # Message bodies need the messages:read scope (staff read them with messages.view), not patients:read.
    _is_outcome(fetch(key_for(tenant_a, alice, scopes=("patients:read",)), f"Communication?patient={mine.pk}"), 403)
    reader = key_for(tenant_a, alice, scopes=("messages:read",))
    response = fetch(reader, f"Communication?patient={mine.pk}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["type"] == "searchset" and body["total"] == 1
    resource = body["entry"][0]["resource"]
    assert resource["payload"][0]["contentString"] == "Your forms are ready."
    assert resource["recipient"] == [{"reference": f"Patient/{mine.pk}"}]
    with tenant_scope(tenant_a):
        event = AuditEvent.objects.get(event_type=AuditEventType.PATIENT_EXPORTED)
        assert event.details == {"format": "fhir", "report": "communication", "row_count": 1}
    other = make_patient(tenant=tenant_b)
    _is_outcome(fetch(reader, f"Communication?patient={other.pk}"), 404)
    _is_outcome(fetch(reader, "Communication"), 400, "patient")


def test_appointment_export_has_patient_responses(tenant_a, tenant_b, alice):
    patient = make_patient(tenant=tenant_a)
    make_appointment(tenant=tenant_a, patient=patient, status="confirmed")
    reader = key_for(tenant_a, alice, scopes=("patients:read",))
    response = fetch(reader, f"Appointment?patient=Patient/{patient.pk}")
    assert response.status_code == 200, response.content
    kinds = [(e["resource"]["resourceType"], e["resource"].get("participantStatus")) for e in response.json()["entry"]]
    assert kinds == [("Appointment", None), ("AppointmentResponse", "accepted")]
    with tenant_scope(tenant_a):
        assert AuditEvent.objects.filter(event_type=AuditEventType.PATIENT_EXPORTED).count() == 1
    other = make_patient(tenant=tenant_b)
    _is_outcome(fetch(reader, f"Appointment?patient={other.pk}"), 404)


def test_writer_keys_cannot_export(tenant_a, fhir_key):
    patient = make_patient(tenant=tenant_a)
    _is_outcome(fetch(fhir_key, f"Appointment?patient={patient.pk}"), 403)
