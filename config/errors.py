"""Error pages: a request id and a plain sentence, never a traceback or a submitted value."""

import logging

from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from django.shortcuts import render

from accounts.requestmeta import current_request_meta


def _page(request, status: int, template: str, code: str, message: str):
    if request.path.startswith("/api/"):
        return JsonResponse({"error": {"code": code, "message": message, "fields": {},
                                       "request_id": current_request_meta().get("request_id", "")}}, status=status)
    return render(request, template, {"request_id": current_request_meta().get("request_id", "")}, status=status)


def bad_request(request, exception=None):
    return _page(request, 400, "errors/400.html", "bad_request", "Bad request.")


def permission_denied(request, exception=None):
    return _page(request, 403, "errors/403.html", "permission_denied", "You do not have permission to do this.")


def page_not_found(request, exception=None):
    return _page(request, 404, "errors/404.html", "not_found", "Not found.")


def server_error(request):
    return _page(request, 500, "errors/500.html", "server_error", "Something went wrong on our side.")


def service_unavailable(request):
    response = _page(request, 503, "errors/503.html", "unavailable",
                     "The service is temporarily unavailable; please retry.")
    response["Retry-After"] = "5"
    return response


class DatabaseUnavailableMiddleware:
    """A request whose database connection failed (failover, restart, a killed backend) is a 503
    the client may retry: the transaction died with the connection, so nothing of it was written.
    The log line names the exception type only (its message may quote SQL parameters)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        logging.getLogger("caretext.db").warning("database unavailable: %s", type(exception).__name__)
        return service_unavailable(request)
