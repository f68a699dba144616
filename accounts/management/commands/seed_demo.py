"""Seed two demo clinics with a user per role. Idempotent: re-running resets the demo users'
passwords, TOTP secrets and backup codes to the values it prints."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts import mfa
from accounts.models import Membership, Tenant, TotpDevice, User
from accounts.permissions import Role
from accounts.services import membership_create, tenant_create, user_create, user_set_password
from accounts.tenancy import tenant_scope

DEMO_PASSWORD = "demo-clinic-pass-2026"
# Fixed base32 TOTP secrets so the demo can be signed into from any authenticator app or
# with `python manage.py demo_totp`. Demo only: seed_demo refuses to run in production.
CLINICS = [
    ("Sunrise Family Clinic", "sunrise", "Sunrise Clinic"),
    ("Lakeside Pediatrics", "lakeside", "Lakeside Peds"),
]
ROLES = [Role.OWNER, Role.CLINICIAN, Role.STAFF, Role.AUDITOR]


def demo_email(slug: str, role: str) -> str:
    return f"{role}@{slug}.example"


def demo_totp_hex(email: str) -> str:
    import hashlib

    return hashlib.sha256(f"caretext-demo-totp:{email}".encode()).hexdigest()[:40]


class Command(BaseCommand):
    help = "Create (or reset) the demo clinics and their users; prints how to sign in."

    def handle(self, *args, **options):
        if not (settings.DEBUG or settings.DEMO or settings.TESTING):
            raise CommandError("seed_demo only runs with DEBUG, CARETEXT_DEMO or in tests.")
        rows = []
        for name, slug, label in CLINICS:
            tenant = Tenant.objects.filter(slug=slug).first() or tenant_create(name=name, slug=slug, sms_sender_label=label)
            for role in ROLES:
                rows.append(self._seed_user(tenant, role))
        self._print(rows)

    @transaction.atomic
    def _seed_user(self, tenant: Tenant, role: str):
        email = demo_email(tenant.slug, role)
        user = User.objects.filter(email=email).first()
        if user is None:
            user = user_create(email=email, password=DEMO_PASSWORD, full_name=f"Demo {role.title()}")
        else:
            user_set_password(user=user, password=DEMO_PASSWORD)
        with tenant_scope(tenant):
            if not Membership.objects.filter(user=user).exists():
                membership_create(tenant=tenant, actor=None, user=user, role=role)
        TotpDevice.objects.filter(user=user).delete()
        device = TotpDevice.objects.create(user=user, name="Demo authenticator", confirmed=True, key=demo_totp_hex(email))
        codes = mfa.backup_codes_generate(user=user)
        return tenant, role, email, mfa.totp_secret_base32(device), codes[0]

    def _print(self, rows) -> None:
        out = self.stdout.write
        out(self.style.SUCCESS("Demo clinics are ready."))
        out(f"Every demo user's password: {DEMO_PASSWORD}")
        out("Second factor: `python manage.py demo_totp <email>` prints the current code, or add the")
        out("TOTP secret to an authenticator app, or use the one backup code shown (single use; re-seed for more).")
        out("")
        out(f"{'clinic':10} {'role':10} {'email':32} {'TOTP secret':34} backup code")
        for tenant, role, email, secret, code in rows:
            out(f"{tenant.slug:10} {role:10} {email:32} {secret:34} {code}")
