"""The patient's secure page, mounted at /s/ by config/urls.py (see messaging/views_patient.py).

These URLs are public by design: the credential is the link token and then the ``ct_patient``
session cookie, never a Django login.
"""

from django.urls import path, register_converter

from messaging import views_patient as views


class LinkTokenConverter:
    """Any single path segment: the view (``routing`` checks TOKEN_RE, 43 URL-safe base64
    characters) answers every unusable token, whatever its shape, with the same neutral page."""

    regex = "[^/]{1,256}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(LinkTokenConverter, "link_token")

urlpatterns = [
    path("", views.patient_home_view, name="patient-home"),
    path("verify", views.patient_verify_view, name="patient-verify"),
    path("code/send", views.patient_code_send_view, name="patient-code-send"),
    path("code", views.patient_code_view, name="patient-code"),
    path("reply", views.patient_reply_view, name="patient-reply"),
    path("appointment", views.patient_appointment_view, name="patient-appointment"),
    path("language", views.patient_language_view, name="patient-language"),
    path("signout", views.patient_signout_view, name="patient-signout"),
    path("<link_token:token>", views.patient_link_view, name="patient-link"),
]
