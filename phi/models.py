from django.db import models


class KeyPurpose(models.TextChoices):
    DATA = "data", "Field encryption"
    INDEX = "index", "Blind index"


class KeyState(models.TextChoices):
    ACTIVE = "active", "Active"  # encrypts new values (the highest active version)
    RETIRED = "retired", "Retired"  # no row uses it; still unwraps (old backups)
    DESTROYED = "destroyed", "Destroyed"  # crypto-shredded: the wrapped key is gone


class DataKey(models.Model):
    """One version of a tenant's (or, with tenant NULL, the platform's) key, wrapped by the KEK.

    Only ``phi.keys`` reads or writes this table. The platform key protects data that belongs
    to no clinic (staff TOTP seeds). RLS: a tenant's keys are visible only in its scope.
    """

    tenant = models.ForeignKey("accounts.Tenant", null=True, on_delete=models.PROTECT, related_name="+")
    purpose = models.CharField(max_length=10, choices=KeyPurpose.choices)
    version = models.PositiveIntegerField()
    kek_version = models.PositiveIntegerField()
    wrapped = models.BinaryField()
    state = models.CharField(max_length=10, choices=KeyState.choices, default=KeyState.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    destroyed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "purpose", "version"], name="datakey_unique_version"),
            models.UniqueConstraint(fields=["purpose", "version"], condition=models.Q(tenant__isnull=True),
                                    name="datakey_unique_platform_version"),
        ]
