"""Fail closed, quietly: a PHI value that cannot be decrypted is a 503 with a request id.

The log line names the table, column, row id and key version (from the exception message),
never a value; the page says nothing beyond "unavailable".
"""

import logging

from django.http import JsonResponse
from django.shortcuts import render

from accounts.requestmeta import current_request_meta
from phi.errors import PhiError

logger = logging.getLogger("caretext.phi")


class PhiFailClosedMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, PhiError):
            return None
        logger.error("PHI unavailable: %s: %s", type(exception).__name__, exception)
        request_id = current_request_meta().get("request_id", "")
        if request.path.startswith("/api/"):
            return JsonResponse({"error": {"code": "phi_unavailable", "message": "Records are temporarily unavailable.",
                                           "fields": {}, "request_id": request_id}}, status=503)
        return render(request, "errors/503.html", {"request_id": request_id}, status=503)
