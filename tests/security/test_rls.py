"""Lock 3: PostgreSQL row-level security, checked with raw SQL as the application role (R21c).

The ORM is deliberately bypassed here: these tests show what the database itself refuses when
application code (or an injected query) forgets the tenant filter.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from django.apps import apps
from django.conf import settings
from django.db import connection, transaction
from django.db.utils import DatabaseError

from accounts import services
from accounts.models import Membership
from accounts.permissions import ApiScope, Role
from accounts.tenancy import tenant_scope, user_scope
from tests.factories import make_member

pytestmark = pytest.mark.skipif(
    not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"), reason="RLS exists on PostgreSQL only"
)

TENANT_TABLES = ("accounts_membership", "accounts_apikey", "accounts_invitation", "audit_auditevent")
PROJECT_APPS = ("accounts", "audit", "patients", "consent", "messaging", "integrations", "phi", "reminders",
                "broadcasts", "analytics", "api", "outbound")

# Models that have a ``tenant`` column but are global on purpose. Each entry needs a reason;
# anything else with a tenant column must have RLS.
GLOBAL_TABLES_WITH_TENANT_COLUMN = {
    # Routes an invitation link to its clinic before any tenant is known; holds only a hash.
    "accounts.InvitationToken": "routing row read before the tenant is known",
}


# --- helpers -----------------------------------------------------------------------------------


def _set(name: str, value) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config(%s, %s, false)", [name, "" if value is None else str(value)])


def _as_tenant(tenant) -> None:
    _set("app.tenant_id", tenant.pk if tenant is not None else "")


def _count(table: str, where: str = "TRUE", params=()) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table} WHERE {where}", list(params))  # noqa: S608 - our constants
        return cursor.fetchone()[0]


def _tenant_ids(table: str) -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT DISTINCT tenant_id FROM {table}")  # noqa: S608
        return {row[0] for row in cursor.fetchall()}


def _refused(sql: str, params=()) -> DatabaseError:
    """Run ``sql`` in a savepoint and return the database's refusal (the test fails if none)."""
    with pytest.raises(DatabaseError) as caught, transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(sql, list(params))
    return caught.value


def _insert_sql(table: str, *, tenant_id, user_id) -> tuple[str, list]:
    """A valid INSERT of one row of ``table`` for ``tenant_id`` (so only RLS can refuse it)."""
    new_id = str(uuid.uuid4())
    if table == "accounts_membership":
        return ("INSERT INTO accounts_membership (id, created_at, updated_at, role, is_active, user_id, tenant_id) "
                "VALUES (%s, now(), now(), 'staff', true, %s, %s)", [new_id, user_id, tenant_id])
    if table == "accounts_apikey":
        return ("INSERT INTO accounts_apikey (id, created_at, updated_at, name, prefix, key_hash, scopes, "
                "created_by_id, tenant_id) VALUES (%s, now(), now(), 'k', 'ct_x', %s, '[\"audit:read\"]', %s, %s)",
                [new_id, uuid.uuid4().hex, user_id, tenant_id])
    if table == "accounts_invitation":
        return ("INSERT INTO accounts_invitation (id, created_at, updated_at, email, role, token_hash, "
                "invited_by_id, expires_at, tenant_id) VALUES (%s, now(), now(), 'x@example.test', 'staff', %s, %s, "
                "now() + interval '1 day', %s)", [new_id, uuid.uuid4().hex, user_id, tenant_id])
    if table == "audit_auditevent":
        return ("INSERT INTO audit_auditevent (id, occurred_at, event_type, actor_type, actor_label, object_type, "
                "object_id, user_agent, request_id, details, actor_user_id, tenant_id, seq, prev_hash, hash) "
                "VALUES (%s, now(), 500, 'user', '', '', '', '', '', '{}', %s, %s, 1000000, '', '')",
                [new_id, user_id, tenant_id])
    raise AssertionError(table)


def _is_rls_refusal(exc: DatabaseError) -> bool:
    return isinstance(exc.__cause__, psycopg.errors.InsufficientPrivilege) and "row-level security" in str(exc)


def _is_permission_denied(exc: DatabaseError) -> bool:
    return isinstance(exc.__cause__, psycopg.errors.InsufficientPrivilege) and "permission denied" in str(exc)


