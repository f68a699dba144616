"""PHI canaries through the whole product (issue #11).

Patients of clinic A whose every text field holds its own canary (``CNRY`` + 12 hex; their
phone numbers and birth dates are canaries too) go through what staff, the REST API and an EHR
do: the staff form and the API create them, consent is recorded, messages go out from the thread
page and the send API, the patient opens the SMS link, verifies the birth date and replies, a
reminder goes out for an appointment, a result notice arrives by HL7 ORU and by FHIR, an FHIR
bundle and an HL7 ADT import more patients, the exports and searches run, and every kind of bad
input carrying a canary is refused. Afterwards no canary may be in any sink
(``tests/phi/canary_support.py``); each assertion names its sink.

``test_the_checker_finds_a_canary_in_every_sink`` plants one in each sink, so the checker can fail.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import re
import secrets
import urllib.parse
import uuid

import pytest
import redis
from auditlog.models import LogEntry
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.utils import timezone

from accounts.permissions import Role
from accounts.services import api_key_create
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.services import audit_record
from broadcasts.models import Broadcast
from consent.documents import CURRENT_DISCLOSURE_VERSION
from integrations.models import LocalSms
from messaging.models import InboundSms, Message, MessageKind, ReplyTemplate, Thread
from patients.models import Appointment, Patient
from patients.services import appointment_create, clinic_zone
from reminders.tasks import reminders_due
from tests.factories import (
    daytime_zone,
    login_verified,
    make_member,
    make_patient,
    make_tenant,
    sign_baa,
)
from tests.integrations.fhir.conftest import (
    FHIR,
    appointment_resource,
    bundle,
    example,
    patient_resource,
)
from tests.integrations.hl7.builders import ER7, msh, seg
from tests.messaging.conftest import sent_sms, token_of
from tests.phi import canary_support as cs

pytestmark = pytest.mark.slow

TWILIO_SITE, TWILIO_TOKEN = "https://ct.example.org", "test-twilio-auth-token"
CLINIC_NUMBER = "+12025550100"  # canary phones are 202-555-0300..0899


def _key(tenant, owner, *scopes) -> str:
    with tenant_scope(tenant):
        _, raw = api_key_create(tenant=tenant, actor=owner, name="EHR", scopes=list(scopes))
    return raw


def _api(client, method, url, data, raw_key, content_type="application/json"):
    body = data if isinstance(data, (str, bytes)) else json.dumps(data)
    return getattr(client, method)(url, body, content_type=content_type, HTTP_AUTHORIZATION=f"Bearer {raw_key}")


def _pid(c, label: str, *, birth: str | None = None) -> str:
    """A PID segment whose every field is a canary of ``label``."""
    phone = c.phone(f"{label} phone")[2:]
    dob = birth or c.birth_date(f"{label} birth date").strftime("%Y%m%d")
    return (f"PID|1||{c.new(f'{label} MRN')}^^^NORTH^MR~{c.new(f'{label} other id')}^^^EPIC^PI||"
            f"{c.new(f'{label} family name')}^{c.new(f'{label} given name')}^^^^^L||{dob}|F|||||"
            f"^PRN^CP^^1^{phone[:3]}^{phone[3:]}~^NET^Internet^{c.new(f'{label} email')}@example.test||SPA")


@pytest.fixture
def sinks(committed_db, monkeypatch, caplog):
    """The recorders, running for the whole test. The test Redis database is not emptied: parallel
    runs share it, and the canaries are fresh random strings that no other test writes."""
    caplog.set_level(logging.DEBUG)
    recorder = cs.Sinks()
    recorder.celery.install(monkeypatch)
    recorder.logs.start()
    yield recorder
    recorder.logs.stop()


@pytest.fixture
def world(sinks, settings):
    settings.SITE_URL, settings.TWILIO_AUTH_TOKEN = TWILIO_SITE, TWILIO_TOKEN  # signed inbound webhooks
    clinic_a = make_tenant(name="Canary Clinic A", slug=f"canary-a-{secrets.token_hex(3)}")
    clinic_a.sms_number = CLINIC_NUMBER
    clinic_a.save(update_fields=["sms_number"])
    clinic_b = make_tenant(name="Canary Clinic B", slug=f"canary-b-{secrets.token_hex(3)}")
    owner = make_member(tenant=clinic_a, role=Role.OWNER)
    staff = make_member(tenant=clinic_a, role=Role.STAFF)
    owner_b = make_member(tenant=clinic_b, role=Role.OWNER)
    sign_baa(tenant=clinic_a, owner=owner)
    make_patient(tenant=clinic_b, actor=owner_b)  # clinic B has a patient of its own, without canaries
    return {"a": clinic_a, "b": clinic_b, "owner": owner, "staff": staff}


# --- the drive ---------------------------------------------------------------------------------------------


def _staff_creates_a_patient(client, c, tenant, who: str = "form patient") -> Patient:
    born = c.birth_date(f"{who} birth date")
    response = client.post("/patients/new/", {
        "mrn": c.new(f"{who} MRN"), "given_name": c.new(f"{who} given name"),
        "family_name": c.new(f"{who} family name"), "birth_date": born.isoformat(),
        "phone": c.phone(f"{who} phone"), "email": f"{c.new(f'{who} email')}@example.test",
        "preferred_language": "en", "timezone": daytime_zone()})
    assert response.status_code == 302, response.content[:2000]
    with tenant_scope(tenant):
        return Patient.objects.get(pk=response["Location"].split("/")[2])


def _api_creates_a_patient(client, c, raw) -> str:
    response = _api(client, "post", "/api/v1/patients", {
        "mrn": c.new("API patient MRN"), "given_name": c.new("API patient given name"),
        "family_name": c.new("API patient family name"),
        "birth_date": c.birth_date("API patient birth date").isoformat(),
        "phone": c.phone("API patient phone"), "email": f"{c.new('API patient email')}@example.test",
        "external_ids": {"epic": c.new("API patient external id")}, "timezone": daytime_zone()}, raw)
    assert response.status_code == 201, response.content
    return response.json()["id"]


def _consent(client, c, patient_id, label: str = "staff consent note"):
    response = client.post(f"/consent/patients/{patient_id}/record/", {
        "action": "grant", "method": "verbal", "disclosure_version": CURRENT_DISCLOSURE_VERSION,
        "evidence": c.new(label)})
    assert response.status_code == 302, response.content[:2000]


def _api_consent(client, c, patient_id, raw):
    response = _api(client, "post", f"/api/v1/patients/{patient_id}/consent", {
        "action": "grant", "method": "verbal", "disclosure_version": CURRENT_DISCLOSURE_VERSION,
        "evidence": c.new("API consent note")}, raw)
    assert response.status_code == 201, response.content


def _messages(client, c, tenant, patient) -> Thread:
    saved = client.post("/inbox/templates/", {"name": "Follow-up", "body": "Hi {first_name}. " + c.new("saved reply")})
    assert saved.status_code == 302, saved.content[:2000]
    sent = client.post(f"/inbox/compose/{patient.pk}/", {
        "kind": MessageKind.GENERAL, "body": c.new("message body (compose)"), "template": "",
        "idempotency_key": str(uuid.uuid4())})
    assert sent.status_code == 302, sent.content[:2000]
    with tenant_scope(tenant):
        thread = Thread.objects.get(patient=patient)
        template = ReplyTemplate.objects.get()
    reply = client.post(f"/inbox/t/{thread.pk}/reply/", {"body": c.new("message body (thread reply)"),
                                                         "idempotency_key": str(uuid.uuid4())})
    assert reply.status_code == 302, reply.content[:2000]
    by_template = client.post(f"/inbox/t/{thread.pk}/reply/", {"body": "", "template": str(template.pk),
                                                               "idempotency_key": str(uuid.uuid4())})
    assert by_template.status_code == 302, by_template.content[:2000]
    note = client.post(f"/inbox/t/{thread.pk}/note/", {"body": c.new("staff note")})
    assert note.status_code == 302, note.content[:2000]
    return thread


def _open_and_verify(sinks, c, who: str = "form patient", *, wrong_first: bool = False):
    """The patient taps the latest link texted to them and gives their birth date."""
    sms = sent_sms(to=c.phones[f"{who} phone"])[-1]
    born = c.dates[f"{who} birth date"]
    browser = sinks.client(REMOTE_ADDR=f"10.9.{secrets.randbelow(250)}.{1 + secrets.randbelow(250)}")
    assert browser.get(f"/s/{token_of(sms)}").status_code == 303
    if wrong_first:
        assert browser.post("/s/verify", {"day": "1", "month": "1", "year": "1999"}).status_code == 400
    verified = browser.post("/s/verify", {"day": str(born.day), "month": str(born.month), "year": str(born.year)})
    assert verified.status_code == 303, verified.content[:2000]
    return browser


def _patient_opens_the_link_and_replies(sinks, c):
    browser = _open_and_verify(sinks, c, wrong_first=True)
    page = browser.get("/s/")
    assert c.text["message body (compose)"].encode() in page.content  # the patient really reads it
    replied = browser.post("/s/reply", {"body": c.new("patient reply"), "nonce": secrets.token_hex(16)})
    assert replied.status_code == 303, replied.content[:2000]


def _patient_texts_back(sinks, c, tenant, sender: str):
    """An inbound SMS with free text, signed as Twilio signs it (one from an unknown number too)."""
    from twilio.request_validator import RequestValidator

    path = "/integrations/twilio/inbound"
    for label, number in (("inbound SMS text", sender), ("inbound SMS from a stranger", c.phone("stranger phone"))):
        sid = "SM" + secrets.token_hex(16)
        params = {"MessageSid": sid, "SmsSid": sid, "AccountSid": "AC" + "0" * 32, "From": number,
                  "To": CLINIC_NUMBER, "Body": c.new(label), "NumMedia": "0", "NumSegments": "1"}
        signature = RequestValidator(TWILIO_TOKEN).compute_signature(TWILIO_SITE + path, params)
        response = sinks.client().post(path, urllib.parse.urlencode(params),
                                       content_type="application/x-www-form-urlencoded",
                                       headers={"X-Twilio-Signature": signature})
        assert response.status_code == 200, response.content
    with tenant_scope(tenant):
        assert InboundSms.objects.count() == 2
        assert Message.objects.filter(source="sms").get().body == c.text["inbound SMS text"]


def _appointment_and_reminder(client, sinks, c, tenant):
    """A patient not texted yet today (one automated notice a day) books for this afternoon: the
    reminder goes at once; they open it and confirm with a note."""
    patient = _staff_creates_a_patient(client, c, tenant, "reminded patient")
    _consent(client, c, patient.pk, "reminded patient consent note")
    starts = timezone.localtime(timezone.now() + datetime.timedelta(hours=5), clinic_zone(tenant))
    response = client.post(f"/patients/{patient.pk}/appointments/new/", {
        "starts_at": starts.strftime("%Y-%m-%dT%H:%M"),
        "ends_at": (starts + datetime.timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M"),
        "appointment_type": c.new("appointment type"), "provider_name": c.new("appointment provider"),
        "location_name": c.new("appointment location"), "reason": c.new("appointment reason"),
        "instructions": c.new("appointment instructions")})
    assert response.status_code == 302, response.content[:2000]
    reminders_due.delay()
    with tenant_scope(tenant):
        reminder = Message.objects.get(kind=MessageKind.REMINDER, thread__patient=patient)
        assert c.text["appointment provider"] in reminder.body  # the reminder really carries it
    browser = _open_and_verify(sinks, c, "reminded patient")
    assert c.text["appointment instructions"].encode() in browser.get("/s/").content
    answered = browser.post("/s/appointment", {"action": "confirm", "note": c.new("patient appointment note")})
    assert answered.status_code == 303, answered.content[:2000]
    with tenant_scope(tenant):
        assert Appointment.objects.get(patient=patient).status == "confirmed"


def _result_notices(sinks, c, tenant, owner, form_patient, api_patient_id):
    hl7 = sinks.client()
    raw_hl7 = _key(tenant, owner, "hl7:write")
    with tenant_scope(tenant):
        mrn = Patient.objects.get(pk=form_patient.pk).mrn
    oru = "\r".join([msh("ORU^R01^ORU_R01", "ORU-CNRY"), f"PID|1||{mrn}^^^NORTH^MR",
                     f"OBR|1|PL-1|ORD-1^LAB|24331-1^{c.new('ORU test name')}^LN|||202603010800|||||||||||||||"
                     "202603011200|||F",
                     f"OBX|1|ST|2571-8^{c.new('ORU observation name')}^LN||{c.new('ORU value')}||||||F",
                     f"NTE|1||{c.new('ORU note')}"])
    ack = _api(hl7, "post", "/api/v1/hl7/", oru, raw_hl7, content_type=ER7)
    assert seg(ack.content, "MSA")[1] == "AA", ack.content
    raw_fhir = _key(tenant, owner, "fhir:write")
    report = example("DiagnosticReport-f201")
    report["subject"] = {"reference": f"Patient/{api_patient_id}"}
    report["code"]["text"] = c.new("FHIR report name")
    report["conclusion"] = c.new("FHIR report conclusion")
    response = _api(hl7, "post", "/api/v1/fhir/", bundle("batch", report), raw_fhir, content_type=FHIR)
    assert response.status_code == 200 and response.json()["entry"][0]["response"]["status"] == "201 Created", \
        response.content
    with tenant_scope(tenant):
        assert Message.objects.filter(kind=MessageKind.RESULT_NOTICE).count() == 2


def _imports(sinks, c, tenant, owner):
    ehr = sinks.client()
    raw_fhir, raw_hl7 = _key(tenant, owner, "fhir:write"), _key(tenant, owner, "hl7:write")
    patient = patient_resource(mrn=c.new("FHIR patient MRN"), phone=c.phone("FHIR patient phone"),
                               birthDate=c.birth_date("FHIR patient birth date").isoformat())
    patient["name"] = [{"family": c.new("FHIR patient family name"), "given": [c.new("FHIR patient given name")]}]
    patient["identifier"].append({"system": "urn:oid:9.9", "value": c.new("FHIR patient other id")})
    patient["telecom"].append({"system": "email", "value": f"{c.new('FHIR patient email')}@example.test"})
    visit = appointment_resource(ident=c.new("FHIR appointment id"), patient_ref="urn:uuid:p1")
    visit["participant"] += [
        {"actor": {"reference": "Practitioner/1", "display": c.new("FHIR appointment provider")}, "status": "accepted"},
        {"actor": {"reference": "Location/1", "display": c.new("FHIR appointment location")}, "status": "accepted"}]
    visit["description"] = c.new("FHIR appointment description")
    response = _api(ehr, "post", "/api/v1/fhir/", bundle("transaction", patient, visit, full_urls=["urn:uuid:p1", None]),
                    raw_fhir, content_type=FHIR)
    assert response.status_code == 200, response.content
    adt = "\r".join([msh("ADT^A04^ADT_A01", "ADT-CNRY"), "EVN|A04|20260301083000", _pid(c, "ADT patient"), "PV1|1|O"])
    ack = _api(ehr, "post", "/api/v1/hl7/", adt, raw_hl7, content_type=ER7)
    assert seg(ack.content, "MSA")[1] == "AA", ack.content
    with tenant_scope(tenant):
        assert Patient.objects.count() == 5  # form (2), API, FHIR, ADT


def _broadcast(client, c, tenant):
    response = client.post("/broadcasts/new/", {"body": c.new("broadcast text"), "audience": "all_consented",
                                                "rate_per_minute": "60", "idempotency_key": str(uuid.uuid4())})
    assert response.status_code == 302, response.content[:3000]
    with tenant_scope(tenant):
        assert Broadcast.objects.get().total == 3  # the three patients who agreed to SMS


def _exports_and_searches(client, sinks, c, tenant, owner, patient):
    reader = _key(tenant, owner, "messages:read")
    api = sinks.client()
    exported = api.get(f"/api/v1/fhir/Communication?patient={patient.pk}", HTTP_AUTHORIZATION=f"Bearer {reader}")
    assert exported.status_code == 200 and c.text["message body (compose)"] in exported.content.decode()
    history = client.get(f"/consent/patients/{patient.pk}/history.csv")
    assert history.status_code == 200 and c.text["staff consent note"] in history.content.decode()
    assert client.get("/reports/access/csv/").status_code == 200
    disclosures = client.get("/reports/disclosures/csv/", {"patient": str(patient.pk)})
    assert disclosures.status_code == 200 and disclosures.content.count(b"\n") > 5, disclosures.content[:500]
    found = client.post("/patients/search/", {"mrn": c.text["form patient MRN"]})
    assert found.status_code == 200 and c.text["form patient family name"].encode() in found.content
    searched = _api(api, "post", "/api/v1/patients/search", {"mrn": c.text["API patient MRN"]},
                    _key(tenant, owner, "patients:read"))
    assert searched.status_code == 200, searched.content


def _error_paths(client, sinks, c, tenant, owner, patient):
    """Bad input carrying canaries: each refused with a 4xx (or an HL7 AE) and nothing written."""
    with tenant_scope(tenant):
        before = Patient.objects.count()
    bad_form = client.post("/patients/new/", {
        "mrn": c.new("bad form MRN"), "given_name": c.new("bad form given name"),
        "family_name": c.new("too-long family name") + "x" * 300, "birth_date": "1980-01-01",
        "phone": "+12025550100", "email": c.new("invalid email") + "@", "preferred_language": "en"})
    assert bad_form.status_code == 400
    api = sinks.client()
    writer = _key(tenant, owner, "patients:write")
    bad_shape = _api(api, "post", "/api/v1/patients", {  # refused by the serializer
        "mrn": c.new("bad API MRN"), "given_name": c.new("too-long API given name") + "y" * 300,
        "family_name": c.new("bad API family name"), "birth_date": c.new("bad API birth date")}, writer)
    assert bad_shape.status_code == 400
    assert set(bad_shape.json()["error"]["fields"]) == {"given_name", "birth_date"}, bad_shape.content
    bad_values = _api(api, "post", "/api/v1/patients", {  # refused by the service's validation
        "mrn": c.new("bad API MRN 2"), "given_name": c.new("bad API given name"),
        "family_name": c.new("bad API family name 2"), "birth_date": "1980-01-01",
        "email": c.new("bad API email") + "@", "phone": "+0" + c.new("bad API phone")}, writer)  # "+0": no country; "CNRY…" alone can spell a valid US vanity number
    assert bad_values.status_code == 400
    assert {"email", "phone"} <= set(bad_values.json()["error"]["fields"]), bad_values.content
    sender = _key(tenant, owner, "messages:send")
    too_long = _api(api, "post", f"/api/v1/patients/{patient.pk}/messages",
                    {"body": c.new("too-long message body") + "z" * 5000}, sender)
    assert too_long.status_code == 400
    raw_hl7 = _key(tenant, owner, "hl7:write")
    bad_date = "\r".join([msh("ADT^A04^ADT_A01", "ADT-BAD"), "EVN|A04|20260301083000",
                          _pid(c, "bad-date ADT", birth=c.new("HL7 bad birth date")), "PV1|1|O"])
    ack = _api(api, "post", "/api/v1/hl7/", bad_date, raw_hl7, content_type=ER7)
    assert seg(ack.content, "MSA")[1] == "AE", ack.content
    assert not cs.find(ack.content, c.needles(), where="the ACK"), "an HL7 AE ACK echoes a canary"
    raw_fhir = _key(tenant, owner, "fhir:write")
    bad_fhir = patient_resource(mrn=c.new("bad FHIR MRN"), birthDate=c.new("bad FHIR birth date"))
    bad_fhir["name"] = [{"family": c.new("bad FHIR family name"), "given": c.new("bad FHIR given (not a list)")}]
    refused = _api(api, "post", "/api/v1/fhir/Patient", bad_fhir, raw_fhir, content_type=FHIR)
    assert refused.status_code == 400 and refused.json()["resourceType"] == "OperationOutcome", refused.content
    unknown = example("DiagnosticReport-f201")
    unknown["subject"] = {"identifier": {"value": c.new("unknown MRN in a FHIR report")}}
    no_patient = _api(api, "post", "/api/v1/fhir/DiagnosticReport", unknown, raw_fhir, content_type=FHIR)
    assert no_patient.status_code == 422, no_patient.content
    oru = "\r".join([msh("ORU^R01^ORU_R01", "ORU-UNKNOWN"), f"PID|1||{c.new('unknown MRN in an ORU')}^^^NORTH^MR",
                     "OBR|1|PL-1|ORD-9^LAB|24331-1^Lipid panel^LN|||202603010800|||||||||||||||202603011200|||F"])
    ack = _api(api, "post", "/api/v1/hl7/", oru, raw_hl7, content_type=ER7)
    assert seg(ack.content, "MSA")[1] == "AE", ack.content
    assert not cs.find(ack.content, c.needles(), where="the ACK"), "an HL7 AE ACK echoes a canary"
    with tenant_scope(tenant):
        assert Patient.objects.count() == before


def _drive(sinks, world) -> cs.Canaries:
    c = cs.Canaries()
    tenant, owner = world["a"], world["owner"]
    staff = login_verified(sinks.client(), world["staff"], tenant=tenant)
    boss = login_verified(sinks.client(), owner, tenant=tenant)
    api = sinks.client()
    writer = _key(tenant, owner, "patients:write")

    form_patient = _staff_creates_a_patient(staff, c, tenant)
    api_patient_id = _api_creates_a_patient(api, c, writer)
    _consent(staff, c, form_patient.pk)
    _api_consent(api, c, api_patient_id, writer)
    thread = _messages(boss, c, tenant, form_patient)
    assert thread is not None
    sender = _key(tenant, owner, "messages:send")
    sent = _api(api, "post", f"/api/v1/patients/{api_patient_id}/messages", {"body": c.new("message body (API)")},
                sender)
    assert sent.status_code == 201, sent.content
    _patient_opens_the_link_and_replies(sinks, c)
    _patient_texts_back(sinks, c, tenant, c.phones["form patient phone"])
    _appointment_and_reminder(staff, sinks, c, tenant)
    _result_notices(sinks, c, tenant, owner, form_patient, api_patient_id)
    _imports(sinks, c, tenant, owner)
    _broadcast(boss, c, tenant)
    _exports_and_searches(boss, sinks, c, tenant, owner, form_patient)
    _error_paths(boss, sinks, c, tenant, owner, form_patient)
    # The gateway sink is not empty: both patients were texted (later messages of an open thread
    # ride on the link already sent).
    assert sent_sms(to=c.phones["form patient phone"]) and sent_sms(to=c.phones["API patient phone"])
    return c


def test_canaries_from_every_field_reach_no_sink(sinks, world, caplog):
    canaries = _drive(sinks, world)
    sinks.extra_log_lines.append(caplog.text)
    leaks = sinks.leaks(canaries, tenants=[world["a"], world["b"]])
    # Every sink that the drive must have filled was looked at with something in it.
    empty = [s for s in cs.ALL_SINKS if s != cs.SINK_LOG_FILES and not sinks.scanned.get(s)]
    assert empty == [], f"sinks with nothing to scan: {empty}"
    assert len(canaries.text) > 60 and len(canaries.phones) >= 4
    found = {sink: findings for sink, findings in leaks.items() if findings}
    assert found == {}, f"PHI canaries in {len(found)} sink(s): {found}"
    # SMS bodies of the local gateway: link notices are the fixed notice and a link, nothing else.
    notice = re.compile(rf"Test Clinic: You have a new secure message\. {re.escape(TWILIO_SITE)}/s/[A-Za-z0-9_-]{{43}} "
                        r"Reply STOP to opt out\.")
    bodies = [sms.body for sms in sent_sms() if sms.kind == "link_notice"]
    assert len(bodies) >= 3 and all(notice.fullmatch(body) for body in bodies), f"{cs.SINK_SMS}: {bodies}"


# --- appointment descriptors (encrypted with blind indexes since migration patients 0004) ----------------


def _book_with_canaries(sinks, world) -> cs.Canaries:
    c = cs.Canaries()
    tenant, owner = world["a"], world["owner"]
    with tenant_scope(tenant):
        patient = make_patient(tenant=tenant, actor=owner)
        starts = timezone.now() + datetime.timedelta(days=3)
        appointment_create(tenant=tenant, actor=owner, patient=patient, starts_at=starts,
                           ends_at=starts + datetime.timedelta(minutes=30),
                           appointment_type=c.new("appointment type"), provider_name=c.new("appointment provider"),
                           location_name=c.new("appointment location"))
    return c


def test_appointment_descriptors_stay_out_of_auditlog_rows(sinks, world):
    canaries = _book_with_canaries(sinks, world)
    leaks = sinks.leaks(canaries, tenants=[world["a"]])
    assert leaks[cs.SINK_AUDITLOG] == []


def test_appointment_descriptors_stay_out_of_the_database_dump(sinks, world):
    canaries = _book_with_canaries(sinks, world)
    leaks = sinks.leaks(canaries, tenants=[world["a"]])
    assert leaks[cs.SINK_PG_DUMP] == []


# --- the checker can fail ---------------------------------------------------------------------------------


def test_the_checker_finds_a_canary_in_every_sink(sinks, world, tmp_path):
    """One canary planted straight into each sink: each sink's scan reports it, by label only."""
    c = cs.Canaries()
    tenant, owner = world["a"], world["owner"]
    logging.getLogger("caretext.meta").warning("patient %s", c.new("log line"))
    sinks.log_dirs.append(tmp_path)
    (tmp_path / "worker.log").write_text(f"INFO task received {c.new('log file line')}\n")
    store, prefix = redis.Redis.from_url(settings.REDIS_URL), f"canary-meta:{secrets.token_hex(4)}:"
    try:
        store.set(prefix + "string", c.new("redis string"))
        store.hset(prefix + "hash", "field", c.new("redis hash"))
        store.rpush(prefix + "list", "x", c.new("redis list"))
        store.sadd(prefix + "set", c.new("redis set"))
        store.set(prefix + "b64", base64.b64encode(json.dumps({"body": c.new("redis base64")}).encode()))
        LocalSms.objects.create(to=c.phone("SMS phone"), body=f"Clinic: {c.new('SMS body')}", kind="link_notice",
                                idempotency_key=secrets.token_hex(8), created_at=timezone.now())
        sinks.client().get("/healthz", {"q": c.new("URL query")})
        sinks.api_errors.append(f'POST /api/v1/patients 400 {{"error": {{"message": "{c.new("API error")} is bad"}}}}')
        with tenant_scope(tenant):
            patient = make_patient(tenant=tenant, actor=owner)
            audit_record(tenant=tenant, actor=None, event_type=AuditEventType.PATIENT_VIEWED, target=patient,
                         patient_id=patient.pk, actor_label=c.new("audit event actor label"))
            LogEntry.objects.log_create(patient, action=LogEntry.Action.UPDATE,
                                        changes={"note": [None, c.new("auditlog changes")]})
        reminders_due.apply_async(kwargs={}, headers={"note": c.new("celery argument")})
        make_tenant(name=c.new("clinic name in the dump"))
        session = SessionStore()
        session["note"] = c.new("session value") + " padding" * 100  # long enough to be stored compressed
        session.create()
        leaks = sinks.leaks(c, tenants=[tenant])
    finally:
        store.delete(*(prefix + k for k in ("string", "hash", "list", "set", "b64")))
    assert "a record: log line" in leaks[cs.SINK_LOGS]
    assert leaks[cs.SINK_LOG_FILES] == ["worker.log: log file line"]
    assert {f.split(": ")[-1] for f in leaks[cs.SINK_REDIS]} == {
        "redis string", "redis hash", "redis list", "redis set", "redis base64"}
    assert leaks[cs.SINK_SMS] == ["SMS link_notice: SMS body"]  # the number in `to` is allowed
    assert leaks[cs.SINK_URLS] == ["a URL: URL query"]
    assert leaks[cs.SINK_API_ERRORS] == ["an error body: API error"]
    assert "a row: auditlog changes" in leaks[cs.SINK_AUDITLOG]
    assert "a row: audit event actor label" in leaks[cs.SINK_AUDIT_EVENTS]
    assert leaks[cs.SINK_CELERY] == ["a task call: celery argument"]
    assert leaks[cs.SINK_SESSIONS] == ["a session: session value"]
    assert "the dump: session value" not in leaks[cs.SINK_PG_DUMP]  # why sessions are a sink of their own
    assert "the dump: clinic name in the dump" in leaks[cs.SINK_PG_DUMP]
    assert not any("CNRY" in f for findings in leaks.values() for f in findings)  # labels, never values
    # A patient's number is a canary everywhere but in the gateway's `to`.
    sinks.urls.append(f"/patients/?phone={c.phones['SMS phone']}")
    assert "a URL: SMS phone (digits)" in sinks.leaks(c, tenants=[tenant])[cs.SINK_URLS]
