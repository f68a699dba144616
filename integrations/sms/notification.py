"""The only SMS a gateway will carry: a notice with no PHI, built by one function per kind.

DESIGN "PHI never leaves through SMS": a body is the clinic's sender label plus a secure link
or a one-time code or fixed text, and nothing else. No builder takes a name, a date of birth,
a message text or anything else about the patient, so none can reach a body. Every body is
checked to be one GSM-7 segment (160 septets; ``^{}\\[~]|€`` count as two): one character
outside GSM-7 would switch the SMS to UCS-2 (70 characters a segment) and cost twice.

``NotificationSms(...)`` itself refuses to be built outside these functions: each value carries
a seal (HMAC of its fields under a per-process key) that only the builders make, so neither
direct construction nor ``dataclasses.replace(sms, body=...)`` yields a value a gateway takes.
The seal is per process: pass outbox row ids between processes, never the value itself.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError

from accounts.models import sender_label_validator

KINDS = ("link_notice", "one_time_code", "keyword_reply", "urgent_notice")
SEGMENT_SEPTETS = 160
LINK_TOKEN_CHARS = 43  # secrets.token_urlsafe(32): 256 bits
OTP_EXPIRY_MINUTES = 10

# GSM 03.38 default alphabet (the escape code 0x1B excluded) and its extension table.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

_SEAL_KEY = secrets.token_bytes(32)
_TOKEN_RE = re.compile(rf"[A-Za-z0-9_-]{{{LINK_TOKEN_CHARS}}}")
_CODE_RE = re.compile(r"[0-9]{6}")
_LOOPBACK = ("127.0.0.1", "localhost")

_LINK_NOTICE = "{label}: You have a new secure message. {link} Reply STOP to opt out."
_ONE_TIME_CODE = "{label}: Your code is {code}. It expires in {minutes} minutes."
_URGENT_NOTICE = "{label}: If this is an emergency, call 911. For a mental health crisis, call or text 988."


def _seal(to: str, kind: str, body: str) -> str:
    message = "\x00".join((to, kind, body)).encode()
    return hmac.new(_SEAL_KEY, message, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class NotificationSms:
    """An SMS a gateway may send. Build it with ``link_notice``, ``one_time_code``,
    ``keyword_reply`` or ``urgent_notice``; the constructor rejects anything else."""

    to: str
    body: str
    kind: str
    seal: str = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise TypeError unless a builder in this module made exactly this value."""
        expected = _seal(str(self.to), str(self.kind), str(self.body))
        if not isinstance(self.seal, str) or not hmac.compare_digest(self.seal, expected):
            raise TypeError("NotificationSms is built only by integrations.sms.notification functions")


def gsm7_septets(text: str) -> int:
    """Septets ``text`` takes in GSM-7 (extension characters count two); ValueError if any
    character is outside GSM-7."""
    count = 0
    for ch in text:
        if ch in GSM7_BASIC:
            count += 1
        elif ch in GSM7_EXTENSION:
            count += 2
        else:
            raise ValueError(f"SMS text has a character outside GSM-7: {ch!r} (U+{ord(ch):04X})")
    return count


def check_single_segment(body: str) -> None:
    septets = gsm7_septets(body)
    if septets > SEGMENT_SEPTETS:
        raise ValueError(f"SMS body needs {septets} GSM-7 septets; one segment holds {SEGMENT_SEPTETS}")


def validate_sender_label(label: str) -> str:
    """The tenant's sender label rule (accounts.models.sender_label_validator): 2-20 ASCII letters,
    spaces or & ' . -, no digits. Stricter than GSM-7 (which has é, ñ, ü …) on purpose."""
    if not isinstance(label, str):
        raise ValueError("SMS sender label must be a string")
    try:
        sender_label_validator(label)
    except ValidationError as exc:
        raise ValueError(f"SMS sender label {label!r} is not allowed: {exc.messages[0]}") from None
    return label


