from django.conf import settings
from django.db import DatabaseError
from django.urls import get_script_prefix, get_urlconf, reverse

from accounts import permissions as perms

# The staff pages' fixed links (base.html's navigation, the inbox's), as ``{{ urls.<name> }}``
# with the URL name's hyphens as underscores. They take no arguments, so they are reversed once
# per process (per script prefix and URL conf) instead of by a dozen ``{% url %}`` tags on every
# page. No authorisation data: which links a page shows is still decided per request (``can``).
NAV_URL_NAMES = (
    "accounts-login", "accounts-logout", "accounts-session-keepalive", "accounts-sessions", "accounts-settings",
    "accounts-tenant-switch", "analytics-dashboard", "audit-report-list", "broadcasts-list",
    "messaging-compose-find", "messaging-inbox", "messaging-inbox-live", "messaging-sms-outbox",
    "messaging-templates", "messaging-unknown", "patients-appointment-list", "patients-patient-list",
    "reminders-list", "reminders-policy",
)
_nav_urls: dict[tuple, dict[str, str]] = {}


def nav_urls() -> dict[str, str]:
    key = (get_script_prefix(), get_urlconf() or settings.ROOT_URLCONF)
    urls = _nav_urls.get(key)
    if urls is None:
        urls = {name.replace("-", "_"): reverse(name) for name in NAV_URL_NAMES}
        _nav_urls[key] = urls
    return urls


def _inbox_unread(request, granted):
    """The clinic's unread inbox count for the nav, computed at most once and only when a
    template asks (one aggregate query). None outside the request's tenant scope (error pages
    rendered after the scope closed) or without messages.view."""
    cached = {}

    def value():
        if "n" not in cached:
            cached["n"] = _unread_count(request, granted)
        return cached["n"]

    return value


def _unread_count(request, granted):
    from accounts.tenancy import current_tenant

    tenant = getattr(request, "tenant", None)
    scope = current_tenant()
    if tenant is None or perms.MESSAGES_VIEW not in granted or scope is None or scope.pk != tenant.pk:
        return None
    from messaging.selectors import unread_total

    try:
        return unread_total(tenant=tenant)
    except DatabaseError:  # e.g. rendering an error page inside a failed transaction: no badge
        return None


def tenant(request):
    granted = getattr(request, "permissions", frozenset())
    return {
        "tenant": getattr(request, "tenant", None),
        "membership": getattr(request, "membership", None),
        "memberships": getattr(request, "memberships", []),
        "can": {
            "manage_users": perms.TENANT_MANAGE_USERS in granted,
            "view_patients": perms.PATIENTS_VIEW in granted,
            "manage_api_keys": perms.TENANT_MANAGE_API_KEYS in granted,
            "manage_settings": perms.TENANT_MANAGE_SETTINGS in granted,
            "view_reports": perms.REPORTS_VIEW in granted,
            "view_messages": perms.MESSAGES_VIEW in granted,
            "send_broadcasts": perms.BROADCASTS_SEND in granted,
            "view_analytics": perms.ANALYTICS_VIEW in granted,
            "manage_reminders": perms.REMINDERS_MANAGE in granted,
        },
        "inbox_unread": _inbox_unread(request, granted),
        "urls": nav_urls(),
    }
