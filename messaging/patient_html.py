"""The patient's thread page as HTML, built in Python (issue #12 item 6).

The thread is the page a patient sees on every visit, and the template engine was the largest
part of it: a quarter of the page's CPU for variable lookups, tags and an autoescape per value.
This module prints what ``messaging/patient/base.html`` with the thread's content block printed,
byte for byte, and ``tests/messaging/test_thread_html.py`` proves it: it renders that content
block (kept there as the reference) on the real ``base.html`` beside ``thread_page`` for every
state the page has (appointment or none, actionable or closed, each field's errors, values,
notice, language, empty lists, hostile text) and compares the bytes. So a change to
``base.html`` or to the page's markup fails that test until both sides say the same.

Every value is escaped here (``html.escape``, which is what Django's autoescape applies to a
plain string); only the message and access-list items come already built (escaped where they
are made, in ``views_patient``). Other patient pages (birth date, code, ended) still use the
templates: they are shown once or twice per visit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from messaging.patient_i18n import LANGUAGE_NAMES


def _e(value) -> str:
    return escape(str(value))


def _csrf(token: str) -> str:
    # What {% csrf_token %} prints.
    return f'<input type="hidden" name="csrfmiddlewaretoken" value="{_e(token)}">'


def _head(*, lang: str, title: str, urls: Mapping[str, str], clinic: str, notice: str) -> str:
    return (
        "<!doctype html>\n"
        f'<html lang="{_e(lang or "en")}">\n'
        "<head>\n"
        '  <meta charset="utf-8">\n'
        '  <meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '  <meta name="robots" content="noindex, nofollow">\n'
        '  <meta name="format-detection" content="telephone=no">\n'
        f"  <title>{title}</title>\n"
        f'  <link rel="stylesheet" href="{_e(urls["css"])}">\n'
        f'  <link rel="icon" href="{_e(urls["favicon"])}" type="image/svg+xml">\n'
        "</head>\n"
        "<body>\n"
        '<header class="pt-header">\n'
        f'  <p class="pt-clinic">{_e(clinic) if clinic else ""}</p>\n'
        "</header>\n"
        '<main id="main" class="pt-main">\n'
        f'  {f"""<p class="pt-notice" role="status">{_e(notice)}</p>""" if notice else ""}\n'
        "  ")


def _footer(*, t: Mapping[str, str], lang: str, urls: Mapping[str, str], clinic: str, csrf: str) -> str:
    if not clinic:
        return ""
    buttons = "".join(
        f'\n      <button type="submit" name="lang" value="{_e(code)}" lang="{_e(code)}" class="pt-button pt-secondary"'
        f' aria-pressed="{"true" if code == lang else "false"}">{_e(name)}</button>\n      '
        for code, name in LANGUAGE_NAMES.items())
    return (
        "\n"
        '<footer class="pt-footer">\n'
        f'  <form method="post" action="{_e(urls["language"])}" class="pt-language">\n'
        f"    {csrf}\n"
        "    <fieldset>\n"
        f"      <legend>{t['language']}</legend>\n"
        f"      {buttons}\n"
        "    </fieldset>\n"
        "  </form>\n"
        f'  <form method="post" action="{_e(urls["signout"])}" class="pt-signout">\n'
        f"    {csrf}\n"
        f'    <p class="pt-hint">{t["sign_out_hint"]}</p>\n'
        f'    <button type="submit" class="pt-button pt-secondary">{t["sign_out"]}</button>\n'
        "  </form>\n"
        "</footer>\n")


_ACTION_DESCRIBED = ' aria-describedby="action-error"'
_NOTE_INVALID = ' aria-invalid="true" aria-describedby="note-error"'
_INVALID = ' aria-invalid="true"'


def _field_errors(messages: Sequence[str]) -> str:
    return "".join(f"<p>{_e(m)}</p>" for m in messages)


def _appointment(*, t: Mapping[str, str], appointment: Mapping, errors: Mapping, values: Mapping, urls, csrf: str,
                 reply_max: int) -> str:
    facts = f"\n    <dt>{t['appointment_when']}</dt><dd>{_e(appointment['when'])}</dd>\n    "
    for key, label in (("provider", "appointment_with"), ("location", "appointment_where"),
                       ("type", "appointment_type")):
        if appointment[key]:
            facts += f"<dt>{t[label]}</dt><dd>{_e(appointment[key])}</dd>"
        facts += "\n    "
    facts += f"<dt>{t['appointment_status']}</dt><dd>{_e(appointment['status'])}</dd>\n  "
    action_errors, note_errors = errors["action"], errors["note"]
    if appointment["can_act"]:
        action = (
            f'\n  <form method="post" action="{_e(urls["appointment"])}">\n'
            f"    {csrf}\n"
            f"    <fieldset{_ACTION_DESCRIBED if action_errors else ''}>\n"
            f"      <legend>{t['appointment_question']}</legend>\n"
            "      "
            + (f'<div class="pt-field-error" id="action-error">{_field_errors(action_errors)}</div>'
               if action_errors else "")
            + "\n"
            f'      <div class="pt-field{" pt-has-error" if note_errors else ""}">\n'
            f'        <label for="note">{t["appointment_note"]}</label>\n'
            f'        <textarea id="note" name="note" rows="2" maxlength="{_e(reply_max)}"'
            f"{_NOTE_INVALID if note_errors else ''}>"
            f"{_e(values['note'])}</textarea>\n"
            "        "
            + (f'<div class="pt-field-error" id="note-error">{_field_errors(note_errors)}</div>' if note_errors else "")
            + "\n"
            "      </div>\n"
            '      <div class="pt-actions">\n'
            f'        <button type="submit" name="action" value="confirm" class="pt-button pt-primary">{t["confirm"]}</button>\n'
            f'        <button type="submit" name="action" value="reschedule" class="pt-button pt-secondary">{t["reschedule"]}</button>\n'
            f'        <button type="submit" name="action" value="cancel" class="pt-button pt-danger">{t["cancel"]}</button>\n'
            "      </div>\n"
            "    </fieldset>\n"
            "  </form>\n"
            "  ")
    else:
        action = (
            "\n  "
            + (f'<div class="pt-field-error" role="alert">{_field_errors(action_errors)}</div>' if action_errors else "")
            + "\n"
            f'  <p class="pt-hint">{t["appointment_closed"]}</p>\n'
            "  ")
    return (
        "\n"
        '<section class="pt-card pt-appointment" aria-labelledby="appointment-title">\n'
        f'  <h2 id="appointment-title">{t["appointment_title"]}</h2>\n'
        f'  <dl class="pt-facts">{facts}</dl>\n'
        f"  {action}\n"
        "</section>\n")


def thread_page(*, t: Mapping[str, str], lang: str, clinic: str, notice: str, urls: Mapping[str, str], csrf_token: str,
                appointment: Mapping | None, has_errors: bool, errors: Mapping[str, Sequence[str]], values: Mapping[str, str],
                messages_html: str, access_html: str, nonce: str, reply_max: int) -> str:
    """The whole thread page. ``t``: the page's words, already escaped; ``messages_html``
    and ``access_html``: the list items, every value in them already escaped; everything else is
    escaped here. ``errors`` has the keys action, note and body; ``values`` note and body;
    ``has_errors``: the answer being shown refused something (the title and summary say so)."""
    csrf = _csrf(csrf_token)
    title = (f"{t['error_prefix']}: " if has_errors else "") + t["thread_title"]
    body_errors = errors["body"]
    content = (
        "\n"
        f"<h1>{t['thread_title']}</h1>\n"
        + (f'<div class="pt-error-summary" role="alert"><p>{t["error_title"]}</p></div>' if has_errors else "")
        + "\n\n"
        + (_appointment(t=t, appointment=appointment, errors=errors, values=values, urls=urls, csrf=csrf,
                        reply_max=reply_max) if appointment else "")
        + "\n\n"
        '<section class="pt-card" aria-labelledby="messages-title">\n'
        f'  <h2 id="messages-title" class="visually-hidden">{t["thread_title"]}</h2>\n'
        "  "
        + (f'\n  \n  <ol class="pt-messages">{messages_html}\n  </ol>\n  ' if messages_html
           else f'<p class="pt-hint">{t["no_messages"]}</p>')
        + "\n"
        "</section>\n"
        "\n"
        '<section class="pt-card">\n'
        f'  <form method="post" action="{_e(urls["reply"])}" novalidate>\n'
        f"    {csrf}\n"
        f'    <input type="hidden" name="nonce" value="{_e(nonce)}">\n'
        f'    <div class="pt-field{" pt-has-error" if body_errors else ""}">\n'
        f'      <label for="reply">{t["reply_label"]}</label>\n'
        f'      <p class="pt-hint" id="reply-hint">{t["reply_hint"]}</p>\n'
        f'      <textarea id="reply" name="body" rows="4" maxlength="{_e(reply_max)}"'
        f' aria-describedby="reply-hint{" reply-error" if body_errors else ""}"'
        f"{_INVALID if body_errors else ''}>{_e(values['body'])}</textarea>\n"
        "      "
        + (f'<div class="pt-field-error" id="reply-error">{_field_errors(body_errors)}</div>' if body_errors else "")
        + "\n"
        "    </div>\n"
        f'    <button type="submit" class="pt-button pt-primary">{t["send"]}</button>\n'
        "  </form>\n"
        "</section>\n"
        "\n"
        '<section class="pt-card" aria-labelledby="access-title">\n'
        f'  <h2 id="access-title">{t["access_title"]}</h2>\n'
        "  "
        + (f'\n  <ul class="pt-access">\n    {access_html}\n  </ul>\n  ' if access_html
           else f'<p class="pt-hint">{t["access_none"]}</p>')
        + "\n"
        "</section>\n")
    return (_head(lang=lang, title=title, urls=urls, clinic=clinic, notice=notice) + content + "\n</main>\n"
            + _footer(t=t, lang=lang, urls=urls, clinic=clinic, csrf=csrf) + "\n</body>\n</html>\n")
