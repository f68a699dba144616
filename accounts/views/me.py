"""Pages about the signed-in person: their sessions, switching clinic, accepting invitations."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from accounts import selectors, services
from accounts.decorators import verified_user_view
from accounts.errors import ApplicationError, NotFound
from accounts.forms import AcceptInvitationForm, apply_service_errors
from accounts.middleware import AUTH_AT, LAST_SEEN, TENANT_ID, USER_SESSION_ID, session_touch
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType
from audit.services import audit_record


@verified_user_view
@require_http_methods(["GET"])
def sessions_view(request: HttpRequest) -> HttpResponse:
    sessions = selectors.user_session_list(user=request.user)
    current = request.session.get(USER_SESSION_ID)
    return render(request, "accounts/sessions.html", {"sessions": sessions, "current_id": current})


@verified_user_view
@require_POST
def session_revoke_view(request: HttpRequest, session_id) -> HttpResponse:
    if str(session_id) == request.session.get(USER_SESSION_ID):
        messages.info(request, "Use “Sign out” to end this session.")
        return redirect("accounts-sessions")
    services.user_session_revoke(user=request.user, session_id=session_id, actor=request.user)
    messages.success(request, "That session is signed out.")
    return redirect("accounts-sessions")


@verified_user_view
@require_POST
def sessions_revoke_others_view(request: HttpRequest) -> HttpResponse:
    count = services.user_sessions_revoke_others(user=request.user, current_session_id=request.session.get(USER_SESSION_ID))
    messages.success(request, f"Signed out {count} other session{'s' if count != 1 else ''}.")
    return redirect("accounts-sessions")


@verified_user_view
@require_POST
def session_keepalive_view(request: HttpRequest) -> HttpResponse:
    """"Stay signed in" on the session warning (static/js/staff.js): restart the idle clock.

    An expired session never gets here (SessionPolicyMiddleware ends it first and redirects),
    and the absolute limit is not extended. 204: nothing to show, nothing audited (it reads and
    changes no data; the session's start and end are in the trail)."""
    session_touch(request)
    return HttpResponse(status=204)


@verified_user_view
@require_POST
def tenant_switch_view(request: HttpRequest) -> HttpResponse:
    wanted = request.POST.get("membership", "")
    target = next((m for m in request.memberships if str(m.pk) == wanted), None)
    if target is None:
        raise NotFound()
    previous = request.tenant
    request.session[TENANT_ID] = target.tenant_id
    with tenant_scope(target.tenant):
        audit_record(tenant=target.tenant, actor=request.user, event_type=AuditEventType.TENANT_SWITCHED,
                     details={"from_tenant": previous.slug if previous else "", "to_tenant": target.tenant.slug})
    return redirect("dashboard")


@sensitive_post_parameters("password", "password_confirm")
@never_cache
@require_http_methods(["GET", "POST"])
def invitation_accept_view(request: HttpRequest, token: str) -> HttpResponse:
    """Public: the invitee may have no account yet. An unknown/used/expired token is a 404."""
    tenant = services.invitation_tenant_for_token(token=token)
    if tenant is None:
        return render(request, "errors/404.html", status=404)
    if request.user.is_authenticated and not request.user.is_verified():
        return redirect(f"/accounts/mfa/?next={request.path}")
    with tenant_scope(tenant):
        try:
            invitation = services.invitation_get_open(token=token)
        except NotFound:
            return render(request, "errors/404.html", status=404)
        user = request.user if request.user.is_authenticated else None
        existing = user is None and services.User.objects.filter(email=invitation.email).exists()
        form = AcceptInvitationForm(request.POST or None)
        if user is not None:
            form = None
        context = {"invitation": invitation, "tenant": tenant, "form": form, "existing": existing}
        if request.method == "GET" or existing:
            return render(request, "accounts/invitation.html", context)
        if form is not None and not form.is_valid():
            return render(request, "accounts/invitation.html", context, status=400)
        try:
            membership = services.invitation_accept(
                tenant=tenant, token=token, user=user,
                password=form.cleaned_data["password"] if form else None,
                full_name=form.cleaned_data.get("full_name", "") if form else "",
            )
        except ApplicationError as exc:
            if form is not None:
                apply_service_errors(form, exc)
            else:
                messages.error(request, exc.message)
            return render(request, "accounts/invitation.html", context, status=400)
    request.session[TENANT_ID] = tenant.pk
    if user is None:
        login(request, membership.user, backend="django.contrib.auth.backends.ModelBackend")
        now = timezone.now().timestamp()
        request.session[AUTH_AT] = now
        request.session[LAST_SEEN] = now
        request.session[TENANT_ID] = tenant.pk
        return redirect("accounts-mfa-setup")
    messages.success(request, f"You joined {tenant.name}.")
    return redirect("dashboard")
