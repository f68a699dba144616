"""Secure links and the patient's session, through messaging.links and messaging.routing:
tokens and their hashes, lifetime, superseding and revoking, the birth-date check and its
lock, the step-up code, session timeouts and the per-IP counters."""

from __future__ import annotations

import datetime
import hashlib
import re
import secrets
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from accounts.errors import ApplicationError
from accounts.services import tenant_update_settings
from audit.events import AuditEventType
from audit.models import AuditEvent
from consent.services import consent_revoke
from integrations.models import LocalSms
from integrations.sms.faulty import FaultyGateway
from messaging import links, services
from messaging.models import OutboundSms, PatientSession, SecureLink, SmsStatus, Thread
from messaging.outbox import sms_send_one
from messaging.routing import link_for_token
from tests.messaging.conftest import BIRTH_DATE

BODY = "Your thyroid panel is normal."
WRONG_DATE = datetime.date(1984, 3, 10)


def _freeze(time_machine) -> datetime.datetime:
    time_machine.move_to(timezone.now(), tick=False)
    return timezone.now()


def _send(tenant, actor, patient, *, kind: str = "general", thread=None) -> tuple[SecureLink, str, OutboundSms]:
    """message_send, then one attempt through a gateway that accepts it. Returns the link,
    its token (taken from the outbox row before it is erased) and the row."""
    target = {"thread": thread} if thread is not None else {"patient": patient}
    message = services.message_send(tenant=tenant, actor=actor, body=BODY, kind=kind, **target)
    row = OutboundSms.objects.get(message=message)
    token = row.payload
    if row.status == SmsStatus.QUEUED:
        assert sms_send_one(tenant=tenant, sms_id=row.pk, gateway=FaultyGateway()) == "sent"
    return SecureLink.objects.get(pk=row.link_id), token, OutboundSms.objects.get(pk=row.pk)


def _session(tenant, link) -> PatientSession:
    session, _key = links.patient_session_start(tenant=tenant, link=SecureLink.objects.get(pk=link.pk))
    return PatientSession.objects.get(pk=session.pk)


def _fresh(session: PatientSession) -> PatientSession:
    return PatientSession.objects.select_related("link", "thread").get(pk=session.pk)


def _events(event_type, link) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_type=event_type, object_id=str(link.pk)).order_by("occurred_at", "id"))


# --- the token --------------------------------------------------------------------------------------------


def test_token_is_43_url_safe_chars_and_only_its_hash_is_stored(tenant_a, alice, patient, in_a):
    message = services.message_send(tenant=tenant_a, actor=alice, patient=patient, body=BODY)
    row = OutboundSms.objects.get(message=message)
    token = row.payload
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
    link = SecureLink.objects.get(pk=row.link_id)
    assert link.token_hash == hashlib.sha256(token.encode()).hexdigest()
    # No column of any messaging or audit row holds the token in clear (the outbox payload is encrypted).
    tables = ["messaging_securelink", "messaging_outboundsms", "messaging_thread", "messaging_message",
              "audit_auditevent"]
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"SELECT row_to_json(t)::text FROM {table} t")  # noqa: S608 - fixed names
            rows = [r[0] for r in cursor.fetchall()]
            assert rows, table
            assert not any(token in text for text in rows), table
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=FaultyGateway()) == "sent"
    assert OutboundSms.objects.get(pk=row.pk).payload is None  # erased once it left


def test_link_is_found_only_with_its_exact_token(tenant_a, alice, patient, in_a):
    link, token, _row = _send(tenant_a, alice, patient)
    found = link_for_token(token)
    assert found is not None and found.pk == link.pk and found.tenant_id == tenant_a.pk
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert link_for_token(flipped) is None
    assert link_for_token(token[:-1]) is None
    assert link_for_token(token + "A") is None
    assert link_for_token(link.token_hash) is None  # the hash is not a token
    assert link_for_token("") is None


def test_link_lives_seven_days_by_default(tenant_a, alice, patient, in_a, time_machine):
    now = _freeze(time_machine)
    link, _token, _row = _send(tenant_a, alice, patient)
    assert link.expires_at == now + timedelta(days=7)
    assert links.link_usable(link, now + timedelta(days=7) - timedelta(seconds=1))
    assert not links.link_usable(link, now + timedelta(days=7))


