"""The audit reports' filter form (GET). Everything a report reads from the query string is
validated here into a ReportFilters and an optional page Cursor; a bad value is a field error
(and a 400), never an exception further down."""

from __future__ import annotations

from datetime import date, timedelta

from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator

from audit.reports.definitions import ACTION, END, PATIENT, START, USER, Report
from audit.reports.filters import Cursor, ReportFilters

# Far enough apart for any real audit trail; near enough that date arithmetic can't overflow.
_DATE_RANGE = [MinValueValidator(date(2000, 1, 1)), MaxValueValidator(date(2099, 12, 31))]
_PAGING = ("after", "before")


def _date_field(label: str) -> forms.DateField:
    return forms.DateField(label=label, required=False, input_formats=["%Y-%m-%d"], validators=_DATE_RANGE,
                           widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"))


class ReportFilterForm(forms.Form):
    start = _date_field("From")
    end = _date_field("To")
    user = forms.TypedChoiceField(label="User", required=False, coerce=int, empty_value=None)
    patient = forms.UUIDField(label="Patient id", required=False)
    action = forms.TypedChoiceField(label="Action", required=False, coerce=int, empty_value=None)
    # Keyset paging (audit.reports.filters.Cursor): set by the page links, never typed in.
    after = forms.CharField(required=False, max_length=60, widget=forms.HiddenInput)
    before = forms.CharField(required=False, max_length=60, widget=forms.HiddenInput)

    def __init__(self, data, *, report: Report, users: list[tuple[int, str]], today: date):
        """``users``: (user id, email) of the clinic's members; ``today``: in the clinic's zone."""
        data = data.copy()
        if not data.get(END):
            data[END] = today.isoformat()
        if not data.get(START):
            data[START] = _default_start(data[END], today, report.default_days).isoformat()
        super().__init__(data)
        self.report = report
        for name in (START, END, USER, PATIENT, ACTION):
            if name not in report.filters:
                del self.fields[name]
        if USER in self.fields:
            self.fields[USER].choices = [("", "Anyone"), *users]
        if ACTION in self.fields:
            self.fields[ACTION].choices = [("", "Any action"), *report.action_choices]
        if PATIENT in self.fields:
            self.fields[PATIENT].required = report.requires_patient
        self._emails = dict(users)

    def clean(self):
        data = super().clean()
        start, end = data.get(START), data.get(END)
        if start and end:
            if end < start:
                self.add_error(END, "The end date is before the start date.")
            elif (end - start).days + 1 > self.report.max_days:
                self.add_error(END, f"Choose a range of at most {self.report.max_days} days.")
        if data.get("after") and data.get("before"):
            self.add_error("before", "Use either 'after' or 'before', not both.")
        for name in _PAGING:
            if data.get(name):
                try:
                    data[name] = Cursor.decode(data[name], forward=(name == "after"))
                except ValueError:
                    self.add_error(name, "This page link is not valid; start from the first page.")
        return data

    def filters(self) -> ReportFilters:
        data = self.cleaned_data
        return ReportFilters(start=data[START], end=data[END], user_id=data.get(USER),
                             patient_id=data.get(PATIENT), event_type=data.get(ACTION))

    def cursor(self) -> Cursor | None:
        return self.cleaned_data.get("after") or self.cleaned_data.get("before") or None

    @property
    def user_email(self) -> str | None:
        return self._emails.get(self.cleaned_data.get(USER))

    def filter_query(self) -> dict[str, str]:
        """The filters as submitted (with defaults filled in), for download and page links."""
        return {name: self.data[name] for name in self.fields if name not in _PAGING and self.data.get(name)}


def _default_start(end: str, today: date, days: int) -> date:
    try:
        anchor = date.fromisoformat(end)
    except ValueError:
        anchor = today  # the end date is bad; its own field error says so
    try:
        return anchor - timedelta(days=days - 1)
    except OverflowError:
        return anchor
