import dataclasses
import secrets
import string

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from accounts.models import Tenant
from consent.keywords import ReplyKind, keyword_reply_text
from integrations.sms import notification as n
from integrations.sms.gateway import require_notification

TO = "+16175550123"
TOKEN = "A" * 21 + "b-_" + "9" * 19  # 43 URL-safe characters


@pytest.fixture(autouse=True)
def _site(settings):
    settings.SITE_URL = "http://127.0.0.1:8000"
    settings.TESTING = True


def link(token=TOKEN):
    return f"http://127.0.0.1:8000/s/{token}"


def test_link_notice_body_exactly():
    sms = n.link_notice(to=TO, sender_label="Test Clinic", link=link())
    assert sms.body == f"Test Clinic: You have a new secure message. {link()} Reply STOP to opt out."
    assert (sms.to, sms.kind) == (TO, "link_notice")


def test_one_time_code_body_exactly():
    sms = n.one_time_code(to=TO, sender_label="Test Clinic", code="123456")
    assert sms.body == "Test Clinic: Your code is 123456. It expires in 10 minutes."
    assert sms.kind == "one_time_code"


@pytest.mark.parametrize("code", ["12345", "1234567", "12345a", 123456, "١٢٣٤٥٦"])
def test_one_time_code_must_be_six_ascii_digits(code):
    with pytest.raises(ValueError, match="6 digits"):
        n.one_time_code(to=TO, sender_label="Test Clinic", code=code)


def test_urgent_notice_body_exactly():
    sms = n.urgent_notice(to=TO, sender_label="Test Clinic")
    assert sms.body == ("Test Clinic: If this is an emergency, call 911. "
                        "For a mental health crisis, call or text 988.")
    assert sms.kind == "urgent_notice"


@pytest.mark.parametrize("language", ["en", "es"])
@pytest.mark.parametrize("kind", list(ReplyKind))
def test_keyword_reply_delegates_to_consent(tenant_a, kind, language):
    sms = n.keyword_reply(to=TO, tenant=tenant_a, kind=kind, language=language)
    assert sms.body == keyword_reply_text(tenant=tenant_a, kind=kind, language=language)
    assert sms.kind == "keyword_reply"


def test_keyword_reply_longest_label_and_contact_fits(tenant_a):
    tenant_a.sms_sender_label = "Abcdefghij Klmnopqrs"
    tenant_a.settings = {"contact_phone": "+1 617 555 0123"}
    for language in ("en", "es"):
        for kind in ReplyKind:
            assert n.gsm7_septets(n.keyword_reply(to=TO, tenant=tenant_a, kind=kind, language=language).body) <= 160


def test_gsm7_counting():
    assert n.gsm7_septets("abc") == 3
    assert n.gsm7_septets("é") == 1  # é and É are in the GSM 03.38 basic table
    assert n.gsm7_septets("€[]") == 6  # extension characters take two septets
    for ch in ("á", "\xa0", "’", "🙂"):
        with pytest.raises(ValueError, match="outside GSM-7"):
            n.gsm7_septets(ch)


def test_single_segment_limit():
    n.check_single_segment("a" * 160)
    with pytest.raises(ValueError, match="161 GSM-7 septets"):
        n.check_single_segment("a" * 161)
    with pytest.raises(ValueError, match="one segment"):
        n.check_single_segment("€" * 81)


@pytest.mark.parametrize("label", ["Clinique é", "Clinic €", "Clinic 2024", "X", "A" * 21, "Clinic\nB", "Clínica"])
def test_sender_label_outside_the_rules_is_rejected(label):
    for build in (
        lambda: n.link_notice(to=TO, sender_label=label, link=link()),
        lambda: n.one_time_code(to=TO, sender_label=label, code="123456"),
        lambda: n.urgent_notice(to=TO, sender_label=label),
    ):
        with pytest.raises(ValueError, match="sender label"):
            build()


def test_keyword_reply_rejects_bad_stored_label(tenant_a):
    tenant_a.sms_sender_label = "Clinique é"
    with pytest.raises(ValueError, match="sender label"):
        n.keyword_reply(to=TO, tenant=tenant_a, kind=ReplyKind.HELP, language="en")


def test_link_notice_too_long_for_one_segment(settings):
    settings.SITE_URL = "https://" + "a" * 60 + ".example"
    long_link = f"{settings.SITE_URL}/s/{TOKEN}"
    with pytest.raises(ValueError, match="one segment"):
        n.link_notice(to=TO, sender_label="Abcdefghij Klmnopqrs", link=long_link)


def test_construction_outside_builders_fails():
    with pytest.raises(TypeError):
        n.NotificationSms(to=TO, body="Jane Doe, DOB 1980-01-01: your HIV test", kind="link_notice")
    with pytest.raises(TypeError, match="built only by"):
        n.NotificationSms(to=TO, body="free text", kind="link_notice", seal="0" * 64)
    sms = n.urgent_notice(to=TO, sender_label="Test Clinic")
    with pytest.raises(TypeError, match="built only by"):
        n.NotificationSms(to=TO, body="free text", kind=sms.kind, seal=sms.seal)
    with pytest.raises(TypeError, match="built only by"):
        dataclasses.replace(sms, body="Jane Doe: results ready")
    with pytest.raises(dataclasses.FrozenInstanceError):
        sms.body = "changed"
    object.__setattr__(sms, "body", "tampered")  # even forced mutation is caught at the gateway
    with pytest.raises(TypeError):
        require_notification(sms)
    with pytest.raises(TypeError):
        require_notification("a string")


