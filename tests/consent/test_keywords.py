"""The keyword corpus: CTIA keywords in every dress, plain-language opt-outs both ways,
odd Unicode and very long bodies, and the reply texts."""

import pytest

from consent.keywords import (
    MAX_SCAN_CHARS,
    ReplyKind,
    classify_inbound,
    contact_phone,
    keyword_reply_text,
)

STOP_KEYWORDS = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPT OUT", "OPTOUT"]
START_KEYWORDS = ["START", "YES", "UNSTOP"]
HELP_KEYWORDS = ["HELP", "INFO"]


def _dresses(word: str) -> list[str]:
    """The same keyword as patients actually type it."""
    return [
        word, word.lower(), word.title(), f"  {word}  ", f"\n{word}\n", f"{word}.", f"{word}!!!", f"{word}?",
        f"'{word}'", f'"{word}"', f"({word})", f"¡{word}!", f"{word} 🛑", f"👋{word}", f"{word}\u200b",
        "".join(chr(ord(c) + 0xFEE0) if c != " " else c for c in word),  # fullwidth letters
        f"{word}\u00a0", f"\t{word}\t",
    ]


@pytest.mark.parametrize("word", STOP_KEYWORDS)
def test_every_stop_keyword_in_every_dress_opts_out(word):
    for text in _dresses(word):
        assert classify_inbound(text) == "stop", text


@pytest.mark.parametrize("word", START_KEYWORDS)
def test_every_start_keyword_in_every_dress_opts_in(word):
    for text in _dresses(word):
        assert classify_inbound(text) == "start", text


@pytest.mark.parametrize("word", HELP_KEYWORDS)
def test_every_help_keyword_in_every_dress_asks_for_help(word):
    for text in _dresses(word):
        assert classify_inbound(text) == "help", text


@pytest.mark.parametrize("text", [
    "opt-out", "Opt_Out", "opt   out", "OptOut", "stop all", "Stop All!", "STOP STOP STOP", "stop please",
    "Please stop", "STOP thank you", "ok stop", "Stop it", "stop now!!", "Stop, please.", "just stop",
    "STOP END QUIT", "Stop.\n\nSent from my iPhone", "Thanks for the reminder. STOP",
    "S\u0335T\u0335O\u0335P\u0335",  # combining strike-through
    "\u202eSTOP",  # right-to-left override
    "𝐒𝐓𝐎𝐏",  # mathematical bold
    "ALTO", "Basta", "basta ya", "Cancelar", "Baja", "parar", "detener", "Stop por favor",
])
def test_keyword_variants_opt_out(text):
    assert classify_inbound(text) == "stop"


@pytest.mark.parametrize("text", [
    "please stop texting me", "Stop texting me!", "STOP TEXTING ME", "stop messaging me", "Please stop texting",
    "stop sending me messages", "stop sending me these texts", "Quit texting me", "stop all messages",
    "stop the reminders please", "Stop these notifications", "Can you stop texting me?",
    "I want you to stop texting me", "I want to stop receiving texts", "I'd like to stop getting reminders",
    "no more texts", "No more text messages please", "no more messages!", "don't text me", "Don’t text me",
    "Do not text me again", "please don't message me", "never text this number again", "don't send me any more texts",
    "I don't want these texts", "I no longer wish to receive messages", "unsubscribe me", "How do I unsubscribe?",
    "take me off your list", "Remove me from this list", "please remove me from your texting list", "opt me out",
    "I want to opt out", "opt out of these texts", "I revoke my consent", "I withdraw my consent",
    "Wrong number", "Sorry, wrong number", "You have the wrong number", "I think you have the wrong number",
    "If you don't stop texting me I'll report you", "Stop, I already told you to stop texting me",
    "cancel all the texts", "cancel my text messages",
    # Spanish
    "no me envíen más mensajes", "No me envien mas mensajes", "no me manden mas mensajes",
    "No me escriban más", "dejen de enviarme mensajes", "Deje de escribirme", "no quiero recibir más mensajes",
    "No quiero mas textos", "no más mensajes", "Basta de mensajes", "quiero darme de baja",
    "quiero dejar de recibir mensajes",
])
def test_plain_language_requests_to_stop_messages_opt_out(text):
    assert classify_inbound(text) == "stop"


@pytest.mark.parametrize("text", [
    # "stop" about the patient's health or life, not about our messages
    "I can't stop coughing", "I cant stop coughing, is that normal?", "How do I stop the bleeding?",
    "I can't stop the nausea", "When should I stop taking the antibiotics?", "I stopped taking my meds",
    "The bus stop is far from the clinic", "Can I stop by the pharmacy later?", "stop sign",
    "my daughter needs to stop texting at dinner", "I couldn't stop texting my sister",
    # asking us to keep going, or asking why messages stopped
    "Don't stop sending me reminders", "Please don't stop texting me", "Why did you stop texting me?",
    "Did you stop sending reminders?", "I don't want you to stop messaging me",
    # cancel / end / quit as ordinary words: appointments are cancelled on the secure page
    "cancel my appointment", "Can I cancel my appointment tomorrow?", "Please cancel the reminder for Tuesday",
    "The pain doesn't end", "The end", "End of the day works for me", "I quit smoking last week",
    # other lookalikes
    "No more pain since yesterday", "No more pills left", "you don't text me enough",
    "remove me from the waitlist", "Can you take me off the medication?", "Can I opt out of the flu shot?",
    "My pharmacy has the wrong number", "Para el dolor de cabeza", "El dolor no para",
    # START is only START: a re-grant must be unambiguous
    "yes please", "Yes I will be there", "yes, thanks", "Start time?", "When does it start?",
    # HELP is only HELP: a patient asking for help is a message for the care team
    "I need help with my prescription", "Help me please I feel dizzy", "more info about my results",
    # nothing at all
    "", "   ", "Thank you!", "ok", "👍", "?", "...",
])
def test_ordinary_messages_are_not_keywords(text):
    assert classify_inbound(text) is None


