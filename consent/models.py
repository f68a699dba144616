"""The consent ledger and the clinic's Business Associate Agreement.

Both tables are append-only: services only insert, and on PostgreSQL a trigger refuses
UPDATE and DELETE (``consent.dbsql``). The one exception is the ciphertext of
``ConsentEvent.evidence``, which key rotation (``phi.rotation``) rewrites in place.
The current consent state is derived from the ledger (``consent.selectors``), never stored.
"""

from django.conf import settings
from django.db import models

from accounts.tenancy import TenantModel
from audit.registry import register_field_history
from phi.fields import EncryptedTextField


class ConsentChannel(models.TextChoices):
    SMS = "sms", "SMS"


class ConsentAction(models.TextChoices):
    GRANT = "grant", "Granted"
    REVOKE = "revoke", "Revoked"


class ConsentMethod(models.TextChoices):
    VERBAL = "verbal", "Verbal (in person or by phone)"
    PAPER_FORM = "paper_form", "Paper form"
    WEB_FORM = "web_form", "Web form"
    SMS_KEYWORD = "sms_keyword", "SMS keyword"
    EHR_IMPORT = "ehr_import", "EHR import"


# Staff must say what they heard or where the signed form is filed.
METHODS_NEEDING_EVIDENCE = frozenset({ConsentMethod.VERBAL, ConsentMethod.PAPER_FORM})
# What staff record by hand; keywords and EHR imports arrive through their own services.
STAFF_METHODS = (ConsentMethod.VERBAL, ConsentMethod.PAPER_FORM, ConsentMethod.WEB_FORM)


class ConsentEvent(TenantModel):
    """One grant or revoke of consent to text one patient at one phone number."""

    patient = models.ForeignKey("patients.Patient", on_delete=models.PROTECT, related_name="consent_events")
    channel = models.CharField(max_length=10, choices=ConsentChannel.choices, default=ConsentChannel.SMS)
    action = models.CharField(max_length=10, choices=ConsentAction.choices)
    method = models.CharField(max_length=20, choices=ConsentMethod.choices)
    disclosure_version = models.CharField(max_length=40, blank=True)
    # Blind index (phi.blind, kind "phone") of the number this consent is for, as it was then:
    # consent given for one number never covers another (reassigned-number protection).
    phone_index = models.CharField(max_length=64)
    captured_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="+")  # None: SMS keyword, EHR import
    evidence = EncryptedTextField(null=True, blank=True)  # staff note or inbound message id: may hold PHI
    occurred_at = models.DateTimeField()

    class Meta(TenantModel.Meta):
        constraints = [
            models.CheckConstraint(condition=models.Q(channel__in=ConsentChannel.values), name="consent_channel_valid"),
            models.CheckConstraint(condition=models.Q(action__in=ConsentAction.values), name="consent_action_valid"),
            models.CheckConstraint(condition=models.Q(method__in=ConsentMethod.values), name="consent_method_valid"),
        ]
        indexes = [
            models.Index(fields=["tenant", "patient", "channel", "phone_index", "occurred_at"],
                         name="consent_patient_number_time"),
        ]


class BusinessAssociateAgreement(TenantModel):
    """The clinic's signature on one version of the platform's BAA (HIPAA 45 CFR 164.504(e)).

    ``document_sha256`` is the hash of the exact text shown to the signer
    (``consent.documents``). A clinic sends no SMS until it has one of these.
    """

    version = models.CharField(max_length=40)
    document_sha256 = models.CharField(max_length=64)
    signer_name = models.CharField(max_length=200)
    signer_title = models.CharField(max_length=200)
    signed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    signed_at = models.DateTimeField()
    ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta(TenantModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "version"], name="baa_unique_version")]


register_field_history(ConsentEvent, secret_fields=("phone_index",))
register_field_history(BusinessAssociateAgreement)
