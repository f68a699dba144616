"""Pure checks and normalisers for patient and appointment values (no database, no keys).

Each function returns the cleaned value or raises ``FieldError``; services collect those per
field into one ``ApplicationError``. Messages never repeat the value: it may be PHI, and
error messages end up in logs and API responses (R19).
"""

from __future__ import annotations

import datetime
import functools
import re
import unicodedata
import zoneinfo

import phonenumbers
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from patients.models import AppointmentSource, AppointmentStatus, Language


class FieldError(ValueError):
    """One field's problem, in words fit to show next to the field."""


# Numbers without a "+" are read as US numbers; anything else must be entered as +E.164.
DEFAULT_PHONE_REGION = "US"
# Types that can receive SMS. NANP numbers are FIXED_LINE_OR_MOBILE (the plan doesn't say);
# pure landlines, toll-free, premium-rate, pagers and shared-cost numbers cannot text back.
_SMS_CAPABLE = {phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE}

NAME_MAX = 100
MRN_MAX = 40
EMAIL_MAX = 254
TEXT_MAX = 2000
EXTERNAL_IDS_MAX = 20
EARLIEST_BIRTH_DATE = datetime.date(1900, 1, 1)
MAX_APPOINTMENT_LENGTH = datetime.timedelta(hours=24)
_MRN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._/-]*$")


def _has_control_chars(value: str, *, allow_newlines: bool = False) -> bool:
    allowed = {"\n", "\r", "\t"} if allow_newlines else set()
    return any(unicodedata.category(c) == "Cc" and c not in allowed for c in value)


def _text(value, *, required: bool, max_length: int, what: str = "text") -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise FieldError(f"Enter {what}.")
    value = unicodedata.normalize("NFC", value).strip()
    if required and not value:
        raise FieldError("This field is required.")
    if len(value) > max_length:
        raise FieldError(f"Use at most {max_length} characters.")
    if _has_control_chars(value):
        raise FieldError("Remove the control characters.")
    return value


def person_name(value) -> str:
    value = " ".join(_text(value, required=True, max_length=NAME_MAX, what="a name").split())
    if not any(c.isalpha() for c in value):
        raise FieldError("A name needs at least one letter.")
    return value


def mrn(value) -> str:
    value = _text(value, required=True, max_length=MRN_MAX, what="a medical record number")
    if not _MRN_RE.match(value):
        raise FieldError("Use letters, digits, spaces and . _ / - only, starting with a letter or digit.")
    return value


def phone_e164(value) -> str:
    """A number that can receive SMS, as E.164 (``+12025550143``)."""
    value = _text(value, required=True, max_length=32, what="a phone number")
    try:
        number = phonenumbers.parse(value, DEFAULT_PHONE_REGION)
    except phonenumbers.NumberParseException:
        raise FieldError("Enter a phone number, e.g. (202) 555-0143 or +34 612 345 678.") from None
    if not phonenumbers.is_valid_number(number):
        raise FieldError("This is not a valid phone number. Numbers outside the US need a + and the country code.")
    if phonenumbers.number_type(number) not in _SMS_CAPABLE:
        raise FieldError("This number cannot receive text messages; enter a mobile number.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def phone_optional(value) -> str:
    """``phone_e164``, or "" when left blank: a patient without a mobile number is kept (EHRs
    register everyone) and never texted; consent reports ``no_phone`` for them."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return ""
    return phone_e164(value)


def phone_display(e164: str) -> str:
    """A stored E.164 number as people read it: national format at home, international abroad."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    home = phonenumbers.region_code_for_number(number) == DEFAULT_PHONE_REGION
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL if home
                                      else phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def birth_date(value, *, today: datetime.date) -> datetime.date:
    if value is None or value == "":
        raise FieldError("This field is required.")
    if isinstance(value, str):
        try:
            value = datetime.date.fromisoformat(value.strip())
        except ValueError:
            raise FieldError("Enter a date as YYYY-MM-DD.") from None
    if isinstance(value, datetime.datetime) or not isinstance(value, datetime.date):
        raise FieldError("Enter a date.")
    if value > today:
        raise FieldError("The date of birth cannot be in the future.")
    if value < EARLIEST_BIRTH_DATE:
        raise FieldError("The date of birth cannot be before 1900.")
    return value


@functools.lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def timezone_name(value) -> str:
    """A zoneinfo name, or blank for the clinic's time zone."""
    value = _text(value, required=False, max_length=64, what="a time zone")
    if value and value not in _zones():
        raise FieldError("Unknown time zone; use a name like America/Chicago, or leave it blank for the clinic's.")
    return value


def email(value) -> str | None:
    value = _text(value, required=False, max_length=EMAIL_MAX, what="an email address")
    if not value:
        return None
    try:
        validate_email(value)
    except ValidationError:
        raise FieldError("Enter a valid email address.") from None
    return value


def language(value) -> str:
    if value not in Language.values:
        raise FieldError(f"Choose one of: {', '.join(Language.values)}.")
    return value


def external_ids(value) -> dict[str, str]:
    """``{"<system>": "<id>"}`` as EHRs send them."""
    value = {} if value is None else value
    if not isinstance(value, dict) or len(value) > EXTERNAL_IDS_MAX:
        raise FieldError(f"Give at most {EXTERNAL_IDS_MAX} identifiers as system → id.")
    cleaned = {}
    for system, ident in value.items():
        system = _text(system, required=True, max_length=100, what="an identifier system")
        cleaned[system] = _text(ident, required=True, max_length=200, what="an identifier")
    return cleaned


def short_text(value, *, max_length: int) -> str:
    return _text(value, required=False, max_length=max_length)


def long_text(value) -> str | None:
    """Free text (reasons, instructions): newlines allowed; blank becomes None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise FieldError("Enter text.")
    value = value.strip()
    if len(value) > TEXT_MAX:
        raise FieldError(f"Use at most {TEXT_MAX} characters.")
    if _has_control_chars(value, allow_newlines=True):
        raise FieldError("Remove the control characters.")
    return value or None


def aware_datetime(value) -> datetime.datetime:
    if value is None or value == "":
        raise FieldError("This field is required.")
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value.strip())
        except ValueError:
            raise FieldError("Enter a date and time.") from None
    if not isinstance(value, datetime.datetime):
        raise FieldError("Enter a date and time.")
    if value.tzinfo is None or value.utcoffset() is None:
        raise FieldError("The time needs a time zone.")
    return value


def appointment_times(starts_at, ends_at) -> dict[str, list[str]]:
    """Errors of the pair (both already aware datetimes), by field."""
    if ends_at <= starts_at:
        return {"ends_at": ["The end must be after the start."]}
    if ends_at - starts_at > MAX_APPOINTMENT_LENGTH:
        return {"ends_at": ["An appointment lasts at most 24 hours."]}
    return {}


def appointment_status(value) -> str:
    if value not in AppointmentStatus.values:
        raise FieldError(f"Choose one of: {', '.join(AppointmentStatus.values)}.")
    return value


def appointment_source(value) -> str:
    if value not in AppointmentSource.values:
        raise FieldError(f"Choose one of: {', '.join(AppointmentSource.values)}.")
    return value
