"""Audit reports (issue 4): filters, the six report definitions, CSV and PDF downloads, the
events viewing and downloading write, and that a clinic only ever sees its own trail.

Clinic A runs on America/New_York (UTC-5 in February). Events are seeded through
``audit_record`` with the clock moved; requests run at NOW, after the seeding.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
import zlib
from datetime import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Tenant
from accounts.tenancy import tenant_scope
from audit.events import AuditEventType as T
from audit.models import AuditEvent
from audit.reports import services as report_services
from audit.reports.columns import allowed_details
from audit.reports.hours import DEFAULT_WORKING_HOURS, working_hours_for
from audit.services import audit_record

NOW = "2026-02-20 17:00:00+00:00"  # Friday, 12:00 in New York
PATIENT = uuid.UUID("01a21200-0000-7000-8000-00000000cafe")
OTHER_PATIENT = uuid.UUID("01a21200-0000-7000-8000-00000000f00d")
FEB = {"start": "2026-02-01", "end": "2026-02-20"}


@pytest.fixture
def record(time_machine):
    """``record(tenant, when, event_type, actor=..., ...)``: one audit event at ``when`` (UTC)."""

    def _record(tenant, when: str, event_type, *, actor=None, patient=None, label="", details=None):
        time_machine.move_to(datetime.fromisoformat(when), tick=False)
        with tenant_scope(tenant):
            return audit_record(tenant=tenant, actor=actor, event_type=event_type, patient_id=patient,
                                actor_label=label, details=details)

    return _record


@pytest.fixture
def at_now(time_machine):
    def _now():
        time_machine.move_to(datetime.fromisoformat(NOW), tick=True)

    return _now


def _csv(response) -> list[dict]:
    assert response.status_code == 200, response.content[:500]
    return list(csv.DictReader(io.StringIO(response.content.decode("utf-8"))))


def _pdf_text(content: bytes) -> str:
    """The text drawn in a PDF's (zlib-compressed) content streams."""
    text = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", content, re.S):
        try:
            raw = zlib.decompress(stream).decode("latin-1")
            text.append(raw.replace("\\(", "(").replace("\\)", ")").replace("\\\\", "\\"))
        except zlib.error:
            continue
    return "\n".join(text)


def _pdf_pages(content: bytes) -> int:
    return len(re.findall(rb"/Type /Page\b(?!s)", content))


def _events(tenant, event_type) -> list[AuditEvent]:
    with tenant_scope(tenant):
        return list(AuditEvent.objects.filter(event_type=event_type).order_by("occurred_at", "id"))


@pytest.fixture
def seeded(record, tenant_a, tenant_b, alice, bob, carol, charlie):
    """A week of clinic A's trail, and clinic B's, which must never show up in A's reports."""
    record(tenant_a, "2026-02-02 15:00:00+00:00", T.PATIENT_VIEWED, actor=bob, patient=PATIENT)
    record(tenant_a, "2026-02-03 15:00:00+00:00", T.PATIENT_CHANGED, actor=carol, patient=PATIENT,
           details={"fields": ["phone"]})
    record(tenant_a, "2026-02-04 15:00:00+00:00", T.PATIENT_VIEWED, actor=carol, patient=OTHER_PATIENT)
    record(tenant_a, "2026-02-05 15:00:00+00:00", T.LOGIN_FAILED, label="mallory@example.test",
           details={"reason": "bad_password"})
    record(tenant_a, "2026-02-05 15:01:00+00:00", T.LOGIN_LOCKED_OUT, label="mallory@example.test")
    record(tenant_a, "2026-02-06 15:00:00+00:00", T.MFA_FAILED, actor=bob)
    record(tenant_a, "2026-02-06 16:00:00+00:00", T.LOGIN_SUCCEEDED, actor=bob)
    record(tenant_a, "2026-02-07 03:00:00+00:00", T.PATIENT_VIEWED, actor=carol, patient=PATIENT)  # Fri 22:00 NY
    record(tenant_b, "2026-02-03 15:00:00+00:00", T.PATIENT_VIEWED, actor=charlie, patient=PATIENT)
    record(tenant_b, "2026-02-05 15:00:00+00:00", T.LOGIN_FAILED, label="intruder-b@example.test")


# --- the access report ------------------------------------------------------------------------------