@pytest.mark.parametrize("text", [
    None, 42, b"STOP", ["STOP"], "\x00", "\ud800", "\ud800\udfff STOP?", "\U0010ffff" * 50, "🛑" * 5000,
    "ЅТОР",  # Cyrillic lookalikes: not our alphabet, and not an error
    "ﷺ" * 100, "\u0301" * 3000, "A\u0308" * 4000, "\r\n" * 6000, "ß" * 5000, "İ" * 5000,
    "\N{ZERO WIDTH JOINER}" * 10_000, "stop" + "\u0300" * 10_000,
])
def test_it_never_raises_on_odd_input(text):
    assert classify_inbound(text) in (None, "stop", "start", "help")


def test_non_text_is_not_a_keyword():
    assert classify_inbound(None) is None
    assert classify_inbound(b"STOP") is None


def test_very_long_bodies():
    assert classify_inbound("STOP" + " " * 10_240) == "stop"
    assert classify_inbound(" " * 10_240 + "STOP") == "stop"  # whitespace around it is not content
    assert classify_inbound("STOP\n" + "Sent from my phone. " * 520) == "stop"  # ~10 KB after a STOP line
    assert classify_inbound("please stop texting me " * 450) == "stop"  # 10 KB
    assert classify_inbound("I can't stop coughing. " * 450) is None
    assert classify_inbound("a" * 10_240) is None
    assert classify_inbound("🛑" * 10_240) is None
    assert classify_inbound("stop " * 2_048) == "stop"


def test_only_the_first_max_scan_chars_are_read():
    assert classify_inbound("x" * MAX_SCAN_CHARS + " STOP") is None
    assert classify_inbound("x" * (MAX_SCAN_CHARS - 10) + ". STOP") == "stop"


# --- replies ----------------------------------------------------------------------------------

GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)


@pytest.fixture
def clinic(tenant_a):
    tenant_a.sms_sender_label = "Hill & Dale Clinic"
    tenant_a.settings = {"contact_phone": "+1 (202) 555-0143"}
    return tenant_a


@pytest.mark.parametrize("language", ["en", "es"])
@pytest.mark.parametrize("kind", list(ReplyKind))
def test_every_reply_is_one_gsm7_segment_at_the_longest_label_and_number(clinic, kind, language):
    clinic.sms_sender_label = "Abcdefghij Klmnopqrs"  # 20: the longest label allowed
    clinic.settings = {"contact_phone": "+49 30 123456789012 ext. 1234"}  # "+49 30 123456789012"
    text = keyword_reply_text(tenant=clinic, kind=kind, language=language)
    assert len(text) <= 160, (len(text), text)
    assert set(text) <= GSM7, set(text) - GSM7
    assert text.startswith("Abcdefghij Klmnopqrs: ")


def test_help_names_the_clinic_its_number_rates_and_how_to_stop(clinic):
    text = keyword_reply_text(tenant=clinic, kind=ReplyKind.HELP)
    assert text.startswith("Hill & Dale Clinic:")
    assert "+1 202-555-0143" in text
    assert "Msg & data rates may apply" in text
    assert "Reply STOP to opt out" in text


def test_stop_and_start_confirmations(clinic):
    stop = keyword_reply_text(tenant=clinic, kind=ReplyKind.STOP_CONFIRMATION)
    assert "unsubscribed" in stop and "START" in stop
    start = keyword_reply_text(tenant=clinic, kind=ReplyKind.START_CONFIRMATION)
    assert "Msg & data rates may apply" in start and "STOP" in start and "HELP" in start


def test_spanish_replies_and_unknown_languages_fall_back_to_english(clinic):
    assert "Responda STOP" in keyword_reply_text(tenant=clinic, kind=ReplyKind.HELP, language="es")
    assert keyword_reply_text(tenant=clinic, kind=ReplyKind.HELP, language="fr") == \
        keyword_reply_text(tenant=clinic, kind=ReplyKind.HELP, language="en")


@pytest.mark.parametrize("setting", [None, "", "not a phone", "=HYPERLINK(1)", 12025550143, "1" * 60, "+1 2",
                                     "+49 30 1234567890123456"])
def test_help_without_a_usable_contact_number_says_to_call_the_clinic(clinic, setting):
    clinic.settings = {} if setting is None else {"contact_phone": setting}
    assert contact_phone(clinic) is None
    assert "Help: call your clinic." in keyword_reply_text(tenant=clinic, kind=ReplyKind.HELP)
