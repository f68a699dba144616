"""SMS keywords on inbound messages (CTIA handbook, TCPA revocation), and the replies to them.

``classify_inbound(text)`` reads a patient's inbound SMS and says whether it is a keyword:

- **stop**: STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPT OUT, OPTOUT (and
  Spanish ALTO, BASTA, CANCELAR, BAJA, PARAR, DETENER) as the whole message or as one
  sentence or line of it ("Stop.\\nSent from my iPhone"), with politeness around it
  ("stop please", "ok STOP 🛑"); or a plain-language request to stop messages ("please stop
  texting me", "no more texts", "don't text me", "no me envíen más mensajes").
- **start**: START, YES, UNSTOP as the whole message and nothing else: a re-grant must be
  unambiguous, so "yes please come in" is not one.
- **help**: HELP, INFO (Spanish AYUDA) as the whole message, politeness allowed.

Case, accents, width, punctuation, emoji and extra whitespace never matter. The SMS word
CANCEL always means opt-out (carriers require it; appointments are cancelled on the secure
page), but only as a keyword: "cancel my appointment" is not a request to stop texts.

Plain language is matched by phrases, never by the bare word: "I can't stop coughing", "don't
stop sending me reminders", "why did you stop texting me?" and "my daughter needs to stop
texting at dinner" are messages for the care team, not opt-outs. The rules, in order:
a negation before the phrase in the same sentence cancels it; "stop …" phrases count when the
message names us as the sender or the patient as the recipient ("… me", "this number") or is
an instruction (nothing but politeness before it, or "I want to …", "can you …"); a few
phrases are unambiguous anywhere ("unsubscribe", "remove me from your list").

Never raises on any input: non-text is None, and only the first ``MAX_SCAN_CHARS`` characters
(after trimming) are read, so a 10 KB body costs what a 2 KB one does.

The reply texts live here too; they carry the clinic's sender label and contact number and
never PHI. Each fits one GSM-7 SMS segment (160 characters): if the wording changes, keep it
so (tests/consent/test_keywords.py checks every reply at the longest label and number).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import phonenumbers
from django.db import models


class Keyword(models.TextChoices):
    STOP = "stop", "Opt-out"
    START = "start", "Opt-in"
    HELP = "help", "Help"


class ReplyKind(models.TextChoices):
    STOP_CONFIRMATION = "stop_confirmation", "Opt-out confirmation"
    START_CONFIRMATION = "start_confirmation", "Opt-in confirmation"
    HELP = "help", "Help text"


# Twilio accepts inbound bodies up to 1,600 characters; nothing past this is read.
MAX_SCAN_CHARS = 2000
MAX_SEGMENTS = 100

_STOP_WORDS = frozenset({
    "stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout",
    "alto", "basta", "cancelar", "baja", "parar", "detener",
})
_START_WORDS = frozenset({"start", "yes", "unstop"})
_HELP_WORDS = frozenset({"help", "info", "ayuda"})
# Politeness that may surround a STOP or HELP keyword without changing its meaning.
_FILLERS = frozenset({
    "please", "pls", "plz", "thanks", "thank", "you", "thx", "ty", "now", "ok", "okay", "just", "it",
    "por", "favor", "gracias", "ya",
})
_SEGMENT_SPLIT = re.compile(r"[\n\r.!?;,¡¿]+")
_APOSTROPHES = frozenset("'’‘`´ʼ")


def _normalise(text: str) -> str:
    """Casefolded, accent-free words separated by single spaces; "don't" → "dont"."""
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    out = []
    for ch in text:
        if ch in _APOSTROPHES or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            continue  # accents, zero-width joiners and other invisible formatting
        out.append(ch if ch.isalnum() else " ")
    return " ".join("".join(out).split())


def _keyword_tokens(normalised: str) -> list[str]:
    joined = re.sub(r"\bopt out\b", "optout", normalised)
    return re.sub(r"\bstop all\b", "stopall", joined).split()


def _is_only(words: list[str], vocabulary: frozenset[str], *, fillers: bool) -> bool:
    core = [w for w in words if not (fillers and w in _FILLERS)]
    return bool(core) and all(w in vocabulary for w in core)


# --- plain-language requests to stop ----------------------------------------------------------

_MSG = r"(?:text messages?|texts?|txts?|messages?|msgs?|sms|notifications?|reminders?|alerts?)"
_MSG_PLURAL = r"(?:text messages|texts|txts|messages|msgs|sms|notifications|reminders|alerts)"
_DET = r"(?:(?:any|all|these|those|the|your|ur|my|text|of) ){0,3}(?:more )?"
_RECIPIENT = re.compile(r"\b(?:me|us|this number|my number|this phone|my phone|my cell)\b")
_NEGATORS = frozenset({
    "not", "dont", "never", "cant", "cannot", "couldnt", "wont", "wouldnt", "shouldnt", "didnt", "doesnt",
    "isnt", "wasnt", "arent", "aint",
})
_QUESTIONS = frozenset({"why", "did", "didnt", "does", "doesnt", "whether"})
_LEADS = frozenset({
    "please", "pls", "plz", "kindly", "just", "so", "ok", "okay", "hey", "hi", "hello", "and", "now", "then",
    "can", "could", "would", "will", "you", "u", "ya", "seriously", "also", "guys", "por", "favor",
})
_WANTS = frozenset({("you", "to"), ("u", "to"), ("want", "to"), ("like", "to"), ("wish", "to"), ("need", "to")})
_SUBJECTS = frozenset({"you", "u", "they", "he", "she", "we", "i", "it", "who"})
_WRONG_NUMBER_LEADS = frozenset({
    "sorry", "you", "u", "have", "got", "the", "a", "this", "is", "its", "youve", "hi", "hello", "hey", "i",
    "think", "texted", "texting", "are", "ur",
})


@dataclass(frozen=True)
class _Phrase:
    pattern: re.Pattern
    directed: bool = False  # counts only as an instruction to us, or naming the recipient
    questions: bool = True  # "why did you …" cancels it
    declarative: bool = False  # "you don't text me" (a statement) cancels it


def _p(regex: str, **flags) -> _Phrase:
    return _Phrase(re.compile(regex), **flags)


_PHRASES = (
    # English: "stop texting me", "quit sending me messages", "stop all the texts"
    _p(r"\b(?:stop|quit|cease) (?:texting|txting|messaging|msging|contacting|sending)(?: (?:me|us))?"
       rf"(?: {_DET}{_MSG})?\b", directed=True),
    _p(rf"\b(?:stop|quit) (?:receiving|getting) {_DET}{_MSG}\b", directed=True),
    _p(rf"\b(?:stop|quit|cease) {_DET}{_MSG}\b", directed=True),
    _p(rf"\bcancel {_DET}{_MSG_PLURAL}\b", directed=True),
    _p(r"\bno more (?:" + _MSG + r"|texting|messaging)\b", directed=True),
    _p(r"\bopt ?out\b", directed=True),
    _p(r"\b(?:dont|do not|never) (?:ever )?(?:text|txt|message|msg|contact|sms)(?: (?:me|us|this number)\b|$)",
       declarative=True),
    _p(rf"\b(?:dont|do not|never) send (?:me |us )?{_DET}{_MSG}\b", declarative=True),
    _p(rf"\b(?:dont|do not|no longer) (?:want|wish) (?:to (?:receive|get) )?{_DET}{_MSG}\b", declarative=False),
    _p(r"\bunsubscribe\b", questions=False),
    _p(r"\bstopall\b", questions=False),
    _p(r"\bopt (?:me|us) out\b"),
    _p(rf"\bopt ?out of {_DET}(?:{_MSG}|texting|messaging)\b"),
    _p(r"\b(?:remove|take) (?:me|us|this number|my number) (?:off|from|out of)(?: of)? "
       r"(?:(?:this|your|ur|the|that|all) )?(?:(?:text|texting|sms|messaging|mailing|contact) )?(?:list|lists|"
       + _MSG + r")\b"),
    _p(r"\b(?:revoke|withdraw) (?:my )?(?:consent|permission)\b"),
    # Spanish (accents already stripped): "no me envíen más mensajes", "dejen de escribirme"
    _p(r"\bno (?:me |nos )?(?:envien|envies|envie|manden|mandes|mande|escriban|escribas|escriba|textees|texteen)"
       r" (?:mas\b|mensajes|textos|sms|msjs?)"),
    _p(r"\bno (?:quiero|deseo) (?:recibir |que me (?:envien|manden|escriban) )?(?:mas )?(?:mensajes|textos|sms)\b"),
    _p(r"\b(?:dejen|deje|deja) de (?:enviarme|mandarme|escribirme|textearme|enviar|mandar|escribir)\b"),
    _p(r"\bdejar de recibir (?:mensajes|textos|sms)\b"),
    _p(r"\b(?:no mas|basta de) (?:mensajes|textos|sms)\b"),
    _p(r"\bdar(?:me|nos)? de baja\b"),
)
_WRONG_NUMBER = re.compile(r"\bwrong (?:number|person)\b")


def _directed(before: list[str], matched: str) -> bool:
    if _RECIPIENT.search(matched):
        return True
    if all(word in _LEADS for word in before):
        return True
    return tuple(before[-2:]) in _WANTS or (bool(before) and before[-1] == "wanna")


def _phrase_applies(phrase: _Phrase, match: re.Match, text: str) -> bool:
    before = text[:match.start()].split()
    negated = any(word in _NEGATORS for word in before)
    if negated and "if" not in before:  # "if you don't stop texting me …" is still a request
        return False
    if phrase.questions and any(word in _QUESTIONS for word in before):
        return False
    if phrase.declarative and before and before[-1] in _SUBJECTS:
        return False
    return not phrase.directed or _directed(before, match.group())


def _asks_to_stop(segment: str) -> bool:
    for phrase in _PHRASES:
        if any(_phrase_applies(phrase, m, segment) for m in phrase.pattern.finditer(segment)):
            return True
    match = _WRONG_NUMBER.search(segment)
    return match is not None and all(w in _WRONG_NUMBER_LEADS for w in segment[:match.start()].split())


def classify_inbound(text) -> str | None:
    """"stop", "start", "help" or None for an inbound SMS body (see the module docstring)."""
    if not isinstance(text, str):
        return None
    text = text.strip()[:MAX_SCAN_CHARS]
    words = _keyword_tokens(_normalise(text))
    if not words:
        return None
    if _is_only(words, _START_WORDS, fillers=False):
        return Keyword.START.value
    if _is_only(words, _HELP_WORDS, fillers=True):
        return Keyword.HELP.value
    for raw in _SEGMENT_SPLIT.split(text)[:MAX_SEGMENTS]:
        segment = _normalise(raw)
        if _is_only(_keyword_tokens(segment), _STOP_WORDS, fillers=True) or _asks_to_stop(segment):
            return Keyword.STOP.value
    return None


# --- replies (no PHI; one GSM-7 segment each) --------------------------------------------------

CONTACT_PHONE_REGION = "US"  # a contact number without "+" is read as a US number
CONTACT_PHONE_MAX_CHARS = 20  # what the one-segment budget of the HELP reply leaves for it

_REPLIES = {
    "en": {
        ReplyKind.STOP_CONFIRMATION: "{label}: You are unsubscribed and will get no more texts from us. "
                                     "Reply START to resubscribe.",
        ReplyKind.START_CONFIRMATION: "{label}: You will get secure message notices. Msg frequency varies. "
                                      "Msg & data rates may apply. Reply HELP for help, STOP to opt out.",
        ReplyKind.HELP: "{label}: Secure message notices. Help: {contact}. Msg & data rates may apply. "
                        "Reply STOP to opt out.",
    },
    # GSM-7 has no á/í/ó/ú: Spanish replies are written without those accents.
    "es": {
        ReplyKind.STOP_CONFIRMATION: "{label}: Se ha dado de baja y no recibira mas mensajes. "
                                     "Responda START para volver a suscribirse.",
        ReplyKind.START_CONFIRMATION: "{label}: Recibira avisos de mensajes seguros. Frecuencia variable. "
                                      "Pueden aplicar tarifas. Responda HELP para ayuda, STOP para cancelar.",
        ReplyKind.HELP: "{label}: Mensajes seguros. Ayuda: {contact}. Pueden aplicar tarifas "
                        "de mensajes y datos. Responda STOP para cancelar.",
    },
}
_CONTACT_FALLBACK = {"en": "call your clinic", "es": "llame a su clinica"}
_CONTACT_PREFIX = {"en": "call ", "es": "llame al "}


def contact_phone(tenant) -> str | None:
    """``Tenant.settings["contact_phone"]`` formatted for an SMS (international format, no
    extension), or None if unset or not a possible phone number (a malformed setting must not
    put junk into a reply)."""
    raw = (tenant.settings or {}).get("contact_phone")
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 40:
        return None
    try:
        number = phonenumbers.parse(raw, CONTACT_PHONE_REGION)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    number.extension = None  # an extension costs SMS characters and can't be dialled from a text
    formatted = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    return formatted if len(formatted) <= CONTACT_PHONE_MAX_CHARS else None


def keyword_reply_text(*, tenant, kind: str, language: str = "en") -> str:
    """The reply for ``kind`` (a ``ReplyKind``) in ``language`` ("en" or "es"; others get English).

    Starts with the clinic's SMS sender label, which is validated to 2-20 GSM-7 letters.
    """
    language = language if language in _REPLIES else "en"
    phone = contact_phone(tenant)
    contact = f"{_CONTACT_PREFIX[language]}{phone}" if phone else _CONTACT_FALLBACK[language]
    return _REPLIES[language][ReplyKind(kind)].format(label=tenant.sms_sender_label, contact=contact)
