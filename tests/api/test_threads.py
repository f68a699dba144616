"""Threads over the API: list without bodies, one thread with bodies (THREAD_OPENED)."""

from __future__ import annotations

import uuid

import pytest

from accounts.tenancy import tenant_scope
from audit.events import AuditEventType as E
from messaging.inbound import inbound_sms_receive
from messaging.services import note_add, thread_get
from tests.api.conftest import error_fields, events
from tests.factories import make_textable_patient


def _thread(tenant, owner, phone, body="Can I move my visit?"):
    make_textable_patient(tenant=tenant, owner=owner, phone=phone)
    with tenant_scope(tenant):
        inbound = inbound_sms_receive(tenant=tenant, provider_id=f"SM-{uuid.uuid4().hex}", from_number=phone,
                                      body=body)
        return thread_get(tenant=tenant, thread_id=inbound.message.thread_id)


@pytest.fixture
def thread(tenant_a, alice):
    return _thread(tenant_a, alice, "+12025550181")


def test_staff_list_threads_without_bodies(tenant_a, alice, staff_client, thread):
    api = staff_client(alice)
    response = api.get("/api/v1/threads", {"status": "open"})
    assert response.status_code == 200, response.content
    [row] = response.json()["results"]
    assert row["id"] == str(thread.pk) and row["patient_id"] == str(thread.patient_id) and row["unread"] == 1
    assert "move my visit" not in response.content.decode()
    assert api.get("/api/v1/threads", {"status": "closed"}).json()["results"] == []
    assert len(events(tenant_a, E.PATIENT_SEARCHED)) == 2


def test_opening_a_thread_shows_messages_and_notes_and_is_audited(tenant_a, alice, staff_client, thread):
    with tenant_scope(tenant_a):
        note_add(tenant=tenant_a, actor=alice, thread=thread, body="Called back, left voicemail.")
    response = staff_client(alice).get(f"/api/v1/threads/{thread.pk}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert [m["direction"] for m in body["messages"]] == ["inbound", "note"]
    assert body["messages"][0]["body"] == "Can I move my visit?"
    [event] = events(tenant_a, E.THREAD_OPENED)
    assert event.patient_id == thread.patient_id and event.actor_user == alice


def test_another_clinics_thread_is_a_404_and_not_opened(tenant_b, charlie, alice, staff_client):
    foreign = _thread(tenant_b, charlie, "+12025550182")
    api = staff_client(alice)
    assert api.get(f"/api/v1/threads/{foreign.pk}").status_code == 404
    assert api.get(f"/api/v1/threads/{uuid.uuid4()}").status_code == 404
    assert api.get("/api/v1/threads", {"patient": str(foreign.patient_id)}).json()["results"] == []
    assert events(tenant_b, E.THREAD_OPENED) == []


def test_no_api_scope_reads_message_bodies(key_client, thread):
    """messages.view is a staff permission: no key scope grants it (SCOPE_PERMISSIONS)."""
    for scopes in (("patients:read", "patients:write", "appointments:write", "messages:send", "audit:read"),):
        api = key_client(*scopes)
        assert api.get("/api/v1/threads").status_code == 403
        assert api.get(f"/api/v1/threads/{thread.pk}").status_code == 403


def test_auditor_session_cannot_read_threads(dave, staff_client, thread):
    assert staff_client(dave).get(f"/api/v1/threads/{thread.pk}").status_code == 403


@pytest.mark.parametrize("params,field", [({"status": "archived"}, "status"), ({"patient": "x"}, "patient")])
def test_bad_thread_filters_are_a_400(alice, staff_client, params, field):
    response = staff_client(alice).get("/api/v1/threads", params)
    assert response.status_code == 400 and field in error_fields(response)


def test_read_only_endpoint_refuses_writes(alice, staff_client, thread):
    assert staff_client(alice).post("/api/v1/threads", {}).status_code == 405
