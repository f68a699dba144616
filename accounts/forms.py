from django import forms

from accounts.errors import ApplicationError
from accounts.models import Tenant
from accounts.permissions import ApiScope, Role


def apply_service_errors(form: forms.Form, exc: ApplicationError) -> None:
    """Show a service's field errors on the form (unknown fields and field-less errors on top)."""
    for field, errors in exc.fields.items():
        for error in errors:
            form.add_error(field if field in form.fields else None, error)
    if not exc.fields:
        form.add_error(None, exc.message)


class LoginForm(forms.Form):
    email = forms.EmailField(max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "username", "autofocus": True}))
    password = forms.CharField(max_length=4096, strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}))


class OtpForm(forms.Form):
    code = forms.CharField(
        max_length=16, label="Code",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "text", "autofocus": True}),
    )

    def clean_code(self) -> str:
        return self.cleaned_data["code"].strip().replace(" ", "")


class InviteForm(forms.Form):
    email = forms.EmailField(max_length=254)
    role = forms.ChoiceField(choices=Role.choices)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class AcceptInvitationForm(forms.Form):
    full_name = forms.CharField(max_length=200, required=False)
    password = forms.CharField(max_length=4096, strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))
    password_confirm = forms.CharField(max_length=4096, strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))

    def clean(self):
        data = super().clean()
        if data.get("password") and data.get("password") != data.get("password_confirm"):
            self.add_error("password_confirm", "The passwords don't match.")
        return data


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100)
    scopes = forms.MultipleChoiceField(choices=ApiScope.choices, widget=forms.CheckboxSelectMultiple)


class ClinicSettingsForm(forms.ModelForm):
    class Meta:
        model = Tenant
        fields = ["name", "timezone", "sms_sender_label", "session_idle_minutes", "session_absolute_hours",
                  "link_lifetime_days", "result_release_minutes", "sms_number", "twilio_messaging_service_sid"]
        labels = {"sms_number": "Clinic SMS number", "twilio_messaging_service_sid": "Twilio Messaging Service SID",
                  "link_lifetime_days": "Secure link lifetime (days)",
                  "result_release_minutes": "Hold result notices for (minutes)"}
        help_texts = {
            "link_lifetime_days": "Days a secure link in an SMS keeps working (1-30; blank: 7).",
            "result_release_minutes": "Give the clinician time to call first: a result notice reaches the patient "
                                      "this many minutes after it is written, unless released sooner (0-10080; "
                                      "blank: at once).",
            "sms_number": "The number patients text and receive SMS from, in E.164 (+16175550100). Inbound SMS "
                          "and delivery reports find this clinic by it. Blank: the platform's number.",
            "twilio_messaging_service_sid": "Optional: send through this Messaging Service (MG…) instead of the "
                                            "platform's.",
            "session_idle_minutes": "Sign staff out after this many idle minutes (1-15; blank: 15).",
            "session_absolute_hours": "Sign staff out this many hours after login (1-12; blank: 12).",
        }


class ClinicSmsSettingsForm(forms.Form):
    """The clinic's SMS settings kept in ``Tenant.settings``: what HELP replies give patients,
    the automated-notice cap (may only be lowered) and the default broadcast rate."""

    contact_phone = forms.CharField(label="Phone number in HELP replies", required=False, max_length=40,
                                    help_text="Patients who text HELP get this number. Blank: \"call your clinic\".")
    notice_per_day = forms.IntegerField(label="Automated notices a day", min_value=1, max_value=1,
                                        help_text="At most 1 (FCC healthcare exemption).")
    notice_per_week = forms.IntegerField(label="Automated notices a week", min_value=1, max_value=3,
                                         help_text="At most 3; lower it if your patients want fewer.")
    broadcast_rate_per_minute = forms.IntegerField(label="Broadcast rate (messages a minute)", min_value=1,
                                                   max_value=600, help_text="Default for new broadcasts (1-600).")
    sms_rate_per_second = forms.FloatField(
        label="SMS sender rate (messages a second)", required=False, min_value=0.1, max_value=1000,
        help_text="What your carrier registration allows your own number or Messaging Service (10DLC 12-225, "
                  "toll-free 3). Blank: the platform default. Not used while you send from the platform's number.")

    @classmethod
    def for_tenant(cls, tenant, data=None):
        from broadcasts.services import tenant_rate
        from consent.policy import notice_cap_for
        from messaging.pacing import clinic_rate

        cap = notice_cap_for(tenant)
        initial = {"contact_phone": (tenant.settings or {}).get("contact_phone", ""), "notice_per_day": cap.per_day,
                   "notice_per_week": cap.per_week, "broadcast_rate_per_minute": tenant_rate(tenant),
                   "sms_rate_per_second": clinic_rate(tenant)}
        return cls(data, initial=initial)
