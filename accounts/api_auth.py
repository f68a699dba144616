"""DRF authentication and the one permission class (R8).

Kept apart from ``accounts.api_base``: DRF imports these while importing its own views.
"""

from rest_framework import authentication, exceptions
from rest_framework import permissions as drf_permissions


class ApiKeyPrincipal:
    """``request.user`` for API-key requests: authenticated, but not a person."""

    is_authenticated = True
    is_anonymous = False
    pk = None

    def __init__(self, api_key):
        self.api_key = api_key

    def __str__(self) -> str:
        return f"api-key:{self.api_key.prefix}"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """The key was already resolved (and the tenant scope opened) by TenantMiddleware."""

    def authenticate(self, request):
        api_key = getattr(request._request, "api_key", None)
        if api_key is None:
            return None
        return ApiKeyPrincipal(api_key), api_key

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="caretext"'


class VerifiedSessionAuthentication(authentication.SessionAuthentication):
    """A staff browser session counts only once MFA is verified (and CSRF is checked)."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            return None
        user, _ = result
        if not user.is_verified():
            raise exceptions.NotAuthenticated("Complete two-factor sign-in first.")
        return result


class TenantPermission(drf_permissions.BasePermission):
    """Views declare ``permission`` (reads) and ``write_permission`` (unsafe methods)."""

    def has_permission(self, request, view) -> bool:
        if getattr(view, "public", False):
            return True
        if request.auth is None and not getattr(request.user, "is_authenticated", False):
            raise exceptions.NotAuthenticated()
        if getattr(request._request, "tenant", None) is None:
            raise exceptions.NotFound()
        needed = view.permission if request.method in drf_permissions.SAFE_METHODS else view.write_permission
        if needed == "any.member" or (needed and needed in request._request.permissions):
            return True
        from audit.events import AuditEventType
        from audit.services import audit_record

        actor = request.auth if isinstance(request.user, ApiKeyPrincipal) else request.user
        audit_record(tenant=request._request.tenant, actor=actor, event_type=AuditEventType.PERMISSION_DENIED,
                     details={"permission": needed or "", "path_name": request.resolver_match.url_name or ""})
        return False
