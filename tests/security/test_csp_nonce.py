"""The Content-Security-Policy's script nonce: new for every request, and on every script tag
of every staff page, so no script runs that our templates did not put there."""

import re
import uuid

import pytest

from accounts.tenancy import tenant_scope
from messaging.inbound import inbound_sms_receive
from messaging.models import Thread
from tests.factories import make_textable_patient

SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.S)


def _nonce(response) -> str:
    csp = response["Content-Security-Policy"]
    match = re.search(r"script-src 'self' 'nonce-([A-Za-z0-9_-]{20,})'", csp)
    assert match, csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "strict-dynamic" not in csp
    assert "style-src 'self';" in csp
    return match.group(1)


@pytest.fixture
def thread(tenant_a, alice):
    patient = make_textable_patient(tenant=tenant_a, owner=alice, phone="+12025550155")
    with tenant_scope(tenant_a):
        inbound = inbound_sms_receive(tenant=tenant_a, provider_id=f"SM{uuid.uuid4().hex}",
                                      from_number=patient.phone, body="Hello")
        return Thread.objects.get(pk=inbound.message.thread_id)


STAFF_PAGES = ["/", "/inbox/", "/inbox/t/{thread}/", "/inbox/templates/", "/inbox/unknown/", "/patients/",
               "/patients/appointments/", "/broadcasts/", "/reminders/upcoming/", "/reminders/", "/settings/webhooks/", "/analytics/", "/reports/",
               "/reports/access/", "/settings/", "/settings/users/", "/settings/api-keys/", "/settings/clinic/",
               "/accounts/sessions/"]


@pytest.mark.parametrize("path", STAFF_PAGES)
def test_every_script_on_a_staff_page_carries_the_requests_nonce(client, login, alice, thread, path):
    login(alice)
    response = client.get(path.format(thread=thread.pk))
    assert response.status_code == 200, path
    nonce = _nonce(response)
    content = response.content.decode()
    scripts = SCRIPT.findall(content)
    assert scripts, "staff pages load htmx and staff.js"
    for attrs, inline in scripts:
        if 'type="application/json"' in attrs:  # json_script data: never executed, no src
            assert "src=" not in attrs
            continue
        assert f'nonce="{nonce}"' in attrs, (path, attrs)
        assert 'src="/static/' in attrs and inline.strip() == "", (path, attrs)  # no inline script
    assert not re.search(r"\son[a-z]+=", content), path  # no inline event handlers
    assert " style=" not in content, path
    assert "{#" not in content and "{%" not in content, path  # no template syntax leaking into the page


def test_the_nonce_differs_per_request(client, login, alice):
    login(alice)
    nonces = {_nonce(client.get("/inbox/")) for _ in range(3)}
    assert len(nonces) == 3


def test_a_page_without_scripts_keeps_the_plain_policy(client):
    from accounts.middleware import SecurityHeadersMiddleware

    response = client.get("/accounts/login/")
    assert "<script" not in response.content.decode()
    assert response["Content-Security-Policy"] == SecurityHeadersMiddleware.CSP  # no unused nonce advertised
    assert "script-src 'self';" in SecurityHeadersMiddleware.CSP


def test_htmx_is_configured_without_eval_inline_styles_or_history(client, login, alice):
    login(alice)
    content = client.get("/inbox/").content.decode()
    match = re.search(r"<meta name=\"htmx-config\" content='([^']+)'>", content)
    assert match
    import json

    config = json.loads(match.group(1))
    assert config["allowEval"] is False and config["includeIndicatorStyles"] is False
    assert config["allowScriptTags"] is False and config["historyCacheSize"] == 0
    assert '<script src="/static/vendor/htmx/htmx.min.js"' in content
