"""The staff side of secure messaging: inbox, conversation, compose, saved replies, unknown
numbers and the demo's SMS outbox, through the Django test client as alice (owner), bob (front
desk), carol (clinician), dave (auditor) and charlie (owner of clinic B)."""

from __future__ import annotations

import re
import uuid
from zoneinfo import ZoneInfo

import pytest
from django.contrib.messages import get_messages
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.models import AuditEvent
from messaging import selectors, services
from messaging.inbound import inbound_sms_receive
from messaging.models import (
    Direction,
    InboundSms,
    Message,
    MessageKind,
    OutboundSms,
    ReplyTemplate,
    SecureLink,
    Thread,
)
from phi import keys
from tests.factories import make_patient, make_textable_patient, sign_baa
from tests.messaging.conftest import sent_sms, token_of

_seq = iter(range(10, 99))
SECRET_BODY = "Your biopsy came back clear, Ada."


def _events(tenant, event_type) -> list[AuditEvent]:
    with tenant_scope(tenant):
        return list(AuditEvent.objects.filter(event_type=event_type).order_by("occurred_at", "id"))


def _other_patient(tenant, owner, **overrides):
    return make_textable_patient(tenant=tenant, owner=owner, phone=f"+120255501{next(_seq)}", **overrides)


def _thread_by_staff(tenant, actor, patient, *, kind=MessageKind.GENERAL, body="Please call us back.") -> Thread:
    """A conversation the clinic started (its SMS stays queued: on-commit callbacks don't run)."""
    with tenant_scope(tenant):
        return services.message_send(tenant=tenant, actor=actor, patient=patient, body=body, kind=kind).thread


def _patient_texts(tenant, patient, body="Can I come in earlier?") -> Thread:
    """The patient texts the clinic: an inbound message, one unread, the thread open."""
    with tenant_scope(tenant):
        inbound = inbound_sms_receive(tenant=tenant, provider_id=f"SM{uuid.uuid4().hex}", from_number=patient.phone,
                                      body=body)
        return Thread.objects.get(pk=inbound.message.thread_id)


def _live_thread(tenant, patient, capture) -> Thread:
    """The patient wrote and got their link notice (sent), so a reply is not held by the cap."""
    with capture(execute=True):
        return _patient_texts(tenant, patient)


def _key_on(response) -> str:
    match = re.search(r'name="idempotency_key" value="([^"]+)"', response.content.decode())
    assert match, "the form carries no idempotency key"
    return match.group(1)


