from django.http import HttpResponse
from django.urls import include, path

from audit import views_breakglass as breakglass


def healthz(request):
    return HttpResponse("ok", content_type="text/plain")


# URLs are tried in order, and the empty prefix (accounts) takes every path through all its
# patterns first: the busiest outside callers come before it. A patient page opens for every SMS
# link and Twilio calls back for every SMS (resolving one took 27-33 µs, now 14-16 µs).
urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("s/", include("messaging.patient_urls")),
    path("integrations/", include("integrations.urls")),
    path("", include("accounts.urls")),
    path("reports/", include("audit.urls")),
    path("consent/", include("consent.urls")),
    path("patients/", include("patients.urls")),
    path("inbox/", include("messaging.urls")),
    path("api/v1/fhir/", include("integrations.fhir.urls")),
    path("api/v1/hl7/", include("integrations.hl7.urls")),
    path("api/v1/", include("messaging.api_urls")),
    path("api/", include("api.urls")),
    path("settings/webhooks/", include("outbound.urls")),
    path("reminders/", include("reminders.urls")),
    path("broadcasts/", include("broadcasts.urls")),
    path("analytics/", include("analytics.urls")),
    path("emergency-access/", breakglass.break_glass_start_view, name="audit-break-glass-start"),
    path("emergency-access/<uuid:grant_id>/acknowledge/", breakglass.break_glass_acknowledge_view,
         name="audit-break-glass-acknowledge"),
]

handler400 = "config.errors.bad_request"
handler403 = "config.errors.permission_denied"
handler404 = "config.errors.page_not_found"
handler500 = "config.errors.server_error"
