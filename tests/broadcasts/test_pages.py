"""Broadcast pages: owners only, field errors, other clinics' broadcasts are 404, no PHI."""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from broadcasts.models import Broadcast, BroadcastStatus, RecipientStatus
from tests.broadcasts.conftest import TODAY, TOMORROW
from tests.broadcasts.helpers import book, make_broadcast
from tests.factories import make_textable_patient


@pytest.fixture
def broadcast(tenant_a, alice):
    return make_broadcast(tenant=tenant_a, owner=alice)


def _urls(broadcast) -> list[tuple[str, str]]:
    return [("get", reverse("broadcasts-list")), ("get", reverse("broadcasts-create")),
            ("get", reverse("broadcasts-detail", args=[broadcast.pk])),
            ("post", reverse("broadcasts-cancel", args=[broadcast.pk]))]


def test_front_desk_is_refused_everywhere(client, login, bob, broadcast):
    login(bob)
    for method, url in _urls(broadcast):
        assert getattr(client, method)(url).status_code == 403, url
    with tenant_scope(broadcast.tenant):
        assert Broadcast.objects.get(pk=broadcast.pk).status == BroadcastStatus.SENDING


def test_owner_sees_the_pages(client, login, alice, broadcast):
    login(alice)
    listing = client.get(reverse("broadcasts-list"))
    assert listing.status_code == 200 and reverse("broadcasts-detail", args=[broadcast.pk]).encode() in listing.content
    form = client.get(reverse("broadcasts-create"))
    assert form.status_code == 200 and b"Room 2" in form.content  # the clinic's locations to choose from
    detail = client.get(reverse("broadcasts-detail", args=[broadcast.pk]))
    assert detail.status_code == 200
    assert b'id="count-pending">1<' in detail.content and b"Cancel broadcast" in detail.content


def test_creating_a_broadcast_redirects_to_its_progress(client, login, tenant_a, alice):
    patient = make_textable_patient(tenant=tenant_a, owner=alice, given_name="Zebulon")
    book(tenant_a, patient, TOMORROW)
    login(alice)
    response = client.post(reverse("broadcasts-create"), {
        "body": "The clinic opens late tomorrow.", "audience": "appointments_on_day", "day": TOMORROW.isoformat(),
        "location": "Room 2", "appointment_type": "", "rate_per_minute": "", "idempotency_key": "page-key-0001"},
        follow=True)
    with tenant_scope(tenant_a):
        broadcast = Broadcast.objects.get()
        assert AuditEvent.objects.filter(event_type=AuditEventType.PATIENT_SEARCHED,
                                         details__path_name="broadcast-audience").count() == 1
    assert response.redirect_chain == [(reverse("broadcasts-detail", args=[broadcast.pk]), 302)]
    assert b"Broadcast started: 1 recipients." in response.content
    assert b"Zebulon" not in response.content
    assert broadcast.total == 1 and broadcast.rate_per_minute == 60


@pytest.mark.parametrize(("data", "field", "text"), [
    ({"body": ""}, "body", b"This field is required."),
    ({"day": "2026-11-30"}, "day", b"Choose today or a later day"),
    ({"location": "Nowhere"}, "location", b"Select a valid choice."),
    ({"rate_per_minute": "700"}, "rate_per_minute", b"Use a whole number from 1 to 600."),
])
def test_bad_input_shows_the_error_on_its_field(client, login, tenant_a, alice, data, field, text):
    book(tenant_a, make_textable_patient(tenant=tenant_a, owner=alice), TOMORROW)
    login(alice)
    post = {"body": "Closed on Friday.", "audience": "appointments_on_day", "day": TODAY.isoformat(), **data}
    response = client.post(reverse("broadcasts-create"), post)
    assert response.status_code == 400
    assert response.context["form"].errors[field]
    assert text in response.content
    with tenant_scope(tenant_a):
        assert not Broadcast.objects.exists()


def test_cancel_from_the_page(client, login, alice, broadcast):
    login(alice)
    response = client.post(reverse("broadcasts-cancel", args=[broadcast.pk]), follow=True)
    assert response.redirect_chain == [(reverse("broadcasts-detail", args=[broadcast.pk]), 302)]
    assert b"Broadcast cancelled." in response.content
    with tenant_scope(broadcast.tenant):
        assert Broadcast.objects.get(pk=broadcast.pk).status == BroadcastStatus.CANCELLED
        assert {r.status for r in broadcast.recipients.all()} == {RecipientStatus.CANCELLED}
    again = client.post(reverse("broadcasts-cancel", args=[broadcast.pk]), follow=True)
    assert b"already cancelled" in again.content


def test_another_clinics_broadcast_is_not_found(client, login, charlie, broadcast):
    login(charlie)
    for method, url in _urls(broadcast)[2:]:
        assert getattr(client, method)(url).status_code == 404, url
    with tenant_scope(broadcast.tenant):
        assert Broadcast.objects.get(pk=broadcast.pk).status == BroadcastStatus.SENDING
    assert client.get(reverse("broadcasts-list")).status_code == 200
    assert str(broadcast.pk).encode() not in client.get(reverse("broadcasts-list")).content
