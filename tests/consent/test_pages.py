"""The consent pages: a patient's consent (view, record, CSV) and the clinic's BAA, for each
role, for another clinic's owner, with bad input, and what each writes to the audit trail."""

import csv
import io
import json
import uuid

import pytest

from accounts import permissions as perms
from accounts.tenancy import tenant_scope
from audit.events import ALLOWED_DETAIL_KEYS, AuditEventType
from audit.models import AuditEvent
from consent import services
from consent.documents import CURRENT_BAA_VERSION, CURRENT_DISCLOSURE_VERSION, baa_document
from consent.models import BusinessAssociateAgreement, ConsentEvent
from consent.views import consent_panel_context
from tests.consent.conftest import make_patient

V = CURRENT_DISCLOSURE_VERSION
GRANT = {"action": "grant", "method": "verbal", "disclosure_version": V, "evidence": "Agreed at check-in"}


def _page(patient):
    return f"/consent/patients/{patient.pk}/"


def _record(patient):
    return f"/consent/patients/{patient.pk}/record/"


def _csv(patient):
    return f"/consent/patients/{patient.pk}/history.csv"


def _events(tenant, event_type=None):
    with tenant_scope(tenant):
        rows = AuditEvent.objects.all()
        if event_type is not None:
            rows = rows.filter(event_type=event_type)
        return list(rows)


def _ledger(tenant):
    with tenant_scope(tenant):
        return list(ConsentEvent.objects.all())


# --- recording consent ---------------------------------------------------------------------------------


def test_clinician_records_consent_and_sees_it(client, login, carol, tenant_a, patient_a):
    login(carol)
    response = client.post(_record(patient_a), GRANT)
    assert response.status_code == 302 and response["Location"] == _page(patient_a)
    [event] = _ledger(tenant_a)
    assert (event.action, event.method, event.captured_by_id) == ("grant", "verbal", carol.pk)
    page = client.get(_page(patient_a))
    assert page.status_code == 200
    assert b"May be texted" in page.content and b"Agreed at check-in" in page.content
    assert b"carol@clinic-a.test" in page.content and b"Mobile ending 0143" in page.content
    [changed] = _events(tenant_a, AuditEventType.CONSENT_CHANGED)
    assert changed.actor_user == carol and changed.patient_id == patient_a.pk
    [viewed] = _events(tenant_a, AuditEventType.PATIENT_VIEWED)
    assert viewed.patient_id == patient_a.pk and viewed.details == {"path_name": "consent-patient"}


def test_front_desk_records_a_revoke_and_returns_to_the_patient_page(client, login, bob, patient_a, tenant_a):
    login(bob)
    back = f"/patients/{patient_a.pk}/"
    response = client.post(_record(patient_a), {"action": "revoke", "method": "paper_form",
                                                "evidence": "Opt-out form, chart", "next": back})
    assert response.status_code == 302 and response["Location"] == back
    assert [e.action for e in _ledger(tenant_a)] == ["revoke"]


def test_it_never_redirects_off_site(client, login, bob, patient_a):
    login(bob)
    response = client.post(_record(patient_a), {**GRANT, "next": "https://evil.example/"})
    assert response["Location"] == _page(patient_a)


@pytest.mark.parametrize(("data", "field"), [
    ({**GRANT, "action": "maybe"}, "action"),
    ({**GRANT, "action": ""}, "action"),
    ({**GRANT, "method": "telepathy"}, "method"),
    ({**GRANT, "method": "sms_keyword"}, "method"),  # keywords come from the patient's text only
    ({**GRANT, "method": "ehr_import"}, "method"),
    ({**GRANT, "evidence": ""}, "evidence"),  # verbal needs a note
    ({**GRANT, "method": "paper_form", "evidence": "   "}, "evidence"),
    ({**GRANT, "evidence": "x" * 1001}, "evidence"),
    ({**GRANT, "disclosure_version": "v0-unknown"}, "disclosure_version"),
    ({**GRANT, "disclosure_version": ""}, "disclosure_version"),  # a grant names what was disclosed
])
def test_bad_input_is_a_400_naming_the_field_and_saves_nothing(client, login, carol, tenant_a, patient_a, data, field):
    login(carol)
    response = client.post(_record(patient_a), data)
    assert response.status_code == 400
    assert f'id="id_{field}-error"'.encode() in response.content
    assert _ledger(tenant_a) == []
    assert _events(tenant_a, AuditEventType.CONSENT_CHANGED) == []


