"""The two-tenant world and the database set-up every test stands on.

On PostgreSQL the test database is created and migrated as the owner role, and then every
test connects as the application role (no superuser, no BYPASSRLS), so RLS is in force
exactly as in production.
"""

from __future__ import annotations

import socket

import dj_database_url
import pytest
from django.conf import settings

from accounts.permissions import Role
from tests.factories import login_verified, make_member, make_tenant


def _switch_role(url: str | None, *, user: str, password: str | None) -> None:
    from django.db import connections

    connection = connections["default"]
    connection.close()
    connection.settings_dict["USER"] = user
    connection.settings_dict["PASSWORD"] = password or ""


@pytest.fixture(scope="session")
def django_db_setup(request, django_test_environment, django_db_blocker, django_db_keepdb,
                    django_db_createdb, django_db_modify_db_settings):
    from django.db import connections
    from django.test.utils import setup_databases, teardown_databases

    settings_dict = connections["default"].settings_dict
    is_pg = settings_dict["ENGINE"].endswith("postgresql")
    app_user, app_password = settings_dict.get("USER"), settings_dict.get("PASSWORD")
    owner = dj_database_url.parse(settings.DATABASE_OWNER_URL) if (is_pg and settings.DATABASE_OWNER_URL) else None
    with django_db_blocker.unblock():
        if owner:
            _switch_role(None, user=owner["USER"], password=owner.get("PASSWORD"))
        db_cfg = setup_databases(verbosity=request.config.option.verbose, interactive=False,
                                 keepdb=django_db_keepdb)
        if owner:
            _switch_role(None, user=app_user, password=app_password)
    yield
    if not django_db_keepdb:
        with django_db_blocker.unblock():
            if owner:
                _switch_role(None, user=owner["USER"], password=owner.get("PASSWORD"))
            teardown_databases(db_cfg, verbosity=request.config.option.verbose)


def _app_role_and_owner():
    from django.db import connections

    settings_dict = connections["default"].settings_dict
    owner = dj_database_url.parse(settings.DATABASE_OWNER_URL) if settings.DATABASE_OWNER_URL else None
    return (settings_dict["USER"], settings_dict.get("PASSWORD")), owner


@pytest.fixture
def _back_to_app_role():
    (user, password), _ = _app_role_and_owner()
    yield
    _switch_role(None, user=user, password=password)


@pytest.fixture
def committed_db(_back_to_app_role, transactional_db):
    """Rows that commit, for tests with several connections or threads.

    Django empties the tables after such a test with TRUNCATE, which the application role
    may not do (the audit trail must not be truncatable): the flush runs as the owner role,
    and the test's own queries still run as the application role.
    """
    yield
    _, owner = _app_role_and_owner()
    if owner:
        _switch_role(None, user=owner["USER"], password=owner.get("PASSWORD"))


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Tests never reach outside this machine (R21f): only loopback sockets may connect."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("/"):
            raise RuntimeError(f"network access in tests: {host}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(autouse=True)
def _no_key_cache_from_earlier_tests():
    """Every test starts with empty data-key caches: the process keeps unwrapped keys for
    PHI_KEY_CACHE_SECONDS, and a transactional test's flush deletes the key rows they came from,
    so a later test could seal with a cached key whose row no longer exists (then "data key
    version 1 of tenant None does not exist" when the cache entry expires mid-test)."""
    from phi import keys

    keys.clear_cache()


@pytest.fixture(autouse=True)
def _fast_settings(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.CELERY_TASK_ALWAYS_EAGER = True
    # Celery copies Django's settings once, on first use: set the app's own config as well, so
    # a test that ran a real broker earlier in this process (tests/reliability) leaves no trace.
    from config.celery import app

    previous = app.conf.task_always_eager, app.conf.broker_url
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager, app.conf.broker_url = previous


@pytest.fixture
def tenant_a(db):
    return make_tenant(name="Clinic A", slug="clinic-a")


@pytest.fixture
def tenant_b(db):
    return make_tenant(name="Clinic B", slug="clinic-b")


@pytest.fixture
def alice(tenant_a):
    """Owner of clinic A."""
    return make_member(tenant=tenant_a, role=Role.OWNER, email="alice@clinic-a.test")


@pytest.fixture
def bob(tenant_a):
    """Front desk at clinic A."""
    return make_member(tenant=tenant_a, role=Role.STAFF, email="bob@clinic-a.test")


@pytest.fixture
def carol(tenant_a):
    """Clinician at clinic A."""
    return make_member(tenant=tenant_a, role=Role.CLINICIAN, email="carol@clinic-a.test")


@pytest.fixture
def dave(tenant_a):
    """Auditor at clinic A."""
    return make_member(tenant=tenant_a, role=Role.AUDITOR, email="dave@clinic-a.test")


@pytest.fixture
def charlie(tenant_b):
    """Owner of clinic B."""
    return make_member(tenant=tenant_b, role=Role.OWNER, email="charlie@clinic-b.test")


@pytest.fixture
def world(tenant_a, tenant_b, alice, bob, carol, dave, charlie):
    """Clinic A with a user per role, clinic B with its owner."""
    return {
        "tenant_a": tenant_a, "tenant_b": tenant_b,
        "users_a": {Role.OWNER: alice, Role.STAFF: bob, Role.CLINICIAN: carol, Role.AUDITOR: dave},
        "owner_b": charlie,
    }


@pytest.fixture
def login(client):
    """``login(user)`` signs the test client in with MFA verified."""

    def _login(user, tenant=None):
        return login_verified(client, user, tenant=tenant)

    return _login