def test_clinic_link_lifetime_is_respected(tenant_a, alice, patient, in_a, time_machine):
    now = _freeze(time_machine)
    tenant_update_settings(tenant=tenant_a, actor=alice, link_lifetime_days=2)
    link, _token, _row = _send(tenant_a, alice, patient)
    assert link.expires_at == now + timedelta(days=2)
    assert not links.link_usable(link, now + timedelta(days=2, seconds=1))


# --- superseding and revoking ---------------------------------------------------------------------------


def test_newer_notice_supersedes_older_links_only_when_it_is_sent(tenant_a, alice, patient, in_a, time_machine):
    _freeze(time_machine)
    first, _token, first_row = _send(tenant_a, alice, patient)
    thread = Thread.objects.get(pk=first.thread_id)
    # A second message within a day waits for the frequency cap, with a new link.
    second, _token2, second_row = _send(tenant_a, alice, patient, thread=thread)
    assert second_row.status == SmsStatus.WAITING and second.pk != first.pk
    first.refresh_from_db()
    assert first.revoked_at is None  # the patient's last link keeps working while the notice waits
    assert links.link_usable(first)
    time_machine.move_to(second_row.next_attempt_at, tick=False)
    assert sms_send_one(tenant=tenant_a, sms_id=second_row.pk, gateway=FaultyGateway()) == "sent"
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.revoked_at is not None and first.revoked_reason == "superseded"
    assert second.revoked_at is None and links.link_usable(second)


def test_link_create_without_supersede_leaves_older_links_until_the_claim(tenant_a, alice, patient, in_a):
    from messaging.outbox import sms_enqueue

    first, _token, _row = _send(tenant_a, alice, patient)
    thread = Thread.objects.get(pk=first.thread_id)
    newer, token = links.link_create(tenant=tenant_a, thread=thread, actor=alice, supersede=False)
    first.refresh_from_db()
    assert first.revoked_at is None
    row = sms_enqueue(tenant=tenant_a, to=patient.phone, notification="link_notice", sms_kind="staff_reply",
                      payload=token, patient=patient, link=newer)
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=FaultyGateway()) == "sent"
    first.refresh_from_db()
    assert first.revoked_reason == "superseded"
    newer.refresh_from_db()
    assert newer.revoked_at is None


def test_link_create_supersedes_at_once_by_default(tenant_a, alice, patient, in_a):
    first, _token, _row = _send(tenant_a, alice, patient)
    links.link_create(tenant=tenant_a, thread=Thread.objects.get(pk=first.thread_id), actor=alice)
    first.refresh_from_db()
    assert first.revoked_reason == "superseded"


def test_link_resend_keeps_old_links_until_the_new_notice_goes(tenant_a, alice, patient, in_a, time_machine):
    now = _freeze(time_machine)
    first, _token, _row = _send(tenant_a, alice, patient)
    thread = Thread.objects.get(pk=first.thread_id)
    # Within the cap of the first notice: the re-sent notice waits, and the first link keeps working.
    held = services.link_resend(tenant=tenant_a, actor=alice, thread=thread)
    assert held.status == SmsStatus.WAITING
    first.refresh_from_db()
    assert first.revoked_at is None
    time_machine.move_to(now + timedelta(hours=25), tick=False)  # past the cap of the first notice
    Thread.objects.filter(pk=thread.pk).update(link_locked_at=timezone.now())
    row = services.link_resend(tenant=tenant_a, actor=alice, thread=thread)
    assert row.pk == held.pk  # one unsent notice per thread, carrying the newest link
    assert row.notification == "link_notice" and row.link.revoked_at is None
    assert Thread.objects.get(pk=thread.pk).link_locked_at is None
    assert sms_send_one(tenant=tenant_a, sms_id=row.pk, gateway=FaultyGateway()) == "sent"
    first.refresh_from_db()
    assert first.revoked_at is not None and first.revoked_reason == "superseded"