def test_access_report_lists_the_clinics_events_newest_first(client, login, alice, seeded, at_now):
    at_now()
    login(alice)
    response = client.get("/reports/access/", FEB)
    assert response.status_code == 200
    page = response.content.decode()
    assert "8 events" in page
    rows = re.findall(r"<tr><td>(\w{3} \d{4}-\d\d-\d\d \d\d:\d\d:\d\d)</td>", page)
    assert rows[0] == "Fri 2026-02-06 22:00:00" and rows[-1] == "Mon 2026-02-02 10:00:00"  # clinic time, newest first
    assert "bob@clinic-a.test" in page and "Patient viewed" in page and "mallory@example.test" in page
    assert "fields=[&quot;phone&quot;]" in page
    assert "charlie@clinic-b.test" not in page and "intruder-b" not in page


def test_access_report_chart_data_is_a_json_block_drawn_by_a_static_script(client, login, alice, seeded, at_now):
    at_now()
    login(alice)
    page = client.get("/reports/access/", FEB).content.decode()
    data = re.search(r'<script id="chart-data" type="application/json">(.*?)</script>', page, re.S).group(1)
    import json

    chart = json.loads(data)
    assert chart["labels"][0] == "2026-02-01" and chart["labels"][-1] == "2026-02-20" and len(chart["labels"]) == 20
    per_day = dict(zip(chart["labels"], chart["datasets"][0]["data"], strict=True))
    assert per_day["2026-02-05"] == 2 and per_day["2026-02-06"] == 3 and per_day["2026-02-07"] == 0
    # The CSP allows no inline script or style: every other script is a static file.
    scripts = re.findall(r"<script([^>]*)>", page)
    assert all('src="/static/' in s or 'type="application/json"' in s for s in scripts), scripts
    assert 'src="/static/vendor/chart.js/chart.umd.min.js"' in page and 'src="/static/js/reports.js"' in page
    assert " style=" not in page and "<style" not in page


@pytest.mark.parametrize(("query", "expected"), [
    ({"user": "bob"}, {"Patient viewed", "MFA code rejected", "Login succeeded"}),
    ({"patient": str(PATIENT)}, {"Patient viewed", "Patient changed"}),
    ({"action": str(int(T.PATIENT_VIEWED))}, {"Patient viewed"}),
    ({"start": "2026-02-05", "end": "2026-02-05"}, {"Login failed", "Login locked out"}),
])
def test_access_report_filters(client, login, alice, bob, seeded, at_now, query, expected):
    at_now()
    login(alice)
    if query.get("user") == "bob":
        query = {"user": str(bob.pk)}
    rows = _csv(client.get("/reports/access/csv/", {**FEB, **query}))
    assert {row["Action"] for row in rows} == expected
    if "user" in query:
        assert {row["User"] for row in rows} == {"bob@clinic-a.test"}
    if "patient" in query:
        assert {row["Patient id"] for row in rows} == {str(PATIENT)}
        assert len(rows) == 3


def test_dates_are_days_in_the_clinics_time_zone(client, login, alice, seeded, at_now):
    at_now()
    login(alice)
    # 2026-02-07 03:00 UTC is 22:00 on Friday the 6th in New York.
    friday = _csv(client.get("/reports/access/csv/", {"start": "2026-02-06", "end": "2026-02-06"}))
    saturday = _csv(client.get("/reports/access/csv/", {"start": "2026-02-07", "end": "2026-02-07"}))
    assert "2026-02-06T22:00:00-05:00" in {row["Time"] for row in friday}
    assert [row for row in saturday if row["Action"] == "Patient viewed"] == []


def test_pages_of_fifty_follow_each_other_without_gaps_or_repeats(client, login, alice, record, tenant_a, at_now):
    for i in range(40):  # three events per instant: paging must not lose ties
        for _ in range(3):
            record(tenant_a, f"2026-02-10 {10 + i // 60:02d}:{i % 60:02d}:00+00:00", T.PATIENT_VIEWED, actor=alice,
                   patient=PATIENT)
    at_now()
    login(alice)
    query = {"start": "2026-02-10", "end": "2026-02-10"}
    seen, url, pages = [], "/reports/access/", []
    response = client.get(url, query)
    while True:
        page = response.content.decode()
        pages.append(page)
        seen += re.findall(r"<tr><td>(\w{3} [\d:\- ]+)</td>", page)
        older = re.search(r'href="([^"]+)" rel="next"', page)
        if not older:
            break
        response = client.get(older.group(1).replace("&amp;", "&"))
        assert response.status_code == 200
    assert [len(re.findall(r"<tr><td>", p)) for p in pages] == [50, 50, 20]
    assert len(seen) == 120 and seen == sorted(seen, reverse=True)
    # And back: "Newer" from the last page shows the middle page again.
    newer = re.search(r'href="([^"]+)" rel="prev"', pages[-1]).group(1).replace("&amp;", "&")
    assert client.get(newer).content.decode().count("<tr><td>") == 50
    with tenant_scope(tenant_a):
        views = AuditEvent.objects.filter(event_type=T.AUDIT_REPORT_VIEWED).order_by("occurred_at", "id")
        assert [v.details["row_count"] for v in views] == [50, 50, 20, 50]


