"""POST /api/v1/hl7/: each message type, the ACK's structure, and what is refused."""

from __future__ import annotations

import datetime

import pytest

from accounts.permissions import ApiScope
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from messaging.models import Message, MessageKind
from patients.models import Appointment, AppointmentStatus, Patient
from tests.factories import make_textable_patient
from tests.integrations.hl7.builders import (
    ER7,
    PID,
    PID_V23,
    adt,
    make_key,
    msh,
    oru,
    seg,
    segments_of,
    siu,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _in_a(tenant_a):
    """Test bodies read clinic A's (encrypted) rows inside its scope; requests open their own."""
    with tenant_scope(tenant_a):
        yield


def _patients(tenant):
    with tenant_scope(tenant):
        return list(Patient.objects.all())


def _appointments(tenant):
    with tenant_scope(tenant):
        return list(Appointment.objects.all())


# --- ADT ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("event", ["A04", "A08", "A28", "A31"])
def test_it_registers_a_patient_from_adt(post, tenant_a, event):
    response = post(adt(event, control_id=f"C-{event}"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith(ER7)
    assert seg(response.content, "MSA")[:3] == ["MSA", "AA", f"C-{event}"]
    [patient] = _patients(tenant_a)
    assert (patient.mrn, patient.family_name, patient.given_name) == ("MRN-4242", "Delgado", "Rosa")
    assert patient.birth_date == datetime.date(1979, 11, 23)
    assert patient.phone == "+12025550177"
    assert patient.email == "rosa@example.test"
    assert patient.preferred_language == "es"
    assert "999-11-2222" not in str(patient.external_ids)  # the SSN is never kept


def test_an_update_changes_the_patient_and_keeps_what_is_not_sent(post, tenant_a):
    post(adt("A04"))
    pid = "PID|1||MRN-4242^^^NORTH^MR||Delgado-Ruiz^Rosa"  # no birth date, no phone
    response = post(adt("A08", pid=pid, control_id="ADT-2"))
    assert seg(response.content, "MSA")[1:4] == ["AA", "ADT-2", "Patient updated."]
    [patient] = _patients(tenant_a)
    assert patient.family_name == "Delgado-Ruiz" and patient.phone == "+12025550177"


def test_it_picks_the_mr_identifier_and_the_mobile_number(post, tenant_a):
    pid = ("PID|1||X-1^^^EMPI^PI~MRN-7^^^NORTH^MR||Lee^Ann||19900102||||||2025550100^PRN^PH~"
           "(202) 555-0133^ORN^CP||EN")
    assert seg(post(adt(pid=pid)).content, "MSA")[1] == "AA"
    [patient] = _patients(tenant_a)
    assert patient.mrn == "MRN-7" and patient.phone == "+12025550133" and patient.preferred_language == "en"
    assert patient.external_ids == {"hl7:EMPI:PI": "X-1"}


def test_adt_without_a_patient_identifier_is_an_ae_naming_pid_3_and_writes_nothing(post, tenant_a):
    response = post(adt(pid="PID|1||||Delgado^Rosa||19791123"))
    assert seg(response.content, "MSA")[1] == "AE"
    err = seg(response.content, "ERR")
    assert err[2] == "PID^1^3" and err[3].startswith("101^")
    assert "PID-3" in err[8]
    assert _patients(tenant_a) == []


def test_a_new_patient_without_a_mobile_number_is_imported_with_a_warning_naming_pid_13(post, tenant_a):
    response = post(adt(pid="PID|1||MRN-1^^^N^MR||Lee^Ann||19900102"))
    assert seg(response.content, "MSA")[1] == "AA" and seg(response.content, "MSA")[3] == "Patient created."
    err = seg(response.content, "ERR")
    assert err[2] == "PID^1^13" and err[3].startswith("0^Message accepted") and err[4] == "W"
    assert "will not be texted" in err[8]
    [patient] = _patients(tenant_a)
    assert patient.phone == "" and patient.phone_index == ""


def test_a_bad_birth_date_is_an_ae_naming_pid_7(post, tenant_a):
    response = post(adt(pid="PID|1||MRN-1^^^N^MR||Lee^Ann||19901302||||||2025550100^PRN^CP"))
    err = seg(response.content, "ERR")
    assert seg(response.content, "MSA")[1] == "AE" and err[2] == "PID^1^7" and err[3].startswith("102^")
    assert _patients(tenant_a) == []


def test_a_number_that_cannot_be_texted_is_left_out_with_a_warning_naming_pid_13(post, tenant_a):
    # Not a phone number: the patient is registered without it; the ACK names PID-13, never the value.
    response = post(adt(pid="PID|1||MRN-1^^^N^MR||Lee^Ann||19900102||||||12345^PRN^CP"))
    assert seg(response.content, "MSA")[1] == "AA"
    err = seg(response.content, "ERR")
    assert err[2] == "PID^1^13" and err[4] == "W" and "cannot receive text messages" in err[8]
    assert b"12345" not in response.content
    [patient] = _patients(tenant_a)
    assert patient.phone == ""


def test_a_landline_for_a_known_patient_keeps_the_mobile_on_file(post, tenant_a):
    first = post(adt(pid="PID|1||MRN-1^^^N^MR||Lee^Ann||19900102||||||2025550100^PRN^CP"))
    assert [s[0] for s in segments_of(first.content)] == ["MSH", "MSA"]
    response = post(adt(pid="PID|1||MRN-1^^^N^MR||Lee^Ann||19900102||||||+442079460958^PRN^CP"))
    err = seg(response.content, "ERR")
    assert seg(response.content, "MSA")[1] == "AA" and err[4] == "W" and "was kept" in err[8]
    [patient] = _patients(tenant_a)
    assert patient.phone == "+12025550100"


# --- SIU -----------------------------------------------------------------------------------------


def test_s12_books_an_appointment_for_a_new_patient(post, tenant_a):
    response = post(siu("S12"))
    assert seg(response.content, "MSA")[1:3] == ["AA", "SIU-1"]
    [appointment] = _appointments(tenant_a)
    assert appointment.external_id == "APT-100" and appointment.source == "hl7"
    assert appointment.status == AppointmentStatus.BOOKED
    assert appointment.starts_at == datetime.datetime(2026, 4, 1, 14, 30, tzinfo=datetime.UTC)  # 10:30 New York
    assert appointment.ends_at - appointment.starts_at == datetime.timedelta(minutes=30)
    assert appointment.provider_name == "Dr Ngozi Okafor"
    assert appointment.location_name == "Main Street Clinic NORTH 204"
    assert appointment.appointment_type == "Follow-up visit"
    assert _patients(tenant_a)[0].mrn == "MRN-4242"


def test_resending_the_same_siu_updates_one_appointment(post, tenant_a):
    post(siu("S12"))
    response = post(siu("S12", control_id="SIU-2"))
    assert seg(response.content, "MSA")[1:4] == ["AA", "SIU-2", "Appointment updated (booked)."]
    post(siu("S13", start="202604021400", end="202604021430", control_id="SIU-3"))
    [appointment] = _appointments(tenant_a)
    assert appointment.starts_at == datetime.datetime(2026, 4, 2, 18, 0, tzinfo=datetime.UTC)
    assert len(_patients(tenant_a)) == 1


@pytest.mark.parametrize(("event", "status"), [("S15", AppointmentStatus.CANCELLED),
                                               ("S26", AppointmentStatus.NO_SHOW)])
def test_cancel_and_no_show_set_the_status(post, tenant_a, event, status):
    post(siu("S12"))
    response = post(siu(event, control_id="SIU-9"))
    assert seg(response.content, "MSA")[1] == "AA"
    [appointment] = _appointments(tenant_a)
    assert appointment.status == status


def test_s14_keeps_a_confirmation(post, tenant_a, alice):
    from patients.services import appointment_set_status

    post(siu("S12"))
    with tenant_scope(tenant_a):
        appointment_set_status(tenant=tenant_a, actor=alice, appointment=Appointment.objects.get(),
                               status=AppointmentStatus.CONFIRMED)
    post(siu("S14", control_id="SIU-4"))
    assert _appointments(tenant_a)[0].status == AppointmentStatus.CONFIRMED


def test_siu_without_an_appointment_id_is_an_ae_naming_sch_2(post, tenant_a):
    response = post(siu(appointment_id=""))
    assert seg(response.content, "MSA")[1] == "AE"
    assert seg(response.content, "ERR")[2] == "SCH^1^2"
    assert _appointments(tenant_a) == [] and _patients(tenant_a) == []


def test_siu_without_a_start_time_is_an_ae_naming_tq1_7_and_writes_no_patient(post, tenant_a):
    message = siu().replace("TQ1|1||||||202604011030|202604011100", "TQ1|1")
    message = message.replace("AIS|1||99213^Office visit|202604011030", "AIS|1||99213^Office visit|")
    response = post(message)
    err = seg(response.content, "ERR")
    assert seg(response.content, "MSA")[1] == "AE" and err[2] == "TQ1^1^7" and err[3].startswith("101^")
    assert _appointments(tenant_a) == [] and _patients(tenant_a) == []


def test_an_appointment_that_ends_before_it_starts_writes_nothing(post, tenant_a):
    response = post(siu(start="202604011100", end="202604011030"))
    assert seg(response.content, "MSA")[1] == "AE"
    assert _appointments(tenant_a) == [] and _patients(tenant_a) == []  # the new patient rolled back too


# --- ORU -----------------------------------------------------------------------------------------


@pytest.fixture
def known_patient(tenant_a, alice):
    return make_textable_patient(tenant=tenant_a, owner=alice, mrn="MRN-4242", phone="+12025550177")


def test_oru_creates_a_neutral_result_notice(post, tenant_a, known_patient, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = post(oru())
    assert seg(response.content, "MSA")[1:4] == ["AA", "ORU-1", "Result notice created."]
    with tenant_scope(tenant_a):
        [message] = Message.objects.filter(kind=MessageKind.RESULT_NOTICE)
    assert message.body.splitlines() == [
        "Lipid panel: Your results are ready; your care team will review them with you.",
        "Cholesterol: 182 mg/dL", "Triglycerides: 95 mg/dL"]
    again = post(oru(control_id="ORU-2"))
    assert seg(again.content, "MSA")[1:4] == ["AA", "ORU-2", "Result already received."]
    with tenant_scope(tenant_a):
        assert Message.objects.filter(kind=MessageKind.RESULT_NOTICE).count() == 1


def test_a_preliminary_result_is_not_sent(post, tenant_a, known_patient):
    response = post(oru(status="P"))
    assert seg(response.content, "MSA")[1] == "AA"
    with tenant_scope(tenant_a):
        assert not Message.objects.filter(kind=MessageKind.RESULT_NOTICE).exists()


def test_oru_for_an_unknown_patient_is_an_ae_naming_pid_3(post, tenant_a):
    response = post(oru())
    assert seg(response.content, "MSA")[1] == "AE"
    err = seg(response.content, "ERR")
    assert err[2] == "PID^1^3" and err[3].startswith("204^")
    assert _patients(tenant_a) == []


# --- ACK structure, versions, quirks ---------------------------------------------------------------


def test_the_ack_swaps_sender_and_receiver_and_echoes_the_control_id(post):
    ack = post(adt(control_id="XYZ-77")).content
    header = seg(ack, "MSH")
    assert header[1] == "^~\\&"
    assert header[2:6] == ["CARETEXT", "CARETEXT-FAC", "EPIC", "NORTH CLINIC"]
    assert header[8] == "ACK^A04^ACK" and header[9] and header[9] != "XYZ-77" and header[11] == "2.5.1"
    assert seg(ack, "MSA")[:3] == ["MSA", "AA", "XYZ-77"]
    assert [s[0] for s in segments_of(ack)] == ["MSH", "MSA"]


def test_unknown_message_types_are_rejected_with_ar(post, tenant_a):
    response = post("\r".join([msh("MDM^T02", "M-1"), PID]))
    assert seg(response.content, "MSA")[:3] == ["MSA", "AR", "M-1"]
    assert "not supported" in seg(response.content, "MSA")[3]
    err = seg(response.content, "ERR")
    assert err[2] == "MSH^1^9^1^1" and err[3].startswith("200^")
    unknown_event = post("\r".join([msh("ADT^A40", "M-2"), PID]))
    assert seg(unknown_event.content, "ERR")[3].startswith("201^")
    assert _patients(tenant_a) == []


def test_v23_errors_use_err_1(post, tenant_a):
    response = post(adt(pid="PID|1||||DELGADO^ROSA", version="2.3"))
    assert seg(response.content, "MSH")[11] == "2.3"
    assert seg(response.content, "ERR") == ["ERR", "PID^1^3^101&Required field missing&HL70357"]


def test_v23_and_v251_variants_import_the_same(post, tenant_a):
    assert seg(post(siu(tq1=False, version="2.3", pid=PID_V23)).content, "MSA")[1] == "AA"
    assert seg(post(siu(version="2.5.1", control_id="SIU-2")).content, "MSA")[1] == "AA"
    [appointment] = _appointments(tenant_a)
    [patient] = _patients(tenant_a)
    assert appointment.starts_at == datetime.datetime(2026, 4, 1, 14, 30, tzinfo=datetime.UTC)
    assert patient.preferred_language == "es" and patient.phone == "+12025550177"


@pytest.mark.parametrize("separator", ["\r", "\n", "\r\n"])
def test_any_segment_separator_and_trailing_whitespace(post, tenant_a, separator):
    body = separator.join(line + "  " for line in adt().split("\r")) + separator + separator
    assert seg(post(body).content, "MSA")[1] == "AA"
    assert len(_patients(tenant_a)) == 1


def test_z_segments_and_unknown_segments_are_ignored(post, tenant_a):
    body = adt(extra=("ZPI|1|custom^stuff|more", "ZXX|whatever", "OBX|1|ST|note||hello"))
    assert seg(post(body).content, "MSA")[1] == "AA"
    assert len(_patients(tenant_a)) == 1


def test_other_encoding_characters(post, tenant_a):
    message = adt().replace("^", "$").replace("~", "!")  # MSH-2 becomes $!\&
    response = post(message)
    assert seg(response.content, "MSA")[1] == "AA"
    assert seg(response.content, "MSH")[8] == "ACK$A04$ACK"  # the ACK speaks the sender's delimiters
    assert _patients(tenant_a)[0].given_name == "Rosa"


def test_a_batch_gets_one_ack_per_message_in_a_batch(post, tenant_a):
    body = "\r".join(["FHS|^~\\&|EPIC|NORTH|||20260301||||F-1", "BHS|^~\\&|EPIC|NORTH|||20260301||||B-1",
                      adt(control_id="B1-1"), siu(control_id="B1-2"),
                      adt(pid="PID|1||||X^Y", control_id="B1-3"), "BTS|3", "FTS|1"])
    ack = post(body).content
    names = [s[0] for s in segments_of(ack)]
    assert names[:2] == ["FHS", "BHS"] and names[-2:] == ["BTS", "FTS"]
    msas = [s for s in segments_of(ack) if s[0] == "MSA"]
    assert [(m[1], m[2]) for m in msas] == [("AA", "B1-1"), ("AA", "B1-2"), ("AE", "B1-3")]
    assert seg(ack, "BTS") == ["BTS", "3"]
    assert seg(ack, "BHS")[11] == "B-1"  # references the batch it answers
    assert len(_appointments(tenant_a)) == 1


def test_garbage_is_rejected_with_ar_not_a_500(post):
    response = post("hello, this is not HL7")
    assert response.status_code == 200
    assert seg(response.content, "MSA")[1] == "AR"


def test_a_missing_control_id_is_rejected(post, tenant_a):
    response = post(adt(control_id=""))
    assert seg(response.content, "MSA")[1] == "AR"
    assert seg(response.content, "ERR")[2] == "MSH^1^10"
    assert _patients(tenant_a) == []


# --- HTTP: content type, size, permission, tenancy -------------------------------------------------


def test_text_plain_is_accepted(post, tenant_a):
    assert seg(post(adt(), content_type="text/plain; charset=utf-8").content, "MSA")[1] == "AA"


def test_a_wrong_content_type_is_415(post, tenant_a):
    response = post('{"resourceType": "Patient"}', content_type="application/json")
    assert response.status_code == 415
    assert _patients(tenant_a) == []


def test_an_empty_body_is_400_naming_the_body(post):
    response = post("")
    assert response.status_code == 400
    assert "body" in response.json()["error"]["fields"]


def test_an_oversized_body_is_413(post, settings, tenant_a):
    settings.HL7_MAX_MESSAGE_BYTES = 2000
    response = post(adt(extra=("ZPI|" + "x" * 3000,)))
    assert response.status_code == 413
    assert _patients(tenant_a) == []


def test_a_key_without_hl7_write_is_403_and_audited(post, tenant_a, alice):
    key = make_key(tenant_a, alice, scopes=(ApiScope.PATIENTS_WRITE, ApiScope.FHIR_WRITE))
    response = post(adt(), key=key)
    assert response.status_code == 403
    assert _patients(tenant_a) == []
    with tenant_scope(tenant_a):
        denial = AuditEvent.objects.get(event_type=AuditEventType.PERMISSION_DENIED)
    assert denial.details == {"permission": "integrations.hl7_write", "path_name": "hl7-message"}


def test_no_key_is_401(client):
    response = client.post("/api/v1/hl7/", data=adt(), content_type=ER7)
    assert response.status_code in (401, 403)


def test_clinic_as_key_writes_only_to_clinic_a(post, tenant_a, tenant_b, charlie):
    post(siu())
    assert len(_appointments(tenant_a)) == 1
    assert _patients(tenant_b) == [] and _appointments(tenant_b) == []
    # And clinic B's key writes to clinic B only, even for the same identifiers.
    post(siu(control_id="B-1"), key=make_key(tenant_b, charlie))
    assert len(_appointments(tenant_b)) == 1 and len(_appointments(tenant_a)) == 1
    assert _appointments(tenant_a)[0].pk != _appointments(tenant_b)[0].pk


def test_imports_are_audited_as_the_api_key(post, tenant_a):
    post(siu())
    with tenant_scope(tenant_a):
        events = AuditEvent.objects.filter(event_type__in=[AuditEventType.PATIENT_CREATED,
                                                           AuditEventType.APPOINTMENT_CHANGED])
        assert events.exists()
        assert {e.actor_type for e in events} == {"api_key"}


def test_no_phi_in_logs_or_the_ack(post, caplog):
    caplog.set_level("DEBUG")
    response = post(adt(pid="PID|1||MRN-1^^^N^MR||Quillfeather^Ada||19900102||||||2025550199^PRN^PH"))
    text = response.content.decode() + caplog.text
    for value in ("Quillfeather", "Ada", "19900102", "5550199"):
        assert value not in text
