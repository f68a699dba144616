"""Lock 2: deny-by-default ORM scoping, ``tenant_scope`` as the one way in (R6, R7), and the
``TenantTask`` entry point (R14)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings
from django.db import connection
from django_scopes import ScopeError

from accounts.models import ApiKey, Invitation, Membership, Tenant
from accounts.permissions import Role
from accounts.tenancy import TenantTask, current_tenant, tenant_scope
from config.celery import app as celery_app

PROJECT_APPS = ("accounts", "audit", "patients", "consent", "messaging", "integrations", "phi", "reminders",
                "broadcasts", "analytics", "api", "outbound")


def _db_tenant_setting() -> str | None:
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('app.tenant_id', true)")
        return cursor.fetchone()[0]


def _no_tenant_in_db() -> bool:
    return connection.vendor != "postgresql" or _db_tenant_setting() in ("", None)


# --- deny by default ------------------------------------------------------------------------------


@pytest.mark.parametrize("query", [
    lambda: Membership.objects.all(),
    lambda: Membership.objects.filter(role=Role.OWNER),
    lambda: Membership.objects.count(),
    lambda: Membership.objects.first(),
    lambda: list(ApiKey.objects.all()),
    lambda: Invitation.objects.get(pk="00000000-0000-0000-0000-000000000000"),
], ids=["all", "filter", "count", "first", "apikey-list", "invitation-get"])
def test_scoped_manager_raises_outside_any_scope(world, query):
    assert current_tenant() is None
    with pytest.raises(ScopeError):
        query()


# Tenant-column models that are not ORM-scoped, each with its reason.
NOT_ORM_SCOPED = {
    "accounts.InvitationToken": "global routing row, read before the tenant is known",
    "audit.AuditChainHead": "one row per chain incl. the platform chain; only audit.services locks it, RLS backs it",
    "phi.DataKey": "holds platform keys too; phi.keys refuses a tenant's keys outside its scope, RLS backs it",
}


def _tenant_models():
    for label in PROJECT_APPS:
        for model in apps.get_app_config(label).get_models():
            if any(f.name == "tenant" for f in model._meta.concrete_fields):
                yield model


@pytest.mark.parametrize(
    "model", [m for m in _tenant_models() if m._meta.label not in NOT_ORM_SCOPED], ids=lambda m: m._meta.label
)
def test_every_tenant_model_default_manager_denies_by_default(db, model):
    with pytest.raises(ScopeError):
        model._default_manager.all()
    with pytest.raises(ScopeError):
        model.objects.all()


def test_not_orm_scoped_allow_list_is_current():
    labels = {m._meta.label for m in _tenant_models()}
    assert set(NOT_ORM_SCOPED) <= labels


# --- tenant_scope ---------------------------------------------------------------------------------


def test_scope_shows_only_its_tenants_rows(world):
    tenant_a, tenant_b = world["tenant_a"], world["tenant_b"]
    with tenant_scope(tenant_a):
        rows = list(Membership.objects.select_related("user"))
        assert current_tenant() == tenant_a
    assert {m.tenant_id for m in rows} == {tenant_a.pk}
    assert {m.user for m in rows} == set(world["users_a"].values())
    with tenant_scope(tenant_b):
        assert [m.user for m in Membership.objects.select_related("user")] == [world["owner_b"]]


def test_nested_scope_switches_and_restores_orm_and_database(world):
    tenant_a, tenant_b = world["tenant_a"], world["tenant_b"]
    with tenant_scope(tenant_a):
        assert _db_tenant_setting() in (str(tenant_a.pk), None)
        with tenant_scope(tenant_b):
            assert current_tenant() == tenant_b
            assert {m.tenant_id for m in Membership.objects.all()} == {tenant_b.pk}
            assert _db_tenant_setting() in (str(tenant_b.pk), None)
        assert current_tenant() == tenant_a
        assert {m.tenant_id for m in Membership.objects.all()} == {tenant_a.pk}
        assert Membership.objects.count() == len(world["users_a"])
        assert _db_tenant_setting() in (str(tenant_a.pk), None)
    assert current_tenant() is None
    assert _no_tenant_in_db()


def test_leaving_the_scope_clears_the_database_setting_even_on_error(world):
    with pytest.raises(RuntimeError), tenant_scope(world["tenant_a"]):
        assert _db_tenant_setting() in (str(world["tenant_a"].pk), None)
        raise RuntimeError("boom")
    assert current_tenant() is None
    assert _no_tenant_in_db()
    with pytest.raises(ScopeError):
        Membership.objects.all()


@pytest.mark.parametrize("make", [lambda: None, lambda: Tenant(name="Unsaved", slug="unsaved")],
                         ids=["none", "unsaved"])
def test_scope_needs_a_saved_tenant(db, make):
    with pytest.raises(ValueError), tenant_scope(make()):
        pass
    assert current_tenant() is None
    assert _no_tenant_in_db()


# --- the escape hatch is allow-listed (R6) ----------------------------------------------------------

ESCAPE_HATCH = re.compile(
    r"\.unscoped_objects\b"  # a use; declaring the manager on a model is not
    r"|\bscopes_disabled\b"
    r"|\bunscoped\s*\("
    r"|^\s*(?:from\s+\S+\s+)?import\s[^\n]*\bunscoped\b",
    re.MULTILINE,
)
# Exactly the application files allowed to use it today; migrations and tests/ are allowed too.
ESCAPE_HATCH_ALLOWED = {
    "accounts/tenancy.py",  # defines unscoped() and the unscoped_objects manager
    "accounts/selectors.py",  # membership_list_for_user: a user's own memberships across tenants
    "audit/verification.py",  # the audit chain verifier: the platform chain belongs to no tenant
    "messaging/routing.py",  # a secure link / patient session found by the hash of its secret
}
_SKIP_DIRS = {"node_modules", "staticfiles", "__pycache__"}


def _python_files(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS]
        for name in filenames:
            if name.endswith(".py"):
                path = Path(dirpath, name)
                yield path.relative_to(root).as_posix(), path


def _is_exempt(relpath: str) -> bool:
    return relpath.startswith("tests/") or "/migrations/" in f"/{relpath}"


def _escape_hatch_users(root: Path) -> set[str]:
    return {rel for rel, path in _python_files(root) if ESCAPE_HATCH.search(path.read_text(encoding="utf-8"))}


def test_escape_hatch_is_used_only_in_allow_listed_files():
    users = _escape_hatch_users(Path(settings.BASE_DIR))
    offenders = sorted(rel for rel in users if not _is_exempt(rel) and rel not in ESCAPE_HATCH_ALLOWED)
    assert offenders == [], f"unscoped access outside the allow-list: {offenders}"
    # Keep the allow-list tight: drop a file from it once it stops needing the hatch.
    assert ESCAPE_HATCH_ALLOWED <= users


@pytest.mark.parametrize("snippet", [
    "Membership.unscoped_objects.all()",
    "with unscoped():",
    "from accounts.tenancy import unscoped",
    "from accounts.tenancy import tenant_scope, unscoped as u",
    "from django_scopes import scopes_disabled",
    "with scopes_disabled():",
])
def test_escape_hatch_pattern_catches_each_form(tmp_path, snippet):
    (tmp_path / "patients").mkdir()
    (tmp_path / "patients" / "selectors.py").write_text(f"{snippet}\n")
    (tmp_path / "patients" / "migrations").mkdir()
    (tmp_path / "patients" / "migrations" / "0002.py").write_text(f"{snippet}\n")
    users = _escape_hatch_users(tmp_path)
    assert users == {"patients/selectors.py", "patients/migrations/0002.py"}
    assert [u for u in users if not _is_exempt(u)] == ["patients/selectors.py"]


def test_escape_hatch_pattern_ignores_ordinary_words(tmp_path):
    (tmp_path / "notes.py").write_text('"""Fixtures run unscoped; the unscoped path is reviewed."""\n')
    assert _escape_hatch_users(tmp_path) == set()


# --- TenantTask (R14) -------------------------------------------------------------------------------

_task_runs: list[int] = []


@celery_app.task(base=TenantTask, bind=True, name="tests.security.membership_emails")
def membership_emails(self, *, tenant_id: int) -> dict:
    _task_runs.append(tenant_id)
    emails = sorted(Membership.objects.values_list("user__email", flat=True))
    return {"emails": emails, "scope": current_tenant().pk, "db": _db_tenant_setting()}


@pytest.fixture(autouse=True)
def _reset_task_runs():
    _task_runs.clear()


def _run(**kwargs):
    return membership_emails.apply(kwargs=kwargs, throw=True).get()


def test_task_runs_inside_its_tenants_scope(world):
    tenant_a = world["tenant_a"]
    result = _run(tenant_id=tenant_a.pk)
    assert result["emails"] == sorted(u.email for u in world["users_a"].values())
    assert world["owner_b"].email not in result["emails"]
    assert result["scope"] == tenant_a.pk
    assert result["db"] in (str(tenant_a.pk), None)
    assert _run(tenant_id=world["tenant_b"].pk)["emails"] == [world["owner_b"].email]
    # The scope ends with the task.
    assert current_tenant() is None
    assert _no_tenant_in_db()


def test_task_called_directly_also_enters_the_scope(world):
    assert membership_emails(tenant_id=world["tenant_b"].pk)["emails"] == [world["owner_b"].email]


@pytest.mark.parametrize("kwargs", [{}, {"tenant_id": None}, {"tenant_id": "1"}, {"tenant_id": 1.0}],
                         ids=["missing", "none", "str", "float"])
def test_task_without_an_integer_tenant_id_raises_type_error(world, kwargs):
    with pytest.raises(TypeError, match="tenant_id"):
        _run(**kwargs)
    with pytest.raises(TypeError, match="tenant_id"):
        membership_emails(**kwargs)
    assert _task_runs == []


def test_task_for_an_inactive_or_unknown_tenant_does_nothing(world):
    tenant_b = world["tenant_b"]
    Tenant.objects.filter(pk=tenant_b.pk).update(is_active=False)
    assert _run(tenant_id=tenant_b.pk) is None
    assert _run(tenant_id=tenant_b.pk + 10_000) is None
    assert _task_runs == []
    assert current_tenant() is None