def test_the_page_costs_the_same_queries_for_five_rows_or_fifty(client, login, alice, record, tenant_a, at_now):
    def seed_and_count(n):
        for i in range(n):
            record(tenant_a, f"2026-02-11 10:{i % 60:02d}:00+00:00", T.PATIENT_VIEWED, actor=alice)
        at_now()
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/reports/access/", FEB).status_code == 200
        return len(captured)

    at_now()
    login(alice)
    client.get("/reports/access/", FEB)  # the session's first request does its own bookkeeping
    assert seed_and_count(5) == seed_and_count(45)


# --- accounting of disclosures -------------------------------------------------------------------------


def test_disclosures_lists_one_patients_events_oldest_first(client, login, alice, seeded, at_now):
    at_now()
    login(alice)
    rows = _csv(client.get("/reports/disclosures/csv/", {"patient": str(PATIENT)}))
    assert [row["Time"] for row in rows] == ["2026-02-02T10:00:00-05:00", "2026-02-03T10:00:00-05:00",
                                             "2026-02-06T22:00:00-05:00"]
    assert [row["User"] for row in rows] == ["bob@clinic-a.test", "carol@clinic-a.test", "carol@clinic-a.test"]
    page = client.get("/reports/disclosures/", {"patient": str(PATIENT)}).content.decode()
    assert "4 events" in page and "charlie" not in page  # the three, and the CSV download just now
    assert page.rindex("Audit report exported") > page.rindex("Patient viewed")
    assert 'id="chart-data"' not in page  # a list reads better than a chart here


def test_disclosures_needs_a_patient(client, login, alice, seeded, at_now):
    at_now()
    login(alice)
    response = client.get("/reports/disclosures/")
    assert response.status_code == 400
    assert b'id="id_patient-error"' in response.content


# --- failed logins, after hours, break glass, exports ------------------------------------------------------


def test_failed_logins_report_only_rejections_with_a_chart_per_type(client, login, alice, seeded, at_now):
    at_now()
    login(alice)
    rows = _csv(client.get("/reports/failed-logins/csv/", FEB))
    assert sorted(row["Action"] for row in rows) == ["Login failed", "Login locked out", "MFA code rejected"]
    assert {row["User"] for row in rows} == {"mallory@example.test", "bob@clinic-a.test"}
    assert "reason=bad_password" in {row["Details"] for row in rows}
    page = client.get("/reports/failed-logins/", FEB).content.decode()
    assert '"stacked": true' in page and '"label": "Login locked out"' in page
    assert "intruder-b" not in page
    # Its action filter offers only its own types.
    response = client.get("/reports/failed-logins/", {**FEB, "action": str(int(T.LOGIN_SUCCEEDED))})
    assert response.status_code == 400 and b'id="id_action-error"' in response.content


AFTER_HOURS_CASES = [
    ("2026-02-16 15:00:00+00:00", "Mon 10:00", False),
    ("2026-02-16 12:00:00+00:00", "Mon 07:00", False),  # the start is inside
    ("2026-02-16 11:59:00+00:00", "Mon 06:59", True),
    ("2026-02-17 00:00:00+00:00", "Mon 19:00", True),  # the end is outside
    ("2026-02-17 01:00:00+00:00", "Mon 20:00", True),
    ("2026-02-14 15:00:00+00:00", "Sat 10:00", True),
]


@pytest.fixture
def after_hours_events(record, tenant_a, bob):
    for when, _, _ in AFTER_HOURS_CASES:
        record(tenant_a, when, T.PATIENT_VIEWED, actor=bob, patient=PATIENT)
    record(tenant_a, "2026-02-14 16:00:00+00:00", T.API_KEY_REJECTED, label="ct_1_x")  # not a staff user


def _after_hours_times(client) -> set[str]:
    rows = _csv(client.get("/reports/after-hours/csv/", FEB))
    return {datetime.fromisoformat(row["Time"]).strftime("%a %H:%M") for row in rows}