@pytest.fixture
def rows(world):
    """A membership, API key, invitation and audit events in each clinic (made through services)."""
    tenant_a, tenant_b = world["tenant_a"], world["tenant_b"]
    alice, charlie = world["users_a"][Role.OWNER], world["owner_b"]
    for tenant, owner in ((tenant_a, alice), (tenant_b, charlie)):
        with tenant_scope(tenant):
            services.api_key_create(tenant=tenant, actor=owner, name="EHR", scopes=[ApiScope.AUDIT_READ])
            services.invitation_create(tenant=tenant, actor=owner, email=f"new@{tenant.slug}.test", role=Role.STAFF)
    _as_tenant(None)
    return world


# --- the role -----------------------------------------------------------------------------------


def test_it_connects_as_the_application_role_without_rls_bypass(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user, session_user")
        current, session = cursor.fetchone()
        cursor.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        rolsuper, rolbypassrls = cursor.fetchone()
        cursor.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'accounts_membership'")
        owner = cursor.fetchone()[0]
    assert current == session == settings.DATABASES["default"]["USER"] == settings.DATABASE_APP_ROLE
    assert rolsuper is False
    assert rolbypassrls is False
    # Table owners skip RLS unless it is forced: the app must not own the tables.
    assert owner != current


# --- tenant isolation ---------------------------------------------------------------------------


@pytest.mark.parametrize("table", TENANT_TABLES)
def test_wrong_tenant_sees_none_of_the_other_tenants_rows(rows, table):
    tenant_a, tenant_b = rows["tenant_a"], rows["tenant_b"]
    _as_tenant(tenant_a)
    own = _count(table, "tenant_id = %s", [tenant_a.pk])
    assert own > 0, "the fixture must give clinic A rows, or this test proves nothing"
    assert _tenant_ids(table) == {tenant_a.pk}

    _as_tenant(tenant_b)
    assert _count(table, "tenant_id = %s", [tenant_a.pk]) == 0
    assert _tenant_ids(table) == {tenant_b.pk}


@pytest.mark.parametrize("table", TENANT_TABLES)
def test_no_tenant_set_sees_zero_rows(rows, table):
    _as_tenant(rows["tenant_a"])
    assert _count(table) > 0
    _set("app.tenant_id", "")
    assert _count(table) == 0


@pytest.mark.parametrize("table", TENANT_TABLES)
def test_insert_for_another_tenant_is_refused(rows, table):
    tenant_a, tenant_b = rows["tenant_a"], rows["tenant_b"]
    intruder = services.user_create(email=f"mallory-{table}@example.test", password=None)
    sql, params = _insert_sql(table, tenant_id=tenant_a.pk, user_id=intruder.pk)

    _as_tenant(tenant_b)
    refusal = _refused(sql, params)
    assert _is_rls_refusal(refusal), refusal
    _as_tenant(None)
    assert _is_rls_refusal(_refused(sql, params))

    # The same statement is fine for the tenant in scope: only the policy refused it above.
    _as_tenant(tenant_a)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        assert cursor.rowcount == 1


@pytest.mark.parametrize("table", ("accounts_membership", "accounts_apikey", "accounts_invitation"))
def test_update_and_delete_cannot_reach_or_move_rows_across_tenants(rows, table):
    tenant_a, tenant_b = rows["tenant_a"], rows["tenant_b"]
    _as_tenant(tenant_b)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET updated_at = now() WHERE tenant_id = %s", [tenant_a.pk])  # noqa: S608
        assert cursor.rowcount == 0
        cursor.execute(f"DELETE FROM {table} WHERE tenant_id = %s", [tenant_a.pk])  # noqa: S608
        assert cursor.rowcount == 0
    # Moving one's own row into another tenant violates the policy's WITH CHECK.
    refusal = _refused(f"UPDATE {table} SET tenant_id = %s WHERE tenant_id = %s", [tenant_a.pk, tenant_b.pk])  # noqa: S608
    assert _is_rls_refusal(refusal), refusal
    _as_tenant(tenant_a)
    assert _count(table, "tenant_id = %s", [tenant_a.pk]) > 0


# --- the audit trail is append-only ---------------------------------------------------------------


@pytest.mark.parametrize("statement", [
    "UPDATE audit_auditevent SET actor_label = 'forged' WHERE tenant_id = %s",
    "DELETE FROM audit_auditevent WHERE tenant_id = %s",
])
def test_app_role_cannot_change_or_delete_audit_events_even_its_own(rows, statement):
    tenant_a = rows["tenant_a"]
    _as_tenant(tenant_a)
    before = _count("audit_auditevent")
    assert before > 0
    refusal = _refused(statement, [tenant_a.pk])
    assert _is_permission_denied(refusal), refusal
    assert _count("audit_auditevent") == before


def test_app_role_has_no_update_delete_or_truncate_privilege_on_audit(db):
    with connection.cursor() as cursor:
        for privilege, expected in (("SELECT", True), ("INSERT", True), ("UPDATE", False), ("DELETE", False),
                                    ("TRUNCATE", False)):
            cursor.execute("SELECT has_table_privilege(current_user, 'audit_auditevent', %s)", [privilege])
            assert cursor.fetchone()[0] is expected, privilege
    assert _is_permission_denied(_refused("TRUNCATE audit_auditevent"))


def test_platform_audit_rows_are_never_visible_inside_a_clinic(rows):
    """Events of no clinic (tenant NULL) are for platform tooling (run outside any clinic's
    scope), never for any tenant."""
    sql, params = _insert_sql("audit_auditevent", tenant_id=None, user_id=None)
    _as_tenant(rows["tenant_a"])
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        assert cursor.rowcount == 1
    assert _count("audit_auditevent", "tenant_id IS NULL") == 0
    _as_tenant(rows["tenant_b"])
    assert _count("audit_auditevent", "tenant_id IS NULL") == 0
    _as_tenant(None)
    assert _count("audit_auditevent", "tenant_id IS NOT NULL") == 0
    assert _count("audit_auditevent", "tenant_id IS NULL") >= 1


# --- memberships: a user's own rows across tenants -------------------------------------------------


@pytest.fixture
def dual(world):
    """A clinician at clinic A who is also front desk at clinic B."""
    user = make_member(tenant=world["tenant_a"], role=Role.CLINICIAN, email="dual@example.test")
    with tenant_scope(world["tenant_b"]):
        services.membership_create(tenant=world["tenant_b"], actor=None, user=user, role=Role.STAFF)
    return user


def _memberships() -> set[tuple[int, int]]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tenant_id, user_id FROM accounts_membership")
        return set(cursor.fetchall())


def test_user_setting_shows_own_memberships_in_every_tenant_and_nothing_else(world, dual):
    tenant_a, tenant_b, charlie = world["tenant_a"], world["tenant_b"], world["owner_b"]
    _set("app.user_id", dual.pk)
    _as_tenant(None)
    assert _memberships() == {(tenant_a.pk, dual.pk), (tenant_b.pk, dual.pk)}

    _as_tenant(tenant_a)
    visible = _memberships()
    a_users = {u.pk for u in world["users_a"].values()} | {dual.pk}
    assert visible == {(tenant_a.pk, uid) for uid in a_users} | {(tenant_b.pk, dual.pk)}
    assert (tenant_b.pk, charlie.pk) not in visible

    # The wider read never widens writes: B's row stays out of reach while A is the tenant.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE accounts_membership SET role = 'owner' WHERE tenant_id = %s", [tenant_b.pk])
        assert cursor.rowcount == 0
    _set("app.user_id", "")
    assert (tenant_b.pk, dual.pk) not in _memberships()


def test_user_scope_lists_memberships_across_tenants_through_the_orm(world, dual):
    from accounts.selectors import membership_list_for_user

    with user_scope(dual.pk):
        found = membership_list_for_user(user=dual)
    assert {m.tenant_id for m in found} == {world["tenant_a"].pk, world["tenant_b"].pk}
    # The user setting is cleared afterwards: nothing is visible without a tenant.
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('app.user_id', true)")
        assert cursor.fetchone()[0] == ""
    assert _memberships() == set()


# --- every tenant table has RLS (meta) --------------------------------------------------------------


def _models_with_tenant_column():
    found = []
    for label in PROJECT_APPS:
        for model in apps.get_app_config(label).get_models():
            meta = model._meta
            if meta.abstract or meta.proxy or not meta.managed:
                continue
            if any(field.name == "tenant" for field in meta.concrete_fields):
                found.append(model)
    return found


def test_discovery_finds_the_known_tenant_models():
    labels = {m._meta.label for m in _models_with_tenant_column()}
    assert {"accounts.Membership", "accounts.ApiKey", "accounts.Invitation", "audit.AuditEvent"} <= labels
    assert set(GLOBAL_TABLES_WITH_TENANT_COLUMN) <= labels, "allow-list names a model that no longer has a tenant"


@pytest.mark.parametrize(
    "model",
    [m for m in _models_with_tenant_column() if m._meta.label not in GLOBAL_TABLES_WITH_TENANT_COLUMN],
    ids=lambda m: m._meta.label,
)
def test_every_tenant_table_forces_rls_with_a_tenant_policy(db, model):
    table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = to_regclass(%s)",
                       [table])
        row = cursor.fetchone()
        cursor.execute("SELECT cmd, coalesce(qual, ''), coalesce(with_check, '') FROM pg_policies "
                       "WHERE schemaname = current_schema() AND tablename = %s", [table])
        policies = cursor.fetchall()
    assert row is not None, f"{table} does not exist"
    assert row == (True, True), f"{table}: add EnableRLS({model._meta.model_name!r}) to its migration"
    assert policies, f"{table} has RLS but no policy"
    reads = [qual for cmd, qual, _ in policies if cmd in ("SELECT", "ALL")]
    inserts = [check for cmd, _, check in policies if cmd in ("INSERT", "ALL")]
    assert reads and all("caretext_current_tenant()" in q for q in reads), policies
    assert inserts and all("caretext_current_tenant()" in c for c in inserts), policies


