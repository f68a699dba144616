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


# Fictional patients (names invented; 555-01xx numbers are reserved for fiction in the NANP).
DEMO_PATIENTS = [
    ("Maya", "Okafor", "1984-03-12", "+12025550143", "en"),
    ("Luis", "Herrera", "1957-11-02", "+12025550144", "es"),
    ("Priya", "Raman", "1991-07-23", "+12025550145", "en"),
    ("Tomás", "Álvarez", "2012-01-30", "+12025550146", "es"),
    ("Grace", "Whitfield", "1948-05-17", "+12025550147", "en"),
    ("Noah", "Lindqvist", "2001-09-09", "+12025550148", "en"),
]


def seed_clinic_records(tenant: Tenant, *, owner: User) -> None:
    """The BAA, a few patients with consent, and appointments today and tomorrow. Idempotent:
    patients are found by MRN and only created when missing. Call inside ``tenant_scope``."""
    from datetime import date, datetime, time, timedelta
    from zoneinfo import ZoneInfo

    from consent.documents import baa_document
    from consent.selectors import tenant_has_baa
    from consent.services import baa_sign, consent_grant
    from patients.selectors import patient_search
    from patients.services import appointment_create, patient_create

    if not tenant_has_baa(tenant):
        baa_sign(tenant=tenant, actor=owner, signer_name="Demo Owner", signer_title="Practice owner", agreed=True,
                 document_sha256=baa_document().sha256, ip="127.0.0.1")
    zone = ZoneInfo(tenant.timezone)
    today = datetime.now(zone).date()
    created = []
    for n, (given, family, born, phone, language) in enumerate(DEMO_PATIENTS, start=1):
        mrn = f"{tenant.slug[:3].upper()}-{1000 + n}"
        _, found = patient_search(tenant=tenant, actor=None, mrn=mrn)
        if found:
            continue
        patient = patient_create(tenant=tenant, actor=owner, mrn=mrn, given_name=given, family_name=family,
                                 birth_date=date.fromisoformat(born), phone=phone, preferred_language=language)
        if n != 6:  # one patient without consent, to show what staff see then
            consent_grant(tenant=tenant, actor=owner, patient=patient, method="paper_form",
                          disclosure_version="sms-2026-01", evidence="Signed intake form (demo)")
        day = today + timedelta(days=n % 2)
        start = datetime.combine(day, time(8 + n, 30), tzinfo=zone)
        appointment = appointment_create(tenant=tenant, actor=owner, patient=patient, starts_at=start,
                                         ends_at=start + timedelta(minutes=30), provider_name="Dr. Demo",
                                         location_name="Main office", appointment_type="Follow-up")
        created.append((patient, appointment))
    if created:
        seed_clinic_messages(tenant, owner=owner, created=created)
        # Beat does not run under `make demo`: send the reminders due now once (the upcoming
        # appointments were booked less than 48 h ahead, so each has a reminder due at once).
        from reminders.services import reminders_run_for_tenant

        reminders_run_for_tenant(tenant=tenant)


def seed_clinic_messages(tenant: Tenant, *, owner: User, created) -> None:
    """A few conversations sent through the outbox and the local gateway, so the inbox and the
    SMS outbox page have something to show (each SMS carries only a link; open it from
    Inbox → SMS outbox). Quiet hours apply in the demo too: at night in the clinic's time zone
    link notices wait in "waiting" until 08:00, while the HELP reply goes at once."""
    import secrets

    from messaging.inbound import inbound_sms_receive
    from messaging.models import MessageKind
    from messaging.services import message_send

    clinician = User.objects.filter(email=demo_email(tenant.slug, Role.CLINICIAN)).first() or owner
    first = created[0][0]
    message_send(tenant=tenant, actor=clinician, patient=first, kind=MessageKind.GENERAL,
                 body=f"Hi {first.given_name}, your home blood pressure readings look good. Keep taking "
                      "lisinopril 10 mg each morning and send us your readings again in two weeks.")
    inbound_sms_receive(tenant=tenant, provider_id="SMdemo" + secrets.token_hex(13), from_number=first.phone,
                        body="Thank you! Could I get a refill before Friday?")
    if len(created) > 1:
        patient, appointment = created[1]
        message_send(tenant=tenant, actor=owner, patient=patient, kind=MessageKind.REMINDER, appointment=appointment,
                     body="Reminder: your follow-up with Dr. Demo at the Main office. Please bring your "
                          "medication list. Confirm or cancel below.")
    if len(created) > 2:
        patient = created[2][0]
        message_send(tenant=tenant, actor=owner, patient=patient, kind=MessageKind.RESULT_NOTICE,
                     body="Your lab results are ready: HbA1c 6.1 % (slightly above the normal range). "
                          "Dr. Demo suggests we talk about it at your next visit.")
    if len(created) > 3:
        patient = created[3][0]
        inbound_sms_receive(tenant=tenant, provider_id="SMdemo" + secrets.token_hex(13), from_number=patient.phone,
                            body="HELP")
    inbound_sms_receive(tenant=tenant, provider_id="SMdemo" + secrets.token_hex(13), from_number="+12025550199",
                        body="Hi, is the clinic open on Saturday?")


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
            with tenant_scope(tenant):
                seed_clinic_records(tenant, owner=User.objects.get(email=demo_email(slug, Role.OWNER)))
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