def test_link_resend_is_refused_without_consent_and_changes_nothing(tenant_a, alice, patient, in_a):
    first, _token, _row = _send(tenant_a, alice, patient)
    consent_revoke(tenant=tenant_a, actor=alice, patient=patient, method="verbal", evidence="Phoned in")
    before = OutboundSms.objects.count()
    with pytest.raises(ApplicationError) as exc:
        services.link_resend(tenant=tenant_a, actor=alice, thread=Thread.objects.get(pk=first.thread_id))
    assert "patient" in exc.value.fields
    first.refresh_from_db()
    assert first.revoked_at is None
    assert OutboundSms.objects.count() == before


def test_link_revoke_revokes_links_cancels_unsent_notices_and_ends_sessions(tenant_a, alice, patient, in_a):
    first, _token, _row = _send(tenant_a, alice, patient)
    thread = Thread.objects.get(pk=first.thread_id)
    session = _session(tenant_a, first)
    second, _token2, pending = _send(tenant_a, alice, patient, thread=thread)
    assert pending.status == SmsStatus.WAITING
    assert links.link_revoke(tenant=tenant_a, actor=alice, thread=thread) == 2
    for link in (first, second):
        link.refresh_from_db()
        assert link.revoked_at is not None and link.revoked_reason == "staff"
        [event] = _events(AuditEventType.LINK_REVOKED, link)
        assert event.actor_user_id == alice.pk
    pending = OutboundSms.objects.get(pk=pending.pk)
    assert pending.status == SmsStatus.CANCELLED and pending.payload is None
    assert _fresh(session).ended_at is not None
    assert links.session_state(_fresh(session)) is None


# --- the birth date and the lock --------------------------------------------------------------------------


def test_five_wrong_birth_dates_lock_the_link_for_thirty_minutes(tenant_a, alice, patient, in_a, time_machine):
    now = _freeze(time_machine)
    link, _token, _row = _send(tenant_a, alice, patient)
    session = _session(tenant_a, link)
    for count in range(1, 5):
        assert not links.verify_birth_date(tenant=tenant_a, session=_fresh(session), birth_date=WRONG_DATE)
        assert SecureLink.objects.get(pk=link.pk).failed_attempts == count
        assert SecureLink.objects.get(pk=link.pk).locked_until is None
    assert not links.verify_birth_date(tenant=tenant_a, session=_fresh(session), birth_date=WRONG_DATE)
    link.refresh_from_db()
    assert link.locked_until == now + timedelta(minutes=30)
    assert not links.link_usable(link)
    thread = Thread.objects.get(pk=link.thread_id)
    assert thread.link_locked_at == now and thread.staff_unread == 1  # staff are told
    assert _fresh(session).ended_at is not None
    failed = _events(AuditEventType.LINK_FAILED, link)
    assert len(failed) == 5
    assert {e.actor_type for e in failed} == {"patient"}
    # The clock is frozen: the five share one timestamp, so compare as a set of counts.
    assert sorted(e.details["count"] for e in failed) == [1, 2, 3, 4, 5]
    [locked] = _events(AuditEventType.LINK_LOCKED, link)
    assert locked.actor_type == "patient" and locked.patient_id == patient.pk
    # Even the right answer does nothing while locked: the session is gone.
    assert links.session_state(_fresh(session)) is None
    time_machine.move_to(now + timedelta(minutes=29, seconds=59), tick=False)
    assert not links.link_usable(SecureLink.objects.get(pk=link.pk))
    time_machine.move_to(now + timedelta(minutes=30, seconds=1), tick=False)
    link.refresh_from_db()
    assert links.link_usable(link)
    again = _session(tenant_a, link)
    assert links.verify_birth_date(tenant=tenant_a, session=again, birth_date=BIRTH_DATE)
    assert links.session_state(_fresh(again)).verified


def test_right_birth_date_resets_the_failure_count(tenant_a, alice, patient, in_a):
    link, _token, _row = _send(tenant_a, alice, patient)
    session = _session(tenant_a, link)
    for _ in range(4):
        links.verify_birth_date(tenant=tenant_a, session=_fresh(session), birth_date=WRONG_DATE)
    assert links.verify_birth_date(tenant=tenant_a, session=_fresh(session), birth_date=BIRTH_DATE)
    link.refresh_from_db()
    assert link.failed_attempts == 0 and link.verified_at is not None
    [verified] = _events(AuditEventType.LINK_VERIFIED, link)
    assert verified.details == {"step": "birth_date"} and verified.actor_type == "patient"