def validate_e164(to: str) -> str:
    """``to`` unchanged if it is a valid phone number written in E.164 (``+15555550123``)."""
    if not isinstance(to, str) or not re.fullmatch(r"\+[1-9][0-9]{6,14}", to):
        raise ValueError("SMS recipient must be an E.164 number such as +16175550123")
    try:
        number = phonenumbers.parse(to, None)
    except phonenumbers.NumberParseException:
        raise ValueError("SMS recipient must be an E.164 number such as +16175550123") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("SMS recipient is not a valid phone number")
    if phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) != to:
        raise ValueError("SMS recipient must be written in E.164")
    return to


def _dev_mode() -> bool:
    return bool(getattr(settings, "DEBUG", False) or getattr(settings, "DEMO", False)
                or getattr(settings, "TESTING", False))


def validate_link(link: str) -> str:
    """``link`` unchanged if it is exactly ``<SITE_URL>/s/<43-char urlsafe token>``.

    https always in production; plain http only to 127.0.0.1 / localhost and only when
    DEBUG, the demo or tests are on.
    """
    if not isinstance(link, str):
        raise ValueError("Secure link must be a string")
    site = str(settings.SITE_URL).rstrip("/")
    parts = urlsplit(link)
    if parts.scheme == "http":
        if not (_dev_mode() and parts.hostname in _LOOPBACK):
            raise ValueError("Secure link must use https (http only to localhost in DEBUG/demo/tests)")
    elif parts.scheme != "https":
        raise ValueError("Secure link must use https")
    if parts.username or parts.password or parts.query or parts.fragment or "?" in link or "#" in link:
        raise ValueError("Secure link must not carry credentials, a query or a fragment")
    prefix = f"{site}/s/"
    if not link.startswith(prefix):
        raise ValueError("Secure link must start with SITE_URL + '/s/'")
    if not _TOKEN_RE.fullmatch(link[len(prefix):]):
        raise ValueError(f"Secure link token must be {LINK_TOKEN_CHARS} URL-safe base64 characters")
    return link


def _build(*, to: str, kind: str, body: str) -> NotificationSms:
    validate_e164(to)
    check_single_segment(body)
    return NotificationSms(to=to, body=body, kind=kind, seal=_seal(to, kind, body))


def link_notice(*, to: str, sender_label: str, link: str) -> NotificationSms:
    """``<Sender>: You have a new secure message. <link> Reply STOP to opt out.``"""
    body = _LINK_NOTICE.format(label=validate_sender_label(sender_label), link=validate_link(link))
    return _build(to=to, kind="link_notice", body=body)


def one_time_code(*, to: str, sender_label: str, code: str) -> NotificationSms:
    """``<Sender>: Your code is 123456. It expires in 10 minutes.`` (``code``: six digits)."""
    if not isinstance(code, str) or not _CODE_RE.fullmatch(code):
        raise ValueError("One-time code must be a string of 6 digits")
    body = _ONE_TIME_CODE.format(label=validate_sender_label(sender_label), code=code,
                                 minutes=OTP_EXPIRY_MINUTES)
    return _build(to=to, kind="one_time_code", body=body)


def keyword_reply(*, to: str, tenant, kind: str, language: str = "en") -> NotificationSms:
    """The HELP / STOP / START reply of ``consent.keywords.keyword_reply_text``."""
    from consent.keywords import keyword_reply_text

    validate_sender_label(tenant.sms_sender_label)
    body = keyword_reply_text(tenant=tenant, kind=kind, language=language)
    return _build(to=to, kind="keyword_reply", body=body)


def urgent_notice(*, to: str, sender_label: str) -> NotificationSms:
    """The one fixed answer to an inbound SMS with urgent words: where to get help now."""
    body = _URGENT_NOTICE.format(label=validate_sender_label(sender_label))
    return _build(to=to, kind="urgent_notice", body=body)
