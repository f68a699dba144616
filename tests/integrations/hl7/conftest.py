"""HL7 fixtures: an API key with hl7:write for clinic A, a poster, and message builders."""

from __future__ import annotations

import pytest

from tests.integrations.hl7.builders import ER7, make_key


@pytest.fixture
def hl7_key(tenant_a, alice) -> str:
    return make_key(tenant_a, alice)


@pytest.fixture
def post(client, hl7_key):
    """``post(body, key=None, content_type=ER7)`` → response."""

    def _post(body: str | bytes, *, key: str | None = None, content_type: str = ER7):
        return client.post("/api/v1/hl7/", data=body, content_type=content_type,
                           HTTP_AUTHORIZATION=f"Bearer {key or hl7_key}")

    return _post