# --- the step-up code ------------------------------------------------------------------------------------


def test_result_notice_needs_the_code(tenant_a, alice, patient, in_a):
    link, _token, _row = _send(tenant_a, alice, patient, kind="result_notice")
    session = _session(tenant_a, link)
    state = links.session_state(_fresh(session))
    assert not state.dob_ok and not state.verified
    assert links.verify_birth_date(tenant=tenant_a, session=_fresh(session), birth_date=BIRTH_DATE)
    state = links.session_state(_fresh(session))
    assert state.dob_ok and state.code_needed and not state.verified


def test_fresh_general_link_needs_no_code_but_a_day_old_one_does(tenant_a, alice, patient, in_a, time_machine):
    now = _freeze(time_machine)
    link, _token, _row = _send(tenant_a, alice, patient)
    session = _session(tenant_a, link)
    links.verify_birth_date(tenant=tenant_a, session=_fresh(session), birth_date=BIRTH_DATE)
    state = links.session_state(_fresh(session))
    assert state.verified and not state.code_needed
    time_machine.move_to(now + timedelta(hours=24, minutes=1), tick=False)
    later = _session(tenant_a, link)
    links.verify_birth_date(tenant=tenant_a, session=_fresh(later), birth_date=BIRTH_DATE)
    state = links.session_state(_fresh(later))
    assert state.dob_ok and state.code_needed and not state.verified


def test_code_needs_the_birth_date_first(tenant_a, alice, patient, in_a):
    link, _token, _row = _send(tenant_a, alice, patient, kind="result_notice")
    session = _session(tenant_a, link)
    with pytest.raises(ApplicationError) as exc:
        links.code_send(tenant=tenant_a, session=session)
    assert exc.value.code == "order"
    assert not OutboundSms.objects.filter(notification="one_time_code").exists()


def test_code_sms_carries_only_the_code_and_verifies_once(tenant_a, alice, patient, in_a,
                                                           django_capture_on_commit_callbacks):
    link, _token, _row = _send(tenant_a, alice, patient, kind="result_notice")
    session = _session(tenant_a, link)
    links.verify_birth_date(tenant=tenant_a, session=_fresh(session), birth_date=BIRTH_DATE)
    with django_capture_on_commit_callbacks(execute=True):
        links.code_send(tenant=tenant_a, session=_fresh(session))
    [sms] = LocalSms.objects.filter(kind="one_time_code")
    match = re.fullmatch(r"Test Clinic: Your code is (\d{6})\. It expires in 10 minutes\.", sms.body)
    assert match, sms.body
    for phi in ("Ada", "Quill", "1984", "03/09", "thyroid", "2025550171"):
        assert phi not in sms.body
    row = OutboundSms.objects.get(notification="one_time_code")
    assert row.sms_kind == "one_time_code" and row.status == SmsStatus.DELIVERED and row.payload is None
    [event] = AuditEvent.objects.filter(event_type=AuditEventType.LINK_CODE_SENT)
    assert event.details == {"sms_id": str(row.pk)} and event.actor_type == "patient"
    code = match.group(1)
    assert links.verify_code(tenant=tenant_a, session=_fresh(session), code=code)
    assert links.session_state(_fresh(session)).verified
    assert not links.verify_code(tenant=tenant_a, session=_fresh(session), code=code)  # single use
    assert SecureLink.objects.get(pk=link.pk).failed_attempts == 1


def test_code_requests_are_rate_limited(tenant_a, alice, patient, in_a, time_machine):
    now = _freeze(time_machine)
    link, _token, _row = _send(tenant_a, alice, patient, kind="result_notice")
    session = _session(tenant_a, link)
    links.verify_birth_date(tenant=tenant_a, session=_fresh(session), birth_date=BIRTH_DATE)
    links.code_send(tenant=tenant_a, session=_fresh(session))
    with pytest.raises(ApplicationError) as exc:
        links.code_send(tenant=tenant_a, session=_fresh(session))
    assert exc.value.code == "too_soon"
    for n in range(1, 5):
        time_machine.move_to(now + timedelta(seconds=61 * n), tick=False)
        links.code_send(tenant=tenant_a, session=_fresh(session))
    assert OutboundSms.objects.filter(notification="one_time_code").count() == 5
    time_machine.move_to(now + timedelta(seconds=61 * 5), tick=False)
    with pytest.raises(ApplicationError) as exc:
        links.code_send(tenant=tenant_a, session=_fresh(session))
    assert exc.value.code == "too_many"
    assert OutboundSms.objects.filter(notification="one_time_code").count() == 5


