"""Reads for accounts. Tenant-scoped selectors take ``tenant`` and raise NotFound for ids of
other tenants exactly as for ids that don't exist."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from accounts.errors import NotFound
from accounts.models import ApiKey, Invitation, Membership, Tenant, User, UserSession
from accounts.tenancy import unscoped


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
