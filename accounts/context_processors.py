from django.db import DatabaseError

from accounts import permissions as perms


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
    }
