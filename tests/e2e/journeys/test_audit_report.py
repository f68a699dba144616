"""Journey 5: the front desk opens a patient's record twice; an auditor signs in, opens the
access report for that patient, sees those views, and downloads the report as CSV and PDF."""

from __future__ import annotations

import csv
import datetime
import io
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.journeys.support import in_thread, sign_in
from tests.factories import PASSWORD, make_patient

pytestmark = pytest.mark.slow


@pytest.fixture
def patient(clinic):
    return make_patient(tenant=clinic["tenant"], actor=clinic["owner"], given_name="Ilse", family_name="Moravec",
                        birth_date=datetime.date(1972, 2, 29), phone="+12025550185")


def _views_of(tenant, patient_id, actor):
    from accounts.tenancy import tenant_scope
    from audit.events import AuditEventType
    from audit.models import AuditEvent

    with tenant_scope(tenant):
        return AuditEvent.objects.filter(event_type=AuditEventType.PATIENT_VIEWED, patient_id=patient_id,
                                         actor_user=actor).count()


def test_auditor_sees_the_patient_access_and_downloads_csv_and_pdf(clinic, patient, browser, tmp_path):
    base, tenant, desk_user = browser.base, clinic["tenant"], clinic["staff"]

    desk = browser.staff()
    sign_in(desk, base, desk_user.email, clinic["staff_app"], PASSWORD)
    for _ in range(2):
        desk.goto(f"{base}/patients/{patient.pk}/")
        expect(desk.get_by_role("heading", name="Ilse Moravec", level=1)).to_be_visible()
    views = in_thread(_views_of, tenant, patient.pk, desk_user)
    assert views == 2

    auditor = browser.staff()
    sign_in(auditor, base, clinic["auditor"].email, clinic["auditor_app"], PASSWORD)
    nav = auditor.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Patients")).to_have_count(0)  # auditors never see records
    nav.get_by_role("link", name="Reports").click()
    auditor.get_by_role("link", name="Access report").first.click()
    auditor.get_by_label("Patient id").fill(str(patient.pk))
    auditor.get_by_label("Action").select_option(label="Patient viewed")
    auditor.get_by_role("button", name="Show").click()

    expect(auditor.get_by_role("heading", name=f"{views} events", level=2)).to_be_visible()
    rows = auditor.locator("table tbody tr")
    expect(rows).to_have_count(views)
    for i in range(views):
        cells = rows.nth(i).locator("td").all_inner_texts()
        assert desk_user.email in cells and "Patient viewed" in cells and str(patient.pk) in cells
    assert "Ilse" not in auditor.content() and "Moravec" not in auditor.content()  # ids, not names

    with auditor.expect_download() as download:
        auditor.get_by_role("link", name="Download CSV").click()
    assert download.value.suggested_filename.endswith(".csv")
    table = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
    mine = [r for r in table if r["Patient id"] == str(patient.pk)]
    assert len(mine) == views == len(table)
    assert {(r["User"], r["Action"]) for r in mine} == {(desk_user.email, "Patient viewed")}

    with auditor.expect_download() as download:
        auditor.get_by_role("link", name="Download PDF").click()
    assert download.value.suggested_filename.endswith(".pdf")
    pdf = Path(download.value.path()).read_bytes()
    assert pdf.startswith(b"%PDF") and len(pdf) > 1000