def _flashes(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- the inbox ---------------------------------------------------------------------------------------


@pytest.fixture
def inbox_world(tenant_a, alice, bob, patient):
    """Three open conversations (unassigned with an unread message, alice's, bob's) and a closed one."""
    unassigned = _patient_texts(tenant_a, patient)
    mine = _thread_by_staff(tenant_a, alice, _other_patient(tenant_a, alice, given_name="Mina"))
    bobs = _thread_by_staff(tenant_a, alice, _other_patient(tenant_a, alice, given_name="Boris"),
                            kind=MessageKind.RESULT_NOTICE)
    closed = _thread_by_staff(tenant_a, alice, _other_patient(tenant_a, alice, given_name="Cleo"))
    with tenant_scope(tenant_a):
        services.thread_assign(tenant=tenant_a, actor=alice, thread=mine, assignee=alice)
        services.thread_assign(tenant=tenant_a, actor=alice, thread=bobs, assignee=bob)
        services.thread_set_status(tenant=tenant_a, actor=alice, thread=closed, status="closed")
    return {"unassigned": unassigned, "mine": mine, "bobs": bobs, "closed": closed}


@pytest.mark.parametrize(("box", "shown"), [
    ("", ["unassigned"]), ("unassigned", ["unassigned"]), ("mine", ["mine"]),
    ("all", ["unassigned", "mine", "bobs"]), ("closed", ["closed"]),
])
def test_inbox_boxes_show_their_threads_with_counts(client, login, alice, inbox_world, box, shown):
    login(alice)
    response = client.get("/inbox/", {"box": box} if box else {})
    assert response.status_code == 200
    listed = {t.pk for t in response.context["page"].object_list}
    assert listed == {inbox_world[name].pk for name in shown}
    tabs = {tab["box"]: (tab["count"], tab["unread"]) for tab in response.context["tabs"]}
    assert tabs == {"unassigned": (1, 1), "mine": (1, 0), "all": (3, 1), "closed": (1, 0)}
    content = response.content.decode()
    for name in shown:
        assert f"/inbox/t/{inbox_world[name].pk}/" in content


def test_inbox_rows_show_name_kind_assignee_badges_and_clinic_time(client, login, alice, bob, tenant_a, inbox_world):
    thread = inbox_world["bobs"]
    with tenant_scope(tenant_a):
        Thread.objects.filter(pk=thread.pk).update(urgent=True, link_locked_at=timezone.now())
        thread.refresh_from_db()
    login(alice)
    content = client.get("/inbox/", {"box": "all"}).content.decode()
    assert "Boris" in content and "Result notice" in content and bob.email in content
    assert "URGENT" in content and "link locked" in content
    local = timezone.localtime(thread.last_activity_at, ZoneInfo(tenant_a.timezone))
    assert local.strftime("%Y-%m-%d %H:%M") in content
    # Urgent first, then newest activity.
    assert content.index("Boris") < content.index("Ada")


def test_inbox_filters_by_assignee_and_kind(client, login, alice, bob, inbox_world):
    login(alice)
    by_bob = client.get("/inbox/", {"box": "all", "assignee": bob.pk})
    assert [t.pk for t in by_bob.context["page"].object_list] == [inbox_world["bobs"].pk]
    results = client.get("/inbox/", {"box": "all", "kind": "result_notice"})
    assert [t.pk for t in results.context["page"].object_list] == [inbox_world["bobs"].pk]
    nothing = client.get("/inbox/", {"box": "unassigned", "kind": "result_notice"})
    assert "No conversations match these filters." in nothing.content.decode()


@pytest.mark.parametrize("query", [{"box": "everything"}, {"kind": "gossip"}, {"assignee": "999999"},
                                   {"page": "zero"}])
def test_inbox_rejects_bad_filters_with_400(client, login, alice, inbox_world, query):
    login(alice)
    response = client.get("/inbox/", query)
    assert response.status_code == 400
    assert 'class="field-error"' in response.content.decode()
    assert response.context["page"] is None  # nothing listed (and nothing audited as shown)


def test_inbox_paginates(client, login, alice, tenant_a, patient, monkeypatch):
    monkeypatch.setattr(selectors, "INBOX_PAGE_SIZE", 2)
    threads = [_thread_by_staff(tenant_a, alice, p) for p in
               (patient, _other_patient(tenant_a, alice), _other_patient(tenant_a, alice))]
    login(alice)
    first = client.get("/inbox/", {"box": "unassigned"})
    second = client.get("/inbox/", {"box": "unassigned", "page": 2})
    assert len(first.context["page"].object_list) == 2
    assert [t.pk for t in second.context["page"].object_list] == [threads[0].pk]  # the oldest
    assert "Page 2 of 2" in second.content.decode()
    assert "box=unassigned&amp;page=2" in first.content.decode()


def test_inbox_empty_states(client, login, alice):
    login(alice)
    content = client.get("/inbox/").content.decode()
    assert "Nothing waiting" in content
    assert "No closed conversations." in client.get("/inbox/", {"box": "closed"}).content.decode()


def test_inbox_query_count_does_not_grow_with_rows(client, login, alice, tenant_a, patient,
                                                  django_assert_max_num_queries, audit_cost):
    from django.db import connection

    _thread_by_staff(tenant_a, alice, patient)
    login(alice)
    client.get("/inbox/")  # warm the session
    with CaptureQueriesContext(connection) as one:
        client.get("/inbox/")
    for _ in range(3):
        _thread_by_staff(tenant_a, alice, _other_patient(tenant_a, alice))
    with CaptureQueriesContext(connection) as four:
        client.get("/inbox/")
    assert len(four) == len(one)
    # 9 to resolve the session, user, MFA device, clinic, memberships and scopes; 1 for the
    # colleagues in the filter; 2 for the box counts (the nav's unread count and the page's size
    # come with them); 1 for the page's rows; 1 for the clinic's data key (cold cache); and the
    # audit event (``audit_cost``). tests/messaging/test_query_budgets.py has the warm counts.
    with django_assert_max_num_queries(14 + audit_cost):
        keys.clear_cache()
        client.get("/inbox/", {"box": "all"})


def test_inbox_listing_is_audited(client, login, alice, tenant_a, inbox_world):
    login(alice)
    client.get("/inbox/", {"box": "all"})
    [event] = [e for e in _events(tenant_a, AuditEventType.PATIENT_SEARCHED)
               if e.details.get("path_name") == "messaging-inbox"]
    assert event.details["count"] == 3


def test_auditor_gets_403_on_the_inbox_and_it_is_audited(client, login, dave, tenant_a):
    login(dave)
    assert client.get("/inbox/").status_code == 403
    [denial] = _events(tenant_a, AuditEventType.PERMISSION_DENIED)
    assert denial.details == {"permission": "messages.view", "path_name": "messaging-inbox"}
    dashboard = client.get("/").content.decode()
    assert "/inbox/" not in dashboard  # no Inbox nav item without messages.view


def test_nav_shows_the_unread_count(client, login, bob, tenant_a, patient):
    _patient_texts(tenant_a, patient)
    _patient_texts(tenant_a, patient, body="Hello again")
    login(bob)
    content = client.get("/").content.decode()
    assert re.search(r'href="/inbox/">Inbox <span class="nav-count"[^>]*>2</span>', content)


def test_unread_count_is_one_query_and_none_outside_a_scope(rf, tenant_a, bob, patient, django_assert_num_queries):
    from accounts.context_processors import tenant as tenant_context
    from accounts.permissions import Role, permissions_for_role

    _patient_texts(tenant_a, patient)
    request = rf.get("/")
    request.tenant, request.permissions = tenant_a, permissions_for_role(Role.STAFF)
    assert tenant_context(request)["inbox_unread"]() is None  # no scope open: no query, no error
    with tenant_scope(tenant_a):
        count = tenant_context(request)["inbox_unread"]
        with django_assert_num_queries(1):
            assert count() == 1
            assert count() == 1  # computed once per request
    request.permissions = permissions_for_role(Role.AUDITOR)
    with tenant_scope(tenant_a):
        assert tenant_context(request)["inbox_unread"]() is None


# --- one conversation --------------------------------------------------------------------------------


def test_opening_a_thread_is_audited_and_resets_unread(client, login, bob, tenant_a, patient):
    thread = _patient_texts(tenant_a, patient, body="My knee still hurts")
    assert thread.staff_unread == 1
    login(bob)
    response = client.get(f"/inbox/t/{thread.pk}/")
    assert response.status_code == 200
    content = response.content.decode()
    assert "My knee still hurts" in content and "Ada Quill" in content
    [opened] = _events(tenant_a, AuditEventType.THREAD_OPENED)
    assert opened.actor_user_id == bob.pk and opened.patient_id == patient.pk
    with tenant_scope(tenant_a):
        thread.refresh_from_db()
    assert thread.staff_unread == 0


def test_thread_page_shows_sms_status_and_links_but_no_sms_body(client, login, alice, tenant_a, patient,
                                                                 django_capture_on_commit_callbacks):
    thread = _live_thread(tenant_a, patient, django_capture_on_commit_callbacks)
    [sms] = sent_sms()
    login(alice)
    content = client.get(f"/inbox/t/{thread.pk}/").content.decode()
    assert "Delivered" in content and "link_notice" in content
    assert token_of(sms) not in content and "You have a new secure message" not in content
    assert "active" in content  # the link's state


def test_reply_sends_an_sms_with_only_the_link(client, login, bob, tenant_a, patient,
                                              django_capture_on_commit_callbacks):
    thread = _live_thread(tenant_a, patient, django_capture_on_commit_callbacks)
    login(bob)
    key = _key_on(client.get(f"/inbox/t/{thread.pk}/"))
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/inbox/t/{thread.pk}/reply/", {"body": SECRET_BODY, "idempotency_key": key})
    assert response.status_code == 302 and response["Location"] == f"/inbox/t/{thread.pk}/"
    notice = sent_sms()[-1]
    assert len(sent_sms()) == 2
    assert notice.to == "+12025550171"
    assert re.fullmatch(r"Test Clinic: You have a new secure message\. http://\S+/s/[A-Za-z0-9_-]{43} "
                        r"Reply STOP to opt out\.", notice.body)
    with tenant_scope(tenant_a):
        reply = Message.objects.get(direction=Direction.OUTBOUND)
        assert reply.body == SECRET_BODY and reply.sender_id == bob.pk and reply.idempotency_key == key
    for flash in _flashes(response):
        assert "Ada" not in flash and "biopsy" not in flash
    assert _events(tenant_a, AuditEventType.MESSAGE_SENT)


def test_a_double_submitted_reply_is_sent_once(client, login, bob, tenant_a, patient,
                                               django_capture_on_commit_callbacks):
    thread = _live_thread(tenant_a, patient, django_capture_on_commit_callbacks)
    login(bob)
    key = _key_on(client.get(f"/inbox/t/{thread.pk}/"))
    with django_capture_on_commit_callbacks(execute=True):
        first = client.post(f"/inbox/t/{thread.pk}/reply/", {"body": "See you at 3.", "idempotency_key": key})
        second = client.post(f"/inbox/t/{thread.pk}/reply/", {"body": "See you at 3.", "idempotency_key": key})
    assert first.status_code == second.status_code == 302
    with tenant_scope(tenant_a):
        assert Message.objects.filter(direction=Direction.OUTBOUND).count() == 1
    assert len(sent_sms()) == 2  # the patient's link notice and one for the reply
    # A new rendering of the form gets a new key.
    assert _key_on(client.get(f"/inbox/t/{thread.pk}/")) != key


@pytest.mark.parametrize(("body", "error"), [
    ("", "This field is required."), ("   \n ", "This field is required."),
    ("x" * 2001, "Use at most 2000 characters (this has 2001)."),
])
def test_empty_or_oversized_replies_are_400_with_a_field_message(client, login, bob, tenant_a, patient, body, error):
    thread = _patient_texts(tenant_a, patient)
    login(bob)
    response = client.post(f"/inbox/t/{thread.pk}/reply/", {"body": body})
    assert response.status_code == 400
    assert f'<p class="field-error" id="id_body-error">{error}</p>' in response.content.decode()
    with tenant_scope(tenant_a):
        assert not Message.objects.filter(direction=Direction.OUTBOUND).exists()


def test_a_bad_idempotency_key_is_a_400(client, login, bob, tenant_a, patient):
    thread = _patient_texts(tenant_a, patient)
    login(bob)
    response = client.post(f"/inbox/t/{thread.pk}/reply/", {"body": "Hi", "idempotency_key": "bad key!"})
    assert response.status_code == 400
    assert "Use 8-100 letters" in response.content.decode()


def test_front_desk_cannot_reply_in_a_result_notice_thread(client, login, alice, bob, carol, tenant_a, patient):
    thread = _thread_by_staff(tenant_a, alice, patient, kind=MessageKind.RESULT_NOTICE)
    login(bob)
    assert "need permission to send results" in client.get(f"/inbox/t/{thread.pk}/").content.decode()
    assert client.post(f"/inbox/t/{thread.pk}/reply/", {"body": "Hi"}).status_code == 403
    assert _events(tenant_a, AuditEventType.PERMISSION_DENIED)[0].details["permission"] == "results.send"
    login(carol)
    assert client.post(f"/inbox/t/{thread.pk}/reply/", {"body": "Your results are in."}).status_code == 302


def test_the_refusal_reason_shows_above_the_reply_box(client, login, bob, tenant_a, patient):
    from consent.services import consent_apply_keyword

    thread = _patient_texts(tenant_a, patient)
    with tenant_scope(tenant_a):
        consent_apply_keyword(tenant=tenant_a, patient=patient, text="STOP", evidence="test")
    login(bob)
    content = client.get(f"/inbox/t/{thread.pk}/").content.decode()
    assert content.index("opted out of SMS (STOP)") < content.index('name="body"')
    response = client.post(f"/inbox/t/{thread.pk}/reply/", {"body": "Hello?"})
    assert response.status_code == 400 and "opted out of SMS (STOP)" in response.content.decode()


def test_notes_never_produce_sms_and_are_labelled(client, login, bob, tenant_a, patient):
    thread = _patient_texts(tenant_a, patient)
    with tenant_scope(tenant_a):
        sms_before = OutboundSms.objects.count()
    login(bob)
    response = client.post(f"/inbox/t/{thread.pk}/note/", {"body": "Called her, no answer."})
    assert response.status_code == 302
    with tenant_scope(tenant_a):
        note = Message.objects.get(direction=Direction.NOTE)
        assert note.body == "Called her, no answer." and OutboundSms.objects.count() == sms_before
        assert not SecureLink.objects.filter(created_at__gte=note.created_at).exists()
    assert _events(tenant_a, AuditEventType.NOTE_ADDED)
    content = client.get(f"/inbox/t/{thread.pk}/").content.decode()
    assert "Internal note — patient never sees this" in content and "bubble-note" in content
    assert client.post(f"/inbox/t/{thread.pk}/note/", {"body": ""}).status_code == 400


def test_assign_close_and_reopen_are_audited(client, login, alice, bob, tenant_a, patient):
    thread = _patient_texts(tenant_a, patient)
    login(bob)
    assert client.post(f"/inbox/t/{thread.pk}/assign/", {"assignee": bob.pk}).status_code == 302
    with tenant_scope(tenant_a):
        assert Thread.objects.get(pk=thread.pk).assigned_to_id == bob.pk
    assert client.post(f"/inbox/t/{thread.pk}/assign/", {"assignee": alice.pk}).status_code == 302
    assert client.post(f"/inbox/t/{thread.pk}/assign/", {"assignee": ""}).status_code == 302
    assert client.post(f"/inbox/t/{thread.pk}/status/", {"status": "closed"}).status_code == 302
    with tenant_scope(tenant_a):
        assert Thread.objects.get(pk=thread.pk).status == "closed"
    assert client.post(f"/inbox/t/{thread.pk}/status/", {"status": "open"}).status_code == 302
    changes = [(e.details.get("action"), e.details.get("assignee_id")) for e in
               _events(tenant_a, AuditEventType.THREAD_CHANGED)]
    assert changes == [("assign", str(bob.pk)), ("assign", str(alice.pk)), ("assign", ""), ("close", None),
                       ("reopen", None)]


def test_assigning_to_someone_who_cannot_read_messages_is_400(client, login, bob, dave, charlie, tenant_a, patient):
    thread = _patient_texts(tenant_a, patient)
    login(bob)
    for who in (dave, charlie):
        response = client.post(f"/inbox/t/{thread.pk}/assign/", {"assignee": who.pk})
        assert response.status_code == 400
        assert "Select a valid choice" in response.content.decode()
    assert client.post(f"/inbox/t/{thread.pk}/status/", {"status": "archived"}).status_code == 400
    assert not _events(tenant_a, AuditEventType.THREAD_CHANGED)


def test_revoke_and_resend_the_link(client, login, bob, tenant_a, patient, django_capture_on_commit_callbacks):
    thread = _live_thread(tenant_a, patient, django_capture_on_commit_callbacks)
    login(bob)
    assert client.post(f"/inbox/t/{thread.pk}/link/", {"action": "revoke"}).status_code == 302
    with tenant_scope(tenant_a):
        assert not SecureLink.objects.filter(thread=thread, revoked_at__isnull=True).exists()
        assert set(SecureLink.objects.values_list("revoked_reason", flat=True)) == {"staff"}
    assert _events(tenant_a, AuditEventType.LINK_REVOKED)
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(f"/inbox/t/{thread.pk}/link/", {"action": "resend"}).status_code == 302
    first, second = sent_sms()
    assert token_of(first) != token_of(second)
    with tenant_scope(tenant_a):
        assert SecureLink.objects.filter(thread=thread, revoked_at__isnull=True).count() == 1
    assert client.post(f"/inbox/t/{thread.pk}/link/", {"action": "explode"}).status_code == 400


def test_resend_refused_without_consent_is_400(client, login, bob, tenant_a, patient):
    from consent.services import consent_apply_keyword

    thread = _patient_texts(tenant_a, patient)
    with tenant_scope(tenant_a):
        consent_apply_keyword(tenant=tenant_a, patient=patient, text="STOP", evidence="test")
        links_before = SecureLink.objects.count()
    login(bob)
    response = client.post(f"/inbox/t/{thread.pk}/link/", {"action": "resend"})
    assert response.status_code == 400 and "opted out" in response.content.decode()
    with tenant_scope(tenant_a):
        assert SecureLink.objects.count() == links_before


# --- another clinic -----------------------------------------------------------------------------------


def test_another_clinics_owner_gets_404_and_changes_nothing(client, login, alice, charlie, tenant_a, patient):
    thread = _patient_texts(tenant_a, patient)
    with tenant_scope(tenant_a):
        template = services.reply_template_create(tenant=tenant_a, actor=alice, name="Hi", body="Hello {first_name}")
        inbound = inbound_sms_receive(tenant=tenant_a, provider_id="SMunknown1", from_number="+12025550199",
                                      body="Who is this?")
        events_before = AuditEvent.objects.count()
    login(charlie)
    t = f"/inbox/t/{thread.pk}"
    requests = [("get", f"{t}/", {}), ("post", f"{t}/reply/", {"body": "Hi"}), ("post", f"{t}/note/", {"body": "x"}),
                ("post", f"{t}/assign/", {"assignee": ""}), ("post", f"{t}/status/", {"status": "closed"}),
                ("post", f"{t}/link/", {"action": "revoke"}), ("get", f"/inbox/compose/{patient.pk}/", {}),
                ("post", f"/inbox/compose/{patient.pk}/", {"kind": "general", "body": "Hi"}),
                ("post", f"/inbox/templates/{template.pk}/delete/", {}),
                ("post", f"/inbox/unknown/{inbound.pk}/triage/", {})]
    for method, url, data in requests:
        assert getattr(client, method)(url, data).status_code == 404, url
    with tenant_scope(tenant_a):
        assert AuditEvent.objects.count() == events_before
        assert Message.objects.count() == 1 and ReplyTemplate.objects.count() == 1
        assert InboundSms.objects.get(pk=inbound.pk).triaged_at is None
        assert Thread.objects.get(pk=thread.pk).status == "open"


# --- compose --------------------------------------------------------------------------------------------


def test_compose_sends_and_lands_in_the_thread(client, login, bob, tenant_a, patient,
                                               django_capture_on_commit_callbacks):
    login(bob)
    viewed = len(_events(tenant_a, AuditEventType.PATIENT_VIEWED))
    page = client.get(f"/inbox/compose/{patient.pk}/")
    assert page.status_code == 200 and "Ada Quill" in page.content.decode()
    assert [e.patient_id for e in _events(tenant_a, AuditEventType.PATIENT_VIEWED)][viewed:] == [patient.pk]
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/inbox/compose/{patient.pk}/",
                               {"kind": "general", "body": SECRET_BODY, "idempotency_key": _key_on(page)})
    with tenant_scope(tenant_a):
        message = Message.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/inbox/t/{message.thread_id}/"
    [sms] = sent_sms()
    assert "biopsy" not in sms.body and "Ada" not in sms.body


