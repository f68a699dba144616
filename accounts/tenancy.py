"""Tenant isolation: the three locks' application side.

Lock 1 is the schema (``TenantModel``: non-null ``tenant_id``, opaque UUID ids).
Lock 2 is the ORM: ``TenantScopedManager`` raises when no tenant scope is active and
filters by the active tenant when one is (django-scopes).
Lock 3 is PostgreSQL row-level security: ``tenant_scope`` sets ``app.tenant_id`` on the
database session, and every tenant table's policy compares against it (see ``accounts.rls``).

``tenant_scope`` is opened only at entry points: the tenant middleware, the API
authentication, ``TenantTask``, management commands (``tenant_command``) and test fixtures.
Services and selectors never open or disable a scope.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING

from django.db import connection, models
from django_scopes import ScopedManager, scope, scopes_disabled

if TYPE_CHECKING:
    from accounts.models import Tenant

_current_tenant: ContextVar[Tenant | None] = ContextVar("caretext_tenant", default=None)
_current_user_id: ContextVar[int | None] = ContextVar("caretext_user_id", default=None)


_UUID7_FIXED = ~((0xF << 76) | (0b11 << 62))  # the version and variant bits, cleared, then set below
_UUID7_MARKS = (0x7 << 76) | (0b10 << 62)
_new_uuid, _set_slot, _SAFE_UNKNOWN = uuid.UUID.__new__, object.__setattr__, uuid.SafeUUID.unknown


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 v7): opaque in URLs, friendly to B-tree indexes.
    48 bits of milliseconds, then 74 random bits around the version and variant. Built without
    ``UUID.__init__`` (its argument checks were half the cost; a fan-out makes four ids a
    reminder): the value is a valid 128-bit integer by construction."""
    value = ((time.time_ns() // 1_000_000) & 0xFFFFFFFFFFFF) << 80 | int.from_bytes(os.urandom(10), "big")
    made = _new_uuid(uuid.UUID)
    _set_slot(made, "int", (value & _UUID7_FIXED) | _UUID7_MARKS)
    _set_slot(made, "is_safe", _SAFE_UNKNOWN)
    return made


def TenantScopedManager():  # noqa: N802 - reads as a class at the call site
    return ScopedManager(tenant="tenant")


def current_tenant() -> Tenant | None:
    return _current_tenant.get()


def current_user_id() -> int | None:
    """The user whose memberships ``user_scope`` currently shows, if any."""
    return _current_user_id.get()


def _set_db_setting(name: str, value: str) -> None:
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config(%s, %s, false)", [name, value])


def _reset_db_setting(name: str) -> None:
    if connection.vendor != "postgresql" or connection.connection is None:
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config(%s, '', false)", [name])
    except Exception:
        # A broken connection must not carry a tenant to the next request: drop it.
        connection.close()


def clear_database_tenant() -> None:
    """Clear ``app.tenant_id`` on this connection (a lookup that set it ended without a scope)."""
    _reset_db_setting("app.tenant_id")


@contextlib.contextmanager
def tenant_scope(tenant: Tenant, *, database_set: bool = False) -> Iterator[Tenant]:
    """Activate ``tenant`` for the ORM (lock 2) and the database session (lock 3).

    ``database_set``: the statement that found the tenant already set ``app.tenant_id`` to it
    on this connection (``messaging.routing.patient_session``); only then is setting it skipped.
    Leaving the scope clears (or restores) it either way."""
    if tenant is None or tenant.pk is None:
        if database_set:
            clear_database_tenant()
        raise ValueError("tenant_scope needs a saved tenant")
    previous = _current_tenant.get()
    token = _current_tenant.set(tenant)
    if not database_set:
        _set_db_setting("app.tenant_id", str(tenant.pk))
    try:
        with scope(tenant=tenant):
            yield tenant
    finally:
        _current_tenant.reset(token)
        if previous is not None:
            _set_db_setting("app.tenant_id", str(previous.pk))
        else:
            _reset_db_setting("app.tenant_id")


@contextlib.contextmanager
def user_scope(user_id: int | None) -> Iterator[None]:
    """Let the database show this user's own memberships across tenants (and nothing else)."""
    token = _current_user_id.set(user_id)
    if user_id is not None:
        _set_db_setting("app.user_id", str(user_id))
    try:
        yield
    finally:
        _current_user_id.reset(token)
        _reset_db_setting("app.user_id")


@contextlib.contextmanager
def hash_lookup(setting: str, value: str) -> Iterator[None]:
    """Let the database show the one row whose hash column equals ``value`` (a SHA-256 hex
    digest), for the tables whose RLS read policy names ``setting`` (``app.link_hash``,
    ``app.session_hash``): how a secure link or a patient session finds its tenant."""
    if setting not in ("app.link_hash", "app.session_hash"):
        raise ValueError(f"not a hash lookup setting: {setting}")
    if len(value) != 64:
        raise ValueError("hash_lookup takes a SHA-256 hex digest")
    _set_db_setting(setting, value)
    try:
        yield
    finally:
        _reset_db_setting(setting)


def unscoped():
    """The allow-listed escape hatch for system paths (CI greps for its use)."""
    return scopes_disabled()


def tenant_command(handle):
    """Decorate a management command's ``handle``: ``--tenant <slug>`` opens the scope."""

    @functools.wraps(handle)
    def wrapper(self, *args, **options):
        from django.core.management.base import CommandError

        from accounts.models import Tenant

        slug = options.get("tenant")
        try:
            tenant = Tenant.objects.get(slug=slug)
        except Tenant.DoesNotExist:
            raise CommandError(f"No tenant with slug {slug!r}") from None
        with tenant_scope(tenant):
            return handle(self, *args, tenant=tenant, **{k: v for k, v in options.items() if k != "tenant"})

    return wrapper


def append_heavy_tenant_fk(**options) -> models.ForeignKey:
    """The ``tenant`` of a table written by the thousand (messages, threads, secure links, the
    outbox, the audit trail): the same foreign key to the clinic in Django (``on_delete`` is
    enforced by the ORM), without the database constraint.

    The constraint's check on every insert locks the clinic's one ``accounts_tenant`` row
    (``FOR KEY SHARE``): every concurrent writer of a clinic queues its lock on that one row,
    PostgreSQL turns them into multixacts (written to the WAL, kept until vacuum), and a
    reminder fan-out paid six such checks per reminder (about 5 µs each on this box). What the
    constraint guaranteed is held anyway: row-level security lets a row be inserted only with the
    clinic in scope (``WITH CHECK tenant_id = caretext_current_tenant()``), and that scope is
    only ever entered from an existing clinic; each row's other keys (its patient, its thread)
    are still checked, and those rows still carry the constraint; a clinic is never deleted
    while it has patients. The index on ``tenant_id`` stays."""
    return models.ForeignKey("accounts.Tenant", on_delete=models.PROTECT, related_name="+", db_constraint=False,
                             **options)


class TenantModel(models.Model):
    """Base for every tenant-owned table. Its migration must add ``EnableRLS``."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantScopedManager()
    unscoped_objects = models.Manager()  # noqa: DJ012 - ruff reads the factory call above as a field

    class Meta:
        abstract = True
        default_manager_name = "objects"
        base_manager_name = "unscoped_objects"  # Django's internal lookups (FK access, deletes)


def api_key_from_header(raw_key: str):
    """Resolve ``ct_<tenant id>_<secret>`` to (tenant, ApiKey), or None.

    The tenant id in the key is not a secret; it lets the lookup run under that tenant's
    RLS policy instead of scanning every tenant's keys.
    """
    from accounts.models import Tenant
    from accounts.services import api_key_authenticate

    parts = raw_key.split("_", 2)
    if len(parts) != 3 or parts[0] != "ct" or not parts[1].isdigit() or len(parts[1]) > 18:
        return None
    tenant = Tenant.objects.filter(pk=int(parts[1]), is_active=True).first()
    if tenant is None:
        return None
    with tenant_scope(tenant):
        api_key = api_key_authenticate(tenant=tenant, raw_key=raw_key)
    return (tenant, api_key) if api_key is not None else None


# --- Celery: tasks take ids and re-enter their tenant (R14) -----------------------------------

from celery import Task  # noqa: E402


class TenantTask(Task):
    """Base for tenant tasks: called with ``tenant_id=`` and run inside that tenant's scope.

    A task for a deactivated or unknown tenant does nothing (and says so in the log, ids only).
    """

    def __call__(self, *args, **kwargs):
        from accounts.models import Tenant

        tenant_id = kwargs.get("tenant_id")
        if not isinstance(tenant_id, int):
            raise TypeError(f"{self.name} must be called with an integer tenant_id keyword")
        tenant = Tenant.objects.filter(pk=tenant_id, is_active=True).first()
        if tenant is None:
            import logging

            logging.getLogger(__name__).warning("task %s skipped: tenant %s inactive or missing", self.name, tenant_id)
            return None
        with tenant_scope(tenant):
            return super().__call__(*args, **kwargs)
