"""Security headers on every page, reached over HTTPS under production's HSTS setting.

Every URL of the permission matrix is requested as a user allowed to use it (with valid ids of
the clinic's own objects), the patient pages (/s/) both without and with a verified patient
session, and the not-found pages. Each response must carry:

- ``Strict-Transport-Security`` (production sends it over HTTPS only; SECURE_HSTS_SECONDS is
  31536000 there, tests/security/test_deploy.py proves it),
- a Content-Security-Policy that allows no inline or eval'd script and no framing (asserted by
  property, not as a string: the policy may carry a per-request nonce),
- ``X-Content-Type-Options: nosniff``, a same-origin (or stricter) ``Referrer-Policy`` and
  ``X-Frame-Options: DENY``,
- ``Cache-Control: no-store`` on every signed-in response and every patient page.
"""

from __future__ import annotations

import datetime
import secrets

import pytest
from django.test import Client
from django.urls import reverse

from accounts.permissions import Role
from accounts.tenancy import tenant_scope
from messaging import services as messaging_services
from tests.factories import make_textable_patient
from tests.messaging.conftest import sent_sms, token_of
from tests.security.test_permission_matrix import (  # noqa: F401
    _API_ONLY,
    PUBLIC,
    ROWS,
    SIGNED,
    _object_id,
    objects,
)

HSTS_SECONDS = 31536000
STRICT_REFERRER = {"same-origin", "no-referrer", "strict-origin"}


def _kwargs(name: str, object_id: str | None) -> dict:
    row = ROWS[name]
    return {row.obj_kwarg: object_id} if (row.obj and row.obj_kwarg) else {}


def _is_patient_page(name: str) -> bool:
    return name.startswith("patient-")


# Rows a staff owner can be allowed on: not the provider-signed webhooks, not the permissions
# only EHR API keys hold. The patient pages are public (asserted without a staff login too).
STAFF_ROWS = sorted(name for name, row in ROWS.items() if row.permission != SIGNED and row.permission not in _API_ONLY)
PATIENT_ROWS = sorted(name for name in ROWS if _is_patient_page(name))


@pytest.fixture(autouse=True)
def _production_https(settings):
    settings.SECURE_HSTS_SECONDS = HSTS_SECONDS
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_SSL_REDIRECT = True  # as in production; every request below is HTTPS anyway


def _fresh_address() -> str:
    """A new client address: the secure-link per-address counters live in the shared Redis cache."""
    return f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def _https(client: Client, name: str, object_id: str | None):
    row = ROWS[name]
    data = dict(row.data)
    if row.obj and row.obj_field:
        data[row.obj_field] = object_id
    url = reverse(name, kwargs=_kwargs(name, object_id))
    if row.method == "GET":
        return client.get(url, data, secure=True)
    if url.startswith("/api/"):
        return client.post(url, data, content_type="application/json", secure=True)
    return client.post(url, data, secure=True)


