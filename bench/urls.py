"""The product's URLs plus the bench's reference views, under /bench/ (bench processes only).

- ``/bench/ref``: the reference every page figure is divided by: one indexed query (a
  primary-key lookup in django_session) through the same middleware stack, a tiny response.
- ``/bench/ref-verify``: the identity-check reference: the same POST as ``/s/verify`` (cookie →
  patient session by its hash and tenant scope, found as the product finds them → date of birth
  compared as an HMAC in constant time → 303), without the product's bookkeeping (link counters,
  audit event, session touch).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac

from django.conf import settings
from django.db import connection, transaction
from django.http import HttpResponse, HttpResponseRedirect
from django.urls import include, path
from django.utils import timezone

from messaging import routing
from messaging.models import PatientSession


def ref_view(request):
    key = request.GET.get("k", "")[:40]
    with connection.cursor() as cursor:
        cursor.execute("SELECT expire_date FROM django_session WHERE session_key = %s", [key])
        row = cursor.fetchone()
    return HttpResponse("ok" if row else "none", content_type="text/plain")


def _digest(value: str) -> bytes:
    return hmac.new(settings.SECRET_KEY.encode(), value.encode(), hashlib.sha256).digest()


def ref_verify_view(request):
    if request.method != "POST":
        return HttpResponse(status=405)
    # The session found as the product finds it (routing.patient_session: one statement that
    # also enters the clinic's scope), so the figure measures the product's bookkeeping only.
    with routing.patient_session(request.COOKIES.get("ct_patient", "")) as row:
        if row is None:
            return HttpResponse(status=404)
        try:
            given = datetime.date(int(request.POST["year"]), int(request.POST["month"]), int(request.POST["day"]))
        except (KeyError, ValueError):
            return HttpResponse(status=400)
        with transaction.atomic():
            ok = hmac.compare_digest(_digest(f"dob:{given.isoformat()}"),
                                     _digest(f"dob:{row.patient.birth_date.isoformat()}"))
            if ok:
                PatientSession.objects.filter(pk=row.pk).update(dob_verified_at=timezone.now())
    return HttpResponseRedirect("/s/?ok=verified", status=303) if ok else HttpResponse(status=400)


urlpatterns = [
    path("bench/ref", ref_view),
    path("bench/ref-verify", ref_verify_view),
    path("", include("config.urls")),
]
handler400 = "config.errors.bad_request"
handler403 = "config.errors.permission_denied"
handler404 = "config.errors.page_not_found"
handler500 = "config.errors.server_error"
