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
from outbound.services import endpoint_create
from tests.broadcasts.helpers import make_broadcast
from tests.factories import make_appointment, make_member, make_patient, membership_of, sign_baa

# Markers for rows that need no clinic permission.
PUBLIC = "public"  # anyone, signed in or not
SIGN_IN = "sign-in"  # steps of signing in and out: a signed-in (maybe unverified) user
SELF = "self"  # any verified user, about themself (accounts.decorators.verified_user_view)
ANY_MEMBER = perms.ANY_MEMBER  # any verified principal of the clinic
SIGNED = "provider-signed"  # provider webhooks: only a valid provider signature gets in (403 for everyone else)
_NO_CLINIC_PERMISSION = {PUBLIC, SIGN_IN, SELF, ANY_MEMBER, SIGNED}

LOGIN = "/accounts/login/"
MFA = "/accounts/mfa/"
_PATIENT = "01a21200-0000-7000-8000-0000000000aa"  # the disclosures report needs a patient id
_UNKNOWN_LINK = "A" * 43  # a well-formed secure-link token that matches no link


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
    anonymous: int = 200  # what a signed-out visitor gets on a PUBLIC row


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
    "accounts-session-keepalive": Row("POST", SELF, 204),
    "accounts-settings": Row("GET", perms.DASHBOARD_VIEW, 200),
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
    "accounts-clinic-sms": Row("POST", perms.TENANT_MANAGE_SETTINGS, 302, "/settings/clinic/",
                               data={"contact_phone": "+12025550100", "notice_per_day": "1", "notice_per_week": "2",
                                     "broadcast_rate_per_minute": "30"}),
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
    # Secure messaging, staff side (messaging/urls.py, messaging/views_staff.py).
    "messaging-inbox": Row("GET", perms.MESSAGES_VIEW, 200),
    "messaging-inbox-live": Row("GET", perms.MESSAGES_VIEW, 200),  # no ?v=: the list is always re-sent
    "messaging-unknown": Row("GET", perms.MESSAGES_VIEW, 200),
    "messaging-unknown-triage": Row("POST", perms.MESSAGES_SEND, 302, "/inbox/unknown/", obj="inbound",
                                    obj_kwarg="inbound_id"),
    "messaging-thread": Row("GET", perms.MESSAGES_VIEW, 200, obj="thread", obj_kwarg="thread_id"),
    "messaging-thread-messages": Row("GET", perms.MESSAGES_VIEW, 200, obj="thread", obj_kwarg="thread_id"),
    "messaging-thread-reply": Row("POST", perms.MESSAGES_SEND, 302, obj="thread", obj_kwarg="thread_id",
                                  data={"body": "We got your message and will call you today."}),
    "messaging-thread-note": Row("POST", perms.MESSAGES_SEND, 302, obj="thread", obj_kwarg="thread_id",
                                 data={"body": "Left a voicemail."}),
    "messaging-thread-assign": Row("POST", perms.MESSAGES_SEND, 302, obj="thread", obj_kwarg="thread_id",
                                   data={"assignee": ""}),
    "messaging-thread-status": Row("POST", perms.MESSAGES_SEND, 302, obj="thread", obj_kwarg="thread_id",
                                   data={"status": "closed"}),
    "messaging-thread-link": Row("POST", perms.MESSAGES_SEND, 302, obj="thread", obj_kwarg="thread_id",
                                 data={"action": "resend"}),
    "messaging-compose": Row("GET", perms.MESSAGES_SEND, 200, obj="patient", obj_kwarg="patient_id"),
    "messaging-compose-find": Row("POST", perms.MESSAGES_SEND, 200, data={"mrn": "NOT-ON-FILE"}),
    "messaging-templates": Row("GET", perms.MESSAGES_SEND, 200),
    "messaging-template-delete": Row("POST", perms.MESSAGES_SEND, 302, "/inbox/templates/", obj="reply_template",
                                     obj_kwarg="template_id"),
    "messaging-sms-outbox": Row("GET", perms.MESSAGES_VIEW, 200),
    "messaging-message-release": Row("POST", perms.RESULTS_SEND, 302, obj="held_message", obj_kwarg="message_id"),
    "api-schema": Row("GET", PUBLIC, 200),
    "api-docs": Row("GET", PUBLIC, 200),
    "api-patients": Row("GET", perms.PATIENTS_VIEW_PHI, 200),
    "api-patients-search": Row("POST", perms.PATIENTS_VIEW_PHI, 200, data={"mrn": "NOT-ON-FILE"}),
    "api-patient": Row("GET", perms.PATIENTS_VIEW_PHI, 200, obj="patient", obj_kwarg="patient_id"),
    "api-patient-consent": Row("GET", perms.PATIENTS_VIEW_PHI, 200, obj="patient", obj_kwarg="patient_id"),
    "api-appointments": Row("GET", perms.PATIENTS_VIEW, 200),
    "api-appointment": Row("GET", perms.PATIENTS_VIEW, 200, obj="appointment", obj_kwarg="appointment_id"),
    "api-threads": Row("GET", perms.MESSAGES_VIEW, 200),
    "api-thread": Row("GET", perms.MESSAGES_VIEW, 200, obj="thread", obj_kwarg="thread_id"),
    "api-reminders": Row("GET", perms.PATIENTS_VIEW, 200),
    "api-messaging-send": Row("POST", perms.MESSAGES_SEND, 201, obj="texter", obj_kwarg="patient_id",
                              data={"body": "Your forms are ready to sign."}),
    "analytics-dashboard": Row("GET", perms.ANALYTICS_VIEW, 200),
    "analytics-export-csv": Row("GET", perms.ANALYTICS_VIEW, 200),
    "broadcasts-list": Row("GET", perms.BROADCASTS_SEND, 200),
    "broadcasts-create": Row("GET", perms.BROADCASTS_SEND, 200),
    "broadcasts-detail": Row("GET", perms.BROADCASTS_SEND, 200, obj="broadcast", obj_kwarg="broadcast_id"),
    "broadcasts-cancel": Row("POST", perms.BROADCASTS_SEND, 302, obj="broadcast", obj_kwarg="broadcast_id"),
    "reminders-policy": Row("GET", perms.REMINDERS_MANAGE, 200),
    "reminders-list": Row("GET", perms.MESSAGES_VIEW, 200),
    # The patient's secure page: public by design; the credential is the link token, then the
    # ct_patient cookie, never a staff login. Without that cookie every page answers "your session
    # has ended" (200) to anyone; an unknown token gets the neutral invalid-link page (404).
    # Steps with a patient session: tests/messaging/test_patient_page.py.
    "patient-link": Row("GET", PUBLIC, 404, obj="link_token", obj_kwarg="token", cross_tenant=False, anonymous=404),
    "patient-home": Row("GET", PUBLIC, 200),
    "patient-verify": Row("POST", PUBLIC, 200, data={"year": "1984", "month": "3", "day": "9"}),
    "patient-code-send": Row("POST", PUBLIC, 200),
    "patient-code": Row("POST", PUBLIC, 200, data={"code": "123456"}),
    "patient-reply": Row("POST", PUBLIC, 200, data={"body": "Hello"}),
    "patient-appointment": Row("POST", PUBLIC, 200, data={"action": "confirm"}),
    "patient-language": Row("POST", PUBLIC, 200, data={"lang": "es"}),
    "patient-signout": Row("POST", PUBLIC, 200),
    # FHIR R4 (integrations/fhir): writes need the fhir:write key scope, which no staff role has.
    "fhir-bundle": Row("POST", perms.INTEGRATIONS_FHIR_WRITE, 200,
                       data={"resourceType": "Bundle", "type": "batch", "entry": []}, cross_tenant=False),
    "fhir-resource": Row("POST", perms.INTEGRATIONS_FHIR_WRITE, 201, obj="fhir_type", obj_kwarg="resource_type",
                         data={"resourceType": "Patient"}, cross_tenant=False),
    "fhir-communication": Row("GET", perms.MESSAGES_VIEW, 200, obj="patient", obj_field="patient"),
    "fhir-appointment-export": Row("GET", perms.PATIENTS_VIEW_PHI, 200, obj="patient", obj_field="patient"),
    # HL7 v2 (API keys with hl7:write only; no role has it). The matrix posts JSON: an allowed caller gets 415.
    "hl7-message": Row("POST", perms.INTEGRATIONS_HL7_WRITE, 415),
    "outbound-endpoints": Row("GET", perms.TENANT_MANAGE_SETTINGS, 200),
    "outbound-endpoint-deactivate": Row("POST", perms.TENANT_MANAGE_SETTINGS, 302, "/settings/webhooks/",
                                        obj="webhook_endpoint", obj_kwarg="endpoint_id"),
    # Twilio webhooks: signed by Twilio or refused (tests/integrations/test_webhooks.py).
    "integrations-twilio-inbound": Row("POST", SIGNED, 403),
    "integrations-twilio-status": Row("POST", SIGNED, 403),
}

