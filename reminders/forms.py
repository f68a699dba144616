from django import forms

from reminders.models import PLACEHOLDERS

PLACEHOLDER_HELP = "Placeholders: " + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)


class ReminderPolicyForm(forms.Form):
    """Field names match reminders.services.reminder_policy_update's error fields; the service
    does the validation (offsets, placeholders) so the API and the page agree."""

    enabled = forms.BooleanField(required=False, label="Send appointment reminders")
    appointment_types = forms.CharField(
        required=False, max_length=3000, label="Appointment types",
        help_text="Comma-separated, e.g. Follow-up, New patient. Leave empty for every type.")
    first_offset_hours = forms.CharField(max_length=4, label="First reminder (hours before)",
                                         help_text="1 to 168 hours; 48 = two days before.")
    second_offset_hours = forms.CharField(required=False, max_length=4, label="Second reminder (hours before)",
                                          help_text="Optional; fewer hours than the first, e.g. 2.")
    follow_up_enabled = forms.BooleanField(
        required=False, label="Send one more notice if the reminder is not opened within 24 hours")
    template_en = forms.CharField(widget=forms.Textarea(attrs={"rows": 6}), max_length=3000, strip=False,
                                  label="Reminder text (English)", help_text=PLACEHOLDER_HELP)
    template_es = forms.CharField(widget=forms.Textarea(attrs={"rows": 6}), max_length=3000, strip=False,
                                  label="Reminder text (Spanish)", help_text=PLACEHOLDER_HELP)


def policy_initial(policy) -> dict:
    return {
        "enabled": policy.enabled,
        "appointment_types": ", ".join(policy.appointment_types),
        "first_offset_hours": str(policy.first_offset_minutes // 60),
        "second_offset_hours": str(policy.second_offset_minutes // 60) if policy.second_offset_minutes else "",
        "follow_up_enabled": policy.follow_up_enabled,
        "template_en": policy.template_en,
        "template_es": policy.template_es,
    }
