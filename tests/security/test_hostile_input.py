"""Hostile input: what an attacker sends is refused or ignored, never applied, never a 500.

- mass assignment over the REST API (tenant, ids, timestamps, privilege flags, foreign ids),
- oversized and deeply nested JSON, wrong content types,
- X-Forwarded-For (and its cousins) against the login lockout and the secure-link rate limit,
- CSRF on every state-changing form of the permission matrix,
- session fixation at the password step, the MFA step and logout,
- link-token enumeration: every unusable token gets the same status, page and headers.

tests/api covers each endpoint's own validation, tests/accounts/test_login.py the basic lockout and
session-rotation cases, tests/messaging/test_patient_page.py unknown/revoked/expired/locked links;
these tests are the attacker's view across all of them.
"""

from __future__ import annotations

import datetime
import json
import re
import secrets
import uuid

import pytest
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client
from django.urls import reverse

from accounts.models import ApiKey, Membership, Tenant, User
from accounts.permissions import Role
from accounts.tenancy import tenant_scope
from consent.models import ConsentEvent
from messaging import links
from messaging import services as messaging_services
from messaging.models import Thread
from messaging.routing import link_for_token
from patients.models import Appointment, Patient
from tests.api.conftest import ApiClient, make_key
from tests.factories import (
    PASSWORD,
    login_verified,
    make_appointment,
    make_patient,
    make_textable_patient,
    totp_code,
)
from tests.messaging.conftest import sent_sms, token_of
from tests.security.test_permission_matrix import _API_ONLY, ROWS, SIGNED, _object_id, objects  # noqa: F401

SPOOFED_TIME = "2001-01-01T00:00:00Z"
_EVERYTHING = ("patients:read", "patients:write", "appointments:write", "messages:send")


@pytest.fixture
def api_a(tenant_a, alice):
    return ApiClient(make_key(tenant_a, alice, *_EVERYTHING))


@pytest.fixture
def foreign(tenant_b, charlie):
    """Clinic B's patient and appointment: ids an attacker of clinic A may have learnt."""
    patient = make_patient(tenant=tenant_b, actor=charlie, mrn="B-0001")
    return {"patient": patient, "appointment": make_appointment(tenant=tenant_b, patient=patient)}


def _hostile_extras(tenant_b, foreign) -> dict:
    return {"tenant": tenant_b.pk, "tenant_id": tenant_b.pk, "id": str(uuid.uuid4()), "pk": 1,
            "created_at": SPOOFED_TIME, "updated_at": SPOOFED_TIME, "is_staff": True, "is_superuser": True,
            "role": Role.OWNER, "patient_id": str(foreign["patient"].pk), "actor": 1, "captured_by_id": 1}


def _ignored_or_named(response, extras: dict) -> None:
    """Either the request succeeded (the extras were ignored: checked in the DB by the caller) or
    it is a 400 that names one of the extra fields."""
    if response.status_code == 400:
        fields = response.json()["error"]["fields"]
        assert set(fields) & set(extras), fields
    else:
        assert response.status_code in (200, 201), response.content


def _no_privilege_changed(tenant_b) -> None:
    assert not User.objects.filter(is_staff=True).exists()
    assert not User.objects.filter(is_superuser=True).exists()
    with tenant_scope(tenant_b):
        assert Patient.objects.count() == 1  # only B's own
        assert Appointment.objects.count() == 1


# --- mass assignment --------------------------------------------------------------------------------


def test_patient_create_ignores_tenant_ids_timestamps_and_privileges(tenant_a, tenant_b, api_a, foreign):
    extras = _hostile_extras(tenant_b, foreign)
    body = {"mrn": "MA-1", "given_name": "Eve", "family_name": "Attacker", "birth_date": "1990-01-01",
            "phone": "+12025550150", **extras}
    response = api_a.post("/api/v1/patients", body)
    _ignored_or_named(response, extras)
    with tenant_scope(tenant_a):
        created = Patient.objects.all()
        if response.status_code == 201:
            [patient] = created
            assert str(patient.pk) == response.json()["id"] != extras["id"]
            assert patient.tenant_id == tenant_a.pk
            assert patient.created_at.year >= 2025
        else:
            assert not created.exists()
    _no_privilege_changed(tenant_b)


