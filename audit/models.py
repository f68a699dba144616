from django.conf import settings
from django.db import models

from accounts.tenancy import TenantScopedManager, uuid7
from audit.events import AuditEventType


class AuditEvent(models.Model):
    """One security- or PHI-relevant event. Append-only.

    ``tenant`` is null only for platform events that belong to no clinic (a failed login for
    an unknown email). Tenant rows are under RLS; null-tenant rows are readable only by the
    table owner (platform operators).
    """

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    tenant = models.ForeignKey("accounts.Tenant", null=True, on_delete=models.PROTECT, related_name="+")
    occurred_at = models.DateTimeField(db_index=True)
    event_type = models.PositiveSmallIntegerField(choices=AuditEventType.choices)
    actor_type = models.CharField(max_length=20)  # user | api_key | patient | system | anonymous
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_label = models.CharField(max_length=200, blank=True)  # e.g. the email tried, key prefix
    object_type = models.CharField(max_length=50, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    patient_id = models.UUIDField(null=True, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    details = models.JSONField(default=dict, blank=True)

    objects = TenantScopedManager()
    unscoped_objects = models.Manager()  # noqa: DJ012

    class Meta:
        default_manager_name = "objects"
        base_manager_name = "unscoped_objects"
        indexes = [
            models.Index(fields=["tenant", "occurred_at"], name="audit_tenant_time"),
            models.Index(fields=["tenant", "actor_user", "occurred_at"], name="audit_tenant_actor_time"),
            models.Index(fields=["tenant", "event_type", "occurred_at"], name="audit_tenant_type_time"),
        ]