def test_membership_orm_sees_no_rows_when_only_the_orm_scope_is_open(world):
    """Lock 3 holds even if lock 2 is opened without the database setting."""
    from django_scopes import scope

    _as_tenant(None)
    with scope(tenant=world["tenant_a"]):
        assert list(Membership.objects.all()) == []


# --- the clinic key without a database constraint (append-heavy tables) ----------------------------

# ``accounts.tenancy.append_heavy_tenant_fk``: these tables' ``tenant`` is checked by RLS, not by a
# foreign-key constraint (whose per-insert lock on the clinic's row was the cost). Every other
# tenant table keeps the constraint.
APPEND_HEAVY = {"messaging_thread", "messaging_message", "messaging_securelink", "messaging_outboundsms",
                "audit_auditevent"}


def _tenant_fk_tables() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT conrelid::regclass::text FROM pg_constraint WHERE contype = 'f' "
                       "AND confrelid = 'accounts_tenant'::regclass")
        return {row[0] for row in cursor.fetchall()}


def test_only_the_append_heavy_tables_go_without_the_tenant_constraint(db):
    tables = {m._meta.db_table for m in _models_with_tenant_column()}
    assert APPEND_HEAVY <= tables
    assert tables - _tenant_fk_tables() == APPEND_HEAVY


