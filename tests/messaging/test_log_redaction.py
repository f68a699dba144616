"""Secure-link tokens never reach a log line, even one a server writes about a request."""

from __future__ import annotations

import logging

from django.conf import settings

from accounts.requestmeta import RedactLinkTokenFilter

TOKEN = "A" * 20 + "b-_" + "9" * 20  # 43 URL-safe characters


def _record(msg, *args):
    return logging.LogRecord("django.server", logging.INFO, __file__, 1, msg, args, None)


def test_the_filter_redacts_tokens_in_formatted_messages():
    record = _record('"%s %s HTTP/1.1" %s', "GET", f"/s/{TOKEN}", 303)
    assert RedactLinkTokenFilter().filter(record) is True
    assert record.getMessage() == '"GET /s/<token> HTTP/1.1" 303'
    assert TOKEN not in record.getMessage()


def test_other_lines_are_untouched():
    record = _record("GET /s/ and /s/short and /inbox/%s", "x")
    RedactLinkTokenFilter().filter(record)
    assert record.getMessage() == "GET /s/ and /s/short and /inbox/x"


def test_every_configured_handler_uses_it():
    for name, handler in settings.LOGGING["handlers"].items():
        assert "redact_link_tokens" in handler.get("filters", []), name
