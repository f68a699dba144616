"""A test-only tenant model carrying every encrypted field type (patients arrive with issue 5)."""

from django.db import models

from accounts.tenancy import TenantModel
from phi.fields import EncryptedDateField, EncryptedJSONField, EncryptedTextField


class Record(TenantModel):
    name = EncryptedTextField()
    birth_date = EncryptedDateField(null=True)
    details = EncryptedJSONField(null=True)
    name_index = models.CharField(max_length=64, blank=True, db_index=True)


class PlainRecord(TenantModel):
    """The same shape without encryption: the benchmark's baseline."""

    name = models.TextField()
    birth_date = models.DateField(null=True)
    details = models.JSONField(null=True)
