import secrets
import time
import zoneinfo
from base64 import b32encode
from binascii import unhexlify
from urllib.parse import quote, urlencode

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone
from django_otp.models import Device, ThrottlingMixin
from django_otp.oath import TOTP

from accounts.permissions import ApiScope, Role, permissions_for_role, permissions_for_scopes
from accounts.tenancy import TenantModel, uuid7
from audit.registry import register_field_history
from phi.fields import EncryptedTextField


def validate_timezone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError("Unknown time zone.", code="invalid_timezone")


# GSM-7 basic characters only (one SMS segment budget); no digits, which could read as dates.
sender_label_validator = RegexValidator(
    r"^[A-Za-z][A-Za-z &'.\-]{1,19}$",
    "Use 2-20 letters, spaces or & ' . - (no digits); it starts every SMS.",
)


class Tenant(models.Model):
    """A clinic. The registry of tenants is global; everything a tenant owns is a TenantModel."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=50, unique=True)
    timezone = models.CharField(max_length=64, default="America/New_York", validators=[validate_timezone])
    sms_sender_label = models.CharField(max_length=20, validators=[sender_label_validator])
    # The clinic's own SMS sender (E.164 number or Twilio Messaging Service). Inbound SMS and
    # delivery callbacks find their clinic by the number they were sent to. Blank: the
    # platform's TWILIO_FROM_NUMBER / TWILIO_MESSAGING_SERVICE_SID.
    sms_number = models.CharField(max_length=16, null=True, blank=True, unique=True,
                                  validators=[RegexValidator(r"^\+[1-9][0-9]{6,14}$", "Use E.164, e.g. +16175550100.")])
    twilio_messaging_service_sid = models.CharField(
        max_length=34, blank=True, validators=[RegexValidator(r"^MG[0-9a-f]{32}$", "A Messaging Service SID: MG + 32 hex.")])
    # Minutes a result notice is held before the patient is told (the clinician may release it
    # sooner); None or 0: at once. At most 7 days.
    result_release_minutes = models.PositiveIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(7 * 24 * 60)]
    )
    # Days a secure link stays valid (1-30); None: 7.
    link_lifetime_days = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(30)]
    )
    # Tenants may shorten, never lengthen, the platform's session limits.
    session_idle_minutes = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(15)]
    )
    session_absolute_hours = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(12)]
    )
    settings = models.JSONField(default=dict, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.slug


class UserManager(BaseUserManager):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra):
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save()
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra):
        # Platform operators; they have no tenant access unless given a membership.
        return self.create_user(email, password, is_staff=True, is_superuser=True, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    """A staff person. Global (one login across the clinics they belong to); not PHI."""

    email = models.EmailField(unique=True)
    full_name = models.CharField(max_length=200, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)  # platform operator, not clinic staff
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    def __str__(self) -> str:
        return self.email


class Membership(TenantModel):
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices)
    is_active = models.BooleanField(default=True)
    deactivated_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "user"], name="membership_unique_user")]

    @property
    def permissions(self) -> frozenset[str]:
        return permissions_for_role(self.role) if self.is_active else frozenset()


class Invitation(TenantModel):
    email = models.EmailField()
    role = models.CharField(max_length=20, choices=Role.choices)
    token_hash = models.CharField(max_length=64)
    invited_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "token_hash"], name="invitation_unique_token")]


class InvitationToken(models.Model):
    """Global routing row: an invitation token's hash → its tenant. Holds nothing else.

    The invitee is not yet in any tenant scope, so the link must find its tenant before RLS
    lets it read the invitation itself.
    """

    token_hash = models.CharField(max_length=64, primary_key=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")


class ApiKey(TenantModel):
    """An integration's credential. The secret is shown once; only its SHA-256 is stored."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16)  # shown in lists so keys can be told apart
    key_hash = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    created_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "key_hash"], name="apikey_unique_hash")]

    def clean(self) -> None:
        unknown = set(self.scopes) - set(ApiScope.values)
        if unknown or not self.scopes:
            raise ValidationError({"scopes": f"Choose scopes from: {', '.join(ApiScope.values)}"})

    @property
    def permissions(self) -> frozenset[str]:
        return permissions_for_scopes(self.scopes)

    @property
    def is_usable(self) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > timezone.now()


