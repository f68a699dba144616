"""The ledger: recording, the derived state (incl. reassigned numbers), keywords acting on
it exactly once, append-only storage and the audit trail it leaves."""

import datetime
import json
import threading
from unittest import mock

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from accounts.errors import ApplicationError
from accounts.tenancy import tenant_scope
from audit.events import ALLOWED_DETAIL_KEYS, AuditEventType
from audit.models import AuditEvent
from consent import selectors, services
from consent.documents import CURRENT_DISCLOSURE_VERSION, KEYWORD_DISCLOSURE_VERSION
from consent.keywords import ReplyKind
from consent.models import ConsentEvent
from consent.selectors import ConsentStatus, consent_state, consent_summary
from tests.consent.conftest import change_phone, make_patient
from tests.factories import make_tenant

V = CURRENT_DISCLOSURE_VERSION


def _grant(tenant, actor, patient, **extra):
    values = {"method": "verbal", "disclosure_version": V, "evidence": "Agreed at the front desk"} | extra
    return services.consent_grant(tenant=tenant, actor=actor, patient=patient, **values)


def _revoke(tenant, actor, patient, **extra):
    values = {"method": "verbal", "evidence": "Asked by phone to stop texts"} | extra
    return services.consent_revoke(tenant=tenant, actor=actor, patient=patient, **values)


def _fresh(patient):
    return type(patient).objects.get(pk=patient.pk)


# --- recording and deriving ------------------------------------------------------------------------


def test_a_patient_without_events_has_no_consent(in_a, patient_a):
    assert consent_state(in_a, patient_a) == "none"
    assert consent_summary(in_a, patient_a).reason == "never_granted"


def test_grant_then_revoke_then_grant(in_a, bob, patient_a):
    event = _grant(in_a, bob, patient_a)
    assert consent_state(in_a, patient_a) == ConsentStatus.GRANTED == "granted"
    assert event.captured_by == bob and event.phone_index == patient_a.phone_index
    assert event.evidence == "Agreed at the front desk" and event.disclosure_version == V
    _revoke(in_a, bob, patient_a)
    assert consent_state(in_a, patient_a) == "revoked"
    _grant(in_a, bob, patient_a, method="paper_form", evidence="Form in chart, scanned 2026-11-25")
    assert consent_state(in_a, patient_a) == "granted"
    assert ConsentEvent.objects.filter(patient=patient_a).count() == 3  # nothing was overwritten


def test_the_latest_occurrence_decides_even_when_recorded_out_of_order(in_a, bob, patient_a):
    now = timezone.now()
    _revoke(in_a, bob, patient_a, occurred_at=now - datetime.timedelta(hours=1))
    _grant(in_a, None, patient_a, method="ehr_import", evidence="EHR consent 123",
           occurred_at=now - datetime.timedelta(days=3))  # back-dated import of an older grant
    assert consent_state(in_a, patient_a) == "revoked"


def test_a_changed_number_needs_consent_again(in_a, bob, patient_a):
    _grant(in_a, bob, patient_a)
    change_phone(patient_a, "+12025550188")
    summary = consent_summary(in_a, _fresh(patient_a))
    assert summary.status == "none" and summary.reason == "number_changed"
    _grant(in_a, bob, patient_a)
    assert consent_state(in_a, _fresh(patient_a)) == "granted"


def test_a_grant_older_than_the_phone_change_does_not_count_for_the_same_number(in_a, bob, patient_a):
    """Number A → B → A: consent given for A before the changes may belong to someone else now."""
    _grant(in_a, bob, patient_a, occurred_at=timezone.now() - datetime.timedelta(days=30))
    change_phone(patient_a, "+12025550188", at=timezone.now() - datetime.timedelta(days=20))
    change_phone(patient_a, "+12025550143", at=timezone.now() - datetime.timedelta(days=1))
    summary = consent_summary(in_a, _fresh(patient_a))
    assert summary.status == "none" and summary.reason == "number_changed"


