"""TOTP enrolment and verification, and hashed single-use backup codes (django-otp devices)."""

from __future__ import annotations

import base64
import hmac
import secrets

import segno
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from accounts.models import BackupCode, BackupCodeDevice, TotpDevice, User

# No 0/O/1/I/L: codes are read off paper.
_BACKUP_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
_BACKUP_LENGTH = 10  # 31**10 ≈ 2**49.5


def _normalise_backup(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch.isalnum())


def _backup_hash(device_id: int, code: str) -> str:
    # Keyed by SECRET_KEY and salted by device: a database dump alone cannot test guesses.
    return salted_hmac(f"caretext.backup-code.{device_id}", _normalise_backup(code), algorithm="sha256").hexdigest()


def format_backup_code(code: str) -> str:
    return f"{code[:5]}-{code[5:]}"


def totp_device_unconfirmed(*, user: User) -> TotpDevice:
    """The enrolment device: reuse an unconfirmed one so a reload keeps the same QR code."""
    device = TotpDevice.objects.filter(user=user, confirmed=False).order_by("-id").first()
    return device or TotpDevice.objects.create(user=user, name="Authenticator app", confirmed=False)


def totp_secret_base32(device: TotpDevice) -> str:
    return base64.b32encode(device.bin_key).decode().rstrip("=")


def totp_qr_svg(device: TotpDevice) -> str:
    # The otpauth URL carries the secret: it goes only into this inline SVG, never a URL or log.
    return segno.make(device.config_url, error="m").svg_inline(scale=5, dark="#111", light="#fff")


def user_has_confirmed_totp(user: User) -> bool:
    return TotpDevice.objects.filter(user=user, confirmed=True).exists()


@transaction.atomic
def backup_codes_generate(*, user: User) -> list[str]:
    """Replace the user's backup codes with fresh ones; returns them for showing once."""
    device, _ = BackupCodeDevice.objects.get_or_create(user=user, defaults={"name": "Backup codes", "confirmed": True})
    device.codes.all().delete()
    codes = ["".join(secrets.choice(_BACKUP_ALPHABET) for _ in range(_BACKUP_LENGTH)) for _ in range(settings.MFA_BACKUP_CODE_COUNT)]
    BackupCode.objects.bulk_create(BackupCode(device=device, code_hash=_backup_hash(device.pk, c)) for c in codes)
    return [format_backup_code(c) for c in codes]


def backup_code_consume(*, device: BackupCodeDevice, code: str) -> bool:
    """Mark one matching unused code as used. Single use even under concurrent submits."""
    wanted = _backup_hash(device.pk, code)
    with transaction.atomic():
        for row in device.codes.select_for_update().filter(used_at__isnull=True):
            if hmac.compare_digest(row.code_hash, wanted):
                row.used_at = timezone.now()
                row.save(update_fields=["used_at"])
                return True
    return False


def backup_codes_remaining(*, user: User) -> int:
    return BackupCode.objects.filter(device__user=user, used_at__isnull=True).count()


def looks_like_backup_code(token: str) -> bool:
    return len(_normalise_backup(token)) == _BACKUP_LENGTH