def test_patient_patch_cannot_move_the_patient_or_rewrite_its_history(tenant_a, tenant_b, alice, api_a, foreign):
    patient = make_patient(tenant=tenant_a, actor=alice)
    with tenant_scope(tenant_a):
        before = Patient.objects.values("pk", "tenant_id", "created_at").get(pk=patient.pk)
    extras = _hostile_extras(tenant_b, foreign)
    response = api_a.patch(f"/api/v1/patients/{patient.pk}", {"given_name": "Changed", **extras})
    _ignored_or_named(response, extras)
    with tenant_scope(tenant_a):
        after = Patient.objects.values("pk", "tenant_id", "created_at").get(pk=patient.pk)
    assert after == before
    _no_privilege_changed(tenant_b)


def test_appointment_for_another_clinics_patient_is_a_404_and_writes_nothing(tenant_a, tenant_b, api_a, foreign):
    body = {"patient": str(foreign["patient"].pk), "starts_at": "2030-03-09T10:00:00+00:00",
            "ends_at": "2030-03-09T11:00:00+00:00", "tenant": tenant_b.pk}
    response = api_a.post("/api/v1/appointments", body)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    with tenant_scope(tenant_a):
        assert not Appointment.objects.exists()
    _no_privilege_changed(tenant_b)


def test_appointment_create_and_patch_ignore_foreign_ids(tenant_a, tenant_b, alice, api_a, foreign):
    own = make_patient(tenant=tenant_a, actor=alice)
    extras = _hostile_extras(tenant_b, foreign)
    body = {"patient": str(own.pk), "starts_at": "2030-03-09T10:00:00+00:00", "ends_at": "2030-03-09T11:00:00+00:00",
            **extras}
    created = api_a.post("/api/v1/appointments", body)
    _ignored_or_named(created, extras)
    appointment = make_appointment(tenant=tenant_a, patient=own)
    patched = api_a.patch(f"/api/v1/appointments/{appointment.pk}", {"provider_name": "Dr. Who", **extras})
    _ignored_or_named(patched, extras)
    with tenant_scope(tenant_a):
        for row in Appointment.objects.all():
            assert (row.tenant_id, row.patient_id) == (tenant_a.pk, own.pk)
            assert str(row.pk) != extras["id"] and row.created_at.year >= 2025
    with tenant_scope(tenant_b):
        assert Appointment.objects.get().patient_id == foreign["patient"].pk
    _no_privilege_changed(tenant_b)


def test_consent_cannot_be_recorded_for_another_clinics_patient_or_by_a_chosen_actor(
        tenant_a, tenant_b, alice, charlie, api_a, foreign):
    body = {"action": "grant", "method": "verbal", "disclosure_version": "sms-2026-01",
            "evidence": "Agreed on the phone"}
    response = api_a.post(f"/api/v1/patients/{foreign['patient'].pk}/consent", body)
    assert response.status_code == 404
    with tenant_scope(tenant_b):
        assert not ConsentEvent.objects.exists()
    own = make_patient(tenant=tenant_a, actor=alice)
    extras = {**_hostile_extras(tenant_b, foreign), "captured_by_id": charlie.pk, "captured_by": charlie.pk,
              "patient": str(foreign["patient"].pk)}
    response = api_a.post(f"/api/v1/patients/{own.pk}/consent", {**body, **extras})
    assert response.status_code == 201, response.content  # the extras were ignored, not refused
    with tenant_scope(tenant_a):
        [event] = ConsentEvent.objects.all()
        assert (event.tenant_id, event.patient_id) == (tenant_a.pk, own.pk)
        assert event.captured_by_id != charlie.pk
        assert str(event.pk) != extras["id"] and event.created_at.year >= 2025
    _no_privilege_changed(tenant_b)


def test_an_api_key_cannot_grant_itself_more(tenant_a, alice, api_a):
    """Privilege fields in a body never reach the key or the membership behind it."""
    api_a.post("/api/v1/patients", {"scopes": ["audit:read", "fhir:write"], "role": Role.OWNER, "is_staff": True})
    with tenant_scope(tenant_a):
        assert {tuple(sorted(k.scopes)) for k in ApiKey.objects.all()} == {tuple(sorted(_EVERYTHING))}
        assert set(Membership.objects.values_list("role", flat=True)) == {Role.OWNER}  # alice only


