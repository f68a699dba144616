"""The one gate for staff pages: signed in, MFA verified, a clinic, and the permission."""

from __future__ import annotations

import functools

from django.http import HttpRequest
from django.shortcuts import redirect, render
from django.urls import resolve
from django.utils.http import url_has_allowed_host_and_scheme, urlencode

from accounts.errors import NotFound
from audit.events import AuditEventType
from audit.services import audit_record


def login_redirect(request: HttpRequest):
    target = request.get_full_path() if request.method == "GET" else "/"
    return redirect(f"/accounts/login/?{urlencode({'next': target})}")


def safe_next(request: HttpRequest, default: str = "/") -> str:
    target = request.POST.get("next") or request.GET.get("next") or default
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return default


def permission_denied(request: HttpRequest, permission: str):
    audit_record(tenant=request.tenant, actor=request.user, event_type=AuditEventType.PERMISSION_DENIED,
                 details={"permission": permission, "path_name": resolve(request.path_info).url_name or ""})
    return render(request, "errors/403.html", status=403)


def staff_view(permission: str, *, methods: tuple[str, ...] = ("GET",)):
    """Decorate a staff page. Anonymous → login; unverified → MFA; no clinic → notice;
    missing permission → 403 (audited); NotFound from a selector → 404."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs):
            if not request.user.is_authenticated:
                return login_redirect(request)
            if not request.user.is_verified():
                return redirect("accounts-mfa")
            if request.tenant is None:
                return render(request, "accounts/no_clinic.html", status=403)
            if request.method not in methods:
                return render(request, "errors/405.html", status=405)
            if permission not in request.permissions:
                return permission_denied(request, permission)
            try:
                return view(request, *args, **kwargs)
            except NotFound:
                return render(request, "errors/404.html", status=404)

        wrapper.caretext_permission = permission
        return wrapper

    return decorator


def verified_user_view(view):
    """For pages about the user themself (sessions, switching clinic): no clinic permission."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        if not request.user.is_authenticated:
            return login_redirect(request)
        if not request.user.is_verified():
            return redirect("accounts-mfa")
        try:
            return view(request, *args, **kwargs)
        except NotFound:
            return render(request, "errors/404.html", status=404)

    wrapper.caretext_permission = "self"
    return wrapper