ROLES = [Role.OWNER, Role.CLINICIAN, Role.STAFF, Role.AUDITOR]
OBJECT_ROWS = [name for name, row in ROWS.items() if row.obj and row.cross_tenant]
GATED_ROWS = [name for name, row in ROWS.items() if row.permission not in (PUBLIC, SIGN_IN, SIGNED)]


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
    if row.permission in (PUBLIC, SIGN_IN, SIGNED):
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
            webhook_endpoint, _ = endpoint_create(tenant=tenant, actor=owner, url="https://ehr.example.com/caretext",
                                                  events=["message.received"])
        patient = make_patient(tenant=tenant, actor=owner)
        made[key] = {"membership": membership_of(target, tenant), "invitation": invitation, "api_key": api_key,
                     "invite_token": token, "break_glass": grant, "patient": patient,
                     "appointment": make_appointment(tenant=tenant, patient=patient),
                     "owner": owner, "link_token": _UNKNOWN_LINK, "fhir_type": "Patient", "webhook_endpoint": webhook_endpoint, "broadcast": make_broadcast(tenant=tenant, owner=owner), **_messaging_objects(tenant, owner, target)}
    return made


def _messaging_objects(tenant, owner, target) -> dict:
    """A conversation the patient started (assigned to ``target``, so unassigning changes it),
    a saved reply and a text from an unknown number. No BAA yet: the "consent-baa-sign" row
    must find none; rows that send sign it in ``_object_id``."""
    from datetime import timedelta

    from django.utils import timezone

    from consent.services import consent_grant
    from messaging.inbound import inbound_sms_receive
    from messaging.models import Message, Thread
    from messaging.services import reply_template_create, thread_assign

    texter = make_patient(tenant=tenant, actor=owner, phone="+12025550160")
    with tenant_scope(tenant):
        consent_grant(tenant=tenant, actor=owner, patient=texter, method="verbal", disclosure_version="sms-2026-01",
                      evidence="Agreed at the front desk")
        inbound = inbound_sms_receive(tenant=tenant, provider_id=f"SM{tenant.slug}-1", from_number=texter.phone,
                                      body="Can I move my visit?")
        thread = thread_assign(tenant=tenant, actor=owner, thread=Thread.objects.get(pk=inbound.message.thread_id),
                               assignee=target)
        unknown = inbound_sms_receive(tenant=tenant, provider_id=f"SM{tenant.slug}-2", from_number="+12025550161",
                                      body="Who is this?")
        template = reply_template_create(tenant=tenant, actor=owner, name="Call us", body="Hi {first_name}, call us.")
        held = Message.objects.create(tenant=tenant, thread=thread, direction="outbound", kind="result_notice",
                                      body="Your results are ready.", release_at=timezone.now() + timedelta(hours=1))
    return {"thread": thread, "inbound": unknown, "reply_template": template, "texter": texter, "held_message": held}


