"""Reads for accounts. Tenant-scoped selectors take ``tenant`` and raise NotFound for ids of
other tenants exactly as for ids that don't exist."""

from __future__ import annotations

import uuid

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import DEFERRED, Model, QuerySet, signals
from django.db.models.base import ModelState
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.db.models.query_utils import DeferredAttribute
from django_scopes.exceptions import ScopeError

from accounts.errors import NotFound
from accounts.models import ApiKey, Invitation, Membership, Tenant, User, UserSession
from accounts.permissions import permissions_for_role
from accounts.tenancy import current_tenant, unscoped, user_scope


def _uuid_or_404(value) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except (TypeError, ValueError):
        raise NotFound() from None


def membership_list_for_user(*, user: User) -> list[Membership]:
    """The user's active memberships in active tenants, across tenants.

    Must run inside ``user_scope(user.pk)``: on PostgreSQL the membership RLS policy shows a
    user's own rows across tenants only then. This is the one cross-tenant ORM read.
    """
    with unscoped():
        return list(
            Membership.unscoped_objects.select_related("tenant")
            .filter(user=user, is_active=True, tenant__is_active=True)
            .order_by("tenant__name")
        )


def _sets_plainly(model, field) -> bool:
    """Whether ``Model.__init__``'s ``setattr`` of this field only stores the value in the
    instance's ``__dict__`` (a plain column, a foreign key's id, an encrypted column)."""
    from phi.fields import _EncryptedAttribute

    descriptor = getattr(model, field.attname, None)
    if not isinstance(descriptor, DeferredAttribute):
        return False
    kind = type(descriptor)
    return not hasattr(kind, "__set__") or kind in (ForeignKeyDeferredAttribute, _EncryptedAttribute)


class RowLoader:
    """Model instances from a written-out query's values, as the ORM builds them
    (``Model.from_db`` through each field's converters: an encrypted column arrives sealed, a
    JSON column parsed); columns not selected are deferred. For the few per-request reads where
    compiling the ORM query cost more than running it.

    A model without ``pre_init``/``post_init`` receivers and with Django's own ``__init__`` and
    ``from_db`` gets its instances as ``Model.__init__`` would leave them (the values in the
    instance's ``__dict__``, deferred ones absent, ``_state`` loaded from the database) without
    running it: half the cost of building the 50 rows of an inbox page. Any other model goes
    through ``from_db``."""

    def __init__(self, model, attnames: tuple[str, ...] | None = None):
        concrete = model._meta.concrete_fields
        self.model = model
        self.fields = [f for f in concrete if attnames is None or f.attname in attnames]
        self.attnames = tuple(f.attname for f in self.fields)
        self.slots = [concrete.index(f) for f in self.fields]
        self.size = len(concrete)
        self.converters = None  # [(position, converters)], worked out on first use
        self.plain = False  # whether instances may skip Model.__init__ (worked out on first use)

    def columns(self, alias: str) -> str:
        return ", ".join(f"{alias}.{f.column}" for f in self.fields)

    def _prepare(self, conn) -> None:
        table = self.model._meta.db_table
        converters = []
        for i, field in enumerate(self.fields):  # the backend's (SQLite: text → aware datetime), then the field's
            col = field.get_col(table)
            found = (*conn.ops.get_db_converters(col), *field.get_db_converters(conn))
            if found:
                converters.append((i, col, found))
        model = self.model
        self.plain = (model.__init__ is Model.__init__ and model.from_db.__func__ is Model.from_db.__func__
                      and not signals.pre_init.has_listeners(model) and not signals.post_init.has_listeners(model)
                      and all(_sets_plainly(model, f) for f in model._meta.concrete_fields))
        self.converters = converters

    def build(self, values, conn):
        if self.converters is None:
            self._prepare(conn)
        values = list(values)
        for i, col, converters in self.converters:
            for converter in converters:
                values[i] = converter(values[i], col, conn)
        if self.plain:
            instance = self.model.__new__(self.model)
            state = ModelState()
            state.adding, state.db = False, conn.alias
            data = instance.__dict__
            data["_state"] = state
            data.update(zip(self.attnames, values, strict=True))
            return instance
        full = [DEFERRED] * self.size
        for slot, value in zip(self.slots, values, strict=True):
            full[slot] = value
        return self.model.from_db(conn.alias, None, full)


