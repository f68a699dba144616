"""Writes for tenants, staff, memberships, invitations, API keys and sessions.

Every function here is a service (R2): keyword-only, atomic, audited in the same transaction.
Those that take ``tenant`` must be called inside ``tenant_scope(tenant)``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import password_validation
from django.contrib.sessions.models import Session
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from accounts.errors import ApplicationError, ConflictError, NotFound, PermissionDeniedError
from accounts.models import (
    ApiKey,
    Invitation,
    InvitationToken,
    Membership,
    Tenant,
    User,
    UserSession,
)
from accounts.permissions import ApiScope, Role
from accounts.tenancy import tenant_scope, user_scope
from audit.events import AuditEventType
from audit.services import audit_record
from phi import keys

INVITATION_LIFETIME = timedelta(days=7)
API_KEY_TOUCH_EVERY = timedelta(minutes=1)


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _full_clean(obj, exclude=None) -> None:
    obj.full_clean(exclude=exclude)


# --- tenants and users ------------------------------------------------------------------------


@transaction.atomic
def tenant_create(*, name: str, slug: str, sms_sender_label: str, timezone_name: str = "America/New_York", actor=None) -> Tenant:
    tenant = Tenant(name=name, slug=slug, sms_sender_label=sms_sender_label, timezone=timezone_name)
    _full_clean(tenant)
    tenant.save()
    with tenant_scope(tenant):
        keys.ensure_keys(tenant.pk)  # its data and blind-index keys, wrapped by the KEK
        audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.TENANT_CREATED, target=tenant)
    return tenant


@transaction.atomic
def tenant_update_settings(*, tenant: Tenant, actor: User, **changes) -> Tenant:
    allowed = {"name", "timezone", "sms_sender_label", "session_idle_minutes", "session_absolute_hours",
               "sms_number", "twilio_messaging_service_sid", "link_lifetime_days", "result_release_minutes"}
    unknown = set(changes) - allowed
    if unknown:
        raise ApplicationError("Unknown settings.", fields={k: ["Not a setting."] for k in unknown})
    for field, value in changes.items():
        setattr(tenant, field, value)
    _full_clean(tenant)
    tenant.save(update_fields=[*changes])
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.TENANT_SETTINGS_CHANGED,
                 target=tenant, details={"fields": sorted(changes)})
    return tenant


def tenant_setting_put(*, tenant: Tenant, actor, key: str, value) -> None:
    """Set (or, with None, remove) one key of ``Tenant.settings``, audited. Callers validate the
    value first; the row lock keeps two writers of different keys from losing an update. No
    change writes nothing (a settings form saves every field each time)."""
    locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
    values = dict(locked.settings or {})
    if value is None:
        values.pop(key, None)
    else:
        values[key] = value
    if values == (locked.settings or {}):
        return
    locked.settings = values
    locked.save(update_fields=["settings"])
    tenant.settings = values
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.TENANT_SETTINGS_CHANGED, target=locked,
                 details={"fields": [key]})


def _validated_password(password: str, user: User) -> str:
    try:
        password_validation.validate_password(password, user)
    except ValidationError as exc:
        raise ApplicationError("Choose a stronger password.", fields={"password": list(exc.messages)}) from None
    return password


@transaction.atomic
def user_create(*, email: str, password: str | None, full_name: str = "") -> User:
    email = User.objects.normalize_email(email).strip().lower()
    user = User(email=email, full_name=full_name)
    try:
        _full_clean(user, exclude=["password"])
    except ValidationError as exc:
        raise ApplicationError("Invalid user.", fields={k: [str(m) for m in v] for k, v in exc.message_dict.items()}) from None
    if password is None:
        user.set_unusable_password()
    else:
        user.set_password(_validated_password(password, user))
    user.save()
    return user


@transaction.atomic
def user_set_password(*, user: User, password: str) -> User:
    user.set_password(_validated_password(password, user))
    user.save(update_fields=["password"])
    return user


# --- memberships ------------------------------------------------------------------------------


def _check_role(role: str) -> str:
    if role not in Role.values:
        raise ApplicationError("Unknown role.", fields={"role": [f"Choose one of: {', '.join(Role.values)}."]})
    return role


@transaction.atomic
def membership_create(*, tenant: Tenant, actor: User | None, user: User, role: str) -> Membership:
    _check_role(role)
    if Membership.objects.filter(user=user).exists():
        raise ConflictError("This person is already a member of this clinic.", fields={"email": ["Already a member."]})
    membership = Membership(tenant=tenant, user=user, role=role)
    _full_clean(membership)
    membership.save(force_insert=True)
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.MEMBERSHIP_CREATED, target=membership,
                 details={"role": role})
    return membership


@transaction.atomic
def staff_create(*, tenant: Tenant, actor: User | None, email: str, role: str, password: str | None) -> Membership:
    """Create (or reuse) the user for ``email`` and add them to ``tenant`` with ``role``."""
    _check_role(role)
    user = User.objects.filter(email=email.strip().lower()).first()
    if user is None:
        user = user_create(email=email, password=password)
    elif password is not None:
        user_set_password(user=user, password=password)
    return membership_create(tenant=tenant, actor=actor, user=user, role=role)


def _other_active_owners(*, membership: Membership) -> bool:
    return Membership.objects.filter(role=Role.OWNER, is_active=True).exclude(pk=membership.pk).exists()


@transaction.atomic
def membership_change_role(*, tenant: Tenant, actor: User, membership: Membership, role: str) -> Membership:
    _check_role(role)
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    if membership.role == Role.OWNER and role != Role.OWNER and not _other_active_owners(membership=membership):
        raise ConflictError("A clinic needs at least one active owner.", fields={"role": ["Last owner."]})
    old = membership.role
    membership.role = role
    membership.save(update_fields=["role", "updated_at"])
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.MEMBERSHIP_ROLE_CHANGED, target=membership,
                 details={"old_role": old, "new_role": role})
    return membership


@transaction.atomic
def membership_deactivate(*, tenant: Tenant, actor: User, membership: Membership) -> Membership:
    """Remove a person's access to this clinic at once: sessions ended, their API keys revoked."""
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    if membership.role == Role.OWNER and not _other_active_owners(membership=membership):
        raise ConflictError("A clinic needs at least one active owner.", fields={"membership": ["Last owner."]})
    now = timezone.now()
    membership.is_active = False
    membership.deactivated_at = now
    membership.save(update_fields=["is_active", "deactivated_at", "updated_at"])
    keys = ApiKey.objects.filter(created_by=membership.user, revoked_at__isnull=True).update(revoked_at=now)
    sessions = user_sessions_end_all(user=membership.user, reason="deactivated")
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.MEMBERSHIP_DEACTIVATED, target=membership,
                 details={"session_count": sessions, "api_key_count": keys})
    return membership