def _object_id(row: Row, objects, *, actor, tenant_key: str) -> str:
    """The id of ``row.obj`` as it belongs to ``actor`` (sessions, memberships) or the clinic."""
    if row.obj == "session":
        other = services.user_session_start(user=actor, session_key=uuid.uuid4().hex, ip=None, user_agent="other")
        return str(other.pk)
    if row.obj == "own_membership":
        return str(membership_of(actor, objects[tenant_key]["membership"].tenant).pk)
    if row.obj in ("thread", "texter"):  # replies and new links are texted: the clinic needs its BAA
        sign_baa(tenant=objects[tenant_key]["membership"].tenant, owner=objects[tenant_key]["owner"])
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
    if url.startswith("/api/"):  # the API speaks JSON
        return client.post(url, data, content_type="application/json")
    return client.post(url, data)


def _denials(tenant, user) -> list[AuditEvent]:
    with tenant_scope(tenant):
        return list(AuditEvent.objects.filter(event_type=AuditEventType.PERMISSION_DENIED, actor_user=user))


# FHIR endpoints answer every error as an OperationOutcome; its IssueType maps to our codes.
_FHIR_ISSUE_CODES = {"forbidden": "permission_denied", "login": "not_authenticated"}


def _api_error_code(response) -> str:
    body = response.json()
    if body.get("resourceType") == "OperationOutcome":
        return _FHIR_ISSUE_CODES.get(body["issue"][0]["code"], body["issue"][0]["code"])
    return body["error"]["code"]


def _is_api(name: str) -> bool:
    return reverse(name, kwargs=_dummy_kwargs(name)).startswith("/api/")


def _dummy_kwargs(name: str) -> dict:
    row = ROWS[name]
    if not (row.obj and row.obj_kwarg):
        return {}
    fixed = {"invite_token": "x", "link_token": _UNKNOWN_LINK, "fhir_type": "Patient"}
    return {row.obj_kwarg: fixed.get(row.obj, str(uuid.uuid4()))}


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
        assert b"You can" in response.content or _api_error_code(response) == "permission_denied"
        assert len(denials) == 1
        assert denials[0].tenant_id == tenant_a.pk
        assert denials[0].details == {"permission": row.permission, "path_name": name}


# Permissions only API keys hold (EHR feeds): every staff role, owners included, is refused them.
_API_ONLY = {perms.INTEGRATIONS_FHIR_WRITE, perms.INTEGRATIONS_HL7_WRITE}


def test_matrix_covers_both_outcomes():
    """Guard against a table where every row is allowed for everyone (then nothing is tested)."""
    for role in ROLES:
        denied = [name for name, row in ROWS.items()
                  if not _allowed(role, row.permission) and row.permission not in _API_ONLY]
        assert bool(denied) is (ROLE_PERMISSIONS[role] != ROLE_PERMISSIONS[Role.OWNER]), (role, denied)


# --- another clinic's objects are 404, exactly like ids that don't exist (R9) ----------------------------


def _normalise(content: bytes) -> bytes:
    # The CSRF token is masked afresh on every render, and the CSP nonce is new per request;
    # nothing else may differ.
    content = re.sub(rb' nonce="[^"]+"', b' nonce=""', content)
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
        assert response.status_code == row.anonymous
    elif row.permission == SIGNED:
        assert response.status_code == 403
    elif _is_api(name):
        assert response.status_code in (401, 403)
        assert _api_error_code(response) == "not_authenticated"
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