def test_compose_refusal_without_consent_writes_nothing(client, login, alice, bob, tenant_a):
    sign_baa(tenant=tenant_a, owner=alice)
    no_consent = make_patient(tenant=tenant_a, given_name="Nora")
    login(bob)
    page = client.get(f"/inbox/compose/{no_consent.pk}/").content.decode()
    assert page.index("has not agreed to SMS") < page.index('name="body"')
    response = client.post(f"/inbox/compose/{no_consent.pk}/", {"kind": "general", "body": "Hello"})
    assert response.status_code == 400
    assert 'role="alert"><p>Not sent: the patient has not agreed to SMS.' in response.content.decode()
    with tenant_scope(tenant_a):
        assert not Thread.objects.exists() and not Message.objects.exists() and not OutboundSms.objects.exists()
        assert not SecureLink.objects.exists()
    assert not _events(tenant_a, AuditEventType.MESSAGE_SENT)


def test_result_notices_need_results_send(client, login, bob, carol, tenant_a, patient):
    login(bob)
    assert "result_notice" not in client.get(f"/inbox/compose/{patient.pk}/").content.decode()
    response = client.post(f"/inbox/compose/{patient.pk}/", {"kind": "result_notice", "body": "Results"})
    assert response.status_code == 400 and "Select a valid choice" in response.content.decode()
    with tenant_scope(tenant_a):
        assert not Message.objects.exists()
    login(carol)
    response = client.post(f"/inbox/compose/{patient.pk}/", {"kind": "result_notice", "body": "Results are in."})
    assert response.status_code == 302
    with tenant_scope(tenant_a):
        assert Thread.objects.get().kind == MessageKind.RESULT_NOTICE


