"""The staff header (accounts.context_processors.StaffNav) is built in Python for speed (issue #12
item 8): it must print what base.html's template tags printed, for every role, page and
clinic count, with every value escaped."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from django.template import Context, Template
from django.test import RequestFactory

from accounts import services
from accounts.context_processors import StaffNav, nav_inbox_link, nav_urls
from accounts.context_processors import tenant as tenant_context
from accounts.permissions import Role, permissions_for_role
from accounts.selectors import membership_list_for_user
from accounts.tenancy import tenant_scope, user_scope
from tests.factories import make_tenant

# base.html's header and section tabs as they were written in the template (the reference).
_TEMPLATE = """{% with n=request.resolver_match.url_name|default:"" %}
  <nav class="mainnav" aria-label="Main">
    {% if can.view_messages %}{% if "messaging-" in n %}{% include "messaging/staff/_nav_inbox.html" with unread=inbox_unread current=True %}{% else %}{% include "messaging/staff/_nav_inbox.html" with unread=inbox_unread %}{% endif %}{% endif %}
    {% if can.view_patients %}<a href="{{ urls.patients_patient_list }}"{% if "patients-patient" in n or "consent-patient" in n %} aria-current="page"{% endif %}>Patients</a>{% endif %}
    {% if can.view_patients or can.view_messages %}<a href="{% if can.view_patients %}{{ urls.patients_appointment_list }}{% else %}{{ urls.reminders_list }}{% endif %}"{% if "patients-appointment" in n or "reminders-" in n %} aria-current="page"{% endif %}>Appointments</a>{% endif %}
    {% if can.send_broadcasts %}<a href="{{ urls.broadcasts_list }}"{% if "broadcasts-" in n %} aria-current="page"{% endif %}>Broadcasts</a>{% endif %}
    {% if can.view_reports or can.view_analytics %}<a href="{% if can.view_reports %}{{ urls.audit_report_list }}{% else %}{{ urls.analytics_dashboard }}{% endif %}"{% if "audit-report" in n or "analytics-" in n %} aria-current="page"{% endif %}>Reports</a>{% endif %}
    <a href="{{ urls.accounts_settings }}"{% if n == "accounts-settings" or n == "accounts-users" or n == "accounts-api-keys" or "accounts-clinic" in n or "outbound-" in n or n == "consent-baa" or n == "accounts-sessions" %} aria-current="page"{% endif %}>Settings</a>
  </nav>
  <div class="who">
    {% if memberships|length > 1 %}
    <form method="post" action="{{ urls.accounts_tenant_switch }}" class="inline switcher">
      {% csrf_token %}
      <label for="switch-clinic">Clinic</label>
      <select id="switch-clinic" name="membership" autocomplete="off">
        {% for m in memberships %}<option value="{{ m.pk }}"{% if m.tenant_id == tenant.pk %} selected{% endif %}>{{ m.tenant.name }}</option>{% endfor %}
      </select>
      <button type="submit">Switch<span class="visually-hidden"> clinic</span></button>
    </form>
    {% else %}<span class="clinic">{{ tenant.name }}</span>{% endif %}
    <a href="{{ urls.accounts_sessions }}">{{ user.email }}</a> <span class="role">{{ membership.get_role_display }}</span>
    <form method="post" action="{{ urls.accounts_logout }}" class="inline">{% csrf_token %}<button type="submit" class="link">Sign out</button></form>
  </div>
|SUBNAV|
{% if "patients-appointment" in n or "reminders-" in n %}
<nav class="subnav section-tabs" aria-label="Appointments">
  {% if can.view_patients %}<a href="{{ urls.patients_appointment_list }}"{% if "patients-appointment" in n %} aria-current="page"{% endif %}>Day view</a>{% endif %}
  {% if can.view_messages %}<a href="{{ urls.reminders_list }}"{% if n == "reminders-list" %} aria-current="page"{% endif %}>Upcoming reminders</a>{% endif %}
  {% if can.manage_reminders %}<a href="{{ urls.reminders_policy }}"{% if n == "reminders-policy" %} aria-current="page"{% endif %}>Reminder policy</a>{% endif %}
</nav>
{% elif "audit-report" in n or "analytics-" in n %}
<nav class="subnav section-tabs" aria-label="Reports">
  {% if can.view_reports %}<a href="{{ urls.audit_report_list }}"{% if "audit-report" in n %} aria-current="page"{% endif %}>Audit reports</a>{% endif %}
  {% if can.view_analytics %}<a href="{{ urls.analytics_dashboard }}"{% if "analytics-" in n %} aria-current="page"{% endif %}>Analytics</a>{% endif %}