@pytest.mark.parametrize("bad", [
    "http://127.0.0.1:8000/s/" + "A" * 42,
    "http://127.0.0.1:8000/s/" + "A" * 44,
    "http://127.0.0.1:8000/s/" + "A" * 42 + "=",
    "http://127.0.0.1:8000/s/" + "A" * 42 + "/",
    "http://127.0.0.1:8000/x/" + TOKEN,
    "http://127.0.0.1:8000/s/" + TOKEN + "?name=Jane",
    "http://127.0.0.1:8000/s/" + TOKEN + "#x",
    "http://evil.example/s/" + TOKEN,
    "http://127.0.0.1:8001/s/" + TOKEN,
    "http://user@127.0.0.1:8000/s/" + TOKEN,
    "ftp://127.0.0.1:8000/s/" + TOKEN,
    "javascript:alert(1)",
])
def test_link_validation_rejects(bad):
    with pytest.raises(ValueError):
        n.validate_link(bad)


def test_link_real_token_accepted():
    token = secrets.token_urlsafe(32)
    assert n.validate_link(link(token)) == link(token)


def test_https_required_in_production(settings):
    settings.DEBUG = settings.DEMO = settings.TESTING = False
    settings.SITE_URL = "https://app.caretext.example"
    assert n.validate_link(f"https://app.caretext.example/s/{TOKEN}")
    settings.SITE_URL = "http://127.0.0.1:8000"
    with pytest.raises(ValueError, match="https"):
        n.validate_link(link())
    settings.DEBUG = True
    assert n.validate_link(link())
    settings.SITE_URL = "http://app.caretext.example"
    with pytest.raises(ValueError, match="https"):
        n.validate_link(f"http://app.caretext.example/s/{TOKEN}")


@pytest.mark.parametrize("to", ["6175550123", "+1 617 555 0123", "+1617555012", "+16175550123 ", "+10005550123", "", None])
def test_recipient_must_be_e164(to):
    with pytest.raises(ValueError):
        n.urgent_notice(to=to, sender_label="Test Clinic")


def test_e164_other_countries():
    assert n.urgent_notice(to="+447911123456", sender_label="Test Clinic").to == "+447911123456"


# --- the PHI property ---------------------------------------------------------------------------

_letters = st.text(alphabet=string.ascii_letters, min_size=3, max_size=20)
_patient = st.fixed_dictionaries({
    "first_name": _letters,
    "last_name": st.text(alphabet=string.ascii_letters + "'- ", min_size=4, max_size=30).filter(lambda s: len(s.strip()) >= 4),
    "dob": st.dates().map(lambda d: d.isoformat()),
    "dob_us": st.dates().map(lambda d: d.strftime("%m/%d/%Y")),
    "mrn": st.from_regex(r"MRN-?[0-9]{6,10}", fullmatch=True),
    "diagnosis": st.sampled_from(["HIV", "hepatitis C", "chlamydia", "depression", "pregnancy",
                                  "diabetes type 2", "opioid use disorder", "breast cancer"]),
    "message": st.text(min_size=5, max_size=200),
})
_labels = st.from_regex(r"[A-Za-z][A-Za-z &'.\-]{1,19}", fullmatch=True)


@hsettings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(patient=_patient, label=_labels, token=st.from_regex(r"[A-Za-z0-9_-]{43}", fullmatch=True),
       code=st.from_regex(r"[0-9]{6}", fullmatch=True))
def test_no_patient_field_ever_reaches_a_body(patient, label, token, code):
    """The builders take no patient data, so a body is only label + link/code + fixed text.

    Built for each random patient, every body equals its template with only the label and
    link/code filled in, and no patient field appears in it unless it is already part of the
    label, token or code the body was built from (e.g. a 3-letter name inside the label).
    """
    built = [
        (n.link_notice(to=TO, sender_label=label, link=link(token)),
         f"{label}: You have a new secure message. {link(token)} Reply STOP to opt out."),
        (n.one_time_code(to=TO, sender_label=label, code=code),
         f"{label}: Your code is {code}. It expires in 10 minutes."),
        (n.urgent_notice(to=TO, sender_label=label),
         f"{label}: If this is an emergency, call 911. For a mental health crisis, call or text 988."),
    ]
    tenant = Tenant(sms_sender_label=label, settings={})
    built += [(n.keyword_reply(to=TO, tenant=tenant, kind=kind, language=language),
               keyword_reply_text(tenant=tenant, kind=kind, language=language))
              for kind in ReplyKind for language in ("en", "es")]
    fixed_text = " ".join(t.replace(label, "").replace(link(token), "").replace(code, "") for _, t in built)
    for sms, expected in built:
        assert sms.body == expected
        for value in patient.values():
            value = value.strip()
            inputs = (label, token, code, fixed_text, link(token))
            if value and not any(value in source for source in inputs):
                assert value not in sms.body