def test_a_revoke_for_the_old_number_does_not_block_the_new_one_once_granted(in_a, bob, patient_a):
    _revoke(in_a, bob, patient_a)
    change_phone(patient_a, "+12025550188")
    assert consent_summary(in_a, _fresh(patient_a)).reason == "never_granted"
    _grant(in_a, bob, _fresh(patient_a))
    assert consent_state(in_a, _fresh(patient_a)) == "granted"


def test_consent_is_recorded_for_the_number_on_file_not_a_stale_copy(in_a, bob, patient_a):
    stale = _fresh(patient_a)
    change_phone(patient_a, "+12025550188")
    event = _grant(in_a, bob, stale)
    assert event.phone_index == _fresh(patient_a).phone_index != stale.phone_index


@pytest.mark.parametrize(("values", "field"), [
    ({"action": "maybe"}, "action"),
    ({"method": "telepathy"}, "method"),
    ({"method": "sms_keyword"}, "method"),  # only from the patient's own text
    ({"channel": "email"}, "channel"),
    ({"method": "verbal", "evidence": "   "}, "evidence"),
    ({"method": "paper_form", "evidence": ""}, "evidence"),
    ({"evidence": "x" * 1001}, "evidence"),
    ({"evidence": "bad\x00note"}, "evidence"),
    ({"disclosure_version": ""}, "disclosure_version"),
    ({"disclosure_version": "v1; DROP TABLE"}, "disclosure_version"),
    ({"occurred_at": timezone.now() + datetime.timedelta(days=1)}, "occurred_at"),
    ({"occurred_at": datetime.datetime(2026, 1, 1, 12, 0)}, "occurred_at"),  # naive
])
def test_bad_input_names_the_field_and_saves_nothing(in_a, bob, patient_a, values, field):
    data = {"action": "grant", "method": "verbal", "disclosure_version": V, "evidence": "Said yes"} | values
    with pytest.raises(ApplicationError) as caught:
        services.consent_record(tenant=in_a, actor=bob, patient=patient_a, **data)
    assert field in caught.value.fields
    assert not ConsentEvent.objects.exists()
    assert not AuditEvent.objects.filter(event_type=AuditEventType.CONSENT_CHANGED).exists()


def test_web_form_and_ehr_import_need_no_note_and_revokes_need_no_disclosure(in_a, patient_a):
    services.consent_grant(tenant=in_a, actor=None, patient=patient_a, method="web_form", disclosure_version=V)
    event = services.consent_revoke(tenant=in_a, actor=None, patient=patient_a, method="ehr_import")
    assert event.captured_by is None and event.evidence is None
    revoke = services.consent_record(tenant=in_a, actor=None, patient=patient_a, action="revoke",
                                     method="ehr_import", disclosure_version=V)
    assert revoke.disclosure_version == ""


def test_every_change_is_audited_without_phi(in_a, bob, patient_a):
    note = "Ada Lovelace said yes on +1 202 555 0143 about her diabetes"
    event = _grant(in_a, bob, patient_a, evidence=note)
    audit = AuditEvent.objects.get(event_type=AuditEventType.CONSENT_CHANGED)
    assert audit.actor_user == bob and audit.patient_id == patient_a.pk and audit.object_id == str(event.pk)
    assert audit.details == {"action": "grant", "method": "verbal", "channel": "sms", "version": V}
    assert set(audit.details) <= ALLOWED_DETAIL_KEYS
    dumped = json.dumps(audit.details)
    for secret in ("Lovelace", "555", "diabetes", patient_a.phone_index):
        assert secret not in dumped


def test_every_revoke_runs_the_outbox_hook_in_its_transaction(in_a, bob, patient_a):
    with mock.patch("consent.services.consent_revoked_hook", wraps=services.consent_revoked_hook) as hook:
        _grant(in_a, bob, patient_a)
        assert hook.call_count == 0
        event = _revoke(in_a, bob, patient_a)
        services.consent_apply_keyword(tenant=in_a, patient=patient_a, text="START", evidence="inbound SM1")
        services.consent_apply_keyword(tenant=in_a, patient=patient_a, text="STOP", evidence="inbound SM2")
    assert hook.call_count == 2
    assert hook.call_args_list[0].kwargs["event"] == event
    assert services.consent_revoked_hook(tenant=in_a, patient=patient_a, event=event) == 0