</nav>
{% elif n == "accounts-users" or n == "accounts-api-keys" or "accounts-clinic" in n or "outbound-" in n or n == "consent-baa" or n == "accounts-sessions" %}
<nav class="subnav section-tabs" aria-label="Settings">
  <a href="{{ urls.accounts_settings }}">All settings</a>
</nav>
{% endif %}
{% endwith %}"""

_URL_NAMES = ["messaging-inbox", "messaging-thread", "patients-patient-list", "consent-patient-history",
              "patients-appointment-list", "reminders-list", "reminders-policy", "broadcasts-list",
              "audit-report-list", "analytics-dashboard", "accounts-settings", "accounts-users", "accounts-api-keys",
              "accounts-clinic-settings", "outbound-list", "consent-baa", "accounts-sessions", "dashboard", None]


def _normal(html: str) -> str:
    html = re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', 'name="csrfmiddlewaretoken" value="-"', html)
    return re.sub(r">\s+<", "><", re.sub(r"\s+", " ", html)).strip()


def _request(user, tenant, memberships, role, url_name, unread):
    request = RequestFactory().get("/")
    request.user, request.tenant, request.memberships = user, tenant, memberships
    request.membership = next((m for m in memberships if m.tenant_id == tenant.pk), None)
    request.permissions = permissions_for_role(role)
    request.resolver_match = SimpleNamespace(url_name=url_name) if url_name is not None else None
    request.META["CSRF_COOKIE"] = "a" * 32
    context = tenant_context(request)
    context["inbox_unread"] = lambda: unread
    context["staff_nav"].unread = context["inbox_unread"]
    return request, context


@pytest.fixture
def two_clinics(alice, tenant_a):
    other = make_tenant(name='Clinic "B" & <Co>', slug="clinic-b-amp")
    with tenant_scope(other):
        services.membership_create(tenant=other, actor=None, user=alice, role=Role.STAFF)
    with user_scope(alice.pk):
        memberships = membership_list_for_user(user=alice)
    assert len(memberships) == 2
    return memberships


@pytest.mark.parametrize("role", list(Role.values))
@pytest.mark.parametrize("url_name", _URL_NAMES)
def test_the_header_prints_what_the_template_printed(alice, tenant_a, two_clinics, role, url_name):
    reference = Template("{% load static %}" + _TEMPLATE)
    for memberships in (two_clinics, [m for m in two_clinics if m.tenant_id == tenant_a.pk]):
        for unread in (0, 7, None):
            request, context = _request(alice, tenant_a, memberships, role, url_name, unread)
            expected = reference.render(Context({**context, "request": request, "user": alice,
                                                 "csrf_token": "x"}))
            header, subnav = expected.split("|SUBNAV|")
            nav: StaffNav = context["staff_nav"]
            assert _normal(nav.header) == _normal(header), (role, url_name)
            assert _normal(nav.subnav) == _normal(subnav), (role, url_name)


def test_the_header_escapes_what_it_prints(alice, tenant_a, two_clinics):
    request, context = _request(alice, tenant_a, two_clinics, Role.OWNER, "messaging-inbox", 3)
    header = context["staff_nav"].header
    name = next(m.tenant.name for m in two_clinics if m.tenant_id != tenant_a.pk)
    assert "<Co>" in name and "&lt;Co&gt;" in header and "<Co>" not in header, (name, header)


@pytest.mark.parametrize("unread", [0, 1, 12, None])
@pytest.mark.parametrize("current", [True, False])
def test_the_inbox_link_is_the_one_the_polling_views_resend(unread, current, db):
    urls = nav_urls()
    expected = Template('{% include "messaging/staff/_nav_inbox.html" %}').render(
        Context({"urls": urls, "unread": unread, "current": current}))
    assert _normal(nav_inbox_link(urls["messaging_inbox"], unread, current=current)) == _normal(expected)


def test_the_inbox_page_shows_its_own_unread_count_without_the_nav_query(client, login, alice, tenant_a):
    login(alice)
    content = client.get("/inbox/").content.decode()
    assert '<a id="nav-inbox" href="/inbox/" aria-current="page">Inbox</a>' in content