@transaction.atomic
def membership_reactivate(*, tenant: Tenant, actor: User, membership: Membership) -> Membership:
    membership.is_active = True
    membership.deactivated_at = None
    membership.save(update_fields=["is_active", "deactivated_at", "updated_at"])
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.MEMBERSHIP_REACTIVATED, target=membership)
    return membership


# --- invitations ------------------------------------------------------------------------------


@transaction.atomic
def invitation_create(*, tenant: Tenant, actor: User, email: str, role: str) -> tuple[Invitation, str]:
    """Invite ``email`` to the clinic; returns the invitation and the one-time link token."""
    _check_role(role)
    email = email.strip().lower()
    if Membership.objects.filter(user__email=email).exists():
        raise ConflictError("This person is already a member of this clinic.", fields={"email": ["Already a member."]})
    token = secrets.token_urlsafe(32)
    invitation = Invitation(tenant=tenant, email=email, role=role, token_hash=_sha256(token), invited_by=actor,
                            expires_at=timezone.now() + INVITATION_LIFETIME)
    _full_clean(invitation)
    invitation.save(force_insert=True)
    InvitationToken.objects.create(token_hash=invitation.token_hash, tenant=tenant)
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.USER_INVITED, target=invitation,
                 details={"role": role})
    link = f"{settings.SITE_URL}/invite/{token}/"
    transaction.on_commit(lambda: send_mail(
        subject=f"You're invited to {tenant.name} on Caretext",
        message=f"{actor.email} invited you to join {tenant.name} on Caretext.\n\nAccept: {link}\n\n"
                f"The link works once and expires in 7 days.",
        from_email=None, recipient_list=[email], fail_silently=False,
    ))
    return invitation, token