def test_recording_also_needs_view_phi_because_the_400_page_shows_notes(client, login, bob, tenant_a, patient_a,
                                                                      monkeypatch):
    monkeypatch.setitem(perms.ROLE_PERMISSIONS, "staff", frozenset({perms.DASHBOARD_VIEW, perms.CONSENT_CHANGE}))
    login(bob)
    assert client.post(_record(patient_a), GRANT).status_code == 403
    [denial] = _events(tenant_a, AuditEventType.PERMISSION_DENIED)
    assert denial.details["permission"] == perms.PATIENTS_VIEW_PHI
    assert _ledger(tenant_a) == []


def test_record_is_post_only(client, login, carol, patient_a):
    login(carol)
    assert client.get(_record(patient_a)).status_code == 405


# --- the CSV ---------------------------------------------------------------------------------------


def test_history_downloads_as_csv_and_is_audited_as_an_export(client, login, carol, tenant_a, patient_a):
    login(carol)
    client.post(_record(patient_a), {**GRANT, "evidence": "=HYPERLINK(\"http://x\")"})
    client.post(_record(patient_a), {"action": "revoke", "method": "verbal", "evidence": "Called to stop"})
    response = client.get(_csv(patient_a))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == f'attachment; filename="consent-{patient_a.pk}.csv"'
    assert response["Cache-Control"] == "no-store"
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0][:4] == ["Occurred at", "Action", "Method", "Number"]
    assert [r[1] for r in rows[1:]] == ["Revoked", "Granted"]
    assert rows[2][6] == "'=HYPERLINK(\"http://x\")"  # a formula is neutralised
    [export] = _events(tenant_a, AuditEventType.PATIENT_EXPORTED)
    assert export.patient_id == patient_a.pk and export.details == {"format": "csv", "row_count": 2}


# --- who may do what ----------------------------------------------------------------------------------


def test_auditors_get_403_everywhere_and_it_is_audited(client, login, dave, tenant_a, patient_a):
    login(dave)
    for method, url in (("get", _page(patient_a)), ("post", _record(patient_a)), ("get", _csv(patient_a)),
                        ("get", "/consent/baa/"), ("post", "/consent/baa/sign/")):
        response = getattr(client, method)(url, GRANT if method == "post" else None)
        assert response.status_code == 403, url
    denials = _events(tenant_a, AuditEventType.PERMISSION_DENIED)
    assert sorted(d.details["permission"] for d in denials) == sorted([
        perms.PATIENTS_VIEW_PHI, perms.CONSENT_CHANGE, perms.PATIENTS_VIEW_PHI, perms.TENANT_MANAGE_SETTINGS,
        perms.TENANT_MANAGE_SETTINGS])
    assert _ledger(tenant_a) == []


@pytest.mark.parametrize(("method", "url"), [("get", _page), ("post", _record), ("get", _csv)])
def test_charlie_of_clinic_b_gets_404_on_clinic_as_patient(client, login, charlie, tenant_a, tenant_b, patient_a,
                                                           patient_b, method, url):
    before = len(_events(tenant_a))
    login(charlie)
    missing = type(patient_a)(pk=uuid.uuid4())
    foreign = getattr(client, method)(url(patient_a), GRANT if method == "post" else None)
    unknown = getattr(client, method)(url(missing), GRANT if method == "post" else None)
    assert foreign.status_code == unknown.status_code == 404
    assert _normalise(foreign.content) == _normalise(unknown.content)
    assert _ledger(tenant_a) == [] and len(_events(tenant_a)) == before
    own = getattr(client, method)(url(patient_b), GRANT if method == "post" else None)
    assert own.status_code in (200, 302)  # the same URL works for charlie's own patient