# --- size, depth and type of the body ------------------------------------------------------------------


def test_oversized_json_is_refused_cleanly(tenant_a, api_a):
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    body = json.dumps({"mrn": "BIG-1", "given_name": "x" * (limit + 1024), "family_name": "Big",
                       "birth_date": "1990-01-01"})
    response = api_a.client.post("/api/v1/patients", body, content_type="application/json")
    assert response.status_code in (400, 413), response.status_code
    assert response.json()["error"]["code"] in ("bad_request", "invalid", "parse_error", "request_too_large")
    with tenant_scope(tenant_a):
        assert not Patient.objects.exists()


@pytest.mark.parametrize("shape", ["list", "dict"])
def test_deeply_nested_json_is_a_400_not_a_recursion_error(tenant_a, api_a, shape):
    depth = 10_000
    body = "[" * depth + "]" * depth if shape == "list" else '{"a":' * depth + "1" + "}" * depth
    for url in ("/api/v1/patients", "/api/v1/patients/search", "/api/v1/appointments"):
        response = api_a.client.post(url, body, content_type="application/json")
        assert response.status_code == 400, (url, response.status_code)
        assert response.json()["error"]["code"] in ("parse_error", "invalid")
    with tenant_scope(tenant_a):
        assert not Patient.objects.exists()


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml",
    "application/json-patch+json",
])
def test_wrong_content_type_is_a_415(tenant_a, api_a, content_type):
    body = '{"mrn": "CT-1", "given_name": "A", "family_name": "B", "birth_date": "1990-01-01"}'
    response = api_a.client.post("/api/v1/patients", body, content_type=content_type)
    assert response.status_code == 415, (content_type, response.status_code)
    assert response.json()["error"]["code"] == "unsupported_media_type"
    with tenant_scope(tenant_a):
        assert not Patient.objects.exists()


def test_json_that_is_not_an_object_is_a_400(api_a):
    for body in ("[]", '"text"', "null", "1", "{", '{"mrn": NaN}'):
        response = api_a.client.post("/api/v1/patients", body, content_type="application/json")
        assert response.status_code == 400, (body, response.status_code)


# --- header spoofing --------------------------------------------------------------------------------------

_SPOOF_HEADERS = ["HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP", "HTTP_FORWARDED", "HTTP_CLIENT_IP",
                  "HTTP_TRUE_CLIENT_IP", "HTTP_CF_CONNECTING_IP"]


def _spoof(n: int) -> dict:
    address = f"198.51.100.{n % 250 + 1}"
    return {header: (f"for={address}" if header == "HTTP_FORWARDED" else address) for header in _SPOOF_HEADERS}


def _fresh_address() -> str:
    """A new client address: the per-address counters live in the shared Redis cache and outlive a test."""
    return f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def test_no_trusted_proxy_is_configured_in_tests():
    assert settings.AXES_IPWARE_META_PRECEDENCE_ORDER == ["REMOTE_ADDR"]


def test_forwarding_headers_do_not_reset_the_login_lockout(client, alice):
    for n in range(settings.AXES_FAILURE_LIMIT):
        client.post("/accounts/login/", {"email": alice.email, "password": "wrong-password-123"}, **_spoof(n))
    for n in range(3):  # a new "address" per try, and the right password: still locked
        response = client.post("/accounts/login/", {"email": alice.email, "password": PASSWORD},
                               **_spoof(100 + n))
        assert response.status_code == 429
    assert "_auth_user_id" not in client.session


@pytest.fixture
def link_token(tenant_a, alice, django_capture_on_commit_callbacks):
    patient = make_textable_patient(tenant=tenant_a, owner=alice, birth_date=datetime.date(1984, 3, 9),
                                    phone="+12025550178")
    with tenant_scope(tenant_a), django_capture_on_commit_callbacks(execute=True):
        messaging_services.message_send(tenant=tenant_a, actor=alice, patient=patient, body="Your forms are ready.")
    return token_of(sent_sms(to=patient.phone)[-1])