def test_history_lists_newest_first_with_who_and_which_number(in_a, bob, patient_a):
    _grant(in_a, bob, patient_a)
    change_phone(patient_a, "+12025550188")
    services.consent_apply_keyword(tenant=in_a, patient=_fresh(patient_a), text="START", evidence="inbound SM9")
    rows = selectors.consent_history_rows(tenant=in_a, patient=_fresh(patient_a))
    assert [(r.event.method, r.number, r.captured_by) for r in rows] == [
        ("sms_keyword", "current", "Patient (SMS keyword)"),
        ("verbal", "previous", "bob@clinic-a.test"),
    ]


def test_history_reads_cost_the_same_for_any_length(in_a, bob, patient_a, django_assert_num_queries):
    for _ in range(5):
        _grant(in_a, bob, patient_a)
    with django_assert_num_queries(1):
        rows = selectors.consent_history_rows(tenant=in_a, patient=patient_a)
        assert {r.evidence for r in rows} == {"Agreed at the front desk"}


def test_another_clinics_patient_cannot_be_found(tenant_b, patient_a):
    from accounts.errors import NotFound

    with tenant_scope(tenant_b), pytest.raises(NotFound):
        selectors.consent_patient_get(tenant=tenant_b, patient_id=patient_a.pk)


# --- keywords acting on the ledger -------------------------------------------------------------------


def test_stop_revokes_once_and_confirms_exactly_once(in_a, bob, patient_a):
    _grant(in_a, bob, patient_a)
    replies = [services.consent_apply_keyword(tenant=in_a, patient=patient_a, text=text, evidence=f"inbound SM{n}")
               for n, text in enumerate(["STOP", "stop", "STOP!!", "please stop texting me", "Unsubscribe"])]
    assert replies == [ReplyKind.STOP_CONFIRMATION, None, None, None, None]
    revokes = ConsentEvent.objects.filter(action="revoke")
    assert revokes.count() == 1
    event = revokes.get()
    assert event.method == "sms_keyword" and event.captured_by is None and event.evidence == "inbound SM0"
    assert consent_state(in_a, patient_a) == "revoked"


def test_stop_from_a_patient_who_never_agreed_still_records_and_confirms(in_a, patient_a):
    assert services.consent_apply_keyword(tenant=in_a, patient=patient_a, text="End",
                                          evidence="inbound SM1") == ReplyKind.STOP_CONFIRMATION
    assert consent_state(in_a, patient_a) == "revoked"


def test_start_regrants_once_and_help_always_answers(in_a, bob, patient_a):
    _revoke(in_a, bob, patient_a)
    assert services.consent_apply_keyword(tenant=in_a, patient=patient_a, text="HELP", evidence="SM1") == ReplyKind.HELP
    assert consent_state(in_a, patient_a) == "revoked"  # help changes nothing
    assert services.consent_apply_keyword(tenant=in_a, patient=patient_a, text="Unstop",
                                          evidence="SM2") == ReplyKind.START_CONFIRMATION
    assert services.consent_apply_keyword(tenant=in_a, patient=patient_a, text="YES", evidence="SM3") is None
    grant = ConsentEvent.objects.get(action="grant")
    assert grant.method == "sms_keyword" and grant.disclosure_version == KEYWORD_DISCLOSURE_VERSION
    assert consent_state(in_a, patient_a) == "granted"
    assert services.consent_apply_keyword(tenant=in_a, patient=patient_a, text="info", evidence="SM4") == ReplyKind.HELP


def test_start_from_a_new_number_grants_for_that_number(in_a, bob, patient_a):
    _grant(in_a, bob, patient_a)
    change_phone(patient_a, "+12025550188")
    patient = _fresh(patient_a)
    assert services.consent_apply_keyword(tenant=in_a, patient=patient, text="START",
                                          evidence="SM1") == ReplyKind.START_CONFIRMATION
    assert consent_state(in_a, _fresh(patient_a)) == "granted"