def _normalise(content: bytes) -> bytes:
    import re

    content = re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", content)
    return re.sub(rb'nonce="[^"]+"', b"", content)  # a fresh script nonce per response


# --- the panel the patient page includes --------------------------------------------------------------------


def test_the_panel_context_shows_the_form_only_to_those_who_may_record(in_a, bob, patient_a):
    services.consent_grant(tenant=in_a, actor=bob, patient=patient_a, method="verbal", disclosure_version=V,
                           evidence="Yes at the desk")
    editable = consent_panel_context(in_a, patient_a, permissions={perms.CONSENT_CHANGE, perms.PATIENTS_VIEW_PHI},
                                     next_url="/patients/x/")["consent"]
    assert editable["form"] is not None and editable["can_export"] and editable["next"] == "/patients/x/"
    assert editable["summary"].status == "granted" and len(editable["history"]) == 1
    assert editable["baa_missing"]
    read_only = consent_panel_context(in_a, patient_a)["consent"]
    assert read_only["form"] is None and not read_only["can_export"]


def test_the_panel_costs_the_same_queries_for_a_long_history(in_a, bob, patient_a, django_assert_num_queries):
    for _ in range(2):
        services.consent_grant(tenant=in_a, actor=bob, patient=patient_a, method="verbal", disclosure_version=V,
                               evidence="Yes")
    with django_assert_num_queries(3):  # the latest row for this number, the history, the BAA
        consent_panel_context(in_a, patient_a)
    for _ in range(10):
        services.consent_revoke(tenant=in_a, actor=bob, patient=patient_a, method="verbal", evidence="No")
    with django_assert_num_queries(3):
        consent_panel_context(in_a, patient_a)


def test_the_consent_page_warns_while_the_clinic_has_no_baa(client, login, alice, bob, tenant_a, patient_a):
    login(bob)
    page = client.get(_page(patient_a))
    assert b"SMS is off for the whole clinic" in page.content and b"/consent/baa/" not in page.content
    login(alice)
    assert b'href="/consent/baa/"' in client.get(_page(patient_a)).content  # owners get the link
    services_sign(tenant_a, alice)
    assert b"SMS is off for the whole clinic" not in client.get(_page(patient_a)).content


def services_sign(tenant, owner):
    with tenant_scope(tenant):
        services.baa_sign(tenant=tenant, actor=owner, signer_name="Alice", signer_title="Owner", agreed=True,
                          document_sha256=baa_document().sha256, ip=None)


# --- the BAA ---------------------------------------------------------------------------------------------


def _sign_data(**overrides):
    return {"signer_name": "Alice Owner", "signer_title": "Practice owner", "agree": "on",
            "document_sha256": baa_document().sha256} | overrides


def test_owner_reads_and_signs_the_baa(client, login, alice, tenant_a):
    login(alice)
    page = client.get("/consent/baa/")
    document = baa_document()
    assert page.status_code == 200
    assert b"cannot send any SMS" in page.content and document.sha256.encode() in page.content
    assert b"BUSINESS ASSOCIATE AGREEMENT" in page.content
    response = client.post("/consent/baa/sign/", _sign_data())
    assert response.status_code == 302 and response["Location"] == "/consent/baa/"
    with tenant_scope(tenant_a):
        record = BusinessAssociateAgreement.objects.get()
    assert (record.version, record.document_sha256, record.signer_name, record.signer_title, record.signed_by_id,
            record.ip) == (CURRENT_BAA_VERSION, document.sha256, "Alice Owner", "Practice owner", alice.pk,
                           "127.0.0.1")
    [signed] = _events(tenant_a, AuditEventType.BAA_SIGNED)
    assert signed.actor_user == alice and signed.details == {"version": CURRENT_BAA_VERSION}
    after = client.get("/consent/baa/")
    assert b"Alice Owner" in after.content and b"alice@clinic-a.test" in after.content
    assert b"cannot send any SMS" not in after.content and b"Sign the agreement" not in after.content