_MEMBERSHIP_ROWS, _TENANT_ROWS = RowLoader(Membership), RowLoader(Tenant)
# Names from the models' _meta only; the user id is a bound parameter.
_SIGNED_IN_MEMBERSHIPS_SQL = (
    "SELECT set_config('app.user_id', %s, false); "  # noqa: S608
    f"SELECT {_MEMBERSHIP_ROWS.columns('m')}, {_TENANT_ROWS.columns('t')} "
    f"FROM {Membership._meta.db_table} m JOIN {Tenant._meta.db_table} t ON t.id = m.tenant_id "
    "WHERE m.user_id = %s AND m.is_active AND t.is_active ORDER BY t.name; "
    "SELECT set_config('app.user_id', '', false)"
)


def membership_list_for_signed_in_user(*, user: User) -> list[Membership]:
    """``membership_list_for_user`` for the request middleware (every signed-in request), in one
    round trip instead of three: the three statements (show this user's own memberships, read
    them with their clinics, hide them again) go as one message, so the user setting lives only
    inside it (and a failure rolls it back with the rest). Outside any ``user_scope``: it
    clears the setting."""
    conn = connections[DEFAULT_DB_ALIAS]
    if conn.vendor != "postgresql":
        with user_scope(user.pk):
            return membership_list_for_user(user=user)
    with conn.cursor() as cursor:
        cursor.execute(_SIGNED_IN_MEMBERSHIPS_SQL, [str(user.pk), user.pk])
        cursor.nextset()
        rows = cursor.fetchall()
    n = len(_MEMBERSHIP_ROWS.fields)
    tenant_field = Membership.tenant.field
    memberships = []
    for row in rows:
        membership = _MEMBERSHIP_ROWS.build(row[:n], conn)
        tenant_field.set_cached_value(membership, _TENANT_ROWS.build(row[n:], conn))
        memberships.append(membership)
    return memberships


_COLLEAGUE_ROWS = RowLoader(User, ("id", "email", "full_name"))
# Names from the models' _meta only; the tenant id is a bound parameter (named, so that a page can
# send this with its other reads in one round trip: messaging.selectors.inbox_counts_and_colleagues).
COLLEAGUES_SQL = (
    f"SELECT m.role, {_COLLEAGUE_ROWS.columns('u')} FROM {Membership._meta.db_table} m "  # noqa: S608
    f"JOIN {User._meta.db_table} u ON u.id = m.user_id "
    "WHERE m.tenant_id = %(tenant)s AND m.is_active ORDER BY u.email"
)


def _in_scope(tenant: Tenant, what: str) -> None:
    active = current_tenant()
    if active is None or active.pk != tenant.pk:
        raise ScopeError(f"{what} runs inside its tenant's scope")


def colleague_list_with_permission(*, tenant: Tenant, permission: str) -> list[User]:
    """The clinic's active members whose role grants ``permission``, ordered by email, as users
    with their id, email and name loaded (for pickers: assign a thread, filter the inbox). One
    query, run on staff pages' every request."""
    _in_scope(tenant, "colleague_list_with_permission")
    conn = connections[DEFAULT_DB_ALIAS]
    with conn.cursor() as cursor:
        cursor.execute(COLLEAGUES_SQL, {"tenant": tenant.pk})
        rows = cursor.fetchall()
    return colleagues_from_rows(rows, permission, conn)


def colleagues_from_rows(rows, permission: str, conn) -> list[User]:
    """``colleague_list_with_permission``'s users from the rows of ``COLLEAGUES_SQL``."""
    return [_COLLEAGUE_ROWS.build(row[1:], conn) for row in rows if permission in permissions_for_role(row[0])]


def membership_list(*, tenant: Tenant) -> QuerySet[Membership]:
    return Membership.objects.select_related("user").order_by("-is_active", "user__email")


def membership_get(*, tenant: Tenant, membership_id) -> Membership:
    membership = Membership.objects.select_related("user").filter(pk=_uuid_or_404(membership_id)).first()
    if membership is None:
        raise NotFound()
    return membership


def invitation_list_open(*, tenant: Tenant) -> QuerySet[Invitation]:
    return Invitation.objects.filter(accepted_at__isnull=True, revoked_at__isnull=True).order_by("-created_at")


def invitation_get(*, tenant: Tenant, invitation_id) -> Invitation:
    invitation = Invitation.objects.filter(pk=_uuid_or_404(invitation_id)).first()
    if invitation is None:
        raise NotFound()
    return invitation


def api_key_list(*, tenant: Tenant) -> QuerySet[ApiKey]:
    return ApiKey.objects.select_related("created_by").order_by("revoked_at", "-created_at")


def api_key_get(*, tenant: Tenant, api_key_id) -> ApiKey:
    key = ApiKey.objects.filter(pk=_uuid_or_404(api_key_id)).first()
    if key is None:
        raise NotFound()
    return key


def user_session_list(*, user: User) -> QuerySet[UserSession]:
    return UserSession.objects.filter(user=user, ended_at__isnull=True).order_by("-last_seen_at")
