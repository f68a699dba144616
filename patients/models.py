"""Patients and appointments. Every identifying or clinical value is encrypted (phi/);
lookups go through the blind-index columns beside them."""

from django.db import models

from accounts.tenancy import TenantModel
from audit.registry import register_field_history
from phi.fields import EncryptedDateField, EncryptedJSONField, EncryptedTextField


class Language(models.TextChoices):
    ENGLISH = "en", "English"
    SPANISH = "es", "Español"


class Patient(TenantModel):
    mrn = EncryptedTextField()
    given_name = EncryptedTextField()
    family_name = EncryptedTextField()
    birth_date = EncryptedDateField()
    phone = EncryptedTextField()  # E.164
    email = EncryptedTextField(null=True, blank=True)
    external_ids = EncryptedJSONField(default=dict)  # {"<system>": "<id>"} from EHRs
    preferred_language = models.CharField(max_length=5, choices=Language.choices, default=Language.ENGLISH)
    timezone = models.CharField(max_length=64, blank=True)  # blank: the clinic's
    # Blind indexes (phi.blind): exact-match lookups without decrypting.
    mrn_index = models.CharField(max_length=64)
    phone_index = models.CharField(max_length=64, db_index=True, blank=True)  # "": no mobile on file
    name_dob_index = models.CharField(max_length=64, db_index=True)
    # SMS to a changed number waits for consent to be captured for that number.
    phone_changed_at = models.DateTimeField(null=True, blank=True)
    # The carrier said this number cannot get SMS (invalid, landline, unreachable): no SMS until
    # the number changes. The code is the provider's (e.g. Twilio 21211), never PHI.
    phone_undeliverable_at = models.DateTimeField(null=True, blank=True)
    phone_undeliverable_code = models.CharField(max_length=20, blank=True)
    is_active = models.BooleanField(default=True)

    class Meta(TenantModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "mrn_index"], name="patient_unique_mrn")]


class AppointmentStatus(models.TextChoices):
    BOOKED = "booked", "Booked"
    CONFIRMED = "confirmed", "Confirmed"
    CANCELLED = "cancelled", "Cancelled"
    NO_SHOW = "no_show", "No-show"
    COMPLETED = "completed", "Completed"
    RESCHEDULE_REQUESTED = "reschedule_requested", "Reschedule requested"


class AppointmentSource(models.TextChoices):
    MANUAL = "manual", "Entered by staff"
    FHIR = "fhir", "FHIR"
    HL7 = "hl7", "HL7 v2"


class Appointment(TenantModel):
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="appointments")
    # Times are not PHI on their own; kept plain so the day view can sort and filter in SQL.
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    # Who, where and what kind of visit, and the EHR's id for it: with the patient they say what
    # care they get (a psychiatry clinic, an oncology wing), so they are encrypted like the rest.
    # Blind indexes (phi.blind) beside them answer the equality questions the product asks:
    # upsert by EHR id, reminders by type, broadcasts and reports by location and type.
    provider_name = EncryptedTextField(blank=True)  # "" sealed when empty
    location_name = EncryptedTextField(blank=True)  # "" sealed when empty
    appointment_type = EncryptedTextField(blank=True)  # "" sealed when empty
    status = models.CharField(max_length=24, choices=AppointmentStatus.choices, default=AppointmentStatus.BOOKED)
    source = models.CharField(max_length=10, choices=AppointmentSource.choices, default=AppointmentSource.MANUAL)
    external_id = EncryptedTextField(blank=True)  # "" sealed when empty
    location_index = models.CharField(max_length=64, blank=True)  # "": no location
    type_index = models.CharField(max_length=64, blank=True)  # "": no type
    external_id_index = models.CharField(max_length=64, blank=True)  # "": not from an EHR
    reason = EncryptedTextField(null=True, blank=True)  # free text: may be clinical
    instructions = EncryptedTextField(null=True, blank=True)

    class Meta(TenantModel.Meta):
        constraints = [
            models.CheckConstraint(condition=models.Q(ends_at__gt=models.F("starts_at")), name="appointment_ends_after_start"),
            models.UniqueConstraint(fields=["tenant", "source", "external_id_index"],
                                    condition=~models.Q(external_id_index=""), name="appointment_unique_external_id"),
        ]
        indexes = [models.Index(fields=["tenant", "starts_at"], name="appointment_tenant_start"),
                   models.Index(fields=["tenant", "type_index", "starts_at"], name="appointment_tenant_type")]


register_field_history(Patient, secret_fields=("mrn_index", "phone_index", "name_dob_index"))
# Blind indexes reveal equality within a clinic: keep them out of auditlog's history too.
register_field_history(Appointment, secret_fields=("location_index", "type_index", "external_id_index"))
