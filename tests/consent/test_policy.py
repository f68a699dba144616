"""Quiet hours across time zones and DST, the automated-notice cap, message kinds and the
send gate (BAA + consent)."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from accounts.errors import ApplicationError
from audit.events import AuditEventType
from audit.models import AuditEvent
from consent import policy, selectors, services
from consent.documents import CURRENT_DISCLOSURE_VERSION
from consent.policy import (
    DEFAULT_NOTICE_CAP,
    NoticeCap,
    SmsKind,
    next_allowed_send,
    notice_cap_for,
    notice_cap_validate,
    notice_slot,
    send_zone,
    staff_message_kind,
)
from consent.selectors import can_sms, tenant_has_baa
from tests.consent.conftest import change_phone, make_patient, sign_baa

UTC = dt.UTC
NY, LA, TOKYO = ZoneInfo("America/New_York"), ZoneInfo("America/Los_Angeles"), ZoneInfo("Asia/Tokyo")


def at(zone, *args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=zone)


# --- quiet hours ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("local", "expected"), [
    ((2026, 6, 10, 8, 0), (2026, 6, 10, 8, 0)),  # opens at 08:00
    ((2026, 6, 10, 12, 30), (2026, 6, 10, 12, 30)),
    ((2026, 6, 10, 20, 59, 59), (2026, 6, 10, 20, 59, 59)),
    ((2026, 6, 10, 21, 0), (2026, 6, 11, 8, 0)),  # 21:00 is already quiet
    ((2026, 6, 10, 23, 45), (2026, 6, 11, 8, 0)),
    ((2026, 6, 10, 0, 5), (2026, 6, 10, 8, 0)),
    ((2026, 6, 10, 7, 59, 59), (2026, 6, 10, 8, 0)),
    ((2026, 12, 31, 22, 0), (2027, 1, 1, 8, 0)),  # over the year's end
])
def test_quiet_hours_in_the_patients_zone(local, expected):
    now = at(NY, *local).astimezone(UTC)
    assert next_allowed_send("America/New_York", now) == at(NY, *expected)


def test_the_same_instant_differs_by_zone():
    now = dt.datetime(2026, 6, 10, 3, 30, tzinfo=UTC)  # 9 June 23:30 New York, 20:30 Los Angeles; 12:30 Tokyo
    assert next_allowed_send("America/New_York", now) == at(NY, 2026, 6, 10, 8, 0)
    assert next_allowed_send("America/Los_Angeles", now) == now
    assert next_allowed_send(TOKYO, now) == now
    assert next_allowed_send("Pacific/Kiritimati", now) == now  # 17:30 at UTC+14


def test_next_morning_stays_0800_across_dst():
    # US spring forward: Sunday 2026-03-08 02:00 EST → 03:00 EDT.
    before = at(NY, 2026, 3, 7, 22, 0)
    assert next_allowed_send("America/New_York", before) == dt.datetime(2026, 3, 8, 12, 0, tzinfo=UTC)  # 08:00 EDT
    # The gap itself (02:30 doesn't exist that night) is quiet too.
    assert next_allowed_send("America/New_York", dt.datetime(2026, 3, 8, 7, 30, tzinfo=UTC)) == \
        dt.datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    # US fall back: Sunday 2026-11-01 02:00 EDT → 01:00 EST; 01:30 happens twice, both quiet.
    for first_or_second in (0, 1):
        ambiguous = dt.datetime(2026, 11, 1, 1, 30, fold=first_or_second, tzinfo=NY)
        assert next_allowed_send("America/New_York", ambiguous) == dt.datetime(2026, 11, 1, 13, 0, tzinfo=UTC)
    # Europe changes on another weekend: 2026-03-29 in London.
    assert next_allowed_send("Europe/London", dt.datetime(2026, 3, 28, 22, 0, tzinfo=UTC)) == \
        dt.datetime(2026, 3, 29, 7, 0, tzinfo=UTC)  # 08:00 BST


def test_urgent_messages_ignore_quiet_hours():
    midnight = at(NY, 2026, 6, 10, 0, 0)
    assert next_allowed_send("America/New_York", midnight, urgent=True) == midnight


def test_a_blank_or_unknown_patient_zone_falls_back_to_the_clinics():
    now = dt.datetime(2026, 6, 10, 3, 30, tzinfo=UTC)
    assert next_allowed_send("", now, clinic_tz="America/Los_Angeles") == now
    assert next_allowed_send("Mars/Olympus", now, clinic_tz="America/New_York") == at(NY, 2026, 6, 10, 8, 0)
    with pytest.raises(ValueError):
        next_allowed_send("", now)  # never guess: a guess could text at 3 am
    with pytest.raises(ValueError):
        next_allowed_send("America/New_York", dt.datetime(2026, 6, 10, 3, 30))  # naive


def test_send_zone_prefers_the_patient_then_the_clinic(tenant_a):
    tenant_a.timezone = "America/Chicago"
    assert send_zone(tenant=tenant_a, patient=type("P", (), {"timezone": "Asia/Tokyo"})()) == TOKYO
    assert str(send_zone(tenant=tenant_a, patient=type("P", (), {"timezone": ""})())) == "America/Chicago"


def test_quiet_hours_under_a_controlled_clock(time_machine):
    time_machine.move_to(dt.datetime(2026, 1, 15, 2, 0, tzinfo=UTC), tick=False)  # 14 January 21:00 in New York
    assert next_allowed_send("America/New_York", timezone.now()) == at(NY, 2026, 1, 15, 8, 0)
    time_machine.move_to(dt.datetime(2026, 1, 15, 13, 0, tzinfo=UTC), tick=False)  # 08:00 in New York
    assert next_allowed_send("America/New_York", timezone.now()) == timezone.now()
    # The night the clocks go forward, the wait is an hour shorter than the UTC arithmetic suggests.
    time_machine.move_to(dt.datetime(2026, 3, 8, 2, 30, tzinfo=UTC), tick=False)  # 7 March 21:30 EST
    slot = next_allowed_send("America/New_York", timezone.now())
    assert slot - timezone.now() == dt.timedelta(hours=9, minutes=30)  # to 08:00 EDT = 12:00 UTC


def test_caps_under_a_controlled_clock(time_machine, tenant_a):
    patient = make_patient(tenant=tenant_a, timezone="America/Chicago")
    time_machine.move_to(dt.datetime(2026, 6, 1, 15, 0, tzinfo=UTC), tick=False)  # Monday 10:00 in Chicago
    sent = []
    for _ in range(5):  # five notices all due now: each waits for its own slot, none dropped
        slot = notice_slot(tenant_a, patient, timezone.now(), sent)
        sent.append(slot)
    days = [s - sent[0] for s in sent]
    assert days == [dt.timedelta(days=d) for d in (0, 1, 2, 7, 8)]  # 1 a day, 3 in any 7 days
    assert all(s.astimezone(ZoneInfo("America/Chicago")).hour == 10 for s in sent)


# --- the frequency cap ---------------------------------------------------------------------------------


@pytest.fixture
def la_patient(tenant_a):
    tenant_a.timezone = "America/Los_Angeles"
    return make_patient(tenant=tenant_a, timezone="America/New_York")


NOON = at(NY, 2026, 6, 10, 12, 0)  # a Wednesday, mid-day in New York


def test_no_notices_sent_means_now(tenant_a, la_patient):
    assert notice_slot(tenant_a, la_patient, NOON, []) == NOON


def test_one_a_day_waits_24_hours(tenant_a, la_patient):
    sent = [NOON - dt.timedelta(hours=3)]
    assert notice_slot(tenant_a, la_patient, NOON, sent) == NOON + dt.timedelta(hours=21)
    assert notice_slot(tenant_a, la_patient, NOON, [NOON - dt.timedelta(hours=24)]) == NOON


def test_three_a_week_waits_for_the_oldest_to_leave_the_week(tenant_a, la_patient):
    sent = [NOON - dt.timedelta(days=d) for d in (6, 4, 2)]
    assert notice_slot(tenant_a, la_patient, NOON, sent) == NOON + dt.timedelta(days=1)  # 7 days after the first
    sent = [NOON - dt.timedelta(days=d) for d in (3, 2, 1)]
    assert notice_slot(tenant_a, la_patient, NOON, sent) == NOON + dt.timedelta(days=4)


def test_scheduled_notices_count_too(tenant_a, la_patient):
    tomorrow = NOON + dt.timedelta(hours=20)  # already scheduled
    slot = notice_slot(tenant_a, la_patient, NOON, [tomorrow])
    assert slot == tomorrow + dt.timedelta(days=1)  # not today: that would be two within 24 hours


def test_the_slot_is_never_in_quiet_hours(tenant_a, la_patient):
    late = at(NY, 2026, 6, 10, 22, 30)
    assert notice_slot(tenant_a, la_patient, late, []) == at(NY, 2026, 6, 11, 8, 0)
    # Sent yesterday 20:30 → the next may go today 20:30, still before 21:00; sent yesterday
    # 21:30 (an urgent one) → today 21:30 is quiet → tomorrow 08:00.
    assert notice_slot(tenant_a, la_patient, NOON, [at(NY, 2026, 6, 9, 20, 30)]) == at(NY, 2026, 6, 10, 20, 30)
    sent_late = at(NY, 2026, 6, 9, 21, 30)
    assert notice_slot(tenant_a, la_patient, at(NY, 2026, 6, 10, 9, 0), [sent_late]) == at(NY, 2026, 6, 11, 8, 0)


def test_the_clinic_may_lower_the_cap(tenant_a, la_patient, alice):
    from accounts.tenancy import tenant_scope

    with tenant_scope(tenant_a):
        assert services.notice_cap_set(tenant=tenant_a, actor=alice, per_day=1, per_week=2) == NoticeCap(1, 2)
    tenant_a.refresh_from_db()
    assert tenant_a.settings["notice_cap"] == {"per_day": 1, "per_week": 2}
    sent = [NOON - dt.timedelta(days=d) for d in (5, 2)]
    assert notice_slot(tenant_a, la_patient, NOON, sent) == NOON + dt.timedelta(days=2)
    with tenant_scope(tenant_a):
        event = AuditEvent.objects.get(event_type=AuditEventType.TENANT_SETTINGS_CHANGED)
    assert event.details == {"fields": ["notice_cap"]}


@pytest.mark.parametrize(("per_day", "per_week", "bad"), [
    (2, 3, "per_day"), (1, 4, "per_week"), (0, 3, "per_day"), (1, 0, "per_week"), (-1, 3, "per_day"),
    ("1", 3, "per_day"), (1, 2.5, "per_week"), (True, 3, "per_day"), (None, 3, "per_day"),
])
def test_a_higher_or_malformed_cap_is_refused(tenant_a, alice, per_day, per_week, bad):
    from accounts.tenancy import tenant_scope

    with tenant_scope(tenant_a), pytest.raises(ApplicationError) as caught:
        services.notice_cap_set(tenant=tenant_a, actor=alice, per_day=per_day, per_week=per_week)
    assert bad in caught.value.fields
    tenant_a.refresh_from_db()
    assert "notice_cap" not in tenant_a.settings


@pytest.mark.parametrize("stored", [{"per_day": 5, "per_week": 20}, {"per_week": 9}, "lots", [1, 3], {"x": 1}])
def test_a_bad_stored_cap_reads_as_the_default_never_looser(tenant_a, stored):
    tenant_a.settings = {"notice_cap": stored}
    assert notice_cap_for(tenant_a) == DEFAULT_NOTICE_CAP


def test_a_partial_cap_keeps_the_default_for_the_rest():
    assert notice_cap_validate({"per_week": 2}) == NoticeCap(per_day=1, per_week=2)


# --- kinds ---------------------------------------------------------------------------------------


def test_which_kinds_are_capped_and_which_need_consent():
    assert policy.AUTOMATED_KINDS == {SmsKind.REMINDER, SmsKind.RESULT_NOTICE, SmsKind.BROADCAST, SmsKind.NUDGE,
                                      SmsKind.STAFF_MESSAGE}
    for kind in (SmsKind.STAFF_REPLY, SmsKind.KEYWORD_REPLY, SmsKind.ONE_TIME_CODE):
        assert not policy.kind_rule(kind).capped
    assert not policy.kind_rule(SmsKind.KEYWORD_REPLY).needs_consent
    assert not policy.kind_rule(SmsKind.ONE_TIME_CODE).quiet_hours
    assert policy.kind_rule(SmsKind.STAFF_REPLY).needs_consent
    with pytest.raises(ValueError):
        policy.kind_rule("marketing")


def test_a_staff_message_is_a_reply_only_within_24_hours_of_the_patients_message():
    now = NOON
    assert staff_message_kind(last_inbound_at=now - dt.timedelta(hours=23), now=now) == SmsKind.STAFF_REPLY
    assert staff_message_kind(last_inbound_at=now - dt.timedelta(hours=25), now=now) == SmsKind.STAFF_MESSAGE
    assert staff_message_kind(last_inbound_at=None, now=now) == SmsKind.STAFF_MESSAGE


# --- the send gate: BAA, consent, kind ------------------------------------------------------------------


def _grant(tenant, actor, patient):
    return services.consent_grant(tenant=tenant, actor=actor, patient=patient, method="verbal",
                                  disclosure_version=CURRENT_DISCLOSURE_VERSION, evidence="Said yes in clinic")


def test_nothing_at_all_is_sent_before_the_baa(in_a, bob, patient_a):
    _grant(in_a, bob, patient_a)
    assert not tenant_has_baa(in_a)
    for kind in SmsKind:
        assert can_sms(in_a, patient_a, kind=kind) == (False, "no_baa")


def test_with_a_baa_consent_decides(in_a, alice, bob, patient_a):
    sign_baa(tenant=in_a, owner=alice)
    assert tenant_has_baa(in_a)
    assert can_sms(in_a, patient_a, kind=SmsKind.REMINDER) == (False, "never_granted")
    assert can_sms(in_a, patient_a, kind=SmsKind.KEYWORD_REPLY) == (True, "exempt")
    assert can_sms(in_a, patient_a, kind=SmsKind.ONE_TIME_CODE) == (True, "exempt")
    _grant(in_a, bob, patient_a)
    assert can_sms(in_a, patient_a, kind=SmsKind.REMINDER) == (True, "granted")
    assert can_sms(in_a, patient_a, kind=SmsKind.STAFF_REPLY) == (True, "granted")
    services.consent_apply_keyword(tenant=in_a, patient=patient_a, text="STOP", evidence="SM1")
    assert can_sms(in_a, patient_a, kind=SmsKind.RESULT_NOTICE) == (False, "revoked")
    assert can_sms(in_a, patient_a, kind=SmsKind.KEYWORD_REPLY) == (True, "exempt")  # the confirmation goes


def _baa_queries(tenant) -> tuple[bool, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        signed = tenant_has_baa(tenant)
    return signed, sum("consent_businessassociateagreement" in q["sql"] for q in queries.captured_queries)


def test_a_settled_baa_is_remembered_and_a_fresh_one_or_none_is_not(in_a, alice, tenant_b, time_machine):
    from django.db import connection

    from accounts.permissions import Role
    from accounts.tenancy import tenant_scope
    from tests.factories import make_member

    assert _baa_queries(in_a) == (False, 1)
    assert _baa_queries(in_a) == (False, 1)  # "no" is asked again every time
    sign_baa(tenant=in_a, owner=alice)  # just now: it could still be this transaction's own row
    assert _baa_queries(in_a) == (True, 1)
    assert _baa_queries(in_a) == (True, 1)
    now = timezone.now()
    time_machine.move_to(now - dt.timedelta(minutes=10), tick=False)  # another clinic signed ten minutes ago
    with tenant_scope(tenant_b):
        sign_baa(tenant=tenant_b, owner=make_member(tenant=tenant_b, role=Role.OWNER, email="owner-b@baa.test"))
    time_machine.move_to(now, tick=False)
    with tenant_scope(tenant_b):
        assert _baa_queries(tenant_b) == (True, 1)
        assert _baa_queries(tenant_b) == (True, 0)  # remembered (per database and clinic)
        assert can_sms(tenant_b, make_patient(tenant=tenant_b), kind=SmsKind.KEYWORD_REPLY) == (True, "exempt")
    assert (connection.settings_dict["NAME"], in_a.pk) not in selectors._BAA_SIGNED


def test_a_changed_number_suspends_sms_until_consent_is_captured_again(in_a, alice, bob, patient_a):
    sign_baa(tenant=in_a, owner=alice)
    _grant(in_a, bob, patient_a)
    change_phone(patient_a, "+12025550188")
    patient = type(patient_a).objects.get(pk=patient_a.pk)
    assert can_sms(in_a, patient, kind=SmsKind.BROADCAST) == (False, "number_changed")
    _grant(in_a, bob, patient)
    assert can_sms(in_a, patient, kind=SmsKind.BROADCAST) == (True, "granted")


def test_inactive_patients_get_nothing_but_keyword_replies(in_a, alice, bob, patient_a):
    sign_baa(tenant=in_a, owner=alice)
    _grant(in_a, bob, patient_a)
    patient_a.is_active = False
    assert can_sms(in_a, patient_a, kind=SmsKind.REMINDER) == (False, "patient_inactive")
    assert can_sms(in_a, patient_a, kind=SmsKind.KEYWORD_REPLY) == (True, "exempt")


def test_one_clinics_baa_does_not_cover_another(tenant_a, tenant_b, alice):
    from accounts.tenancy import tenant_scope

    sign_baa(tenant=tenant_a, owner=alice)
    patient_b = make_patient(tenant=tenant_b)
    with tenant_scope(tenant_b):
        assert not tenant_has_baa(tenant_b)
        assert can_sms(tenant_b, patient_b, kind=SmsKind.KEYWORD_REPLY) == (False, "no_baa")


def test_can_sms_refuses_unknown_kinds(in_a, patient_a):
    with pytest.raises(ValueError):
        can_sms(in_a, patient_a, kind="marketing")