def test_compose_with_an_oversized_body_is_400(client, login, bob, tenant_a, patient):
    login(bob)
    response = client.post(f"/inbox/compose/{patient.pk}/", {"kind": "general", "body": "y" * 5000})
    assert response.status_code == 400
    assert "Use at most 2000 characters (this has 5000)." in response.content.decode()


# --- saved replies --------------------------------------------------------------------------------------


def test_saved_replies_create_use_and_delete(client, login, bob, tenant_a, patient,
                                            django_capture_on_commit_callbacks):
    thread = _live_thread(tenant_a, patient, django_capture_on_commit_callbacks)
    login(bob)
    page = client.get("/inbox/templates/").content.decode()
    assert "{first_name}" in page and "{appointment_date}" in page
    response = client.post("/inbox/templates/", {"name": "Call us", "body": "Hi {first_name}, please call {clinic_name}."})
    assert response.status_code == 302 and response["Location"] == "/inbox/templates/"
    with tenant_scope(tenant_a):
        template = ReplyTemplate.objects.get()
    assert _events(tenant_a, AuditEventType.REPLY_TEMPLATE_CHANGED)[0].details == {"action": "create"}
    assert "Call us" in client.get(f"/inbox/t/{thread.pk}/").content.decode()  # in the picker

    response = client.post(f"/inbox/t/{thread.pk}/reply/", {"body": "", "template": str(template.pk)})
    assert response.status_code == 302
    with tenant_scope(tenant_a):
        assert Message.objects.get(direction=Direction.OUTBOUND).body == "Hi Ada, please call Clinic A."

    assert client.post(f"/inbox/templates/{template.pk}/delete/").status_code == 302
    with tenant_scope(tenant_a):
        assert not ReplyTemplate.objects.exists()
    assert client.post(f"/inbox/templates/{template.pk}/delete/").status_code == 404