def invitation_tenant_for_token(*, token: str) -> Tenant | None:
    row = InvitationToken.objects.select_related("tenant").filter(token_hash=_sha256(token)).first()
    return row.tenant if row is not None and row.tenant.is_active else None


def invitation_get_open(*, token: str) -> Invitation:
    """Must be called inside the scope of ``invitation_tenant_for_token``'s tenant."""
    invitation = Invitation.objects.filter(token_hash=_sha256(token)).first()
    if invitation is None or invitation.accepted_at or invitation.revoked_at or invitation.expires_at <= timezone.now():
        raise NotFound("This invitation is invalid or has expired.")
    return invitation


@transaction.atomic
def invitation_accept(*, tenant: Tenant, token: str, user: User | None, password: str | None, full_name: str = "") -> Membership:
    """Accept as the signed-in ``user`` (their email must match), or create the account."""
    invitation = Invitation.objects.select_for_update().get(pk=invitation_get_open(token=token).pk)
    if user is not None and user.email != invitation.email:
        raise PermissionDeniedError("This invitation was sent to a different email address.")
    if user is None:
        if User.objects.filter(email=invitation.email).exists():
            raise ApplicationError("Sign in first to accept this invitation.", code="sign_in_required")
        user = user_create(email=invitation.email, password=password, full_name=full_name)
    membership = membership_create(tenant=tenant, actor=user, user=user, role=invitation.role)
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["accepted_at", "updated_at"])
    audit_record(tenant=tenant, actor=user, event_type=AuditEventType.INVITATION_ACCEPTED, target=invitation,
                 details={"membership_id": str(membership.pk)})
    return membership


@transaction.atomic
def invitation_revoke(*, tenant: Tenant, actor: User, invitation: Invitation) -> Invitation:
    invitation.revoked_at = timezone.now()
    invitation.save(update_fields=["revoked_at", "updated_at"])
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.INVITATION_REVOKED, target=invitation)
    return invitation


# --- API keys ---------------------------------------------------------------------------------


@transaction.atomic
def api_key_create(*, tenant: Tenant, actor: User, name: str, scopes: list[str], expires_at=None) -> tuple[ApiKey, str]:
    """Create a key; returns it with the raw secret, which is never retrievable again."""
    unknown = sorted(set(scopes) - set(ApiScope.values))
    if not scopes or unknown:
        raise ApplicationError("Choose at least one valid scope.",
                               fields={"scopes": [f"Valid scopes: {', '.join(ApiScope.values)}."]})
    secret = secrets.token_urlsafe(32)
    raw = f"ct_{tenant.pk}_{secret}"
    key = ApiKey(tenant=tenant, name=name.strip(), prefix=f"ct_{tenant.pk}_{secret[:6]}"[:16], key_hash=_sha256(raw),
                 scopes=sorted(set(scopes)), created_by=actor, expires_at=expires_at)
    _full_clean(key)
    key.save(force_insert=True)
    audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.API_KEY_CREATED, target=key,
                 details={"scopes": key.scopes, "api_key_prefix": key.prefix})
    return key, raw


@transaction.atomic
def api_key_revoke(*, tenant: Tenant, actor: User, api_key: ApiKey) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at", "updated_at"])
        audit_record(tenant=tenant, actor=actor, event_type=AuditEventType.API_KEY_REVOKED, target=api_key,
                     details={"api_key_prefix": api_key.prefix})
    return api_key


@transaction.atomic
def api_key_authenticate(*, tenant: Tenant, raw_key: str) -> ApiKey | None:
    """The usable key matching ``raw_key``, or None (audited). Records last use once a minute."""
    wanted = _sha256(raw_key)
    key = ApiKey.objects.filter(key_hash=wanted).first()
    if key is None or not hmac.compare_digest(key.key_hash, wanted) or not key.is_usable:
        reason = "unknown" if key is None else "revoked_or_expired"
        audit_record(tenant=tenant, actor=None, event_type=AuditEventType.API_KEY_REJECTED, target=key,
                     details={"reason": reason})
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > API_KEY_TOUCH_EVERY:
        # A trace of use, at most once a minute per key; what a request reads or changes is
        # audited by the service it calls.
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
        audit_record(tenant=tenant, actor=key, event_type=AuditEventType.API_KEY_USED, target=key,
                     details={"api_key_prefix": key.prefix})
    return key


