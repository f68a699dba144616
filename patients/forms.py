"""Staff forms for patients and appointments. They check types only; the services do the real
validation and their field errors are shown with ``accounts.forms.apply_service_errors``, so
field names here match the services' keyword arguments.

Date-times are read and shown in the current time zone: views wrap form handling in
``timezone.override(<clinic zone>)``.
"""

from __future__ import annotations

from django import forms

from patients.models import AppointmentStatus, Language
from patients.validation import MRN_MAX, NAME_MAX, TEXT_MAX

_DATETIME_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]


def _date_input() -> forms.DateInput:
    return forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")


def _datetime_input() -> forms.DateTimeInput:
    return forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")


class PatientForm(forms.Form):
    """Every field is optional here on purpose: ``patient_create``/``patient_update`` check them
    all at once (required, formats, the phone, duplicates), so one submit shows every error."""

    mrn = forms.CharField(label="MRN", max_length=MRN_MAX, required=False,
                          help_text="The medical record number in your EHR.")
    given_name = forms.CharField(label="First name", max_length=NAME_MAX, required=False)
    family_name = forms.CharField(label="Last name", max_length=NAME_MAX, required=False)
    birth_date = forms.CharField(label="Date of birth", max_length=10, required=False, widget=_date_input(),
                                 help_text="YYYY-MM-DD.")
    phone = forms.CharField(
        label="Mobile phone", max_length=32, required=False,
        widget=forms.TextInput(attrs={"type": "tel", "autocomplete": "off"}),
        help_text="US numbers like (202) 555-0143; other countries with + and the country code. "
                  "Leave blank if the patient has no mobile: they will not be texted.")
    email = forms.CharField(label="Email (optional)", max_length=254, required=False, widget=forms.EmailInput)
    preferred_language = forms.CharField(label="Preferred language", required=False, initial=Language.ENGLISH,
                                         widget=forms.Select(choices=Language.choices))
    timezone = forms.CharField(label="Time zone (optional)", max_length=64, required=False,
                               help_text="A name like America/Chicago; blank means the clinic's.")


class PatientSearchForm(forms.Form):
    mrn = forms.CharField(label="MRN", max_length=MRN_MAX, required=False)
    phone = forms.CharField(label="Mobile phone", max_length=32, required=False,
                            widget=forms.TextInput(attrs={"type": "tel", "autocomplete": "off"}))
    family_name = forms.CharField(label="Last name", max_length=NAME_MAX, required=False)
    birth_date = forms.DateField(label="Date of birth", required=False, widget=_date_input())

    def clean(self):
        data = super().clean()
        if not self.errors and not any(data.get(name) for name in self.fields):
            raise forms.ValidationError("Enter an MRN, a mobile number, or a last name and date of birth.")
        return data


class AppointmentForm(forms.Form):
    """Blank times are left to the service to report, with the other fields' errors."""

    starts_at = forms.DateTimeField(label="Starts", input_formats=_DATETIME_FORMATS, widget=_datetime_input(),
                                    required=False)
    ends_at = forms.DateTimeField(label="Ends", input_formats=_DATETIME_FORMATS, widget=_datetime_input(),
                                  required=False)
    appointment_type = forms.CharField(label="Type", max_length=100, required=False,
                                       help_text="E.g. New patient, Follow-up.")
    provider_name = forms.CharField(label="Provider", max_length=200, required=False)
    location_name = forms.CharField(label="Location", max_length=200, required=False)
    reason = forms.CharField(label="Reason", max_length=TEXT_MAX, required=False,
                             widget=forms.Textarea(attrs={"rows": 2}))
    instructions = forms.CharField(label="Instructions for the patient", max_length=TEXT_MAX, required=False,
                                   widget=forms.Textarea(attrs={"rows": 3}))


class AppointmentStatusForm(forms.Form):
    status = forms.ChoiceField(label="Status", choices=AppointmentStatus.choices)


class DayForm(forms.Form):
    day = forms.DateField(label="Day", required=False, widget=_date_input())