@pytest.mark.parametrize(("data", "field", "error"), [
    ({"name": "Bad", "body": "Your SSN is {ssn}"}, "body", "Unknown placeholder {ssn}."),
    ({"name": "Bad", "body": "Oops {first_name"}, "body", "Use {placeholder} with matching braces"),
    ({"name": "", "body": "Hello"}, "name", "This field is required."),
    ({"name": "Empty", "body": ""}, "body", "This field is required."),
])
def test_saved_reply_validation_is_400_with_a_field_message(client, login, bob, tenant_a, data, field, error):
    login(bob)
    response = client.post("/inbox/templates/", data)
    assert response.status_code == 400
    assert re.search(rf'<p class="field-error" id="id_{field}-error">[^<]*{re.escape(error)}',
                     response.content.decode())
    with tenant_scope(tenant_a):
        assert not ReplyTemplate.objects.exists()


def test_an_unknown_saved_reply_is_a_field_error(client, login, bob, tenant_a, patient):
    thread = _patient_texts(tenant_a, patient)
    login(bob)
    response = client.post(f"/inbox/t/{thread.pk}/reply/", {"body": "", "template": str(uuid.uuid4())})
    assert response.status_code == 400
    assert 'id="id_template-error"' in response.content.decode()


# --- unknown numbers ------------------------------------------------------------------------------------


