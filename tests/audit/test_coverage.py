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
    "dashboard": NOTHING,  # no PHI on it yet: when the inbox lands, it audits what it shows
    "accounts-users": NOTHING,  # staff names and roles, no PHI
    "accounts-membership-role": E.MEMBERSHIP_ROLE_CHANGED,
    "accounts-membership-deactivate": E.MEMBERSHIP_DEACTIVATED,
    "accounts-membership-reactivate": E.MEMBERSHIP_REACTIVATED,
    "accounts-invitation-revoke": E.INVITATION_REVOKED,
    "accounts-api-keys": NOTHING,  # key names and prefixes; creating one is audited
    "accounts-api-key-revoke": E.API_KEY_REVOKED,
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
}
for _name in ROWS:
    if _name.startswith("audit-report-") and _name != "audit-report-list":
        AUDITED[_name] = E.AUDIT_EXPORTED if _name.endswith(("-csv", "-pdf")) else E.AUDIT_REPORT_VIEWED


def _url_names() -> set[str]:
    return {name for name in get_resolver().reverse_dict if isinstance(name, str)}


def test_every_url_declares_its_audit():
    assert set(AUDITED) == _url_names()


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
