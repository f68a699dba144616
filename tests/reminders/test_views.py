"""The reminder settings page (owners) and the upcoming list (message readers)."""

from __future__ import annotations

from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from reminders import services
from reminders.models import ReminderPolicy
from tests.factories import make_textable_patient
from tests.reminders.conftest import book

POLICY_URL = "/reminders/"
LIST_URL = "/reminders/upcoming/"


def _form(**changes):
    data = {"enabled": "on", "appointment_types": "Follow-up, New patient", "first_offset_hours": "24",
            "second_offset_hours": "2", "follow_up_enabled": "on",
            "template_en": "Hi {first_name}, see you {appointment_date} at {appointment_time}.",
            "template_es": "Hola {first_name}, le esperamos el {appointment_date} a las {appointment_time}."}
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_owner_sees_the_defaults_and_saves_the_policy_audited(client, login, tenant_a, alice):
    login(alice)
    page = client.get(POLICY_URL)
    assert page.status_code == 200
    assert "Reminder text (Spanish)" in page.content.decode() and 'value="48"' in page.content.decode()
    response = client.post(POLICY_URL, _form())
    assert response.status_code == 302 and response["Location"] == POLICY_URL
    with tenant_scope(tenant_a):
        policy = ReminderPolicy.objects.get()
        assert policy.appointment_types == ["Follow-up", "New patient"]
        assert (policy.first_offset_minutes, policy.second_offset_minutes) == (1440, 120)
        event = AuditEvent.objects.filter(event_type=AuditEventType.TENANT_SETTINGS_CHANGED).latest("seq")
        assert event.details == {"fields": ["appointment_types", "first_offset_minutes", "second_offset_minutes",
                                            "template_en", "template_es"]}
        assert event.actor_user_id == alice.pk


def test_policy_validation_names_the_field_and_writes_nothing(client, login, tenant_a, alice):
    login(alice)
    cases = [
        ({"first_offset_hours": "0"}, "first_offset_hours", "between 1 and 168"),
        ({"first_offset_hours": "169"}, "first_offset_hours", "between 1 and 168"),
        ({"first_offset_hours": "two"}, "first_offset_hours", "whole number"),
        ({"first_offset_hours": "2", "second_offset_hours": "2"}, "second_offset_hours", "closer to the appointment"),
        ({"template_en": "Hi {name}"}, "template_en", "Unknown placeholder {name}"),
        ({"template_es": "Hola {first_name"}, "template_es", "matching braces"),
        ({"template_es": ""}, "template_es", "required"),
    ]
    for changes, field, words in cases:
        response = client.post(POLICY_URL, _form(**changes))
        assert response.status_code == 400, changes
        errors = response.context["form"].errors
        assert field in errors and words in " ".join(errors[field]), (changes, errors)
    with tenant_scope(tenant_a):
        assert not AuditEvent.objects.filter(event_type=AuditEventType.TENANT_SETTINGS_CHANGED).exists()
        policy = services.reminder_policy_get(tenant=tenant_a)
        assert policy.first_offset_minutes == 2880 and policy.appointment_types == []


def test_only_owners_manage_the_policy(client, login, bob, carol):
    for user in (bob, carol):
        client.logout()
        login(user)
        assert client.get(POLICY_URL).status_code == 403
        assert client.post(POLICY_URL, _form()).status_code == 403


def test_upcoming_list_shows_reminders_and_is_audited(client, login, tenant_a, alice, bob):
    patient = make_textable_patient(tenant=tenant_a, owner=alice, given_name="Ada", family_name="Quill",
                                    phone="+12025550171")
    book(tenant_a, patient, hours=72)
    login(bob)
    page = client.get(LIST_URL)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Ada Quill" in html and "Scheduled" in html and "1 reminder" in html
    assert "Reminder settings" not in html  # front desk cannot manage the policy
    with tenant_scope(tenant_a):
        event = AuditEvent.objects.filter(event_type=AuditEventType.PATIENT_SEARCHED).latest("seq")
        assert event.details == {"path_name": "reminders-list", "count": 1} and event.actor_user_id == bob.pk


def test_another_clinics_reminders_are_not_listed(client, login, tenant_a, alice, charlie):
    patient = make_textable_patient(tenant=tenant_a, owner=alice, given_name="Ada", family_name="Quill",
                                    phone="+12025550171")
    book(tenant_a, patient, hours=72)
    login(charlie)
    html = client.get(LIST_URL).content.decode()
    assert "Quill" not in html and "0 reminders" in html
    page = client.get(POLICY_URL)
    assert 'value="48"' in page.content.decode()  # clinic B's own (default) policy