def test_after_hours_uses_the_default_working_hours(client, login, alice, after_hours_events, at_now):
    at_now()
    login(alice)
    assert _after_hours_times(client) == {label for _, label, outside in AFTER_HOURS_CASES if outside}
    page = client.get("/reports/after-hours/", FEB).content.decode()
    assert "Working hours: 07:00-19:00, Mon-Fri." in page
    assert '"labels": ["00:00", "01:00"' in page  # events by hour of the clinic's day


def test_after_hours_follows_the_clinics_setting(client, login, alice, tenant_a, after_hours_events, at_now):
    Tenant.objects.filter(pk=tenant_a.pk).update(
        settings={"working_hours": {"start": "09:00", "end": "17:00", "days": [0, 1, 2, 3, 4, 5]}})
    at_now()
    login(alice)
    assert _after_hours_times(client) == {"Mon 07:00", "Mon 06:59", "Mon 19:00", "Mon 20:00"}
    assert "09:00-17:00, Mon-Sat" in client.get("/reports/after-hours/", FEB).content.decode()


def test_after_hours_overnight_shift_and_a_broken_setting(tenant_a):
    tenant_a.settings = {"working_hours": {"start": "19:00", "end": "07:00", "days": [0]}}
    hours = working_hours_for(tenant_a)
    assert hours.contains(datetime(2026, 2, 16, 23, 0)) and hours.contains(datetime(2026, 2, 16, 6, 0))
    assert not hours.contains(datetime(2026, 2, 16, 12, 0)) and not hours.contains(datetime(2026, 2, 17, 23, 0))
    for broken in ({"start": "7am"}, {"days": [9]}, "07:00-19:00", {"end": 19}):
        tenant_a.settings = {"working_hours": broken}
        hours = working_hours_for(tenant_a)
        assert (hours.start, hours.end, hours.days, hours.source) == (
            DEFAULT_WORKING_HOURS.start, DEFAULT_WORKING_HOURS.end, DEFAULT_WORKING_HOURS.days, "invalid")


def test_after_hours_page_says_when_the_setting_is_broken(client, login, alice, tenant_a, at_now):
    Tenant.objects.filter(pk=tenant_a.pk).update(settings={"working_hours": {"start": "late"}})
    at_now()
    login(alice)
    response = client.get("/reports/after-hours/")
    assert response.status_code == 200 and b"could not be read; the default is used" in response.content


def test_break_glass_report_shows_the_reason(client, login, alice, carol, record, tenant_a, tenant_b, charlie,
                                             at_now):
    record(tenant_a, "2026-02-09 15:00:00+00:00", T.BREAK_GLASS_STARTED, actor=carol, patient=PATIENT,
           details={"reason": "emergency_care", "expires_at": "2026-02-09T16:00:00+00:00"})
    record(tenant_a, "2026-02-09 15:05:00+00:00", T.PATIENT_VIEWED, actor=carol, patient=PATIENT)
    record(tenant_b, "2026-02-09 15:00:00+00:00", T.BREAK_GLASS_STARTED, actor=charlie, patient=PATIENT,
           details={"reason": "covering"})
    at_now()
    login(alice)
    rows = _csv(client.get("/reports/break-glass/csv/", FEB))
    assert rows == [{"Time": "2026-02-09T10:00:00-05:00", "User": "carol@clinic-a.test", "Reason": "Emergency care",
                     "Patient id": str(PATIENT), "IP address": ""}]
    page = client.get("/reports/break-glass/", FEB).content.decode()
    assert "Emergency care" in page and "Covering" not in page


def test_exports_report_lists_downloads_including_its_own(client, login, alice, dave, record, tenant_a, at_now):
    record(tenant_a, "2026-02-09 15:00:00+00:00", T.PATIENT_EXPORTED, actor=alice, patient=PATIENT,
           details={"format": "fhir"})
    at_now()
    login(dave)
    _csv(client.get("/reports/access/csv/", {**FEB, "patient": str(PATIENT)}))
    rows = _csv(client.get("/reports/exports/csv/", FEB))
    assert [(row["User"], row["Action"]) for row in rows] == [
        ("dave@clinic-a.test", "Audit report exported"), ("alice@clinic-a.test", "Patient data exported")]
    assert '"patient":true' in rows[0]["Details"] and str(PATIENT) not in rows[0]["Details"]
    assert "report=access" in rows[0]["Details"] and "format=csv" in rows[0]["Details"]


# --- downloads ---------------------------------------------------------------------------------------------


