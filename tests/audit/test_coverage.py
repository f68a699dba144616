"""Every URL declares what it writes to the audit trail, and the ones that read PHI, change
anything or export do write it. A new URL without a row here fails the meta-test, so a page
that shows PHI cannot be added without deciding what it audits.
"""

import pytest
from django.urls import get_resolver

from accounts.permissions import Role
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType as E
from audit.models import AuditEvent
from tests.security.test_permission_matrix import ROWS, _object_id, _request, objects  # noqa: F401 - fixture

NOTHING = None  # the URL shows no PHI and changes nothing that needs a trail; reason in the comment

AUDITED: dict[str, E | None] = {
    "healthz": NOTHING,  # liveness text
    "accounts-login": NOTHING,  # the form; the POST is audited (tests/accounts/test_login.py)
    "accounts-invitation-accept": NOTHING,  # the form; accepting is audited (INVITATION_ACCEPTED)
    "accounts-logout": E.LOGOUT,
    "accounts-mfa": NOTHING,  # the form; verification is audited (MFA_*)
    "accounts-mfa-setup": NOTHING,  # the form; enrolment is audited (MFA_ENROLLED)
    "accounts-sessions": NOTHING,  # the user's own sessions
    "accounts-sessions-revoke-others": E.SESSION_REVOKED,
    "accounts-session-revoke": E.SESSION_REVOKED,
    "accounts-tenant-switch": E.TENANT_SWITCHED,
    "accounts-session-keepalive": NOTHING,  # restarts the idle clock; no data read or changed (sessions are audited at start/end)
    "accounts-settings": NOTHING,  # links to the settings the role may use
    "dashboard": NOTHING,  # no PHI on it yet: when the inbox lands, it audits what it shows
    "accounts-users": NOTHING,  # staff names and roles, no PHI
    "accounts-membership-role": E.MEMBERSHIP_ROLE_CHANGED,
    "accounts-membership-deactivate": E.MEMBERSHIP_DEACTIVATED,
    "accounts-membership-reactivate": E.MEMBERSHIP_REACTIVATED,
    "accounts-invitation-revoke": E.INVITATION_REVOKED,
    "accounts-api-keys": NOTHING,  # key names and prefixes; creating one is audited
    "accounts-api-key-revoke": E.API_KEY_REVOKED,
    "accounts-clinic-sms": E.TENANT_SETTINGS_CHANGED,  # {"fields": ["contact_phone"]} etc., one per setting
    "accounts-clinic": NOTHING,  # the form; saving is audited (TENANT_SETTINGS_CHANGED)
    "api-accounts-me": NOTHING,  # the caller's own clinic and permissions
    "audit-break-glass-start": E.BREAK_GLASS_STARTED,
    "audit-break-glass-acknowledge": E.BREAK_GLASS_REVIEWED,
    "audit-report-list": NOTHING,  # the list of reports
    "patients-patient-list": E.PATIENT_SEARCHED,  # names on the page: {"method": "list", "count": n}
    "patients-patient-search": E.PATIENT_SEARCHED,  # {"method": "mrn"|"phone"|"name_dob", "count": n}
    "patients-patient-create": NOTHING,  # the empty form; creating is audited (PATIENT_CREATED)
    "patients-patient-detail": E.PATIENT_VIEWED,
    "patients-patient-edit": E.PATIENT_VIEWED,  # the form shows the record; saving is PATIENT_CHANGED
    "patients-appointment-list": E.PATIENT_SEARCHED,  # names on the day: {"method": "appointments_day", ...}
    "patients-appointment-create": E.PATIENT_VIEWED,  # the form names the patient; booking: APPOINTMENT_CHANGED
    "patients-appointment-edit": E.PATIENT_VIEWED,  # patient name and clinical notes
    "patients-appointment-status": E.APPOINTMENT_CHANGED,
    "consent-patient": E.PATIENT_VIEWED,
    "consent-patient-record": E.CONSENT_CHANGED,
    "consent-patient-history-csv": E.PATIENT_EXPORTED,
    "consent-baa": NOTHING,  # the agreement text and who signed it; signing is audited (BAA_SIGNED)
    "consent-baa-sign": E.BAA_SIGNED,
    "messaging-inbox": E.PATIENT_SEARCHED,  # names on the page: {"path_name": "messaging-inbox", "count": n}
    "messaging-inbox-live": E.PATIENT_SEARCHED,  # only when the list changed (else 204, nothing shown): as messaging-inbox
    "messaging-unknown": E.PATIENT_SEARCHED,  # numbers and texts: {"path_name": "messaging-unknown", "count": n}
    "messaging-unknown-triage": E.INBOUND_TRIAGED,
    "messaging-thread": E.THREAD_OPENED,  # the bodies; also resets the unread count
    "messaging-thread-messages": E.THREAD_OPENED,  # only when new bodies are returned: {"method": "live_update", "count": n}
    "messaging-thread-reply": E.MESSAGE_SENT,  # plus LINK_CREATED for the link texted
    "messaging-thread-note": E.NOTE_ADDED,
    "messaging-thread-assign": E.THREAD_CHANGED,  # {"action": "assign", "assignee_id": ...}
    "messaging-thread-status": E.THREAD_CHANGED,  # {"action": "close" | "reopen"}
    "messaging-thread-link": E.LINK_CREATED,  # resend; revoke writes LINK_REVOKED per live link
    "messaging-compose": E.PATIENT_VIEWED,
    "messaging-compose-find": E.PATIENT_SEARCHED,  # {"method": "mrn"|"phone"|"name_dob", "count": n}  # the form names the patient; sending is MESSAGE_SENT
    "messaging-templates": NOTHING,  # saved reply texts, no patient data; changes: REPLY_TEMPLATE_CHANGED
    "messaging-template-delete": E.REPLY_TEMPLATE_CHANGED,
    "messaging-sms-outbox": E.PATIENT_SEARCHED,
    "api-messaging-send": E.MESSAGE_SENT,
    "api-schema": NOTHING,  # the OpenAPI document: no data
    "api-docs": NOTHING,  # Swagger UI: no data
    "api-patients": E.PATIENT_SEARCHED,  # {"path_name": "api-patients", "method": "list", "count": n}
    "api-patients-search": E.PATIENT_SEARCHED,  # {"method": "mrn"|"phone"|"name_dob", "count": n}
    "api-patient": E.PATIENT_VIEWED,
    "api-patient-consent": E.PATIENT_VIEWED,  # {"path_name": "api-patient-consent", "count": n}
    "api-appointments": E.PATIENT_SEARCHED,  # {"path_name": "api-appointments", "count": n}
    "api-appointment": E.PATIENT_VIEWED,  # {"path_name": "api-appointment"}
    "api-threads": E.PATIENT_SEARCHED,  # {"path_name": "api-threads", "count": n}
    "api-thread": E.THREAD_OPENED,
    "api-reminders": E.PATIENT_SEARCHED,  # {"path_name": "api-reminders", "count": n}
    # FHIR writes need an API key with fhir:write (no staff role has it, so this table's signed-in
    # owner is refused); the EHR services audit each write (PATIENT_CREATED/CHANGED,
    # APPOINTMENT_CHANGED, CONSENT_CHANGED, MESSAGE_SENT): tests/integrations/fhir.
    "outbound-endpoints": NOTHING,  # endpoint URLs and delivery counts, no PHI; adding one: TENANT_SETTINGS_CHANGED
    "outbound-endpoint-deactivate": E.TENANT_SETTINGS_CHANGED,  # {"fields": ["webhooks"], "action": "deactivate", ...}
    "hl7-message": NOTHING,  # API keys with hl7:write only; imports audited by integrations.ehr (tests/integrations/hl7)
    "fhir-bundle": NOTHING,
    "fhir-resource": NOTHING,
    "fhir-communication": E.PATIENT_EXPORTED,  # {"format": "fhir", "report": "communication", "row_count": n}
    "fhir-appointment-export": E.PATIENT_EXPORTED,  # {"format": "fhir", "report": "appointment", "row_count": n}
    "analytics-dashboard": NOTHING,  # counts, rates, minutes and room names only: no PHI
    "analytics-export-csv": NOTHING,  # the same aggregates as a CSV: no PHI, so not an audit export
    "broadcasts-list": NOTHING,  # dates, audience filters and counts; no patient named
    "broadcasts-create": NOTHING,  # the form; creating: BROADCAST_CREATED, PATIENT_SEARCHED (the audience)
    "broadcasts-detail": NOTHING,  # counts, reason codes and SMS status counts; no patient named
    "broadcasts-cancel": E.BROADCAST_CANCELLED,
    "reminders-policy": NOTHING,  # the settings form; saving is audited (TENANT_SETTINGS_CHANGED {"fields": [...]})
    "reminders-list": E.PATIENT_SEARCHED,  # names on the page: {"path_name": "reminders-list", "count": n}
    "messaging-message-release": E.THREAD_CHANGED,  # {"action": "release", "message_id": ...}
    # Twilio-signed only: a signed SMS is audited by the service (MESSAGE_RECEIVED, CONSENT_CHANGED), a
    # failed delivery writes SMS_FAILED, and a refused call writes WEBHOOK_REJECTED (tests/integrations).
    # The matrix request names no clinic, so its rejection lands in the platform chain: NOTHING here.
    "integrations-twilio-inbound": NOTHING,
    "integrations-twilio-status": NOTHING,  # demo only; numbers on the page: {"path_name": ..., "count": n}
}
# The patient's secure page: what each URL audits with a live patient session (actor_type
# "patient"); asserted in tests/messaging/test_patient_page.py, not here (needs a link + birth date).
PATIENT_AUDITED: dict[str, E | None] = {
    "patient-link": NOTHING,  # starts an unverified session; nothing shown
    "patient-home": E.THREAD_OPENED,  # the thread, once verified
    "patient-verify": E.LINK_VERIFIED,  # or LINK_FAILED / LINK_LOCKED
    "patient-code-send": E.LINK_CODE_SENT,
    "patient-code": E.LINK_VERIFIED,  # or LINK_FAILED / LINK_LOCKED
    "patient-reply": E.MESSAGE_RECEIVED,
    "patient-appointment": E.PATIENT_APPOINTMENT_ACTION,  # + MESSAGE_RECEIVED
    "patient-language": NOTHING,  # the page's language only
    "patient-signout": E.PATIENT_SIGNED_OUT,
}
for _name in ROWS:
    if _name.startswith("audit-report-") and _name != "audit-report-list":
        AUDITED[_name] = E.AUDIT_EXPORTED if _name.endswith(("-csv", "-pdf")) else E.AUDIT_REPORT_VIEWED


def _url_names() -> set[str]:
    return {name for name in get_resolver().reverse_dict if isinstance(name, str)}


def test_every_url_declares_its_audit():
    assert set(AUDITED) | set(PATIENT_AUDITED) == _url_names()
    assert not set(AUDITED) & set(PATIENT_AUDITED)


@pytest.mark.parametrize("name", sorted(n for n, e in AUDITED.items() if e is not None))
def test_the_request_writes_its_audit_event(client, login, world, objects, name):  # noqa: F811
    row, tenant = ROWS[name], world["tenant_a"]
    owner = world["users_a"][Role.OWNER]
    login(owner)
    object_id = _object_id(row, objects, actor=owner, tenant_key="a") if row.obj else None
    with tenant_scope(tenant):
        before = AuditEvent.objects.filter(event_type=AUDITED[name]).count()
    response = _request(client, name, object_id=object_id)
    assert response.status_code == row.ok, response.status_code
    with tenant_scope(tenant):
        assert AuditEvent.objects.filter(event_type=AUDITED[name]).count() > before
