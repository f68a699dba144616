"""The versioned texts consent rests on: the SMS consent disclosure and the platform's BAA.

A version names one exact text forever: to change a text, add a new version (and a new
template for the BAA) and point ``CURRENT_*`` at it; never edit a published one, because
ledger rows and signed agreements refer to it by version (and the BAA by its SHA-256).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.template.loader import render_to_string

# What staff read or hand to the patient before recording consent to text.
DISCLOSURES: dict[str, str] = {
    "sms-2026-01": (
        "May we text you at this number? Texts only tell you that a secure message is waiting "
        "and give a link; they never contain medical details. Message frequency varies. Msg & "
        "data rates may apply. Consent is not a condition of care. Reply STOP at any time to "
        "opt out, HELP for help."
    ),
}
CURRENT_DISCLOSURE_VERSION = "sms-2026-01"
# A patient who texts START/YES reads the disclosure in the confirmation reply
# (consent.keywords); if that reply's wording changes, add a version here and point to it.
KEYWORD_DISCLOSURE_VERSION = "sms-keyword-2026-01"

# The BAA: one template per version under templates/consent/baa/.
BAA_TEMPLATES: dict[str, str] = {
    "2026-01": "consent/baa/2026-01.txt",
}
CURRENT_BAA_VERSION = "2026-01"


@dataclass(frozen=True)
class BaaDocument:
    version: str
    text: str
    sha256: str


def baa_document(version: str = CURRENT_BAA_VERSION) -> BaaDocument:
    """The agreement text of ``version`` and the SHA-256 of its UTF-8 bytes.

    Rendered afresh each time (no cache): the hash shown on the page and the hash checked at
    signing are both computed from the template as deployed at that moment.
    """
    # Template whitespace at the ends is not part of the agreement.
    text = render_to_string(BAA_TEMPLATES[version]).strip() + "\n"
    return BaaDocument(version=version, text=text, sha256=hashlib.sha256(text.encode("utf-8")).hexdigest())
