"""Staff forms for broadcasts. Types and choices only; ``broadcasts.services`` validates (body
length, past days, no recipients) and its field errors land on these fields by name."""

from __future__ import annotations

from django import forms

from broadcasts.models import AudienceKind
from messaging.forms import new_idempotency_key


class BroadcastForm(forms.Form):
    body = forms.CharField(label="Message", required=False, strip=False, max_length=100_000,
                           widget=forms.Textarea(attrs={"rows": 5}),
                           help_text="Shown on the secure page after the patient verifies; the SMS carries only "
                                     "a link. Do not write anything about one patient's health.")
    audience = forms.ChoiceField(label="Who gets it", choices=AudienceKind.choices,
                                 initial=AudienceKind.APPOINTMENTS_ON_DAY, widget=forms.RadioSelect)
    day = forms.DateField(label="Appointments on", required=False, widget=forms.DateInput(attrs={"type": "date"}),
                          help_text="Clinic time. Booked and confirmed appointments only.")
    location = forms.ChoiceField(label="Location", required=False)
    appointment_type = forms.ChoiceField(label="Appointment type", required=False)
    rate_per_minute = forms.IntegerField(label="Texts per minute", required=False,
                                         help_text="1-600. Blank: the clinic's default.")
    idempotency_key = forms.CharField(required=False, widget=forms.HiddenInput, max_length=200)

    def __init__(self, *args, locations: list[str], appointment_types: list[str], default_rate: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["location"].choices = [("", "Any location"), *[(v, v) for v in locations]]
        self.fields["appointment_type"].choices = [("", "Any type"), *[(v, v) for v in appointment_types]]
        self.fields["rate_per_minute"].widget.attrs["placeholder"] = str(default_rate)
        if not self.is_bound:
            self.initial.setdefault("idempotency_key", new_idempotency_key())
