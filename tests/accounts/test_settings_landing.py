"""The Settings section's landing page and the main navigation: one item per section, the
current one marked, and nothing a role may not use."""

import re

import pytest

SETTINGS = ["/settings/clinic/", "/settings/clinic/#sms-title", "/settings/users/", "/settings/api-keys/",
            "/settings/webhooks/", "/inbox/templates/", "/reminders/", "/consent/baa/"]


def _settings_links(content: str) -> list[str]:
    listing = content.split('<ul class="settings-list">', 1)[1].split("</ul>", 1)[0]
    return re.findall(r'<h2><a href="([^"]+)">', listing)


def test_the_owner_sees_every_setting(client, login, alice):
    login(alice)
    content = client.get("/settings/").content.decode()
    assert _settings_links(content) == [*SETTINGS, "/accounts/sessions/"]


def test_front_desk_sees_saved_replies_and_their_sessions_only(client, login, bob):
    login(bob)
    assert _settings_links(client.get("/settings/").content.decode()) == ["/inbox/templates/", "/accounts/sessions/"]


def test_the_auditor_is_told_there_is_nothing_to_change(client, login, dave):
    login(dave)
    content = client.get("/settings/").content.decode()
    assert _settings_links(content) == ["/accounts/sessions/"]
    assert "has no clinic settings to change" in content


def _nav(content: str) -> str:
    return content.split('<nav class="mainnav" aria-label="Main">', 1)[1].split("</nav>", 1)[0]


@pytest.mark.parametrize(("path", "current"), [
    ("/inbox/", "Inbox"), ("/patients/", "Patients"), ("/patients/appointments/", "Appointments"),
    ("/reminders/upcoming/", "Appointments"), ("/broadcasts/", "Broadcasts"), ("/reports/", "Reports"),
    ("/analytics/", "Reports"), ("/settings/", "Settings"), ("/settings/api-keys/", "Settings"),
])
def test_the_current_section_is_marked(client, login, alice, path, current):
    login(alice)
    content = client.get(path).content.decode()
    nav = _nav(content)
    marked = re.findall(r'<a [^>]*aria-current="page"[^>]*>([A-Za-z]+)', nav)
    assert marked == [current], (path, marked)
    assert '<a class="skip-link" href="#main">Skip to content</a>' in content


def test_sections_have_their_tabs(client, login, alice):
    login(alice)
    appointments = client.get("/patients/appointments/").content.decode()
    assert 'aria-label="Appointments"' in appointments and 'href="/reminders/upcoming/"' in appointments
    reports = client.get("/analytics/").content.decode()
    assert re.search(r'<a href="/analytics/" aria-current="page">Analytics</a>', reports)
    assert '<a href="/reports/">Audit reports</a>' in reports


def test_the_nav_hides_what_a_role_may_not_use(client, login, dave, bob):
    login(dave)
    nav = _nav(client.get("/").content.decode())
    assert re.findall(r">([A-Za-z]+)</a>", nav) == ["Reports", "Settings"]
    login(bob)
    nav = _nav(client.get("/").content.decode())
    assert [t for t in re.findall(r">([A-Za-z]+)(?: <span|</a>)", nav)] == ["Inbox", "Patients", "Appointments",
                                                                            "Settings"]