# --- sessions ---------------------------------------------------------------------------------


def _end_django_sessions(keys: list[str]) -> None:
    Session.objects.filter(session_key__in=keys).delete()


@transaction.atomic
def user_session_start(*, user: User, session_key: str, ip: str | None, user_agent: str) -> UserSession:
    return UserSession.objects.create(user=user, session_key=session_key, ip_address=ip, user_agent=user_agent[:300])


def user_session_touch(*, session_id) -> None:
    if session_id:
        UserSession.objects.filter(pk=session_id, ended_at__isnull=True).update(last_seen_at=timezone.now())


@transaction.atomic
def user_session_end(*, session: UserSession, reason: str) -> None:
    UserSession.objects.filter(pk=session.pk, ended_at__isnull=True).update(ended_at=timezone.now(), end_reason=reason)
    _end_django_sessions([session.session_key])


def user_session_end_current(*, request, reason: str) -> None:
    from accounts.middleware import USER_SESSION_ID

    session_id = request.session.get(USER_SESSION_ID)
    if session_id:
        UserSession.objects.filter(pk=session_id, ended_at__isnull=True).update(ended_at=timezone.now(), end_reason=reason)
    if reason.endswith("timeout"):
        _audit_for_user_tenants(user=request.user, event_type=AuditEventType.SESSION_EXPIRED, details={"reason": reason})


@transaction.atomic
def user_sessions_end_all(*, user: User, reason: str, except_session_id=None) -> int:
    sessions = UserSession.objects.filter(user=user, ended_at__isnull=True)
    if except_session_id:
        sessions = sessions.exclude(pk=except_session_id)
    keys = list(sessions.values_list("session_key", flat=True))
    sessions.update(ended_at=timezone.now(), end_reason=reason)
    _end_django_sessions(keys)
    return len(keys)


@transaction.atomic
def user_session_revoke(*, user: User, session_id, actor: User) -> int:
    """End one of ``user``'s sessions by its public id. Unknown or foreign ids: NotFound."""
    session = UserSession.objects.filter(pk=session_id, user=user, ended_at__isnull=True).first()
    if session is None:
        raise NotFound()
    user_session_end(session=session, reason="revoked")
    _audit_for_user_tenants(user=actor, event_type=AuditEventType.SESSION_REVOKED, details={"session_count": 1})
    return 1


@transaction.atomic
def user_sessions_revoke_others(*, user: User, current_session_id) -> int:
    count = user_sessions_end_all(user=user, reason="revoked", except_session_id=current_session_id)
    _audit_for_user_tenants(user=user, event_type=AuditEventType.SESSION_REVOKED, details={"session_count": count})
    return count


def _audit_for_user_tenants(*, user: User | None, event_type, details=None, actor_label: str = "") -> int:
    """Record a security event in the trail of every clinic the user belongs to.

    Login and session events happen outside any one clinic; each clinic's compliance officer
    should see what touched its staff. A user with no clinic gets a platform event (tenant
    null). This is an entry point, so it opens each tenant's scope itself.
    """
    from accounts.selectors import membership_list_for_signed_in_user, membership_list_for_user
    from accounts.tenancy import current_user_id

    tenants = []
    if user is not None and user.pk is not None:
        if current_user_id() is None:  # the usual case (sign-in, sign-out): one round trip
            tenants = [m.tenant for m in membership_list_for_signed_in_user(user=user)]
        else:
            with user_scope(user.pk):
                tenants = [m.tenant for m in membership_list_for_user(user=user)]
    actor = user if (user is not None and user.pk) else None
    if not tenants:
        audit_record(tenant=None, actor=actor, event_type=event_type, details=details, actor_label=actor_label)
        return 1
    for tenant in tenants:
        with tenant_scope(tenant):
            audit_record(tenant=tenant, actor=actor, event_type=event_type, details=details, actor_label=actor_label)
    return len(tenants)


audit_for_user_tenants = _audit_for_user_tenants
