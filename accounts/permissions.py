"""The one permission map: roles and API-key scopes to permission strings.

Every page and API declares the permission string it needs; nothing checks a role name.
Auditors read the audit trail and reports, never message bodies or clinical PHI.
"""

from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    CLINICIAN = "clinician", "Clinician"
    STAFF = "staff", "Front desk"
    AUDITOR = "auditor", "Auditor"


# Permission strings, "<area>.<verb>". Add new ones here first.
ANY_MEMBER = "any.member"  # any authenticated principal of the tenant (staff or API key)
DASHBOARD_VIEW = "dashboard.view"
PATIENTS_VIEW = "patients.view"  # names and appointments lists
PATIENTS_VIEW_PHI = "patients.view_phi"  # demographics, clinical detail
PATIENTS_CHANGE = "patients.change"
APPOINTMENTS_CHANGE = "appointments.change"
CONSENT_CHANGE = "consent.change"
MESSAGES_VIEW = "messages.view"  # message bodies
MESSAGES_SEND = "messages.send"
RESULTS_SEND = "results.send"
AUDIT_READ = "audit.read"
BREAK_GLASS_START = "audit.break_glass"  # open a patient outside one's normal scope, with a reason
BREAK_GLASS_REVIEW = "audit.review_break_glass"  # owners see and acknowledge emergency access
REPORTS_VIEW = "reports.view"
TENANT_MANAGE_USERS = "tenant.manage_users"
TENANT_MANAGE_SETTINGS = "tenant.manage_settings"
TENANT_MANAGE_API_KEYS = "tenant.manage_api_keys"
REMINDERS_MANAGE = "reminders.manage"  # the clinic's reminder policy and templates
BROADCASTS_SEND = "broadcasts.send"  # one message to many patients
ANALYTICS_VIEW = "analytics.view"  # reminder and no-show figures (aggregates, no PHI)
INTEGRATIONS_FHIR_WRITE = "integrations.fhir_write"
INTEGRATIONS_HL7_WRITE = "integrations.hl7_write"

_CARE = {
    DASHBOARD_VIEW, PATIENTS_VIEW, PATIENTS_VIEW_PHI, PATIENTS_CHANGE, APPOINTMENTS_CHANGE,
    CONSENT_CHANGE, MESSAGES_VIEW, MESSAGES_SEND,
}

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    Role.OWNER: frozenset(
        _CARE | {RESULTS_SEND, AUDIT_READ, REPORTS_VIEW, TENANT_MANAGE_USERS,
                 TENANT_MANAGE_SETTINGS, TENANT_MANAGE_API_KEYS, BREAK_GLASS_START, BREAK_GLASS_REVIEW,
                 REMINDERS_MANAGE, BROADCASTS_SEND, ANALYTICS_VIEW}
    ),
    Role.CLINICIAN: frozenset(_CARE | {RESULTS_SEND, BREAK_GLASS_START}),
    Role.STAFF: frozenset(_CARE),
    Role.AUDITOR: frozenset({DASHBOARD_VIEW, AUDIT_READ, REPORTS_VIEW}),
}


class ApiScope(models.TextChoices):
    PATIENTS_READ = "patients:read", "Read patients"
    PATIENTS_WRITE = "patients:write", "Create and change patients"
    APPOINTMENTS_WRITE = "appointments:write", "Create and change appointments"
    MESSAGES_READ = "messages:read", "Read conversations and message bodies"
    MESSAGES_SEND = "messages:send", "Send secure messages"
    FHIR_WRITE = "fhir:write", "Push FHIR R4 resources"
    HL7_WRITE = "hl7:write", "Push HL7 v2 messages"
    AUDIT_READ = "audit:read", "Read the audit trail"


SCOPE_PERMISSIONS: dict[str, frozenset[str]] = {
    ApiScope.PATIENTS_READ: frozenset({PATIENTS_VIEW, PATIENTS_VIEW_PHI}),
    ApiScope.PATIENTS_WRITE: frozenset({PATIENTS_VIEW, PATIENTS_CHANGE, CONSENT_CHANGE}),
    ApiScope.APPOINTMENTS_WRITE: frozenset({PATIENTS_VIEW, APPOINTMENTS_CHANGE}),
    ApiScope.MESSAGES_READ: frozenset({MESSAGES_VIEW}),
    ApiScope.MESSAGES_SEND: frozenset({MESSAGES_SEND}),
    ApiScope.FHIR_WRITE: frozenset({INTEGRATIONS_FHIR_WRITE}),
    ApiScope.HL7_WRITE: frozenset({INTEGRATIONS_HL7_WRITE}),
    ApiScope.AUDIT_READ: frozenset({AUDIT_READ}),
}


def permissions_for_role(role: str) -> frozenset[str]:
    return ROLE_PERMISSIONS.get(role, frozenset())


def permissions_for_scopes(scopes: list[str]) -> frozenset[str]:
    result: set[str] = set()
    for item in scopes:
        result |= SCOPE_PERMISSIONS.get(item, frozenset())
    return frozenset(result)