def test_forwarding_headers_do_not_reset_the_link_rate_limit(link_token, monkeypatch):
    monkeypatch.setattr(links, "IP_OPENS_PER_WINDOW", 3)
    attacker = Client(REMOTE_ADDR=_fresh_address())
    for n in range(3):
        assert attacker.get(f"/s/{_random_token()}", **_spoof(n)).status_code == 404
    # Over the limit: even a valid token gets the neutral page, whatever address the headers claim.
    response = attacker.get(f"/s/{link_token}", **_spoof(99))
    assert response.status_code == 404
    assert "ct_patient" not in response.cookies
    # Another real client is not affected, so the limit above is per address, not global.
    assert Client(REMOTE_ADDR=_fresh_address()).get(f"/s/{link_token}").status_code == 303


# --- CSRF ---------------------------------------------------------------------------------------------------

# POST rows reachable with a staff session or none; the provider webhooks are CSRF-exempt by design
# (signed by Twilio instead) and the EHR-only rows take API keys, which no browser holds.
CSRF_ROWS = sorted(name for name, row in ROWS.items()
                   if row.method == "POST" and row.permission != SIGNED and row.permission not in _API_ONLY)


def _post(client: Client, name: str, object_id: str | None, **extra):
    row = ROWS[name]
    data = dict(row.data)
    if row.obj and row.obj_field:
        data[row.obj_field] = object_id
    kwargs = {row.obj_kwarg: object_id} if (row.obj and row.obj_kwarg) else {}
    url = reverse(name, kwargs=kwargs)
    if url.startswith("/api/"):
        return client.post(url, json.dumps(data), content_type="application/json", **extra)
    return client.post(url, data, **extra)