@pytest.mark.parametrize("table", sorted(APPEND_HEAVY - {"audit_auditevent"}))
def test_an_append_heavy_row_for_a_clinic_that_does_not_exist_is_refused(rows, table):
    """No constraint, but the policy: a row goes in only for the clinic in scope, and the scope
    is a real clinic, so a made-up clinic id is refused like another clinic's (the policy is
    checked before the row's other constraints)."""
    _as_tenant(rows["tenant_a"])
    refusal = _refused(f"INSERT INTO {table} (id, tenant_id) VALUES (%s, %s)", [uuid.uuid4(), 10**9])  # noqa: S608
    assert _is_rls_refusal(refusal), refusal


def test_an_audit_event_for_a_clinic_that_does_not_exist_is_refused(rows):
    _as_tenant(rows["tenant_a"])
    refusal = _refused("INSERT INTO audit_auditevent (id, tenant_id, occurred_at, event_type, actor_type, actor_label, "
                       "object_type, object_id, user_agent, request_id, details, prev_hash, hash) "
                       "VALUES (%s, %s, now(), 1, 'system', '', '', '', '', '', '{}', '', '')", [uuid.uuid4(), 10**9])
    assert _is_rls_refusal(refusal), refusal


def test_a_clinic_with_messages_cannot_be_deleted_through_the_orm(world):
    """``on_delete=PROTECT`` is the ORM's: it still refuses, constraint or not."""
    from django.db.models import ProtectedError

    from messaging.models import Message
    from messaging.services import thread_for_patient
    from tests.factories import make_patient

    tenant = world["tenant_a"]
    with tenant_scope(tenant):
        thread = thread_for_patient(tenant=tenant, patient=make_patient(tenant=tenant))
        Message.objects.create(tenant=tenant, thread=thread, direction="note", kind="general", body="x")
        with pytest.raises(ProtectedError), transaction.atomic():
            tenant.delete()
