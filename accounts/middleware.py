"""Request id, staff-session policy (idle/absolute timeouts) and tenant resolution.

Order in settings.MIDDLEWARE: RequestId → sessions/auth/OTP → SessionPolicy → Tenant.
"""

from __future__ import annotations

import re
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.utils import timezone

from accounts.requestmeta import current_request_meta, reset_request_meta, set_request_meta

__all__ = ["current_request_meta"]

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

# Session keys (the values are ours, never PHI).
AUTH_AT = "_ct_auth_at"
LAST_SEEN = "_ct_last_seen"
TENANT_ID = "_ct_tenant_id"
USER_SESSION_ID = "_ct_user_session"


class RequestIdMiddleware:
    """Give every request an id (honouring a well-formed X-Request-ID from the proxy)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        from axes.helpers import get_client_ip_address

        request.request_id = incoming if _REQUEST_ID_RE.match(incoming) else secrets.token_hex(12)
        token = set_request_meta(
            {
                "request_id": request.request_id,
                "ip": get_client_ip_address(request),
                "user_agent": request.headers.get("User-Agent", "")[:300],
            }
        )
        try:
            response = self.get_response(request)
        finally:
            reset_request_meta(token)
        response["X-Request-ID"] = request.request_id
        return response


def session_limits(tenant) -> tuple[timedelta, timedelta]:
    """(idle, absolute) for a tenant: the platform's limits, shortened by the tenant's own."""
    idle, absolute = settings.SESSION_IDLE_TIMEOUT, settings.SESSION_ABSOLUTE_TIMEOUT
    if tenant is not None and tenant.session_idle_minutes:
        idle = min(idle, timedelta(minutes=tenant.session_idle_minutes))
    if tenant is not None and tenant.session_absolute_hours:
        absolute = min(absolute, timedelta(hours=tenant.session_absolute_hours))
    return idle, absolute


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", "")


BACKGROUND_HEADER = "X-Caretext-Background"  # sent by polling elements (templates: hx-headers)


def is_background(request: HttpRequest) -> bool:
    """A request the page made on its own (htmx polling), not something the person did."""
    return request.headers.get(BACKGROUND_HEADER) == "1"


def _is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def _htmx_to_login(location: str) -> HttpResponse:
    """htmx follows a 302 inside its XHR and would paste the login page into the inbox; a 401
    with HX-Redirect makes the whole page go to the login page instead."""
    response = HttpResponse(status=401)
    response["HX-Redirect"] = location
    return response


def session_touch(request: HttpRequest) -> None:
    """Record activity now (restarting the idle clock), as a real page load or keepalive does."""
    from accounts.services import user_session_touch

    request.session[LAST_SEEN] = timezone.now().timestamp()
    user_session_touch(session_id=request.session.get(USER_SESSION_ID))


def user_memberships(request: HttpRequest) -> list:
    """The signed-in user's active memberships in active tenants, read once per request (fresh
    from the database on every request: a revoked membership or deactivated clinic takes effect
    on the next one). SessionPolicyMiddleware reads its clinic's session limits from them and
    TenantMiddleware picks the clinic from them."""
    user_id = request.user.pk
    cached = getattr(request, "_ct_user_memberships", None)
    if cached is not None and cached[0] == user_id:  # the same user earlier in this request
        return cached[1]
    from accounts.selectors import membership_list_for_signed_in_user

    memberships = membership_list_for_signed_in_user(user=request.user)
    request._ct_user_memberships = (user_id, memberships)
    return memberships


def _session_tenant(request: HttpRequest):
    """The clinic whose session limits apply: the session's clinic, taken from the user's
    memberships when it is among them (no query of its own), else looked up as it is."""
    from accounts.models import Tenant

    tenant_id = request.session.get(TENANT_ID)
    if tenant_id is None:
        return None
    for membership in user_memberships(request):
        if membership.tenant_id == tenant_id:
            return membership.tenant
    return Tenant.objects.filter(pk=tenant_id).first()  # no longer a member there: the limits still apply


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{int(seconds)} seconds"
    minutes = round(seconds / 60)
    return f"{minutes} minutes"


class SessionPolicyMiddleware:
    """End staff sessions that sat idle too long or are too old, whatever the cookie says.

    Background requests (``X-Caretext-Background: 1``: the inbox's and a conversation's polling)
    are checked like any other, but never count as activity: a screen left open still idles
    out. Each request gets ``request.idle_seconds`` (the effective idle limit) and
    ``request.idle_remaining`` (what is left of it now), which base.html hands to staff.js for
    the "you will be signed out" warning; if this logic changes, update static/js/staff.js.
    """

    TOUCH_EVERY = 60  # seconds; keeps last-seen writes to one a minute per session

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated and AUTH_AT in request.session:
            expired = self._expired(request)
            if expired:
                return self._end(request, expired)
        response = self.get_response(request)
        if _is_htmx(request) and response.status_code in (301, 302) and \
                response.get("Location", "").startswith(settings.LOGIN_URL):
            return _htmx_to_login(response["Location"])
        return response

    def _expired(self, request: HttpRequest) -> str:
        now = timezone.now().timestamp()
        idle, absolute = session_limits(_session_tenant(request))
        idle_s = idle.total_seconds()
        if now - request.session[AUTH_AT] > absolute.total_seconds():
            return "absolute_timeout"
        if now - request.session.get(LAST_SEEN, now) > idle_s:
            request.idle_for = _duration(idle_s)
            return "idle_timeout"
        # Short idle limits (a clinic's 1-minute kiosk, tests) need finer touches than a minute.
        if not is_background(request) and now - request.session.get(LAST_SEEN, 0) >= min(self.TOUCH_EVERY, idle_s / 4):
            session_touch(request)
        request.idle_seconds = int(idle_s)
        request.idle_remaining = max(0, int(idle_s - (now - request.session.get(LAST_SEEN, now))))
        return ""

    def _end(self, request: HttpRequest, reason: str) -> HttpResponse:
        from accounts.services import user_session_end_current

        user_session_end_current(request=request, reason=reason)
        idle_for = getattr(request, "idle_for", "")
        logout(request)
        if _wants_json(request):
            return JsonResponse({"error": {"code": "session_expired", "message": "Your session has expired."}}, status=401)
        if reason == "idle_timeout":
            messages.info(request, f"You were signed out after {idle_for} without activity. Please sign in again.")
        else:
            messages.info(request, "Your session expired. Please sign in again.")
        if _is_htmx(request):
            return _htmx_to_login(settings.LOGIN_URL)
        return redirect(settings.LOGIN_URL)


class TenantMiddleware:
    """Resolve the tenant for this request and open its scope around the view.

    Sources, in order: an API key (``Authorization: Bearer ct_…``), else the verified staff
    user's active membership (the session remembers which clinic they switched to). Never a
    bare client-supplied tenant id.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from accounts.tenancy import api_key_from_header, tenant_scope

        request.tenant = None
        request.membership = None
        request.memberships = []
        request.permissions = frozenset()
        request.api_key = None
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            result = api_key_from_header(header.removeprefix("Bearer ").strip())
            if result is None:
                return JsonResponse(
                    {"error": {"code": "not_authenticated", "message": "Invalid or revoked API key."}}, status=401
                )
            tenant, api_key = result
            with tenant_scope(tenant):
                request.tenant, request.api_key = tenant, api_key
                request.permissions = api_key.permissions
                return self.get_response(request)

        user = request.user
        if not (user.is_authenticated and user.is_verified()):
            return self.get_response(request)
        memberships = user_memberships(request)
        request.memberships = memberships
        chosen = next((m for m in memberships if m.tenant_id == request.session.get(TENANT_ID)), None)
        chosen = chosen or (memberships[0] if memberships else None)
        if chosen is None:
            return self.get_response(request)
        if request.session.get(TENANT_ID) != chosen.tenant_id:
            request.session[TENANT_ID] = chosen.tenant_id
        with tenant_scope(chosen.tenant):
            request.tenant, request.membership = chosen.tenant, chosen
            request.permissions = chosen.permissions
            return self.get_response(request)