def test_only_the_newest_code_works_and_it_expires_after_ten_minutes(tenant_a, alice, patient, in_a,
                                                                     time_machine):
    now = _freeze(time_machine)
    link, _token, _row = _send(tenant_a, alice, patient, kind="result_notice")
    session = _session(tenant_a, link)
    links.verify_birth_date(tenant=tenant_a, session=_fresh(session), birth_date=BIRTH_DATE)
    links.code_send(tenant=tenant_a, session=_fresh(session))
    old_code = OutboundSms.objects.get(notification="one_time_code").payload
    time_machine.move_to(now + timedelta(seconds=61), tick=False)
    links.code_send(tenant=tenant_a, session=_fresh(session))
    sent_at = timezone.now()
    new_code = OutboundSms.objects.filter(notification="one_time_code").order_by("-created_at").first().payload
    if old_code != new_code:
        assert not links.verify_code(tenant=tenant_a, session=_fresh(session), code=old_code)
    time_machine.move_to(sent_at + timedelta(minutes=10), tick=False)
    assert not links.verify_code(tenant=tenant_a, session=_fresh(session), code=new_code)
    assert _fresh(session).code_verified_at is None


def test_code_within_ten_minutes_works(tenant_a, alice, patient, in_a, time_machine):
    now = _freeze(time_machine)
    link, _token, _row = _send(tenant_a, alice, patient, kind="result_notice")
    session = _session(tenant_a, link)
    links.verify_birth_date(tenant=tenant_a, session=_fresh(session), birth_date=BIRTH_DATE)
    links.code_send(tenant=tenant_a, session=_fresh(session))
    code = OutboundSms.objects.get(notification="one_time_code").payload
    time_machine.move_to(now + timedelta(minutes=9, seconds=59), tick=False)
    assert links.verify_code(tenant=tenant_a, session=_fresh(session), code=code)


def test_wrong_codes_count_toward_the_lock(tenant_a, alice, patient, in_a):
    link, _token, _row = _send(tenant_a, alice, patient, kind="result_notice")
    session = _session(tenant_a, link)
    links.verify_birth_date(tenant=tenant_a, session=_fresh(session), birth_date=BIRTH_DATE)
    links.code_send(tenant=tenant_a, session=_fresh(session))
    code = OutboundSms.objects.get(notification="one_time_code").payload
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for _ in range(5):
        assert not links.verify_code(tenant=tenant_a, session=_fresh(session), code=wrong)
    link.refresh_from_db()
    assert link.locked_until is not None and not links.link_usable(link)
    assert [e.details["step"] for e in _events(AuditEventType.LINK_FAILED, link)] == ["code"] * 5
    assert len(_events(AuditEventType.LINK_LOCKED, link)) == 1
    assert links.session_state(_fresh(session)) is None  # the lock ended the session


# --- the session ---------------------------------------------------------------------------------------------


def test_session_idles_out_after_ten_minutes(tenant_a, alice, patient, in_a, time_machine):
    now = _freeze(time_machine)
    link, _token, _row = _send(tenant_a, alice, patient)
    session = _session(tenant_a, link)
    links.verify_birth_date(tenant=tenant_a, session=_fresh(session), birth_date=BIRTH_DATE)
    time_machine.move_to(now + timedelta(minutes=9), tick=False)
    assert links.session_state(_fresh(session)).verified
    links.session_touch(_fresh(session))
    time_machine.move_to(now + timedelta(minutes=18), tick=False)
    assert links.session_state(_fresh(session)) is not None  # touched at 9 minutes
    time_machine.move_to(now + timedelta(minutes=19, seconds=1), tick=False)
    assert links.session_state(_fresh(session)) is None


