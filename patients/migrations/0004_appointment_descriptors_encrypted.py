"""Encrypt appointments' provider, location, type and the EHR's id (issue #11).

The clear-text columns are renamed aside, the encrypted ones added, every existing row is
sealed under its clinic's key with its blind indexes computed (one clinic at a time, inside
that clinic's scope, so RLS and the key service see the right tenant), and the clear text is
dropped. Reversible: going back decrypts into the old columns.
"""

from django.db import migrations, models

import phi.fields

FIELDS = ("provider_name", "location_name", "appointment_type", "external_id")
# Blind-index column and normaliser kind for each descriptor that is looked up.
INDEXES = {"location_name": ("location_index", "text"), "appointment_type": ("type_index", "text"),
           "external_id": ("external_id_index", "exact")}


def _each_tenant(apps):
    from accounts.models import Tenant
    from accounts.tenancy import tenant_scope

    # Ids from the historical model (the current one may have columns this database lacks yet).
    for pk in apps.get_model("accounts", "Tenant").objects.order_by("pk").values_list("pk", flat=True):
        with tenant_scope(Tenant(pk=pk)) as tenant:
            yield tenant


def seal_existing(apps, schema_editor):
    from patients.models import Appointment as Current
    from phi.blind import blind_index

    Appointment = apps.get_model("patients", "Appointment")
    fields = {name: Current._meta.get_field(name) for name in FIELDS}
    for tenant in _each_tenant(apps):
        for row in Appointment.objects.filter(tenant_id=tenant.pk).iterator(chunk_size=500):
            for name, field in fields.items():
                plain = getattr(row, f"{name}_plain") or ""
                setattr(row, name, phi.fields.Sealed(field.seal_for(row, plain)))
                if name in INDEXES:
                    column, kind = INDEXES[name]
                    setattr(row, column, blind_index(tenant, kind, plain) if plain.strip() else "")
            row.save(update_fields=[*FIELDS, *(c for c, _ in INDEXES.values())])


def open_existing(apps, schema_editor):
    from patients.models import Appointment as Current

    Appointment = apps.get_model("patients", "Appointment")
    fields = {name: Current._meta.get_field(name) for name in FIELDS}
    for tenant in _each_tenant(apps):
        for row in Appointment.objects.filter(tenant_id=tenant.pk).iterator(chunk_size=500):
            for name, field in fields.items():
                blob = row.__dict__[name]
                setattr(row, f"{name}_plain", field.open(row, blob) if blob and blob.blob else "")
            row.save(update_fields=[f"{name}_plain" for name in FIELDS])


class Migration(migrations.Migration):

    dependencies = [
        ("patients", "0003_patient_phone_optional"),
        ("phi", "0001_initial"),
        ("accounts", "0004_result_release"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="appointment", name="appointment_unique_external_id"),
        *[migrations.RenameField(model_name="appointment", old_name=name, new_name=f"{name}_plain")
          for name in FIELDS],
        *[migrations.AddField(model_name="appointment", name=name, field=phi.fields.EncryptedTextField(blank=True))
          for name in FIELDS],
        *[migrations.AddField(model_name="appointment", name=column, field=models.CharField(blank=True, max_length=64))
          for column, _ in INDEXES.values()],
        migrations.RunPython(seal_existing, open_existing),
        *[migrations.RemoveField(model_name="appointment", name=f"{name}_plain") for name in FIELDS],
        migrations.AddConstraint(
            model_name="appointment",
            constraint=models.UniqueConstraint(condition=models.Q(("external_id_index", ""), _negated=True),
                                               fields=("tenant", "source", "external_id_index"),
                                               name="appointment_unique_external_id"),
        ),
        migrations.AddIndex(
            model_name="appointment",
            index=models.Index(fields=["tenant", "type_index", "starts_at"], name="appointment_tenant_type"),
        ),
    ]