class UserSession(models.Model):
    """One signed-in browser, so users can see and end their sessions.

    Django's session row holds the state; this row makes it findable by user. The session
    key is a secret: pages and URLs use ``id``.
    """

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    session_key = models.CharField(max_length=40, unique=True)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="sessions")
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(default=timezone.now)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=30, blank=True)

    class Meta:
        indexes = [models.Index(fields=["user", "ended_at"])]


class BackupCodeDevice(ThrottlingMixin, Device):
    """Single-use recovery codes, stored as salted HMACs (django-otp's StaticDevice keeps
    them in plaintext, which a database dump would reveal)."""

    def get_throttle_factor(self) -> int:
        return 1

    def verify_token(self, token) -> bool:
        from accounts.mfa import backup_code_consume

        allowed, _ = self.verify_is_allowed()
        if not allowed:
            return False
        if backup_code_consume(device=self, code=str(token)):
            self.throttle_reset()
            return True
        self.throttle_increment()
        return False


class BackupCode(models.Model):
    device = models.ForeignKey(BackupCodeDevice, on_delete=models.CASCADE, related_name="codes")
    code_hash = models.CharField(max_length=64)
    used_at = models.DateTimeField(null=True, blank=True)


def _new_totp_secret() -> str:
    return secrets.token_hex(20)  # 160 bits, the RFC 4226 recommendation


class TotpDevice(ThrottlingMixin, Device):
    """An authenticator app (RFC 6238), with its seed encrypted under the platform key.

    django-otp's own TOTPDevice keeps the seed in plaintext; a database dump would let anyone
    mint codes. Codes are verified with django-otp's TOTP; a code's time step is remembered so
    it cannot be used twice, and failures back off exponentially (ThrottlingMixin).
    """

    # django-otp's persistent ids need an integer pk; the seed is bound to this uuid instead.
    uid = models.UUIDField(default=uuid7, unique=True, editable=False)
    key = EncryptedTextField(key_scope="platform", row_id_field="uid", default=_new_totp_secret)  # hex seed
    step = models.PositiveSmallIntegerField(default=30)
    t0 = models.BigIntegerField(default=0)
    digits = models.PositiveSmallIntegerField(default=6)
    tolerance = models.PositiveSmallIntegerField(default=1)
    drift = models.SmallIntegerField(default=0)
    last_t = models.BigIntegerField(default=-1)

    def get_throttle_factor(self) -> int:
        from django.conf import settings

        return settings.OTP_TOTP_THROTTLE_FACTOR

    @property
    def bin_key(self) -> bytes:
        return unhexlify(self.key.encode())

    def _totp(self) -> TOTP:
        totp = TOTP(self.bin_key, self.step, self.t0, self.digits, self.drift)
        totp.time = time.time()
        return totp

    def current_code(self) -> str:
        return f"{self._totp().token():0{self.digits}d}"

    def verify_token(self, token) -> bool:
        allowed, _ = self.verify_is_allowed()
        if not allowed:
            return False
        token = str(token).strip()
        totp = self._totp()
        verified = token.isdigit() and totp.verify(int(token), self.tolerance, self.last_t + 1)
        if verified:
            self.last_t = totp.t()  # no replay of this step or an earlier one
            self.drift = totp.drift
            self.throttle_reset(commit=False)
            self.save(update_fields=["last_t", "drift", "throttling_failure_timestamp", "throttling_failure_count"])
        else:
            self.throttle_increment(commit=True)
        return bool(verified)

    @property
    def config_url(self) -> str:
        from django.conf import settings

        issuer = settings.OTP_TOTP_ISSUER.replace(":", "")
        params = urlencode({"secret": b32encode(self.bin_key), "algorithm": "SHA1", "digits": self.digits,
                            "period": self.step})
        return f"otpauth://totp/{quote(issuer + ':' + self.user.get_username())}?{params}&issuer={quote(issuer)}"


register_field_history(Tenant)
register_field_history(User, secret_fields=("password",))
register_field_history(Membership)
register_field_history(Invitation, secret_fields=("token_hash",))
register_field_history(ApiKey, secret_fields=("key_hash",))
