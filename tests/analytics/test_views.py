"""The dashboard page and its CSV: permissions, filters, content, and a query count that does
not grow with the data."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from patients.models import AppointmentStatus as S
from tests.analytics.conftest import NOW, at

URL = "/analytics/"
CSV_URL = "/analytics/export.csv"


@pytest.fixture
def reminded(builder):
    """One reminded no-show and one completed visit without a reminder, in Room 1, week of 8 March."""
    p1, p2 = builder.patient(), builder.patient()
    first = builder.appointment(p1, at(10, 10))
    second = builder.appointment(p2, at(10, 11))
    builder.remind(first, at(9))
    builder.mark(first, S.NO_SHOW)
    builder.mark(second, S.COMPLETED)
    builder.travel(NOW)
    return builder


def test_owner_sees_charts_and_tables(reminded, client, login, alice):
    login(alice)
    response = client.get(URL, {"weeks": 2})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="analytics-data"' in html and "js/analytics.js" in html
    assert "<script>" not in html and 'style="' not in html  # strict CSP: data only, no inline script
    data = json.loads(re.search(r'<script id="analytics-data" type="application/json">(.*?)</script>', html).group(1))
    assert data["funnel"]["labels"] == ["2027-03-08", "2027-03-15"]
    assert data["funnel"]["datasets"][0] == {"label": "Reminders sent", "data": [1, 0]}
    assert data["no_show"]["datasets"] == [{"label": "Reminded", "data": [100.0, None]},
                                           {"label": "Not reminded", "data": [0.0, None]}]
    assert "100.0%" in html and "Room 1" in html
    # No PHI: patients' names and numbers never reach the page.
    assert "Test" not in re.sub(r"<(script|head).*?</\1>", "", html, flags=re.S).split("<main", 1)[-1]


@pytest.mark.parametrize("user_fixture", ["bob", "carol", "dave"])
def test_only_owners_may_see_it(request, client, login, user_fixture):
    login(request.getfixturevalue(user_fixture))
    assert client.get(URL).status_code == 403
    assert client.get(CSV_URL).status_code == 403


def test_signed_out_visitors_go_to_sign_in(client, tenant_a):
    response = client.get(URL)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_empty_state(client, login, alice, time_machine):
    time_machine.move_to(NOW, tick=False)
    login(alice)
    response = client.get(URL)
    assert response.status_code == 200
    assert b"No reminders, recorded visits or patient replies in these weeks" in response.content
    assert b"analytics-data" not in response.content


@pytest.mark.parametrize(("query", "message"), [
    ({"weeks": "0"}, "Weeks: choose a whole number from 1 to 52."),
    ({"weeks": "53"}, "Weeks: choose a whole number from 1 to 52."),
    ({"weeks": "eight"}, "Weeks: choose a whole number from 1 to 52."),
    ({"location": "Room 404"}, "Location: choose one of the clinic&#x27;s locations."),
])
def test_bad_filters_are_a_400_naming_the_field(client, login, alice, query, message):
    login(alice)
    for url in (URL, CSV_URL):
        response = client.get(url, query)
        assert response.status_code == 400
        assert message in response.content.decode()


def test_csv_has_the_same_figures(reminded, client, login, alice):
    login(alice)
    response = client.get(CSV_URL, {"weeks": 2, "location": "Room 1"})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="no-show-dashboard-2027-03-17.csv"'
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["section", "week_starting", "location", "measure", "value"]
    assert ["reminder_funnel", "2027-03-08", "Room 1", "sent", "1"] in rows
    assert ["reminder_funnel", "all", "Room 1", "sent", "1"] in rows
    assert ["no_show_by_week", "all", "Room 1", "reminded_no_show_rate_percent", "100.0"] in rows
    assert ["no_show_by_week", "all", "Room 1", "not_reminded_no_show_rate_percent", "0.0"] in rows
    assert ["no_show_by_week", "2027-03-15", "Room 1", "reminded_no_show_rate_percent", ""] in rows
    assert ["no_show_by_location", "all", "Room 1", "not_reminded_completed", "1"] in rows
    assert ["staff_response", "all", "all", "median_minutes", ""] in rows
    assert len({len(row) for row in rows}) == 1


def test_csv_neutralises_formula_locations(builder, client, login, alice):
    patient = builder.patient()
    appointment = builder.appointment(patient, at(10, 10), location="=HYPERLINK(1)")
    builder.mark(appointment, S.COMPLETED)
    login(alice)
    response = client.get(CSV_URL, {"weeks": 2})
    assert "'=HYPERLINK(1)" in response.content.decode()
    assert ",=HYPERLINK" not in response.content.decode()


def test_another_clinics_owner_sees_only_their_clinic(reminded, client, login, charlie):
    login(charlie)
    response = client.get(URL, {"weeks": 2})
    assert response.status_code == 200
    assert b"No reminders, recorded visits or patient replies" in response.content
    assert client.get(URL, {"location": "Room 1"}).status_code == 400  # clinic A's room is not a choice


def _queries(client, query) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(URL, query).status_code == 200
    return len(captured)


def test_query_count_does_not_grow_with_the_data(builder, client, login, alice, django_assert_max_num_queries):
    patient = builder.patient()
    appointment = builder.appointment(patient, at(10, 10))
    builder.remind(appointment, at(9))
    builder.mark(appointment, S.NO_SHOW)
    builder.travel(NOW)
    login(alice)
    _queries(client, {"weeks": 2})  # the first request of a session also refreshes the session
    small = _queries(client, {"weeks": 2})
    for n in range(4):
        patient = builder.patient()
        thread = builder.send(patient=patient, when=at(9, 9, n))
        builder.patient_texts(patient, at(9, 10, n))
        builder.send(thread=thread.thread, when=at(9, 11, n))
        appointment = builder.appointment(patient, at(11 + n % 2, 10), location=f"Room {n}")
        builder.remind(appointment, at(9 + n % 2, 12))
        builder.mark(appointment, S.COMPLETED if n % 2 else S.NO_SHOW)
    builder.travel(NOW)
    large = _queries(client, {"weeks": 2})
    assert large == small
    with django_assert_max_num_queries(small):
        assert client.get(CSV_URL, {"weeks": 2}).status_code == 200
