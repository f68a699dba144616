"""Per-request metadata (request id, client IP, user agent) for audit events and log lines.

Kept free of model imports: the logging config loads it before apps are ready.
"""

import logging
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
