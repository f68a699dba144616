"""accounts.sessions.SessionStore: Django's database sessions, written once per sign-in step."""

import pytest
from django.contrib.sessions.backends.base import CreateError
from django.contrib.sessions.models import Session
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.sessions import SessionStore
from tests.factories import PASSWORD, totp_code


def test_it_is_the_configured_store(settings):
    assert settings.SESSION_ENGINE == "accounts.sessions"


def test_cycle_key_gives_a_new_key_at_once_and_writes_one_row_on_save(db):
    session = SessionStore()
    session["a"] = 1
    session.save()
    old = session.session_key
    session.cycle_key()
    new = session.session_key
    assert new and new != old
    assert not Session.objects.filter(session_key__in=[old, new]).exists()  # old gone, new not yet written
    with CaptureQueriesContext(connection) as queries:
        session.save()
    assert [q["sql"].split()[0] for q in queries.captured_queries if q["sql"].split()[0] not in
            ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE")] == ["INSERT"]
    assert SessionStore(new).load() == {"a": 1}


def test_a_taken_key_is_replaced_not_overwritten(db, monkeypatch):
    victim = SessionStore()
    victim["owner"] = "victim"
    victim.save()
    keys = iter([victim.session_key, "k" * 32])
    session = SessionStore()
    monkeypatch.setattr(session, "_get_new_session_key", lambda: next(keys))
    session.cycle_key()
    session["owner"] = "newcomer"
    session.save()
    assert session.session_key == "k" * 32
    assert SessionStore(victim.session_key).load() == {"owner": "victim"}
    assert SessionStore("k" * 32).load() == {"owner": "newcomer"}


def test_create_refuses_a_duplicate_key(db):
    first = SessionStore()
    first.save()
    second = SessionStore(first.session_key)
    with pytest.raises(CreateError):
        second.save(must_create=True)


def test_sign_in_and_mfa_with_the_store(client, alice):
    response = client.post("/accounts/login/", {"email": alice.email, "password": PASSWORD})
    assert response.status_code == 302
    key = client.cookies["caretext_session"].value
    assert Session.objects.filter(session_key=key).exists()
    response = client.post("/accounts/mfa/", {"code": totp_code(alice), "next": "/"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.cookies["caretext_session"].value != key
    assert not Session.objects.filter(session_key=key).exists()
    assert client.get("/").status_code == 200
