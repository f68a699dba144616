"""Per-request metadata (request id, client IP, user agent) for audit events and log lines.

Kept free of model imports: the logging config loads it before apps are ready.
"""

import logging
import re
from contextvars import ContextVar

_request_meta: ContextVar[dict | None] = ContextVar("caretext_request_meta", default=None)


def current_request_meta() -> dict:
    return _request_meta.get() or {}


def set_request_meta(meta: dict):
    return _request_meta.set(meta)


def reset_request_meta(token) -> None:
    _request_meta.reset(token)


class RequestIdLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_meta().get("request_id", "-")
        return True


_LINK_TOKEN = re.compile(r"/s/[A-Za-z0-9_-]{43}")


class RedactLinkTokenFilter(logging.Filter):
    """Replace secure-link tokens (``/s/<43 characters>``) in a log line with ``/s/<token>``.

    Belt and braces: our code never logs a token, but servers log request lines (runserver's
    "GET /s/… 303", gunicorn's access log) and a link's token is a credential until it expires.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/s/" in message:
            redacted = _LINK_TOKEN.sub("/s/<token>", message)
            if redacted != message:
                record.msg, record.args = redacted, None
        return True
