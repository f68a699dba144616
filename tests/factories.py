"""Plain keyword-only factories. Each opens the tenant scope it needs (fixtures are entry points)."""

from __future__ import annotations

import itertools

from django.utils import timezone

from accounts import services
from accounts.middleware import AUTH_AT, LAST_SEEN, TENANT_ID, USER_SESSION_ID
from accounts.models import Membership, Tenant, TotpDevice, User
from accounts.tenancy import tenant_scope

PASSWORD = "correct-horse-battery-9"
_seq = itertools.count(1)


def make_tenant(*, name: str | None = None, slug: str | None = None, **extra) -> Tenant:
    n = next(_seq)
    return services.tenant_create(name=name or f"Clinic {n}", slug=slug or f"clinic-{n}",
                                  sms_sender_label=extra.pop("sms_sender_label", "Test Clinic"), **extra)


def make_member(*, tenant: Tenant, role: str, email: str | None = None, totp: bool = True) -> User:
    email = email or f"{role}-{next(_seq)}@{tenant.slug}.test"
    with tenant_scope(tenant):
        membership = services.staff_create(tenant=tenant, actor=None, email=email, role=role, password=PASSWORD)
    if totp and not TotpDevice.objects.filter(user=membership.user, confirmed=True).exists():
        TotpDevice.objects.create(user=membership.user, name="test", confirmed=True)
    return membership.user


def membership_of(user: User, tenant: Tenant) -> Membership:
    with tenant_scope(tenant):
        return Membership.objects.get(user=user)


def totp_code(user: User, *, confirmed: bool = True) -> str:
    """The code the user's authenticator app shows now."""
    return TotpDevice.objects.filter(user=user, confirmed=confirmed).latest("id").current_code()


def login_verified(client, user: User, *, tenant: Tenant | None = None):
    """Sign ``client`` in as ``user`` with MFA verified, as the real flow leaves the session."""
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    device = TotpDevice.objects.get(user=user, confirmed=True)
    session = client.session
    session["otp_device_id"] = device.persistent_id
    now = timezone.now().timestamp()
    session[AUTH_AT] = now
    session[LAST_SEEN] = now
    if tenant is not None:
        session[TENANT_ID] = tenant.pk
    us = services.user_session_start(user=user, session_key=session.session_key, ip="127.0.0.1", user_agent="pytest")
    session[USER_SESSION_ID] = str(us.pk)
    session.save()
    return client


# --- patients ---------------------------------------------------------------------------------


def make_patient(*, tenant: Tenant, actor: User | None = None, **overrides):
    """A valid patient of ``tenant`` through ``patient_create`` (unique MRN and phone per call)."""
    import datetime

    from patients.services import patient_create

    n = next(_seq)
    values = {"mrn": f"MRN-{n:05d}", "given_name": "Test", "family_name": f"Patient{n}",
              "birth_date": datetime.date(1980, 1, 1) + datetime.timedelta(days=n),
              "phone": f"+1202555{1000 + n % 9000}"}  # tests pick their own numbers below 1000
    values.update(overrides)
    with tenant_scope(tenant):
        return patient_create(tenant=tenant, actor=actor, **values)


def make_appointment(*, tenant: Tenant, patient, actor: User | None = None, **overrides):
    """A booked one-hour appointment of ``patient``, tomorrow at 10:00 UTC unless overridden."""
    import datetime

    from patients.services import appointment_create

    starts_at = overrides.pop("starts_at", None) or (timezone.now() + datetime.timedelta(days=1)).replace(
        hour=10, minute=0, second=0, microsecond=0)
    values = {"starts_at": starts_at, "ends_at": starts_at + datetime.timedelta(hours=1),
              "appointment_type": "Follow-up", "provider_name": "Dr. Rivera", "location_name": "Room 2"}
    values.update(overrides)
    with tenant_scope(tenant):
        return appointment_create(tenant=tenant, actor=actor, patient=patient, **values)


# --- messaging --------------------------------------------------------------------------------


def daytime_zone() -> str:
    """A fixed-offset zone where it is now between 11:00 and 13:00, so SMS are not held for
    quiet hours whatever the hour the suite runs (``Etc/GMT-3`` is UTC+3)."""
    import datetime

    hour = timezone.now().astimezone(datetime.UTC).hour
    offset = (12 - hour + 12) % 24 - 12  # -12..+11 hours to add to UTC
    return "UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


def sign_baa(*, tenant: Tenant, owner: User):
    """The clinic's BAA (once): nothing may be texted without it."""
    from consent.documents import baa_document
    from consent.models import BusinessAssociateAgreement
    from consent.services import baa_sign

    with tenant_scope(tenant):
        existing = BusinessAssociateAgreement.objects.first()
        if existing is not None:
            return existing
        return baa_sign(tenant=tenant, actor=owner, signer_name="Owner Person", signer_title="Owner", agreed=True,
                        document_sha256=baa_document().sha256, ip="127.0.0.1")


def make_conversation(*, tenant: Tenant, owner: User, patient, count: int, out_body: str,
                      in_body: str = "Thank you"):
    """A general thread of ``count`` messages alternating clinic and patient (the patient's by a
    patient session), and a fresh link to it — the one a patient opens. Returns (thread, link)."""
    from django.db import transaction

    from accounts.tenancy import tenant_scope
    from messaging import links, services

    with tenant_scope(tenant):
        thread = services.message_send(tenant=tenant, actor=owner, patient=patient, body=out_body).thread
        with transaction.atomic():
            link, _ = links.link_create(tenant=tenant, thread=thread, actor=owner)
        writer, _ = links.patient_session_start(tenant=tenant, link=link)
        for i in range(1, count):
            if i % 2:
                services.patient_reply(tenant=tenant, session=writer, body=f"{in_body} ({i})")
            else:
                services.message_send(tenant=tenant, actor=owner, thread=thread, body=f"{out_body} ({i})")
        with transaction.atomic():
            link, _ = links.link_create(tenant=tenant, thread=thread, actor=owner)
    return thread, link


def make_textable_patient(*, tenant: Tenant, owner: User, **overrides):
    """A patient who may be texted now: the clinic's BAA signed, SMS consent granted, and a
    time zone where it is midday (no quiet-hours hold)."""
    from consent.services import consent_grant

    sign_baa(tenant=tenant, owner=owner)
    overrides.setdefault("timezone", daytime_zone())
    patient = make_patient(tenant=tenant, actor=owner, **overrides)
    with tenant_scope(tenant):
        consent_grant(tenant=tenant, actor=owner, patient=patient, method="verbal", disclosure_version="sms-2026-01",
                      evidence="Agreed at the front desk")
    return patient
