"""The OpenAPI document, Swagger UI under the strict CSP, and per-key throttling."""

from __future__ import annotations

import re

import yaml
from django.test import Client

from api.apis.base import ApiView
from tests.api.conftest import ApiClient, make_key

MINE = ("/api/v1/patients", "/api/v1/patients/{patient_id}", "/api/v1/patients/search",
        "/api/v1/patients/{patient_id}/consent", "/api/v1/appointments", "/api/v1/appointments/{appointment_id}",
        "/api/v1/threads", "/api/v1/threads/{thread_id}", "/api/v1/reminders", "/api/v1/patients/{patient_id}/messages")


def _schema() -> dict:
    response = Client().get("/api/schema/")
    assert response.status_code == 200
    return yaml.safe_load(response.content)


def test_schema_is_public_and_documents_every_operation_and_error(db):
    schema = _schema()
    assert schema["openapi"].startswith("3.")
    assert set(MINE) <= set(schema["paths"])
    for path in MINE:
        for method, operation in schema["paths"][path].items():
            codes = set(operation["responses"])
            assert {"401", "403", "429"} <= codes, (path, method)
            assert "{patient_id}" not in path or "404" in codes, (path, method)
            for code in codes - {"200", "201"}:
                ref = operation["responses"][code]["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/Error", (path, method, code)
    assert schema["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer", "description": schema["components"]["securitySchemes"]["apiKey"]["description"]}


def test_swagger_ui_has_no_inline_script_or_style_and_no_cdn(db):
    response = Client().get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "script-src 'self'" in response["Content-Security-Policy"]
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert len(scripts) == 3
    assert all('src="/' in attrs and body.strip() == "" for attrs, body in scripts), scripts
    assert "<style" not in html and "style=" not in html and "http" not in html.replace("http-equiv", "")
    init = re.findall(r'<script src="([^"]+\?[^"]*script[^"]*)"', html)
    assert init, "the init script is served as its own file"
    script = Client().get(init[0].replace("&amp;", "&"))
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")
    assert b"/api/schema/" in script.content


def test_every_api_view_is_throttled():
    assert ApiView.throttle_classes and ApiView.throttle_classes[0].__name__ == "ApiKeyRateThrottle"


def test_each_key_has_its_own_rate_and_the_fourth_request_is_a_429(tenant_a, alice, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api": "3/min"}}
    first, second = (ApiClient(make_key(tenant_a, alice, "patients:read")) for _ in range(2))
    statuses = [first.get("/api/v1/reminders").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = first.get("/api/v1/reminders")
    assert limited.json()["error"]["code"] == "throttled"
    assert int(limited["Retry-After"]) > 0
    assert second.get("/api/v1/reminders").status_code == 200  # another key, another bucket


def test_the_throttle_fails_open_when_the_cache_is_down(monkeypatch):
    """A Redis outage must not turn every API call into a 500 (tests/reliability stops Redis)."""
    from types import SimpleNamespace

    from api.throttling import ApiKeyRateThrottle

    throttle = ApiKeyRateThrottle()

    class DownCache:
        def get(self, *args, **kwargs):
            raise ConnectionError("redis is down")

    monkeypatch.setattr(throttle, "cache", DownCache())
    request = SimpleNamespace(_request=SimpleNamespace(api_key=SimpleNamespace(prefix="ct_1_abcdef")), user=None)
    assert throttle.allow_request(request, view=None) is True