def test_ordinary_messages_change_nothing(in_a, bob, patient_a):
    _grant(in_a, bob, patient_a)
    for text in ["I can't stop coughing", "cancel my appointment", "", "🛑" * 4000, "x" * 10_240]:
        assert services.consent_apply_keyword(tenant=in_a, patient=patient_a, text=text, evidence="SM1") is None
    assert ConsentEvent.objects.count() == 1 and consent_state(in_a, patient_a) == "granted"


def test_a_keyword_needs_the_inbound_message_as_evidence(in_a, patient_a):
    with pytest.raises(ApplicationError) as caught:
        services.consent_apply_keyword(tenant=in_a, patient=patient_a, text="STOP", evidence="")
    assert "evidence" in caught.value.fields
    assert not ConsentEvent.objects.exists()


def test_the_message_body_never_reaches_the_audit_trail(in_a, patient_a):
    services.consent_apply_keyword(tenant=in_a, patient=patient_a, text="Stop texting me about my HIV results",
                                   evidence="inbound SM77")
    audit = AuditEvent.objects.get(event_type=AuditEventType.CONSENT_CHANGED)
    assert audit.actor_type == "system" and audit.details["method"] == "sms_keyword"
    assert "HIV" not in json.dumps(audit.details) and "SM77" not in json.dumps(audit.details)


def test_two_stops_at_once_confirm_once(committed_db):
    tenant = make_tenant(slug="busy-consent")
    patient = make_patient(tenant=tenant)
    barrier, replies, errors = threading.Barrier(2), [], []

    def inbound(n):
        from django.db import connection as thread_connection

        try:
            barrier.wait(timeout=10)
            with tenant_scope(tenant):
                replies.append(services.consent_apply_keyword(tenant=tenant, patient=patient, text="STOP",
                                                              evidence=f"SM{n}"))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            thread_connection.close()

    threads = [threading.Thread(target=inbound, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert sorted(replies, key=str) == sorted([ReplyKind.STOP_CONFIRMATION, None], key=str)
    with tenant_scope(tenant):
        assert ConsentEvent.objects.filter(action="revoke").count() == 1


# --- append-only ----------------------------------------------------------------------------------


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the trigger exists on PostgreSQL only")
@pytest.mark.parametrize("sql", [
    "UPDATE consent_consentevent SET action = 'grant'",
    "UPDATE consent_consentevent SET occurred_at = now() - interval '1 year'",
    "UPDATE consent_consentevent SET phone_index = 'x'",
    "DELETE FROM consent_consentevent",
    "UPDATE consent_businessassociateagreement SET version = '1999-01'",
    "DELETE FROM consent_businessassociateagreement",
])
def test_the_database_refuses_to_rewrite_or_delete_the_ledger(in_a, bob, patient_a, baa_a, sql):
    _revoke(in_a, bob, patient_a)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)
    assert consent_state(in_a, patient_a) == "revoked"


def test_key_rotation_may_still_reencrypt_the_evidence(in_a, bob, patient_a):
    from phi import keys
    from phi.envelope import blob_key_version
    from phi.models import KeyPurpose
    from phi.rotation import reencrypt

    event = _grant(in_a, bob, patient_a, evidence="Signed form, drawer 3")
    new_version = keys.add_version(in_a.pk, KeyPurpose.DATA)
    result = reencrypt(in_a.pk)
    assert result["remaining_old"] == 0 and result["active_version"] == new_version
    with connection.cursor() as cursor:
        cursor.execute("SELECT evidence FROM consent_consentevent WHERE id = %s", [event.pk])
        blob = bytes(cursor.fetchone()[0])
    assert blob_key_version(blob) == new_version
    keys.clear_cache()
    assert ConsentEvent.objects.get(pk=event.pk).evidence == "Signed form, drawer 3"