class CspNonce:
    """This request's script nonce, ``{{ request.csp_nonce }}`` in templates. It remembers
    whether a template used it: a page without scripts (the patient's secure page, login) then
    keeps the plain policy and advertises no nonce at all."""

    def __init__(self):
        self.value = secrets.token_urlsafe(16)
        self.used = False

    def __str__(self) -> str:
        self.used = True
        return self.value


class SecurityHeadersMiddleware:
    """A strict Content-Security-Policy (no inline script, no third-party assets) and
    no-store caching for every signed-in page, so PHI never sits in a shared cache.

    Pages with scripts get ``script-src 'self' 'nonce-…'`` with a nonce new for every request,
    and every ``<script>`` tag in our templates carries ``nonce="{{ request.csp_nonce }}"``
    (tests/security/test_csp_nonce.py checks it). ``'self'`` stays so the policy also holds in
    browsers without nonce support. No ``'strict-dynamic'``: we never load scripts from
    scripts, and with it any script inserted at run time (by htmx or anything else) would be
    trusted by inheritance. No inline styles or eval: htmx runs with ``includeIndicatorStyles``
    and ``allowEval`` off (base.html's htmx-config meta).
    """

    CSP = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )

    def __init__(self, get_response):
        self.get_response = get_response

    @classmethod
    def policy(cls, nonce: CspNonce | None = None) -> str:
        if nonce is None or not nonce.used:
            return cls.CSP
        return cls.CSP.replace("script-src 'self';", f"script-src 'self' 'nonce-{nonce.value}';")

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.csp_nonce = CspNonce()
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", self.policy(request.csp_nonce))
        response.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
        if getattr(request, "user", None) is not None and request.user.is_authenticated:
            response["Cache-Control"] = "no-store"
        return response
