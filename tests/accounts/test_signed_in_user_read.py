"""accounts.backends: the session row, and the signed-in user with the TOTP device that verified
them, read with written-out SQL (issue #12 item 8). Every decision must be Django's and
django-otp's: the session-hash check (password change, "sign out everywhere", SECRET_KEY
rotation), inactive users, the device-user binding and confirmation, other device types."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.models import Session
from django.db import connection
from django.db.models import signals
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.mfa import backup_codes_generate
from accounts.models import BackupCodeDevice, TotpDevice, User
from accounts.selectors import RowLoader
from accounts.sessions import SessionStore
from messaging.models import Thread
from tests.factories import login_verified


def _sql(queries) -> list[str]:
    return [q["sql"] for q in queries.captured_queries]


def test_a_verified_request_reads_user_and_device_in_one_query(client, alice, tenant_a):
    login_verified(client, alice)
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/inbox/")
    assert response.status_code == 200
    assert response.wsgi_request.user.pk == alice.pk and response.wsgi_request.user.is_verified()
    device = TotpDevice.objects.get(user=alice)
    assert response.wsgi_request.user.otp_device.pk == device.pk
    reads = [sql for sql in _sql(queries) if "accounts_totpdevice" in sql or 'FROM "accounts_user"' in sql]
    assert len(reads) == 1 and "accounts_totpdevice" in reads[0] and "accounts_user" in reads[0]
    assert not any('"django_session"."session_data"' in sql for sql in _sql(queries))  # the written-out read


def test_a_changed_password_signs_the_session_out_and_flushes_it(client, alice, tenant_a):
    login_verified(client, alice)
    key = client.cookies["caretext_session"].value
    user = User.objects.get(pk=alice.pk)
    user.set_password("another-long-password-42")
    user.save()
    response = client.get("/inbox/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert not Session.objects.filter(session_key=key).exists()


def test_a_session_without_its_hash_is_refused(client, alice, tenant_a):
    login_verified(client, alice)
    session = client.session
    del session[HASH_SESSION_KEY]
    session.save()
    assert client.get("/inbox/").status_code == 302


def test_a_hash_made_with_a_fallback_secret_key_still_verifies_and_is_renewed(client, alice, tenant_a, settings):
    old_secret = settings.SECRET_KEY
    login_verified(client, alice)  # hash made with the old key
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a-new-secret-key-" + "x" * 40, [old_secret]
    old_key = client.cookies["caretext_session"].value
    response = client.get("/inbox/")
    assert response.status_code == 200 and response.wsgi_request.user.is_verified()
    assert client.cookies["caretext_session"].value != old_key  # cycled, as Django does
    assert client.session[HASH_SESSION_KEY] == User.objects.get(pk=alice.pk).get_session_auth_hash()


def test_an_inactive_user_is_anonymous(client, alice, tenant_a):
    login_verified(client, alice)
    User.objects.filter(pk=alice.pk).update(is_active=False)
    assert client.get("/inbox/").status_code == 302


def test_a_session_of_a_user_that_does_not_exist_is_anonymous(client, alice, tenant_a):
    login_verified(client, alice)
    session = client.session
    session[SESSION_KEY] = "987654321"
    session.save()
    assert client.get("/inbox/").status_code == 302


def test_another_users_device_does_not_verify_and_leaves_the_session(client, alice, bob, tenant_a):
    login_verified(client, alice)
    session = client.session
    session["otp_device_id"] = TotpDevice.objects.get(user=bob).persistent_id
    session.save()
    response = client.get("/inbox/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/mfa")
    assert "otp_device_id" not in client.session


def test_an_unconfirmed_device_does_not_verify(client, alice, tenant_a):
    login_verified(client, alice)
    TotpDevice.objects.filter(user=alice).update(confirmed=False)
    response = client.get("/inbox/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/mfa")
    assert "otp_device_id" not in client.session


def test_a_backup_code_device_still_verifies_through_django_otp(client, alice, tenant_a):
    login_verified(client, alice)
    backup_codes_generate(user=alice)
    session = client.session
    session["otp_device_id"] = BackupCodeDevice.objects.get(user=alice).persistent_id
    session.save()
    response = client.get("/inbox/")
    assert response.status_code == 200 and response.wsgi_request.user.is_verified()
    assert isinstance(response.wsgi_request.user.otp_device, BackupCodeDevice)


def test_the_session_read_matches_djangos(alice, db):
    store = SessionStore()
    store["a"] = 1
    store.save()
    assert SessionStore(store.session_key).load() == {"a": 1}
    Session.objects.filter(session_key=store.session_key).update(expire_date=timezone.now() - timedelta(seconds=1))
    expired = SessionStore(store.session_key)
    assert expired.load() == {} and expired.session_key is None  # as Django's store: a new key on save
    missing = SessionStore("x" * 32)
    assert missing.load() == {} and missing.session_key is None


def test_rows_built_without_init_equal_the_orms(alice, tenant_a):
    loader = RowLoader(User, ("id", "email", "full_name", "is_active"))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {loader.columns('u')} FROM accounts_user u WHERE u.id = %s", [alice.pk])
        built = loader.build(cursor.fetchone(), connection)
    assert loader.plain
    orm = User.objects.only("id", "email", "full_name", "is_active").get(pk=alice.pk)
    assert {k: v for k, v in built.__dict__.items() if k != "_state"} == \
           {k: v for k, v in orm.__dict__.items() if k != "_state"}
    assert built.get_deferred_fields() == orm.get_deferred_fields()
    assert (built._state.adding, built._state.db) == (False, "default")
    assert built.date_joined == User.objects.get(pk=alice.pk).date_joined  # a deferred field still loads


def test_a_model_with_init_receivers_is_built_by_from_db(alice, tenant_a):
    seen = []

    def receiver(sender, instance, **kwargs):
        seen.append(instance)

    signals.post_init.connect(receiver, sender=Thread)
    try:
        loader = RowLoader(Thread, ("id", "tenant_id"))
        loader._prepare(connection)
        assert not loader.plain
    finally:
        signals.post_init.disconnect(receiver, sender=Thread)


@pytest.mark.parametrize("persistent_id", ["accounts.totpdevice/abc", "otp_totp.totpdevice/1", "accounts.totpdevice/",
                                           "", "accounts.totpdevice/\u00b2", "accounts.totpdevice/" + "9" * 30])
def test_odd_device_ids_go_django_otps_way(client, alice, tenant_a, persistent_id):
    login_verified(client, alice)
    session = client.session
    session["otp_device_id"] = persistent_id
    session.save()
    response = client.get("/inbox/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/mfa")