def test_sign_out_ends_the_session(tenant_a, alice, patient, in_a):
    link, _token, _row = _send(tenant_a, alice, patient)
    session = _session(tenant_a, link)
    links.verify_birth_date(tenant=tenant_a, session=_fresh(session), birth_date=BIRTH_DATE)
    links.patient_sign_out(tenant=tenant_a, session=_fresh(session))
    assert _fresh(session).ended_at is not None
    assert links.session_state(_fresh(session)) is None
    [event] = AuditEvent.objects.filter(event_type=AuditEventType.PATIENT_SIGNED_OUT)
    assert event.actor_type == "patient" and event.patient_id == patient.pk
    assert links.link_usable(SecureLink.objects.get(pk=link.pk))  # the link itself still works


# --- form parsing and per-IP counters ------------------------------------------------------------------------


@pytest.mark.parametrize("year,month,day,fields", [
    ("1984", "13", "9", {"month"}),
    ("1984", "2", "31", {"day"}),
    ("19a4", "3", "9", {"year"}),
    ("1984", "March", "9", {"month"}),
    ("", "", "", {"year", "month", "day"}),
    (None, "3", "0", {"year", "day"}),
    ("1899", "3", "9", {"year"}),
    ("1984", "-3", "9", {"month"}),
])
def test_parse_birth_date_names_the_bad_field(year, month, day, fields):
    with pytest.raises(ApplicationError) as exc:
        links.parse_birth_date(year=year, month=month, day=day)
    assert set(exc.value.fields) == fields
    assert all(exc.value.fields[name] for name in fields)


def test_parse_birth_date_accepts_a_real_date():
    assert links.parse_birth_date(year=" 1984 ", month="03", day="9") == datetime.date(1984, 3, 9)
    assert links.parse_birth_date(year=2000, month=2, day=29) == datetime.date(2000, 2, 29)


def test_ip_counter_blocks_after_the_limit_per_ip():
    ip, other = "198.51.100.7", "203.0.113.9"
    kind = f"test-{secrets.token_hex(8)}"  # the counters live in Redis for 15 minutes: a fresh kind per run
    assert [links.ip_allowed(kind, ip, 3) for _ in range(3)] == [True, True, True]
    assert links.ip_blocked(kind, ip, 3)
    assert links.ip_allowed(kind, ip, 3) is False
    assert links.ip_allowed(kind, other, 3) is True  # counted per IP
    assert not links.ip_blocked(kind, other, 3)
    assert links.ip_allowed(kind, None, 3) is True  # no IP known: never blocked


def test_ip_counters_are_the_caches_own_keys_and_numbers():
    """The counters go to Redis through their own client, on the cache's keys and encoding: what
    they count, the cache reads (and a count the cache wrote, they read)."""
    from django.core.cache import cache

    ip, kind = "198.51.100.8", f"test-{secrets.token_hex(8)}"
    key = links._ip_key(kind, ip)
    client = links._counter_client()
    assert client is not None  # the test settings' cache is Redis, as in production
    assert [links.ip_allowed(kind, ip, 5) for _ in range(2)] == [True, True]
    assert cache.get(key) == 2
    assert 0 < client.ttl(cache.make_key(key)) <= links.IP_WINDOW_SECONDS  # the window started with the first
    cache.set(key, 5, 60)
    assert links.ip_blocked(kind, ip, 5) and links.ip_allowed(kind, ip, 5) is False


def test_ip_counters_work_on_any_cache(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    assert links._counter_client() is None  # the demo's cache: through the cache API
    ip, kind = "198.51.100.9", f"test-{secrets.token_hex(8)}"
    assert [links.ip_allowed(kind, ip, 2) for _ in range(3)] == [True, True, False]
    assert links.ip_blocked(kind, ip, 2)


def test_ip_counters_fail_open_when_redis_is_down(settings):
    """A cache outage must not lock every patient out (nor block them)."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:1/0"}}
    ip, kind = "198.51.100.10", f"test-{secrets.token_hex(8)}"
    assert links.ip_allowed(kind, ip, 1) is True
    assert links.ip_blocked(kind, ip, 1) is False