def test_unknown_numbers_are_listed_and_triaged(client, login, bob, dave, tenant_a, patient):
    with tenant_scope(tenant_a):
        inbound = inbound_sms_receive(tenant=tenant_a, provider_id="SMunknown2", from_number="+12025550198",
                                      body="Is the clinic open Saturday?")
    login(bob)
    content = client.get("/inbox/unknown/").content.decode()
    assert "(202) 555-0198" in content and "Is the clinic open Saturday?" in content
    assert client.get("/inbox/").context["counts"].unknown == 1
    response = client.post(f"/inbox/unknown/{inbound.pk}/triage/")
    assert response.status_code == 302 and response["Location"] == "/inbox/unknown/"
    assert _events(tenant_a, AuditEventType.INBOUND_TRIAGED)
    assert "Is the clinic open Saturday?" not in client.get("/inbox/unknown/").content.decode()
    assert "Is the clinic open Saturday?" in client.get("/inbox/unknown/", {"handled": "1"}).content.decode()
    login(dave)
    assert client.get("/inbox/unknown/").status_code == 403


# --- the demo's SMS outbox -------------------------------------------------------------------------------


def test_sms_outbox_shows_only_this_clinics_texts(client, login, alice, charlie, tenant_a, tenant_b, patient,
                                                  django_capture_on_commit_callbacks):
    # Clinic B has a patient with the same mobile number: its texts must still stay in B.
    shared = make_textable_patient(tenant=tenant_b, owner=charlie, phone=patient.phone)
    with django_capture_on_commit_callbacks(execute=True):
        _thread_by_staff(tenant_a, alice, patient)
        _thread_by_staff(tenant_b, charlie, shared)
    sms_a, sms_b = sent_sms()
    assert sms_a.to == sms_b.to
    login(alice)
    content = client.get("/inbox/sms-outbox/").content.decode()
    assert token_of(sms_a) in content and token_of(sms_b) not in content
    link = re.search(r"http://\S+", sms_a.body).group(0)
    assert f'<a href="{link}"' in content  # the link is clickable
    [listing] = [e for e in _events(tenant_a, AuditEventType.PATIENT_SEARCHED)
                 if e.details.get("path_name") == "messaging-sms-outbox"]
    assert listing.details["count"] == 1 and listing.actor_user_id == alice.pk
    login(charlie)
    content = client.get("/inbox/sms-outbox/").content.decode()
    assert token_of(sms_b) in content and token_of(sms_a) not in content