def test_csv_is_an_attachment_with_a_header_row(client, login, alice, seeded, at_now):
    at_now()
    login(alice)
    response = client.get("/reports/access/csv/", FEB)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="caretext-clinic-a-access-20260201-20260220.csv"'
    lines = response.content.decode().splitlines()
    assert lines[0] == "Time,User,Action,Object,Patient id,IP address,Details"
    assert len(lines) == 1 + 8


def test_csv_cells_cannot_run_as_spreadsheet_formulas(client, login, alice, record, tenant_a, at_now):
    record(tenant_a, "2026-02-09 15:00:00+00:00", T.LOGIN_FAILED, label='=HYPERLINK("http://evil.test")')
    at_now()
    login(alice)
    rows = _csv(client.get("/reports/failed-logins/csv/", FEB))
    assert rows[0]["User"] == "'=HYPERLINK(\"http://evil.test\")"


def test_pdf_names_clinic_report_filters_and_time(client, login, alice, bob, seeded, record, tenant_a, at_now):
    record(tenant_a, "2026-02-09 15:00:00+00:00", T.LOGIN_FAILED, label="zoë-😀@example.test")  # beyond Latin-1
    at_now()
    login(alice)
    response = client.get("/reports/access/pdf/", {**FEB, "user": str(bob.pk)})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'attachment; filename="caretext-clinic-a-access-20260201-20260220.pdf"'
    assert response.content.startswith(b"%PDF") and _pdf_pages(response.content) >= 1
    text = _pdf_text(response.content)
    for expected in ("Access report", "Clinic: Clinic A", "2026-02-01 to 2026-02-20 (America/New_York)",
                     "user bob@clinic-a.test", "Generated 2026-02-20 12:00", "MFA code rejected"):
        assert expected in text, expected
    assert "carol@clinic-a.test" not in text  # filtered to bob
    everyone = _pdf_text(client.get("/reports/failed-logins/pdf/", FEB).content)
    assert "zo\xeb-?@example.test" in everyone


def test_a_long_pdf_runs_over_pages_with_the_heading_on_each(client, login, alice, record, tenant_a, at_now):
    for i in range(120):
        record(tenant_a, f"2026-02-10 10:{i // 60:02d}:{i % 60:02d}+00:00", T.PATIENT_VIEWED, actor=alice,
               patient=PATIENT)
    at_now()
    login(alice)
    content = client.get("/reports/access/pdf/", FEB).content
    pages = _pdf_pages(content)
    assert pages >= 3
    assert _pdf_text(content).count("Clinic: Clinic A") == pages


def test_a_download_too_large_asks_for_a_narrower_range(client, login, alice, seeded, at_now, monkeypatch,
                                                        tenant_a):
    monkeypatch.setitem(report_services.EXPORT_LIMITS, "pdf", 3)
    at_now()
    login(alice)
    response = client.get("/reports/access/pdf/", FEB)
    assert response.status_code == 400 and b"Narrow the date range" in response.content
    assert _events(tenant_a, T.AUDIT_EXPORTED) == []


# --- what viewing and downloading record ----------------------------------------------------------------------


def test_viewing_records_the_report_format_rows_and_filters_without_the_patient(client, login, alice, bob, seeded,
                                                                                at_now, tenant_a):
    at_now()
    login(alice)
    client.get("/reports/access/", {**FEB, "patient": str(PATIENT), "user": str(bob.pk)})
    (event,) = _events(tenant_a, T.AUDIT_REPORT_VIEWED)
    assert event.actor_user == alice and event.tenant_id == tenant_a.pk
    assert event.details == {"report": "access", "format": "html", "row_count": 1, "filters": {
        "start": "2026-02-01", "end": "2026-02-20", "user": bob.pk, "action": None, "patient": True}}
    assert str(PATIENT) not in str(event.details)
    # The patient is on the event itself, so looking at their history is in their own accounting.
    assert event.patient_id == PATIENT
    rows = _csv(client.get("/reports/disclosures/csv/", {"patient": str(PATIENT)}))
    assert [row["Action"] for row in rows][-1] == "Audit report viewed"


@pytest.mark.parametrize("fmt", ["csv", "pdf"])
def test_downloading_records_an_export(client, login, dave, seeded, at_now, tenant_a, fmt):
    at_now()
    login(dave)
    assert client.get(f"/reports/failed-logins/{fmt}/", FEB).status_code == 200
    (event,) = _events(tenant_a, T.AUDIT_EXPORTED)
    assert event.actor_user == dave
    assert event.details == {"report": "failed-logins", "format": fmt, "row_count": 3, "filters": {
        "start": "2026-02-01", "end": "2026-02-20", "user": None, "action": None, "patient": False}}
    assert _events(tenant_a, T.AUDIT_REPORT_VIEWED) == []


