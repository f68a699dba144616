from html import escape

from django.conf import settings
from django.db import DatabaseError
from django.middleware.csrf import get_token
from django.urls import get_script_prefix, get_urlconf, reverse
from django.utils.functional import cached_property
from django.utils.safestring import mark_safe

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


# The nav's unread count when the view already knows it (the inbox counts it anyway): a view
# sets ``request.<NAV_UNREAD>`` and the nav shows that instead of running its own query.
NAV_UNREAD = "_ct_nav_unread"


def tenant(request):
    granted = getattr(request, "permissions", frozenset())
    can = {
        "manage_users": perms.TENANT_MANAGE_USERS in granted,
        "view_patients": perms.PATIENTS_VIEW in granted,
        "manage_api_keys": perms.TENANT_MANAGE_API_KEYS in granted,
        "manage_settings": perms.TENANT_MANAGE_SETTINGS in granted,
        "view_reports": perms.REPORTS_VIEW in granted,
        "view_messages": perms.MESSAGES_VIEW in granted,
        "send_broadcasts": perms.BROADCASTS_SEND in granted,
        "view_analytics": perms.ANALYTICS_VIEW in granted,
        "manage_reminders": perms.REMINDERS_MANAGE in granted,
    }
    unread, urls = _inbox_unread(request, granted), nav_urls()
    return {
        "tenant": getattr(request, "tenant", None),
        "membership": getattr(request, "membership", None),
        "memberships": getattr(request, "memberships", []),
        "can": can,
        "inbox_unread": unread,
        "urls": urls,
        "staff_nav": StaffNav(request, can, unread, urls),
    }


# --- the staff pages' header (base.html) ----------------------------------------------------------
#
# The main navigation, the clinic/user block and the section tabs, built here (every value escaped)
# instead of by some sixty template tags on every staff page. Which link is current follows the
# URL name, as the template did. Change the markup here; _nav_inbox.html (the Inbox link re-sent
# by the polling views) must print the same link as nav_inbox_link (a test compares them).

_CURRENT = ' aria-current="page"'


def _cur(flag: bool) -> str:
    return _CURRENT if flag else ""


def nav_inbox_link(url: str, unread, *, current: bool) -> str:
    count = (f' <span class="nav-count">{escape(str(unread))}</span><span class="visually-hidden"> unread</span>'
             if unread else "")
    return f'<a id="nav-inbox" href="{escape(url)}"{_cur(current)}>Inbox{count}</a>'