@pytest.mark.parametrize(("overrides", "field"), [
    ({"agree": ""}, "agree"), ({"signer_name": ""}, "signer_name"), ({"signer_title": "  "}, "signer_title"),
    ({"signer_name": "x" * 201}, "signer_name"),
])
def test_the_baa_needs_a_name_a_title_and_the_checkbox(client, login, alice, tenant_a, overrides, field):
    login(alice)
    data = {k: v for k, v in _sign_data(**overrides).items() if v != ""}
    response = client.post("/consent/baa/sign/", data)
    assert response.status_code == 400
    assert f'id="id_{field}-error"'.encode() in response.content
    with tenant_scope(tenant_a):
        assert not BusinessAssociateAgreement.objects.exists()
    assert _events(tenant_a, AuditEventType.BAA_SIGNED) == []


def test_a_changed_text_is_not_signed_unread(client, login, alice, tenant_a):
    login(alice)
    response = client.post("/consent/baa/sign/", _sign_data(document_sha256="0" * 64))
    assert response.status_code == 409
    assert b"changed since the page was opened" in response.content
    assert baa_document().sha256.encode() in response.content  # the fresh text, to read again
    with tenant_scope(tenant_a):
        assert not BusinessAssociateAgreement.objects.exists()


def test_a_version_is_signed_once(client, login, alice, tenant_a):
    login(alice)
    client.post("/consent/baa/sign/", _sign_data())
    again = client.post("/consent/baa/sign/", _sign_data(signer_name="Someone Else"))
    assert again.status_code == 409 and b"already signed" in again.content
    with tenant_scope(tenant_a):
        assert BusinessAssociateAgreement.objects.count() == 1


@pytest.mark.parametrize("user", ["bob", "carol", "dave"])
def test_only_owners_see_or_sign_the_baa(client, login, request, tenant_a, user):
    login(request.getfixturevalue(user))
    assert client.get("/consent/baa/").status_code == 403
    assert client.post("/consent/baa/sign/", _sign_data()).status_code == 403
    with tenant_scope(tenant_a):
        assert not BusinessAssociateAgreement.objects.exists()


def test_each_clinic_sees_only_its_own_agreement(client, login, alice, charlie, tenant_a, tenant_b):
    login(alice)
    client.post("/consent/baa/sign/", _sign_data(signer_name="Alice Anders"))
    login(charlie)
    page = client.get("/consent/baa/")
    assert b"Alice Anders" not in page.content and b"cannot send any SMS" in page.content
    assert client.post("/consent/baa/sign/", _sign_data(signer_name="Charlie Chen")).status_code == 302
    with tenant_scope(tenant_b):
        assert [r.signer_name for r in BusinessAssociateAgreement.objects.all()] == ["Charlie Chen"]


# --- the trail stays free of PHI ------------------------------------------------------------------------


def test_no_phi_reaches_the_audit_details(client, login, alice, carol, tenant_a):
    patient = make_patient(tenant=tenant_a, given_name="Zelda", family_name="Quixote", phone="+12025550199")
    login(carol)
    client.post(_record(patient), {**GRANT, "evidence": "Zelda Quixote agreed, HbA1c 9.1, +1 202 555 0199"})
    client.get(_page(patient))
    client.get(_csv(patient))
    login(alice)
    client.post("/consent/baa/sign/", _sign_data())
    events = _events(tenant_a)
    assert {e.event_type for e in events} >= {AuditEventType.CONSENT_CHANGED, AuditEventType.PATIENT_VIEWED,
                                              AuditEventType.PATIENT_EXPORTED, AuditEventType.BAA_SIGNED}
    dumped = json.dumps([e.details for e in events])
    for secret in ("Zelda", "Quixote", "HbA1c", "555", "0199", patient.phone_index):
        assert secret not in dumped
    assert all(set(e.details) <= ALLOWED_DETAIL_KEYS for e in events)
