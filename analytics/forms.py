"""The dashboard's filter form (GET): how many weeks, and optionally one location. A bad value
is a field error and a 400, never an exception further down."""

from __future__ import annotations

from django import forms

from analytics.selectors import DEFAULT_WEEKS, MAX_WEEKS

_WEEKS_ERROR = f"Weeks: choose a whole number from 1 to {MAX_WEEKS}."


class DashboardFilterForm(forms.Form):
    weeks = forms.IntegerField(
        label="Weeks", min_value=1, max_value=MAX_WEEKS, required=False,
        error_messages={"invalid": _WEEKS_ERROR, "min_value": _WEEKS_ERROR, "max_value": _WEEKS_ERROR},
        widget=forms.NumberInput(attrs={"min": 1, "max": MAX_WEEKS}))
    location = forms.ChoiceField(
        label="Location", required=False,
        error_messages={"invalid_choice": "Location: choose one of the clinic's locations."})

    def __init__(self, data, *, locations: list[str]):
        super().__init__(data)
        self.fields["location"].choices = [("", "All locations"), *((name, name) for name in locations)]

    def clean_weeks(self) -> int:
        return self.cleaned_data.get("weeks") or DEFAULT_WEEKS

    def query(self) -> dict[str, str]:
        """The cleaned filters as query-string values (for the CSV link)."""
        query = {"weeks": str(self.cleaned_data["weeks"])}
        if self.cleaned_data.get("location"):
            query["location"] = self.cleaned_data["location"]
        return query