def test_sms_outbox_is_404_unless_the_gateway_is_local(client, login, alice, settings):
    login(alice)
    assert client.get("/inbox/sms-outbox/").status_code == 200
    settings.SMS_GATEWAY = "twilio"
    assert client.get("/inbox/sms-outbox/").status_code == 404


def test_sms_outbox_needs_messages_view(client, login, dave):
    login(dave)
    assert client.get("/inbox/sms-outbox/").status_code == 403


# --- the patient page ------------------------------------------------------------------------------------


def test_patient_page_lists_threads_and_links_to_compose(client, login, bob, tenant_a, patient):
    thread = _patient_texts(tenant_a, patient)
    login(bob)
    content = client.get(f"/patients/{patient.pk}/").content.decode()
    assert f"/inbox/t/{thread.pk}/" in content and f"/inbox/compose/{patient.pk}/" in content
    assert "Send a secure message" in content and "1 unread" in content


def test_every_staff_page_has_no_inline_script_or_style(client, login, alice, tenant_a, patient):
    thread = _patient_texts(tenant_a, patient)
    login(alice)
    for url in ("/inbox/", f"/inbox/t/{thread.pk}/", f"/inbox/compose/{patient.pk}/", "/inbox/templates/",
                "/inbox/unknown/", "/inbox/sms-outbox/"):
        content = client.get(url).content.decode()
        scripts = re.findall(r"<script([^>]*)>(.*?)</script>", content, re.S)
        assert all('src="/static/' in a and 'nonce="' in a and not b.strip() for a, b in scripts), url
        assert " style=" not in content and " onclick=" not in content, url


