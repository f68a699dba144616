"""The failure hook of the journeys (conftest.save_failure_screenshots): one full-page PNG per
open page, named after the test, in the folder asked for; a page that cannot be captured does
not stop the others."""

from __future__ import annotations

from types import SimpleNamespace

from tests.e2e.journeys.conftest import _failed, save_failure_screenshots


class _Page:
    def __init__(self, broken=False):
        self.broken, self.calls = broken, []

    def screenshot(self, *, path, full_page, timeout):
        self.calls.append({"full_page": full_page})
        if self.broken:
            raise RuntimeError("target closed")
        with open(path, "wb") as f:
            f.write(b"\x89PNG fake")


def test_every_open_page_is_saved_full_page_under_the_test_name(tmp_path):
    staff, dead, phone = _Page(), _Page(broken=True), _Page()
    browser = SimpleNamespace(contexts=[SimpleNamespace(pages=[staff, dead]), SimpleNamespace(pages=[phone])])
    saved = save_failure_screenshots(browser, "test_journey[case 1]", folder=tmp_path / "shots")
    assert [p.name for p in saved] == ["test_journey_case_1_-1.png", "test_journey_case_1_-3.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in saved)
    assert [c["full_page"] for page in (staff, dead, phone) for c in page.calls] == [True, True, True]


def test_failure_is_read_from_the_setup_and_call_reports():
    def node(**reports):
        return SimpleNamespace(**{f"_journey_{k}": SimpleNamespace(failed=v) for k, v in reports.items()})

    assert _failed(node(setup=False, call=True))
    assert _failed(node(setup=True))
    assert not _failed(node(setup=False, call=False))
    assert not _failed(SimpleNamespace())
