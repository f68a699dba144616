from accounts import permissions as perms


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
        },
    }
