"""The permission matrix (R21b): one table of every URL, run for every role, anonymous and
unverified visitors, and an owner of another clinic (R9, R21a).

ROWS is checked against the URLconf in both directions, and each row's permission against the
one the view itself declares, so neither the table nor the code can drift on its own.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse

from accounts import permissions as perms
from accounts import services
from accounts.models import ApiKey, Invitation, Membership, UserSession
from accounts.permissions import ROLE_PERMISSIONS, ApiScope, Role
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from audit.services import break_glass_start
from consent.documents import baa_document
from tests.factories import make_appointment, make_member, make_patient, membership_of

# Markers for rows that need no clinic permission.
PUBLIC = "public"  # anyone, signed in or not
SIGN_IN = "sign-in"  # steps of signing in and out: a signed-in (maybe unverified) user
SELF = "self"  # any verified user, about themself (accounts.decorators.verified_user_view)
ANY_MEMBER = perms.ANY_MEMBER  # any verified principal of the clinic
_NO_CLINIC_PERMISSION = {PUBLIC, SIGN_IN, SELF, ANY_MEMBER}

LOGIN = "/accounts/login/"
MFA = "/accounts/mfa/"
_PATIENT = "01a21200-0000-7000-8000-0000000000aa"  # the disclosures report needs a patient id


@dataclass(frozen=True)
class Row:
    method: str
    permission: str
    ok: int  # the status an allowed verified user gets
    ok_location: str | None = None  # where an allowed 302 must go
    obj: str | None = None  # the kind of object the request names (see _object_id)
    obj_kwarg: str | None = None  # URL kwarg carrying it; None: the POST field `obj_field`
    obj_field: str | None = None
    data: dict = field(default_factory=dict)
    cross_tenant: bool = True  # whether another clinic's object must be a 404


ROWS: dict[str, Row] = {
    "healthz": Row("GET", PUBLIC, 200),
    "accounts-login": Row("GET", PUBLIC, 302, "/"),
    "accounts-invitation-accept": Row("GET", PUBLIC, 200, obj="invite_token", obj_kwarg="token", cross_tenant=False),
    "accounts-logout": Row("POST", SIGN_IN, 302, LOGIN),
    "accounts-mfa": Row("GET", SIGN_IN, 302, "/"),
    "accounts-mfa-setup": Row("GET", SIGN_IN, 302, "/"),
    "accounts-sessions": Row("GET", SELF, 200),
    "accounts-sessions-revoke-others": Row("POST", SELF, 302, "/accounts/sessions/"),
    "accounts-session-revoke": Row("POST", SELF, 302, "/accounts/sessions/", obj="session", obj_kwarg="session_id"),
    "accounts-tenant-switch": Row("POST", SELF, 302, "/", obj="own_membership", obj_field="membership"),
    "dashboard": Row("GET", perms.DASHBOARD_VIEW, 200),
    "accounts-users": Row("GET", perms.TENANT_MANAGE_USERS, 200),
    "accounts-membership-role": Row("POST", perms.TENANT_MANAGE_USERS, 302, "/settings/users/",
                                    obj="membership", obj_kwarg="membership_id", data={"role": Role.CLINICIAN}),
    "accounts-membership-deactivate": Row("POST", perms.TENANT_MANAGE_USERS, 302, "/settings/users/",
                                          obj="membership", obj_kwarg="membership_id"),
    "accounts-membership-reactivate": Row("POST", perms.TENANT_MANAGE_USERS, 302, "/settings/users/",
                                          obj="membership", obj_kwarg="membership_id"),
    "accounts-invitation-revoke": Row("POST", perms.TENANT_MANAGE_USERS, 302, "/settings/users/",
                                      obj="invitation", obj_kwarg="invitation_id"),
    "accounts-api-keys": Row("GET", perms.TENANT_MANAGE_API_KEYS, 200),
    "accounts-api-key-revoke": Row("POST", perms.TENANT_MANAGE_API_KEYS, 302, "/settings/api-keys/",
                                   obj="api_key", obj_kwarg="api_key_id"),
    "accounts-clinic": Row("GET", perms.TENANT_MANAGE_SETTINGS, 200),
    "api-accounts-me": Row("GET", ANY_MEMBER, 200),
    "patients-patient-list": Row("GET", perms.PATIENTS_VIEW, 200),
    "patients-patient-search": Row("POST", perms.PATIENTS_VIEW, 200, data={"mrn": "NOT-ON-FILE"}),
    "patients-patient-create": Row("GET", perms.PATIENTS_CHANGE, 200),
    "patients-patient-detail": Row("GET", perms.PATIENTS_VIEW_PHI, 200, obj="patient", obj_kwarg="patient_id"),
    "patients-patient-edit": Row("GET", perms.PATIENTS_CHANGE, 200, obj="patient", obj_kwarg="patient_id"),
    "patients-appointment-list": Row("GET", perms.PATIENTS_VIEW, 200),
    "patients-appointment-create": Row("GET", perms.APPOINTMENTS_CHANGE, 200, obj="patient", obj_kwarg="patient_id"),
    "patients-appointment-edit": Row("GET", perms.APPOINTMENTS_CHANGE, 200, obj="appointment",
                                     obj_kwarg="appointment_id"),
    "patients-appointment-status": Row("POST", perms.APPOINTMENTS_CHANGE, 302, "/patients/appointments/",
                                       obj="appointment", obj_kwarg="appointment_id",
                                       data={"status": "confirmed", "next": "/patients/appointments/"}),
    "consent-patient": Row("GET", perms.PATIENTS_VIEW_PHI, 200, obj="patient", obj_kwarg="patient_id"),
    "consent-patient-record": Row("POST", perms.CONSENT_CHANGE, 302, "/", obj="patient", obj_kwarg="patient_id",
                                  data={"action": "grant", "method": "verbal", "disclosure_version": "sms-2026-01",
                                        "evidence": "Agreed at the front desk", "next": "/"}),
    "consent-patient-history-csv": Row("GET", perms.PATIENTS_VIEW_PHI, 200, obj="patient", obj_kwarg="patient_id"),
    "consent-baa": Row("GET", perms.TENANT_MANAGE_SETTINGS, 200),
    "consent-baa-sign": Row("POST", perms.TENANT_MANAGE_SETTINGS, 302, "/consent/baa/",
                            data={"signer_name": "Alice Owner", "signer_title": "Practice owner", "agree": "on",
                                  "document_sha256": baa_document().sha256}),
    "audit-break-glass-start": Row("POST", perms.BREAK_GLASS_START, 302, "/",
                                   data={"patient": _PATIENT, "reason": "emergency_care",
                                         "note": "Covering the ward tonight", "minutes": "60"}),
    "audit-break-glass-acknowledge": Row("POST", perms.BREAK_GLASS_REVIEW, 302, "/", obj="break_glass",
                                         obj_kwarg="grant_id"),
    # Audit reports (audit/urls.py): a page, a CSV and a PDF per report.
    "audit-report-list": Row("GET", perms.REPORTS_VIEW, 200),
    "audit-report-access": Row("GET", perms.REPORTS_VIEW, 200),
    "audit-report-access-csv": Row("GET", perms.REPORTS_VIEW, 200),
    "audit-report-access-pdf": Row("GET", perms.REPORTS_VIEW, 200),
    "audit-report-disclosures": Row("GET", perms.REPORTS_VIEW, 200, data={"patient": _PATIENT}),
    "audit-report-disclosures-csv": Row("GET", perms.REPORTS_VIEW, 200, data={"patient": _PATIENT}),
    "audit-report-disclosures-pdf": Row("GET", perms.REPORTS_VIEW, 200, data={"patient": _PATIENT}),
    "audit-report-failed-logins": Row("GET", perms.REPORTS_VIEW, 200),
    "audit-report-failed-logins-csv": Row("GET", perms.REPORTS_VIEW, 200),
    "audit-report-failed-logins-pdf": Row("GET", perms.REPORTS_VIEW, 200),
    "audit-report-after-hours": Row("GET", perms.REPORTS_VIEW, 200),
    "audit-report-after-hours-csv": Row("GET", perms.REPORTS_VIEW, 200),
    "audit-report-after-hours-pdf": Row("GET", perms.REPORTS_VIEW, 200),
    "audit-report-break-glass": Row("GET", perms.REPORTS_VIEW, 200),
    "audit-report-break-glass-csv": Row("GET", perms.REPORTS_VIEW, 200),
    "audit-report-break-glass-pdf": Row("GET", perms.REPORTS_VIEW, 200),
    "audit-report-exports": Row("GET", perms.REPORTS_VIEW, 200),
    "audit-report-exports-csv": Row("GET", perms.REPORTS_VIEW, 200),
    "audit-report-exports-pdf": Row("GET", perms.REPORTS_VIEW, 200),
}

ROLES = [Role.OWNER, Role.CLINICIAN, Role.STAFF, Role.AUDITOR]
OBJECT_ROWS = [name for name, row in ROWS.items() if row.obj and row.cross_tenant]
GATED_ROWS = [name for name, row in ROWS.items() if row.permission not in (PUBLIC, SIGN_IN)]


# --- the URLconf ------------------------------------------------------------------------------------


def _patterns(resolver=None, prefix=""):
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            yield from _patterns(entry, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry


def _url_names() -> set[str]:
    names = set()
    for route, entry in _patterns():
        assert entry.name, f"URL {route!r} has no name, so it cannot have a permission row"
        names.add(entry.name)
    return names


def test_every_url_has_a_row():
    missing = sorted(_url_names() - set(ROWS))
    assert missing == [], f"add these URL names to ROWS: {missing}"


def test_every_row_names_an_existing_url():
    stale = sorted(set(ROWS) - _url_names())
    assert stale == [], f"these ROWS name URLs that no longer exist: {stale}"


def _callback(name: str):
    for _, entry in _patterns():
        if entry.name == name:
            return entry.callback
    raise AssertionError(name)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_row_permission_matches_what_the_view_declares(name):
    row, callback = ROWS[name], _callback(name)
    view_class = getattr(callback, "view_class", None)
    if view_class is not None:  # DRF: TenantAPIView.permission / write_permission
        declared = view_class.permission if row.method in ("GET", "HEAD", "OPTIONS") else view_class.write_permission
        if row.permission == PUBLIC:
            assert view_class.public is True
        else:
            assert view_class.public is False
            assert declared == row.permission
        return
    declared = getattr(callback, "caretext_permission", None)
    if row.permission in (PUBLIC, SIGN_IN):
        assert declared is None, f"{name} is gated by {declared!r} but its row says {row.permission}"
    else:
        assert declared == row.permission, f"{name}: view declares {declared!r}, row says {row.permission!r}"
    if row.permission not in _NO_CLINIC_PERMISSION:
        assert row.permission in set().union(*ROLE_PERMISSIONS.values()), "unknown permission string"


# --- objects ----------------------------------------------------------------------------------------


@pytest.fixture
def objects(world):
    """A membership to act on, an open invitation and an API key in each clinic."""
    made = {}
    for key, owner in (("a", world["users_a"][Role.OWNER]), ("b", world["owner_b"])):
        tenant = world[f"tenant_{key}"]
        target = make_member(tenant=tenant, role=Role.STAFF, email=f"target@{tenant.slug}.test")
        with tenant_scope(tenant):
            invitation, token = services.invitation_create(tenant=tenant, actor=owner,
                                                           email=f"invitee@{tenant.slug}.test", role=Role.STAFF)
            api_key, _ = services.api_key_create(tenant=tenant, actor=owner, name="EHR", scopes=[ApiScope.AUDIT_READ])
            grant = break_glass_start(tenant=tenant, actor=owner, patient_id=uuid.uuid4(), reason="emergency_care",
                                      note="Unconscious patient in the ED")
        patient = make_patient(tenant=tenant, actor=owner)
        made[key] = {"membership": membership_of(target, tenant), "invitation": invitation, "api_key": api_key,
                     "invite_token": token, "break_glass": grant, "patient": patient,
                     "appointment": make_appointment(tenant=tenant, patient=patient)}
    return made


def _object_id(row: Row, objects, *, actor, tenant_key: str) -> str:
    """The id of ``row.obj`` as it belongs to ``actor`` (sessions, memberships) or the clinic."""
    if row.obj == "session":
        other = services.user_session_start(user=actor, session_key=uuid.uuid4().hex, ip=None, user_agent="other")
        return str(other.pk)
    if row.obj == "own_membership":
        return str(membership_of(actor, objects[tenant_key]["membership"].tenant).pk)
    value = objects[tenant_key][row.obj]
    return value if isinstance(value, str) else str(value.pk)


def _request(client: Client, name: str, *, object_id: str | None = None):
    row = ROWS[name]
    kwargs = {row.obj_kwarg: object_id} if (row.obj and row.obj_kwarg) else {}
    data = dict(row.data)
    if row.obj and row.obj_field:
        data[row.obj_field] = object_id
    url = reverse(name, kwargs=kwargs)
    if row.method == "GET":
        return client.get(url, data)
    return client.post(url, data)


def _denials(tenant, user) -> list[AuditEvent]:
    with tenant_scope(tenant):
        return list(AuditEvent.objects.filter(event_type=AuditEventType.PERMISSION_DENIED, actor_user=user))


def _is_api(name: str) -> bool:
    return reverse(name, kwargs=_dummy_kwargs(name)).startswith("/api/")


def _dummy_kwargs(name: str) -> dict:
    row = ROWS[name]
    if not (row.obj and row.obj_kwarg):
        return {}
    return {row.obj_kwarg: "x" if row.obj == "invite_token" else str(uuid.uuid4())}


# --- every role of clinic A ---------------------------------------------------------------------------


def _allowed(role: str, permission: str) -> bool:
    return permission in _NO_CLINIC_PERMISSION or permission in ROLE_PERMISSIONS[role]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", sorted(ROWS))
def test_role_matrix(client, login, world, objects, name, role):
    row, tenant_a = ROWS[name], world["tenant_a"]
    user = world["users_a"][role]
    login(user)
    object_id = _object_id(row, objects, actor=user, tenant_key="a") if row.obj else None
    response = _request(client, name, object_id=object_id)
    denials = _denials(tenant_a, user)
    if _allowed(role, row.permission):
        assert response.status_code == row.ok, (name, role, response.status_code)
        if row.ok_location is not None:
            assert response["Location"] == row.ok_location
        assert denials == []
    else:
        assert response.status_code == 403, (name, role, response.status_code)
        assert b"You can" in response.content or response.json()["error"]["code"] == "permission_denied"
        assert len(denials) == 1
        assert denials[0].tenant_id == tenant_a.pk
        assert denials[0].details == {"permission": row.permission, "path_name": name}


def test_matrix_covers_both_outcomes():
    """Guard against a table where every row is allowed for everyone (then nothing is tested)."""
    for role in ROLES:
        denied = [name for name, row in ROWS.items() if not _allowed(role, row.permission)]
        assert bool(denied) is (ROLE_PERMISSIONS[role] != ROLE_PERMISSIONS[Role.OWNER]), (role, denied)


# --- another clinic's objects are 404, exactly like ids that don't exist (R9) ----------------------------


def _normalise(content: bytes) -> bytes:
    # The CSRF token is masked afresh on every render; nothing else may differ.
    return re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b'name="csrfmiddlewaretoken"', content)


def _snapshot(objects, key: str, world) -> dict:
    with tenant_scope(world[f"tenant_{key}"]):
        o = objects[key]
        return {
            "membership": Membership.objects.values("role", "is_active").get(pk=o["membership"].pk),
            "invitation": Invitation.objects.values("revoked_at").get(pk=o["invitation"].pk),
            "api_key": ApiKey.objects.values("revoked_at").get(pk=o["api_key"].pk),
            "sessions": sorted(UserSession.objects.filter(ended_at__isnull=False).values_list("pk", flat=True)),
        }


@pytest.mark.parametrize("name", OBJECT_ROWS)
def test_owner_of_another_clinic_gets_404_for_this_clinics_objects(client, login, world, objects, name):
    row = ROWS[name]
    charlie, alice = world["owner_b"], world["users_a"][Role.OWNER]
    before = _snapshot(objects, "a", world)
    foreign_id = _object_id(row, objects, actor=alice, tenant_key="a")  # alice's / clinic A's object
    events_before = len(_events_of(world["tenant_a"]))
    login(charlie)

    foreign = _request(client, name, object_id=foreign_id)
    missing = _request(client, name, object_id=str(uuid.uuid4()))

    assert foreign.status_code == 404
    assert missing.status_code == 404
    assert _normalise(foreign.content) == _normalise(missing.content)
    assert _snapshot(objects, "a", world) == before
    assert len(_events_of(world["tenant_a"])) == events_before  # nothing charlie did lands in A's trail
    # And charlie's own clinic's object works, so the 404 above is about ownership.
    own = _request(client, name, object_id=_object_id(row, objects, actor=charlie, tenant_key="b"))
    assert own.status_code == row.ok


def _events_of(tenant) -> list[AuditEvent]:
    with tenant_scope(tenant):
        return list(AuditEvent.objects.all())


# --- anonymous and unverified visitors ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ROWS))
def test_anonymous_visitors(client, world, objects, name):
    row = ROWS[name]
    object_id = _object_id(row, objects, actor=world["users_a"][Role.OWNER], tenant_key="a") if row.obj else None
    response = _request(client, name, object_id=object_id)
    if row.permission == PUBLIC:
        assert response.status_code == 200
    elif _is_api(name):
        assert response.status_code in (401, 403)
        assert response.json()["error"]["code"] == "not_authenticated"
    else:
        assert response.status_code == 302
        assert response["Location"].startswith(LOGIN)
    # Nothing was done on the visitor's behalf.
    assert _denials(world["tenant_a"], None) == []


@pytest.mark.parametrize("name", GATED_ROWS)
def test_signed_in_but_unverified_users_are_sent_to_mfa(client, world, objects, name):
    row = ROWS[name]
    alice = world["users_a"][Role.OWNER]
    client.force_login(alice, backend="django.contrib.auth.backends.ModelBackend")
    object_id = _object_id(row, objects, actor=alice, tenant_key="a") if row.obj else None
    before = _snapshot(objects, "a", world)
    response = _request(client, name, object_id=object_id)
    if _is_api(name):
        assert response.status_code in (401, 403)
    else:
        assert response.status_code == 302
        assert response["Location"] == MFA
    assert _snapshot(objects, "a", world) == before


def test_resolver_sees_the_view_the_table_describes():
    """reverse() and resolve() agree for every row (the kwargs in the table are the URL's)."""
    for name in ROWS:
        url = reverse(name, kwargs=_dummy_kwargs(name))
        assert resolve(url).url_name == name

