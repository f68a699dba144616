from django.conf import settings
from django.db import models

from accounts.tenancy import TenantModel, TenantScopedManager, append_heavy_tenant_fk, uuid7
from audit.events import AuditEventType
from phi.fields import EncryptedTextField


class AuditEvent(models.Model):
    """One security- or PHI-relevant event. Append-only.

    ``tenant`` is null only for platform events that belong to no clinic (a failed login for
    an unknown email). Tenant rows are under RLS; null-tenant rows are readable only by the
    table owner (platform operators).
    """

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # No single-column indexes on tenant or occurred_at: every read leads with the tenant and a
    # time range (the composite indexes below), and each index is one more write per event.
    tenant = append_heavy_tenant_fk(null=True, db_index=False)  # no database constraint: see there
    occurred_at = models.DateTimeField()
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
    # Tamper evidence: events form a chain per tenant (one more for platform events). A tenant's
    # events are inserted unsealed (seq NULL, no hashes) and linked into the chain right after
    # their transaction commits (audit.services.seal_pending).
    seq = models.BigIntegerField(null=True, blank=True)
    prev_hash = models.CharField(max_length=64, blank=True, default="")
    hash = models.CharField(max_length=64, blank=True, default="")

    objects = TenantScopedManager()
    unscoped_objects = models.Manager()  # noqa: DJ012

    class Meta:
        default_manager_name = "objects"
        base_manager_name = "unscoped_objects"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "seq"], name="audit_unique_tenant_seq"),
            models.UniqueConstraint(fields=["seq"], condition=models.Q(tenant__isnull=True),
                                    name="audit_unique_platform_seq"),
        ]
        indexes = [
            models.Index(fields=["tenant", "occurred_at"], name="audit_tenant_time"),
            models.Index(fields=["tenant", "patient_id", "occurred_at"], name="audit_tenant_patient_time"),
            models.Index(fields=["tenant", "actor_user", "occurred_at"], name="audit_tenant_actor_time"),
            models.Index(fields=["tenant", "event_type", "occurred_at"], name="audit_tenant_type_time"),
            # One patient's events of one type (who opened this conversation): reads only those.
            models.Index(fields=["tenant", "patient_id", "event_type", "occurred_at"],
                         name="audit_tenant_patient_type"),
            # Staff reads of one patient's records (the patient page's "who at the clinic opened
            # this"), without the patient's own page views: most THREAD_OPENED events of a patient,
            # which the index above makes that read walk (its cost grew with every visit).
            models.Index(fields=["tenant", "patient_id", "event_type", "occurred_at"],
                         condition=models.Q(actor_type="user"), name="audit_staff_patient_type"),
            # What the sealer has still to link: small, rows leave it once sealed.
            models.Index(fields=["tenant", "occurred_at", "id"], condition=models.Q(seq__isnull=True),
                         name="audit_unsealed"),
        ]


class AuditChainHead(models.Model):
    """The newest link of a tenant's chain (tenant NULL: the platform chain).

    Only one connection at a time moves a tenant's head: the sealer holding the tenant's sealing
    lock (audit.services), or a writer holding this row's lock on the platform chain and on
    SQLite. That keeps each chain gap-free and ordered under concurrency. ``base_seq`` and
    ``base_hash`` are where verification starts: 0 and 64 zeros, until a retention purge
    removes a prefix of the chain.
    """

    tenant = models.ForeignKey("accounts.Tenant", null=True, on_delete=models.PROTECT, related_name="+")
    chain = models.CharField(max_length=32, unique=True)  # "tenant:<id>" or "platform"
    seq = models.BigIntegerField(default=0)
    head_hash = models.CharField(max_length=64, default="0" * 64)
    base_seq = models.BigIntegerField(default=0)
    base_hash = models.CharField(max_length=64, default="0" * 64)
    updated_at = models.DateTimeField(auto_now=True)

    @staticmethod
    def chain_name(tenant_id) -> str:
        return f"tenant:{tenant_id}" if tenant_id is not None else "platform"


class BreakGlassReason(models.TextChoices):
    EMERGENCY_CARE = "emergency_care", "Emergency care"
    COVERING = "covering", "Covering for a colleague"
    PATIENT_REQUEST = "patient_request", "Patient asked by phone or in person"
    OTHER = "other", "Other (explain in the note)"


class BreakGlassGrant(TenantModel):
    """Time-limited emergency access of one staff member to one patient's record.

    The reason category is plain (reports and owners' alerts show it); the free-text note may
    contain clinical detail and is encrypted.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    patient_id = models.UUIDField()
    reason = models.CharField(max_length=20, choices=BreakGlassReason.choices)
    note = EncryptedTextField()
    expires_at = models.DateTimeField()
    acknowledged_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                        related_name="+")
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantModel.Meta):
        indexes = [models.Index(fields=["tenant", "user", "patient_id", "expires_at"], name="breakglass_lookup")]