class StaffNav:
    """``{{ staff_nav.header }}`` and ``{{ staff_nav.subnav }}`` for base.html, worked out only
    when a page prints them."""

    def __init__(self, request, can: dict, unread, urls: dict):
        self.request, self.can, self.unread, self._urls = request, can, unread, urls

    @cached_property
    def urls(self) -> dict[str, str]:
        return {name: escape(url) for name, url in self._urls.items()}

    @cached_property
    def name(self) -> str:
        match = getattr(self.request, "resolver_match", None)
        return (match.url_name if match is not None else None) or ""

    @cached_property
    def header(self) -> str:
        request, can, urls, n = self.request, self.can, self.urls, self.name
        links = []
        if can["view_messages"]:
            unread = getattr(request, NAV_UNREAD, None)
            links.append(nav_inbox_link(self._urls["messaging_inbox"], self.unread() if unread is None else unread,
                                        current="messaging-" in n))
        if can["view_patients"]:
            links.append(f'<a href="{urls["patients_patient_list"]}"'
                         f'{_cur("patients-patient" in n or "consent-patient" in n)}>Patients</a>')
        if can["view_patients"] or can["view_messages"]:
            href = urls["patients_appointment_list"] if can["view_patients"] else urls["reminders_list"]
            links.append(f'<a href="{href}"{_cur("patients-appointment" in n or "reminders-" in n)}>Appointments</a>')
        if can["send_broadcasts"]:
            links.append(f'<a href="{urls["broadcasts_list"]}"{_cur("broadcasts-" in n)}>Broadcasts</a>')
        if can["view_reports"] or can["view_analytics"]:
            href = urls["audit_report_list"] if can["view_reports"] else urls["analytics_dashboard"]
            links.append(f'<a href="{href}"{_cur("audit-report" in n or "analytics-" in n)}>Reports</a>')
        settings_current = (n in ("accounts-settings", "accounts-users", "accounts-api-keys", "consent-baa",
                                  "accounts-sessions") or "accounts-clinic" in n or "outbound-" in n)
        links.append(f'<a href="{urls["accounts_settings"]}"{_cur(settings_current)}>Settings</a>')
        token = escape(get_token(request))
        csrf = f'<input type="hidden" name="csrfmiddlewaretoken" value="{token}">'
        tenant, membership = getattr(request, "tenant", None), getattr(request, "membership", None)
        memberships = getattr(request, "memberships", [])
        tenant_id = tenant.pk if tenant is not None else None
        if len(memberships) > 1:
            options = "".join(
                f'<option value="{escape(str(m.pk))}"{" selected" if m.tenant_id == tenant_id else ""}>'
                f'{escape(m.tenant.name)}</option>' for m in memberships)
            clinic = (f'<form method="post" action="{urls["accounts_tenant_switch"]}" class="inline switcher">\n'
                      f'      {csrf}\n'
                      '      <label for="switch-clinic">Clinic</label>\n'
                      '      <select id="switch-clinic" name="membership" autocomplete="off">\n'
                      f'        {options}\n'
                      '      </select>\n'
                      '      <button type="submit">Switch<span class="visually-hidden"> clinic</span></button>\n'
                      '    </form>')
        else:
            clinic = f'<span class="clinic">{escape(tenant.name if tenant is not None else "")}</span>'
        role = escape(str(membership.get_role_display())) if membership is not None else ""
        nav = "\n    ".join(links)
        return mark_safe(  # noqa: S308  # nosec B308 B703  # every value escaped above
            '<nav class="mainnav" aria-label="Main">\n'
            f'    {nav}\n'
            '  </nav>\n'
            '  <div class="who">\n'
            f'    {clinic}\n'
            f'    <a href="{urls["accounts_sessions"]}">{escape(request.user.email)}</a> <span class="role">{role}</span>\n'
            f'    <form method="post" action="{urls["accounts_logout"]}" class="inline">{csrf}'
            '<button type="submit" class="link">Sign out</button></form>\n'
            '  </div>')

    @cached_property
    def subnav(self) -> str:
        can, urls, n = self.can, self.urls, self.name
        if "patients-appointment" in n or "reminders-" in n:
            label, links = "Appointments", []
            if can["view_patients"]:
                links.append(f'<a href="{urls["patients_appointment_list"]}"{_cur("patients-appointment" in n)}>Day view</a>')
            if can["view_messages"]:
                links.append(f'<a href="{urls["reminders_list"]}"{_cur(n == "reminders-list")}>Upcoming reminders</a>')
            if can["manage_reminders"]:
                links.append(f'<a href="{urls["reminders_policy"]}"{_cur(n == "reminders-policy")}>Reminder policy</a>')
        elif "audit-report" in n or "analytics-" in n:
            label, links = "Reports", []
            if can["view_reports"]:
                links.append(f'<a href="{urls["audit_report_list"]}"{_cur("audit-report" in n)}>Audit reports</a>')
            if can["view_analytics"]:
                links.append(f'<a href="{urls["analytics_dashboard"]}"{_cur("analytics-" in n)}>Analytics</a>')
        elif n in ("accounts-users", "accounts-api-keys", "consent-baa", "accounts-sessions") or \
                "accounts-clinic" in n or "outbound-" in n:
            label, links = "Settings", [f'<a href="{urls["accounts_settings"]}">All settings</a>']
        else:
            return ""
        items = "".join(f"\n  {link}" for link in links)
        return mark_safe(  # noqa: S308  # nosec B308 B703  # fixed markup and reversed URLs
            f'<nav class="subnav section-tabs" aria-label="{label}">{items}\n</nav>')
