"""Stable audit event types. Numbers never change meaning; add, never renumber.

Grouped by hundreds: accounts 1xx, patients 2xx, messaging 3xx, consent 4xx, access 5xx, keys 6xx,
integrations 7xx.
"""

from django.db import models


class AuditEventType(models.IntegerChoices):
    LOGIN_SUCCEEDED = 100, "Login succeeded"
    LOGIN_FAILED = 101, "Login failed"
    LOGIN_LOCKED_OUT = 102, "Login locked out"
    LOGOUT = 103, "Logged out"
    MFA_ENROLLED = 110, "MFA enrolled"
    MFA_VERIFIED = 111, "MFA verified"
    MFA_FAILED = 112, "MFA code rejected"
    MFA_THROTTLED = 113, "MFA attempts throttled"
    MFA_BACKUP_CODE_USED = 114, "MFA backup code used"
    MFA_BACKUP_CODES_REGENERATED = 115, "MFA backup codes regenerated"
    SESSION_REVOKED = 120, "Session revoked"
    SESSION_EXPIRED = 121, "Session expired"
    TENANT_SWITCHED = 122, "Switched clinic"
    USER_INVITED = 130, "User invited"
    INVITATION_ACCEPTED = 131, "Invitation accepted"
    INVITATION_REVOKED = 132, "Invitation revoked"
    MEMBERSHIP_ROLE_CHANGED = 133, "Role changed"
    MEMBERSHIP_DEACTIVATED = 134, "User deactivated"
    MEMBERSHIP_CREATED = 135, "User added"
    MEMBERSHIP_REACTIVATED = 136, "User reactivated"
    PASSWORD_CHANGED = 137, "Password changed"
    API_KEY_CREATED = 140, "API key created"
    API_KEY_REVOKED = 141, "API key revoked"
    API_KEY_REJECTED = 142, "API key rejected"
    API_KEY_USED = 143, "API key used"
    TENANT_CREATED = 150, "Clinic created"
    TENANT_SETTINGS_CHANGED = 151, "Clinic settings changed"
    PATIENT_VIEWED = 200, "Patient viewed"
    PATIENT_CREATED = 201, "Patient created"
    PATIENT_CHANGED = 202, "Patient changed"
    PATIENT_EXPORTED = 203, "Patient data exported"
    PATIENT_SEARCHED = 204, "Patients searched"
    APPOINTMENT_CHANGED = 210, "Appointment changed"
    THREAD_OPENED = 300, "Thread opened"
    MESSAGE_SENT = 301, "Message sent"
    MESSAGE_RECEIVED = 302, "Message received"
    THREAD_CHANGED = 303, "Thread assigned, closed or reopened"
    NOTE_ADDED = 304, "Internal note added"
    REPLY_TEMPLATE_CHANGED = 305, "Saved reply changed"
    SMS_FAILED = 306, "SMS could not be delivered"
    INBOUND_TRIAGED = 307, "Message from an unknown number handled"
    LINK_VERIFIED = 310, "Secure link verified"
    LINK_FAILED = 311, "Secure link verification failed"
    LINK_LOCKED = 312, "Secure link locked"
    LINK_CREATED = 313, "Secure link created"
    LINK_REVOKED = 314, "Secure link revoked"
    LINK_CODE_SENT = 315, "One-time code sent"
    PATIENT_SIGNED_OUT = 316, "Patient signed out of the secure page"
    PATIENT_APPOINTMENT_ACTION = 317, "Patient answered an appointment reminder"
    BROADCAST_CREATED = 320, "Broadcast started"
    BROADCAST_CANCELLED = 321, "Broadcast cancelled"
    CONSENT_CHANGED = 400, "Consent changed"
    BAA_SIGNED = 410, "Business associate agreement signed"
    PERMISSION_DENIED = 500, "Permission denied"
    AUDIT_REPORT_VIEWED = 501, "Audit report viewed"
    AUDIT_EXPORTED = 502, "Audit report exported"
    BREAK_GLASS_STARTED = 510, "Emergency access started"
    BREAK_GLASS_REVIEWED = 511, "Emergency access reviewed"
    WEBHOOK_REJECTED = 530, "Webhook signature rejected"
    WEBHOOK_DELIVERED = 531, "Webhook delivered to the clinic's system"
    WEBHOOK_FAILED = 532, "Webhook delivery given up"
    AUDIT_CHAIN_PURGED = 520, "Audit events purged (retention)"
    EHR_IMPORT_REJECTED = 700, "EHR import rejected"
    PHI_KEY_ROTATED = 600, "Data key rotated"
    PHI_KEK_REWRAPPED = 601, "Data keys re-wrapped under a new KEK"
    PHI_KEYS_DESTROYED = 602, "Keys destroyed (crypto-shredding)"


# The only keys allowed in AuditEvent.details: ids, counts, statuses, reasons. Never PHI.
ALLOWED_DETAIL_KEYS = frozenset(
    {
        "reason", "role", "old_role", "new_role", "scopes", "count", "status", "method",
        "session_count", "api_key_count", "permission", "path_name", "api_key_prefix",
        "membership_id", "invitation_id", "from_tenant", "to_tenant", "fields", "device",
        "key_version", "retired", "report", "format", "filters", "row_count", "expires_at", "through_seq",
        # consent (4xx): the ledger's action/channel and a document version (consent disclosure
        # or BAA), both from fixed vocabularies; never the evidence text.
        "action", "channel", "version",
        # messaging (3xx): fixed vocabularies and ids only; never a body, a number or a token.
        "kind", "direction", "urgent", "thread_id", "message_id", "link_id", "sms_id", "assignee_id",
        "step", "attempts", "error_code", "notification", "source", "outcome", "language",
        "broadcast_id",
    }
)
