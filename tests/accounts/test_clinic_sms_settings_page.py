"""The clinic's SMS settings (Tenant.settings): HELP number, notice cap, broadcast rate."""

from __future__ import annotations

from accounts.models import Tenant
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from broadcasts.services import tenant_rate
from consent.keywords import keyword_reply_text
from consent.policy import notice_cap_for
from messaging.pacing import clinic_rate

GOOD = {"contact_phone": "(202) 555-0100", "notice_per_day": "1", "notice_per_week": "2",
        "broadcast_rate_per_minute": "30"}


def test_owner_saves_all_three_and_they_take_effect(client, login, tenant_a, alice):
    login(alice)
    page = client.get("/settings/clinic/")
    assert b"Phone number in HELP replies" in page.content
    response = client.post("/settings/clinic/sms/", GOOD)
    assert response.status_code == 302 and response["Location"] == "/settings/clinic/"
    tenant_a.refresh_from_db()
    assert tenant_a.settings["contact_phone"] == "+12025550100"
    assert notice_cap_for(tenant_a).per_week == 2
    assert tenant_rate(tenant_a) == 30
    assert "202" in keyword_reply_text(tenant=tenant_a, kind="help")
    with tenant_scope(tenant_a):
        fields = sorted(e.details["fields"][0] for e in AuditEvent.objects.filter(
            event_type=AuditEventType.TENANT_SETTINGS_CHANGED))
    assert fields == ["broadcast_rate_per_minute", "contact_phone", "notice_cap"]


def test_bad_values_name_the_field_and_nothing_is_saved(client, login, tenant_a, alice):
    login(alice)
    for field, value in (("notice_per_week", "4"), ("notice_per_day", "2"), ("broadcast_rate_per_minute", "601"),
                         ("contact_phone", "not a number"), ("sms_rate_per_second", "0"),
                         ("sms_rate_per_second", "fast")):
        response = client.post("/settings/clinic/sms/", {**GOOD, field: value})
        assert response.status_code == 400, field
        assert field in response.context["sms_form"].errors, field
    assert Tenant.objects.get(pk=tenant_a.pk).settings == {}


def test_front_desk_cannot(client, login, bob):
    login(bob)
    assert client.post("/settings/clinic/sms/", GOOD).status_code == 403


def test_the_sender_rate_is_saved_audited_and_cleared_when_blank(client, login, tenant_a, alice):
    login(alice)
    assert client.post("/settings/clinic/sms/", {**GOOD, "sms_rate_per_second": "25"}).status_code == 302
    tenant_a.refresh_from_db()
    assert clinic_rate(tenant_a) == 25
    with tenant_scope(tenant_a):
        fields = [e.details["fields"][0] for e in AuditEvent.objects.filter(
            event_type=AuditEventType.TENANT_SETTINGS_CHANGED)]
    assert "sms_rate_per_second" in fields
    assert b'value="25' in client.get("/settings/clinic/").content
    assert client.post("/settings/clinic/sms/", GOOD).status_code == 302
    tenant_a.refresh_from_db()
    assert clinic_rate(tenant_a) is None