@pytest.mark.parametrize("name", CSRF_ROWS)
def test_every_state_changing_form_refuses_a_post_without_the_csrf_token(world, objects, name):  # noqa: F811
    row = ROWS[name]
    owner = world["users_a"][Role.OWNER]
    client = Client(enforce_csrf_checks=True, REMOTE_ADDR=_fresh_address())
    login_verified(client, owner)
    client.get("/")  # the dashboard's forms set the CSRF cookie, as a browser would have it
    if name.startswith("patient-"):
        client.get("/s/")
    object_id = _object_id(row, objects, actor=owner, tenant_key="a") if row.obj else None

    refused = _post(client, name, object_id)
    assert refused.status_code == 403, (name, refused.status_code)

    # The same request with the token goes through: the 403 above was the CSRF check.
    token = client.cookies[settings.CSRF_COOKIE_NAME].value
    accepted = _post(client, name, object_id, HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == row.ok, (name, accepted.status_code)


def test_login_and_mfa_forms_need_the_csrf_token(alice):
    client = Client(enforce_csrf_checks=True)
    client.get("/accounts/login/")
    assert client.post("/accounts/login/", {"email": alice.email, "password": PASSWORD}).status_code == 403
    token = client.cookies[settings.CSRF_COOKIE_NAME].value
    step = client.post("/accounts/login/", {"email": alice.email, "password": PASSWORD}, HTTP_X_CSRFTOKEN=token)
    assert step.status_code == 302 and step["Location"].startswith("/accounts/mfa/")
    assert client.post("/accounts/mfa/", {"code": totp_code(alice)}).status_code == 403
    token = client.cookies[settings.CSRF_COOKIE_NAME].value
    assert client.post("/accounts/mfa/", {"code": totp_code(alice)}, HTTP_X_CSRFTOKEN=token).status_code == 302


# --- session fixation -----------------------------------------------------------------------------------------


def _planted_session() -> str:
    """A session key the attacker made and slipped into the victim's browser."""
    store = SessionStore()
    store["planted"] = True
    store.create()
    return store.session_key


def test_a_planted_session_key_is_never_promoted_at_login_mfa_or_logout(alice):
    cookie = settings.SESSION_COOKIE_NAME
    client = Client()
    planted = _planted_session()
    client.cookies[cookie] = planted
    client.get("/accounts/login/")

    client.post("/accounts/login/", {"email": alice.email, "password": PASSWORD})
    after_password = client.cookies[cookie].value
    assert after_password != planted
    assert not SessionStore().exists(planted), "the planted key must die, not be upgraded"

    assert client.post("/accounts/mfa/", {"code": totp_code(alice)}).status_code == 302
    after_mfa = client.cookies[cookie].value
    assert after_mfa not in (planted, after_password)
    assert not SessionStore().exists(after_password)

    # The attacker, holding the planted (or the half-signed-in) key, gets nothing.
    for key in (planted, after_password):
        attacker = Client()
        attacker.cookies[cookie] = key
        assert attacker.get("/")["Location"].startswith("/accounts/login/")

    assert client.get("/").status_code == 200
    client.post("/accounts/logout/")
    assert client.cookies[cookie].value != after_mfa
    assert not SessionStore().exists(after_mfa)
    stolen = Client()
    stolen.cookies[cookie] = after_mfa
    assert stolen.get("/")["Location"].startswith("/accounts/login/")


# --- link-token enumeration --------------------------------------------------------------------------------------

# Per-response values that differ for every request, link or no link.
_VOLATILE_HEADERS = {"X-Request-ID", "Date", "Set-Cookie", "Content-Security-Policy"}


def _random_token() -> str:
    return secrets.token_urlsafe(32)


def _normalised(response) -> tuple:
    body = re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", response.content)
    body = re.sub(rb'nonce="[^"]+"', b'nonce=""', body)
    headers = {k: v for k, v in response.headers.items() if k not in _VOLATILE_HEADERS}
    csp = re.sub(r"'nonce-[^']+'", "'nonce-'", response.get("Content-Security-Policy", ""))
    return response.status_code, body, tuple(sorted(headers.items())), csp, sorted(response.cookies)


def _open(token: str):
    # A fresh client and address per token: the per-address limit is not what is compared here.
    return Client(REMOTE_ADDR=_fresh_address()).get(f"/s/{token}")


def test_every_unusable_well_formed_token_gets_the_same_response(tenant_a, tenant_b, alice, charlie, link_token,
                                                                 django_capture_on_commit_callbacks):
    with tenant_scope(tenant_a):
        links.link_revoke(tenant=tenant_a, actor=alice, thread=link_for_token(link_token).thread)
    other = make_textable_patient(tenant=tenant_b, owner=charlie, phone="+12025550179")
    with tenant_scope(tenant_b), django_capture_on_commit_callbacks(execute=True):
        messaging_services.message_send(tenant=tenant_b, actor=charlie, patient=other, body="Hello from B.")
    token_b = token_of(sent_sms(to=other.phone)[-1])
    Tenant.objects.filter(pk=tenant_b.pk).update(is_active=False)  # a clinic that left
    candidates = {
        "random": _random_token(), "all-A": "A" * 43, "all-dash": "-" * 43, "revoked": link_token,
        "valid-with-last-char-changed": link_token[:-1] + ("A" if link_token[-1] != "A" else "B"),
        "valid-upper-cased": link_token.upper() if link_token.upper() != link_token else link_token.lower(),
        "other-clinic-inactive": token_b,
        **{f"random-{n}": _random_token() for n in range(5)},
    }
    seen = {name: _normalised(_open(token)) for name, token in candidates.items()}
    assert {s[0] for s in seen.values()} == {404}
    reference = seen["random"]
    different = [name for name, s in seen.items() if s != reference]
    assert different == [], different


def test_malformed_tokens_get_the_same_response_as_unknown_ones(link_token):
    reference = _normalised(_open(_random_token()))
    for token in (link_token[:-1], link_token + "A", link_token[:20], "a" * 44, "ct_" + _random_token(),
                  link_token[:-1] + "."):
        assert _normalised(_open(token)) == reference, token


def test_the_enumeration_check_can_tell_pages_apart(link_token):
    """_normalised is not blind: a usable link's answer differs from an unknown one's."""
    assert _normalised(_open(link_token)) != _normalised(_open(_random_token()))


def test_revoking_made_the_link_unusable(tenant_a, alice, link_token):
    with tenant_scope(tenant_a):
        links.link_revoke(tenant=tenant_a, actor=alice, thread=Thread.objects.get())
    assert _open(link_token).status_code == 404