def test_rendered_details_are_only_allow_listed_keys():
    assert allowed_details({"reason": "x", "name": "Jane Doe", "dob": "1970-01-01", "count": 2}) == {
        "count": 2, "reason": "x"}
    assert allowed_details("not a dict") == {}


# --- isolation and permissions ------------------------------------------------------------------------------


def test_clinic_b_events_never_appear_in_clinic_a_reports(client, login, alice, charlie, seeded, at_now):
    at_now()
    login(alice)
    for slug, query in (("access", FEB), ("disclosures", {"patient": str(PATIENT)}), ("failed-logins", FEB)):
        html = client.get(f"/reports/{slug}/", query).content.decode()
        rows = _csv(client.get(f"/reports/{slug}/csv/", query))
        pdf = _pdf_text(client.get(f"/reports/{slug}/pdf/", query).content)
        for text in (html, str(rows), pdf):
            assert "charlie@clinic-b.test" not in text and "intruder-b@example.test" not in text, slug
    # Charlie sees his clinic's events, and only those.
    login(charlie)
    rows = _csv(client.get("/reports/access/csv/", FEB))
    assert {row["User"] for row in rows} == {"charlie@clinic-b.test", "intruder-b@example.test"}


def test_a_user_of_another_clinic_is_not_a_filter_choice(client, login, alice, charlie, seeded, at_now):
    at_now()
    login(alice)
    response = client.get("/reports/access/", {**FEB, "user": str(charlie.pk)})
    assert response.status_code == 400 and b'id="id_user-error"' in response.content


@pytest.mark.parametrize(("query", "field"), [
    ({"start": "2026-13-01"}, "start"),
    ({"end": "yesterday"}, "end"),
    ({"start": "2026-02-10", "end": "2026-02-01"}, "end"),
    ({"start": "2024-01-01", "end": "2026-02-01"}, "end"),  # longer than 366 days
    ({"start": "1900-01-01"}, "start"),
    ({"patient": "not-a-uuid"}, "patient"),
    ({"user": "999999"}, "user"),
    ({"user": "bob"}, "user"),
    ({"action": "999"}, "action"),
    ({"after": "garbage"}, "after"),
    ({"after": "1.zz"}, "after"),
])
def test_bad_filters_are_a_400_naming_the_field(client, login, alice, tenant_a, at_now, query, field):
    at_now()
    login(alice)
    for url in ("/reports/access/", "/reports/access/csv/", "/reports/access/pdf/"):
        response = client.get(url, query)
        assert response.status_code == 400, url
        assert f'id="id_{field}-error"'.encode() in response.content, url
    assert _events(tenant_a, T.AUDIT_REPORT_VIEWED) == [] and _events(tenant_a, T.AUDIT_EXPORTED) == []


def test_auditors_read_reports_and_see_the_nav_link(client, login, dave, seeded, at_now):
    at_now()
    login(dave)
    assert b'href="/reports/"' in client.get("/").content
    index = client.get("/reports/")
    assert index.status_code == 200
    for slug in ("access", "disclosures", "failed-logins", "after-hours", "break-glass", "exports"):
        assert f'href="/reports/{slug}/"'.encode() in index.content
    assert client.get("/reports/access/").status_code == 200


@pytest.mark.parametrize("user", ["bob", "carol"])
def test_front_desk_and_clinicians_get_403_and_it_is_audited(client, login, request, tenant_a, at_now, user):
    member = request.getfixturevalue(user)
    at_now()
    login(member)
    assert b'href="/reports/"' not in client.get("/").content
    for url in ("/reports/", "/reports/access/", "/reports/access/csv/", "/reports/disclosures/pdf/"):
        assert client.get(url).status_code == 403
    denials = _events(tenant_a, T.PERMISSION_DENIED)
    assert len(denials) == 4 and {d.details["permission"] for d in denials} == {"reports.view"}
    assert _events(tenant_a, T.AUDIT_EXPORTED) == []


def test_default_range_ends_today_in_the_clinics_zone(client, login, alice, at_now):
    at_now()
    login(alice)
    page = client.get("/reports/access/").content.decode()
    # Thirty days, today included; 2026-02-20 17:00 UTC is still the 20th in New York.
    assert 'name="end" value="2026-02-20"' in page and 'name="start" value="2026-01-22"' in page
