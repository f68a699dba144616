"""The clinic's SMS settings: its number, Messaging Service and the secure link lifetime."""

from __future__ import annotations

import datetime

from django.utils import timezone

from accounts.models import Tenant
from accounts.tenancy import tenant_scope
from messaging import links
from messaging.models import Thread


def _post(client, **changes):
    data = {"name": "Clinic A", "timezone": "America/New_York", "sms_sender_label": "Test Clinic",
            "session_idle_minutes": "", "session_absolute_hours": "", "link_lifetime_days": "",
            "sms_number": "", "twilio_messaging_service_sid": ""}
    data.update(changes)
    return client.post("/settings/clinic/", data)


def test_owner_sets_number_service_and_link_lifetime(client, login, tenant_a, alice):
    login(alice)
    response = _post(client, sms_number="+12025550100", link_lifetime_days="3",
                     twilio_messaging_service_sid="MG" + "0" * 32)
    assert response.status_code == 302
    tenant_a.refresh_from_db()
    assert (tenant_a.sms_number, tenant_a.link_lifetime_days) == ("+12025550100", 3)
    assert tenant_a.twilio_messaging_service_sid == "MG" + "0" * 32
    assert links.link_lifetime(tenant_a) == datetime.timedelta(days=3)


def test_blank_number_is_stored_as_null_so_many_clinics_can_leave_it_blank(client, login, tenant_a, tenant_b, alice):
    login(alice)
    assert _post(client).status_code == 302
    assert Tenant.objects.filter(sms_number__isnull=True).count() == 2


def test_bad_values_name_their_fields_and_save_nothing(client, login, tenant_a, tenant_b, alice):
    Tenant.objects.filter(pk=tenant_b.pk).update(sms_number="+12025550199")
    login(alice)
    for field, value in (("sms_number", "2025550100"), ("sms_number", "+12025550199"),
                         ("link_lifetime_days", "31"), ("link_lifetime_days", "0"),
                         ("twilio_messaging_service_sid", "AC123")):
        response = _post(client, **{field: value})
        assert response.status_code == 400, (field, value)
        assert field in response.context["form"].errors, (field, value)
    tenant_a.refresh_from_db()
    assert tenant_a.sms_number is None and tenant_a.link_lifetime_days is None


def test_a_link_lives_as_long_as_the_clinic_says(tenant_a, patient):
    Tenant.objects.filter(pk=tenant_a.pk).update(link_lifetime_days=2)
    tenant_a.refresh_from_db()
    with tenant_scope(tenant_a):
        thread = Thread.objects.create(tenant=tenant_a, patient=patient, last_activity_at=timezone.now())
        link, _ = links.link_create(tenant=tenant_a, thread=thread)
        assert abs(link.expires_at - (timezone.now() + datetime.timedelta(days=2))) < datetime.timedelta(minutes=1)