def csp_directives(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


def assert_secure_headers(response, *, private: bool, where: str) -> None:
    hsts = response.get("Strict-Transport-Security", "")
    assert f"max-age={HSTS_SECONDS}" in hsts and "includeSubDomains" in hsts, (where, hsts)
    csp = csp_directives(response.get("Content-Security-Policy", ""))
    assert csp.get("default-src") == ["'self'"], (where, csp)
    assert csp.get("frame-ancestors") == ["'none'"], (where, csp)
    assert csp.get("object-src") == ["'none'"], (where, csp)
    script = csp.get("script-src", csp["default-src"])
    assert "'self'" in script or any(s.startswith("'nonce-") for s in script), (where, script)
    assert not {"'unsafe-inline'", "'unsafe-eval'", "*", "data:", "http:", "https:"} & set(script), (where, script)
    assert response.get("X-Content-Type-Options") == "nosniff", where
    assert response.get("Referrer-Policy") in STRICT_REFERRER, (where, response.get("Referrer-Policy"))
    assert response.get("X-Frame-Options") == "DENY", where
    if private:
        assert "no-store" in response.get("Cache-Control", ""), (where, response.get("Cache-Control"))


def test_the_csp_check_rejects_weak_policies():
    """assert_secure_headers is not vacuous: each weakening of the policy is caught."""

    class Fake(dict):
        def get(self, key, default=None):
            return super().get(key, default)

    good = {"Strict-Transport-Security": f"max-age={HSTS_SECONDS}; includeSubDomains",
            "Content-Security-Policy": "default-src 'self'; script-src 'self' 'nonce-abc'; object-src 'none'; "
                                       "frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY",
            "Cache-Control": "no-store"}
    assert_secure_headers(Fake(good), private=True, where="good")
    weakened = [
        {"Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; object-src 'none'; "
                                    "frame-ancestors 'none'"},
        {"Content-Security-Policy": "default-src 'self'; object-src 'none'"},
        {"Content-Security-Policy": "default-src 'self'; script-src 'self'; frame-ancestors 'none'"},
        {"Strict-Transport-Security": ""},
        {"Cache-Control": "private"},
        {"Referrer-Policy": "unsafe-url"},
        {"X-Content-Type-Options": ""},
    ]
    for change in weakened:
        with pytest.raises(AssertionError):
            assert_secure_headers(Fake({**good, **change}), private=True, where=str(change))


@pytest.mark.parametrize("name", STAFF_ROWS)
def test_every_page_carries_the_security_headers(client, login, world, objects, name):  # noqa: F811
    row = ROWS[name]
    owner = world["users_a"][Role.OWNER]
    login(owner)
    object_id = _object_id(row, objects, actor=owner, tenant_key="a") if row.obj else None
    response = _https(client, name, object_id)
    assert response.status_code == row.ok, (name, response.status_code)
    # Signed in (staff) or a patient page: nothing may be cached. Public pages (the API schema
    # and docs, the health check) hold nothing private; logging out answers a signed-out visitor
    # with a bare redirect to the login page.
    private = _is_patient_page(name) or (row.permission != PUBLIC and name != "accounts-logout")
    assert_secure_headers(response, private=private, where=name)


@pytest.mark.parametrize("name", PATIENT_ROWS)
def test_patient_pages_without_a_session_carry_the_headers(world, objects, name):  # noqa: F811
    row = ROWS[name]
    object_id = _object_id(row, objects, actor=world["users_a"][Role.OWNER], tenant_key="a") if row.obj else None
    response = _https(Client(REMOTE_ADDR=_fresh_address()), name, object_id)
    assert response.status_code == row.anonymous
    assert_secure_headers(response, private=True, where=name)


def test_patient_pages_with_a_verified_session_carry_the_headers(tenant_a, alice, django_capture_on_commit_callbacks):
    birth = datetime.date(1984, 3, 9)
    patient = make_textable_patient(tenant=tenant_a, owner=alice, birth_date=birth, phone="+12025550177")
    with tenant_scope(tenant_a), django_capture_on_commit_callbacks(execute=True):
        messaging_services.message_send(tenant=tenant_a, actor=alice, patient=patient, body="Your forms are ready.")
    token = token_of(sent_sms(to=patient.phone)[-1])
    client = Client(REMOTE_ADDR=_fresh_address())
    seen = []

    def step(method: str, url: str, data=None, expect: int = 200):
        response = getattr(client, method)(url, data or {}, secure=True)
        assert response.status_code == expect, (url, response.status_code)
        seen.append(url)
        assert_secure_headers(response, private=True, where=f"{method} {url}")
        return response

    step("get", f"/s/{token}", expect=303)
    step("get", "/s/")
    step("post", "/s/verify", {"year": str(birth.year), "month": str(birth.month), "day": str(birth.day)}, expect=303)
    home = step("get", "/s/")
    assert b"Your forms are ready." in home.content  # really signed in: the thread is on the page
    step("post", "/s/reply", {"body": "Thanks", "nonce": "n" * 20}, expect=303)
    step("post", "/s/reply", {"body": ""}, expect=400)  # the error page too
    step("post", "/s/language", {"lang": "es"}, expect=303)
    step("post", "/s/signout", expect=303)
    step("get", "/s/?signed_out=1")
    assert len(seen) == 9


@pytest.mark.parametrize("signed_in", [False, True])
def test_not_found_pages_carry_the_headers(client, login, alice, signed_in):
    if signed_in:
        login(alice)
    response = client.get("/no-such-page/", secure=True)
    assert response.status_code == 404
    assert_secure_headers(response, private=signed_in, where="404")