# --- "New message" from the inbox ---------------------------------------------------------------------


def test_new_message_from_the_inbox_finds_the_patient_by_post_and_links_to_compose(client, login, alice, patient):
    login(alice)
    inbox = client.get("/inbox/")
    assert b'href="/inbox/compose/"' in inbox.content
    assert client.get("/inbox/compose/").status_code == 200
    with tenant_scope(patient.tenant):
        mrn = patient.mrn
    found = client.post("/inbox/compose/", {"mrn": mrn})
    assert found.status_code == 200
    assert f'href="/inbox/compose/{patient.pk}/"'.encode() in found.content
    assert mrn.encode() not in found.request["PATH_INFO"].encode()
    none = client.post("/inbox/compose/", {"mrn": "NOT-ON-FILE"})
    assert b"No patient matches exactly" in none.content
    assert client.post("/inbox/compose/", {}).status_code == 400  # no criterion at all


def test_inbox_rows_escape_what_they_print(client, login, alice, tenant_a):
    """Rows are built in Python (views_staff._ROW_HTML): every value is escaped."""
    _thread_by_staff(tenant_a, alice, _other_patient(tenant_a, alice, given_name="<b>Bold</b>", family_name="O'Hara&Co"))
    login(alice)
    content = client.get("/inbox/", {"box": "all"}).content.decode()
    assert "&lt;b&gt;Bold&lt;/b&gt; O&#x27;Hara&amp;Co" in content
    assert "<b>Bold</b>" not in content


def test_inbox_counts_and_page_equal_the_orm_reads(tenant_a, alice, bob, inbox_world):
    """The box counts and the listing are written-out SQL: they must agree with the ORM."""
    from django.db.models import Count, Max, Q, Sum

    with tenant_scope(tenant_a):
        Thread.objects.filter(pk=inbox_world["bobs"].pk).update(urgent=True, link_locked_at=timezone.now())
        counts = selectors.inbox_counts(tenant=tenant_a, user=alice)
        open_ = Q(status="open")
        expected = Thread.objects.aggregate(
            unassigned=Count("pk", filter=open_ & Q(assigned_to__isnull=True)),
            mine=Count("pk", filter=open_ & Q(assigned_to=alice)), all=Count("pk", filter=open_),
            closed=Count("pk", filter=Q(status="closed")),
            unread_unassigned=Count("pk", filter=open_ & Q(assigned_to__isnull=True, staff_unread__gt=0)),
            unread_mine=Count("pk", filter=open_ & Q(assigned_to=alice, staff_unread__gt=0)),
            unread_all=Count("pk", filter=open_ & Q(staff_unread__gt=0)),
            unread_sum=Sum("staff_unread", filter=open_), locked=Count("pk", filter=Q(link_locked_at__isnull=False)),
            changed=Max("updated_at"), activity=Max("last_activity_at"))
        expected["unknown"] = InboundSms.objects.filter(outcome="unknown_number", triaged_at__isnull=True).count()
        assert counts == selectors.InboxCounts(**expected)
        for box in ("unassigned", "mine", "all", "closed"):
            for assignee_id, kind in ((None, ""), (bob.pk, ""), (None, MessageKind.RESULT_NOTICE)):
                page = selectors.inbox_page(tenant=tenant_a, user=alice, box=box, assignee_id=assignee_id, kind=kind)
                orm = list(selectors.inbox_threads(tenant=tenant_a, user=alice, box=box, assignee_id=assignee_id,
                                                   kind=kind))
                assert [t.pk for t in page.object_list] == [t.pk for t in orm], (box, assignee_id, kind)
                assert page.paginator.count == len(orm)
                for got, want in zip(page.object_list, orm, strict=True):
                    assert (got.patient.given_name, got.patient.family_name) == \
                           (want.patient.given_name, want.patient.family_name)
                    assert (got.assigned_to.email if got.assigned_to else None) == \
                           (want.assigned_to.email if want.assigned_to else None)
                    assert (got.urgent, got.staff_unread, got.link_locked_at, got.status, got.kind) == \
                           (want.urgent, want.staff_unread, want.link_locked_at, want.status, want.kind)


def test_inbox_reads_need_their_tenants_scope(tenant_a, tenant_b, alice):
    from django_scopes.exceptions import ScopeError

    for scope in (None, tenant_b):
        with pytest.raises(ScopeError):
            if scope is None:
                selectors.inbox_counts(tenant=tenant_a, user=alice)
            else:
                with tenant_scope(scope):
                    selectors.inbox_page(tenant=tenant_a, user=alice)
