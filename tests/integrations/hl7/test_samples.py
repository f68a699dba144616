"""Sample messages published with other open-source HL7 libraries (data/LICENSES.md): they
parse, and the ADT/ORU ones among them import or get a precise AE, never a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from accounts.tenancy import tenant_scope
from integrations.hl7 import er7
from integrations.hl7.services import hl7_receive
from patients.models import Patient
from tests.factories import make_textable_patient
from tests.integrations.hl7.builders import seg, segments_of

DATA = Path(__file__).parent / "data"
SAMPLES = sorted(p.name for p in DATA.glob("*.hl7"))


def _read(name: str) -> str:
    return (DATA / name).read_bytes().decode()


def _receive(tenant, name: str) -> str:
    with tenant_scope(tenant):
        return hl7_receive(tenant=tenant, actor=None, payload=_read(name))


@pytest.mark.parametrize("name", SAMPLES)
def test_every_sample_parses(name):
    envelope = er7.split_payload(_read(name))
    assert envelope.messages
    for text in envelope.messages:
        message = er7.parse_message(text)
        assert er7.value(message.segment("MSH"), 9, 1)
        assert er7.first_segment(message, "PID") is not None


def test_a_sample_count_guard():
    assert len(SAMPLES) >= 6  # the files are vendored; losing them must fail loudly


@pytest.mark.django_db
def test_python_hl7_adt_a01_v23_imports_the_patient(tenant_a):
    ack = _receive(tenant_a, "python-hl7_adt_a01_v23.hl7")
    assert seg(ack, "MSA")[1:3] == ["AA", "Q150084616T145947960"]
    assert seg(ack, "MSH")[11] == "2.3"
    with tenant_scope(tenant_a):
        patient = Patient.objects.get()
        assert (patient.mrn, patient.family_name, patient.given_name) == ("2148790", "RUFUSS", "MELLODIAL")
        assert str(patient.birth_date) == "1952-11-29" and patient.phone == "+13472444150"
        assert patient.external_ids == {"hl7:MSH_EMPI:CM": "162840"}


@pytest.mark.django_db
def test_python_hl7_file_gets_a_batch_ack_naming_the_missing_given_name(tenant_a):
    # VINAH samples are de-identified: the name is "XXXXXXXXXX" with no given name.
    ack = _receive(tenant_a, "python-hl7_file_adt_a04_v25.hl7")
    names = [s[0] for s in segments_of(ack)]
    assert names[0] == "FHS" and names.count("BHS") == 1 and names[-1] == "FTS"
    msas = [s for s in segments_of(ack) if s[0] == "MSA"]
    assert [m[1] for m in msas] == ["AE", "AE", "AE"]
    assert [s[2] for s in segments_of(ack) if s[0] == "ERR"] == ["PID^1^5^1^2"] * 3
    with tenant_scope(tenant_a):
        assert not Patient.objects.exists()


@pytest.mark.django_db
def test_python_hl7_oru_v24_needs_its_patient_then_rejects_the_impossible_birth_date(tenant_a, alice):
    ack = _receive(tenant_a, "python-hl7_oru_r01_v24.hl7")
    # PID-7 is "196203520" (not a date): named before anything else is looked at (v2.4: ERR-1).
    assert seg(ack, "MSA")[1:3] == ["AE", "CNTRL-3456"]
    assert seg(ack, "ERR")[1].startswith("PID^1^7^102&")
    make_textable_patient(tenant=tenant_a, owner=alice, mrn="555-44-4444")
    fixed = _read("python-hl7_oru_r01_v24.hl7").replace("|196203520|", "|19620320|")
    with tenant_scope(tenant_a):
        ack = hl7_receive(tenant=tenant_a, actor=None, payload=fixed)
    assert seg(ack, "MSA")[1:4] == ["AA", "CNTRL-3456", "Result notice created."]


@pytest.mark.django_db
def test_hl7apy_adt_a01_v26_without_birth_date_gets_an_err_naming_pid_7(tenant_a):
    ack = _receive(tenant_a, "hl7apy_adt_a01_v26.hl7")
    assert seg(ack, "MSA")[1:3] == ["AE", "0123456789"]
    errs = [s for s in segments_of(ack) if s[0] == "ERR"]
    assert [e[2:4] for e in errs] == [["PID^1^7", "101^Required field missing^HL70357"]]
    with tenant_scope(tenant_a):
        assert not Patient.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "code"), [("hl7apy_zdt_z01_v25.hl7", "200"), ("hl7apy_oml_o33_v25.hl7", "200")])
def test_hl7apy_unsupported_types_get_ar(tenant_a, name, code):
    ack = _receive(tenant_a, name)
    assert seg(ack, "MSA")[1] == "AR"
    assert seg(ack, "ERR")[3].startswith(f"{code}^")
