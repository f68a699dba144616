"""The patient's thread page is built in Python (``messaging.patient_html``; issue #12 item 6): it
must print, byte for byte, what the template it replaced printed on the real ``base.html``, for
every state the page has, with every value escaped as autoescape would. That template is kept
here as the reference. A change to ``base.html`` fails these tests until the Python side
follows (the other patient pages still extend it)."""

from __future__ import annotations

import itertools

import pytest
from django.template import Context, Template
from django.utils.safestring import mark_safe

from messaging import patient_html
from messaging.patient_i18n import LANGUAGE_NAMES, STRINGS
from messaging.views_patient import _strings, _strings_html

# messaging/patient/thread.html as it was.
_REFERENCE = Template("""{% extends "messaging/patient/base.html" %}
{% block title %}{% if has_errors %}{{ t.error_prefix }}: {% endif %}{{ t.thread_title }}{% endblock %}
{% block content %}
<h1>{{ t.thread_title }}</h1>
{% if has_errors %}<div class="pt-error-summary" role="alert"><p>{{ t.error_title }}</p></div>{% endif %}

{% if appointment %}
<section class="pt-card pt-appointment" aria-labelledby="appointment-title">
  <h2 id="appointment-title">{{ t.appointment_title }}</h2>
  <dl class="pt-facts">
    <dt>{{ t.appointment_when }}</dt><dd>{{ appointment.when }}</dd>
    {% if appointment.provider %}<dt>{{ t.appointment_with }}</dt><dd>{{ appointment.provider }}</dd>{% endif %}
    {% if appointment.location %}<dt>{{ t.appointment_where }}</dt><dd>{{ appointment.location }}</dd>{% endif %}
    {% if appointment.type %}<dt>{{ t.appointment_type }}</dt><dd>{{ appointment.type }}</dd>{% endif %}
    <dt>{{ t.appointment_status }}</dt><dd>{{ appointment.status }}</dd>
  </dl>
  {% if appointment.can_act %}
  <form method="post" action="{{ u.appointment }}">
    {% csrf_token %}
    <fieldset{% if errors.action %} aria-describedby="action-error"{% endif %}>
      <legend>{{ t.appointment_question }}</legend>
      {% if errors.action %}<div class="pt-field-error" id="action-error">{% for e in errors.action %}<p>{{ e }}</p>{% endfor %}</div>{% endif %}
      <div class="pt-field{% if errors.note %} pt-has-error{% endif %}">
        <label for="note">{{ t.appointment_note }}</label>
        <textarea id="note" name="note" rows="2" maxlength="{{ reply_max }}"{% if errors.note %} aria-invalid="true" aria-describedby="note-error"{% endif %}>{{ values.note }}</textarea>
        {% if errors.note %}<div class="pt-field-error" id="note-error">{% for e in errors.note %}<p>{{ e }}</p>{% endfor %}</div>{% endif %}
      </div>
      <div class="pt-actions">
        <button type="submit" name="action" value="confirm" class="pt-button pt-primary">{{ t.confirm }}</button>
        <button type="submit" name="action" value="reschedule" class="pt-button pt-secondary">{{ t.reschedule }}</button>
        <button type="submit" name="action" value="cancel" class="pt-button pt-danger">{{ t.cancel }}</button>
      </div>
    </fieldset>
  </form>
  {% else %}
  {% if errors.action %}<div class="pt-field-error" role="alert">{% for e in errors.action %}<p>{{ e }}</p>{% endfor %}</div>{% endif %}
  <p class="pt-hint">{{ t.appointment_closed }}</p>
  {% endif %}
</section>
{% endif %}

<section class="pt-card" aria-labelledby="messages-title">
  <h2 id="messages-title" class="visually-hidden">{{ t.thread_title }}</h2>
  {% if messages_html %}
  {# Each <li> is built in views_patient._thread_page (_MESSAGE_HTML, every value escaped). #}
  <ol class="pt-messages">{{ messages_html }}
  </ol>
  {% else %}<p class="pt-hint">{{ t.no_messages }}</p>{% endif %}
</section>

<section class="pt-card">
  <form method="post" action="{{ u.reply }}" novalidate>
    {% csrf_token %}
    <input type="hidden" name="nonce" value="{{ nonce }}">
    <div class="pt-field{% if errors.body %} pt-has-error{% endif %}">
      <label for="reply">{{ t.reply_label }}</label>
      <p class="pt-hint" id="reply-hint">{{ t.reply_hint }}</p>
      <textarea id="reply" name="body" rows="4" maxlength="{{ reply_max }}" aria-describedby="reply-hint{% if errors.body %} reply-error{% endif %}"{% if errors.body %} aria-invalid="true"{% endif %}>{{ values.body }}</textarea>
      {% if errors.body %}<div class="pt-field-error" id="reply-error">{% for e in errors.body %}<p>{{ e }}</p>{% endfor %}</div>{% endif %}
    </div>
    <button type="submit" class="pt-button pt-primary">{{ t.send }}</button>
  </form>
</section>

<section class="pt-card" aria-labelledby="access-title">
  <h2 id="access-title">{{ t.access_title }}</h2>
  {% if access_html %}
  <ul class="pt-access">
    {{ access_html }}
  </ul>
  {% else %}<p class="pt-hint">{{ t.access_none }}</p>{% endif %}
</section>
{% endblock %}
""")

HOSTILE = "<script>alert('x')</script> & \"quoted\""
URLS = {"css": "/static/css/patient.css?v=<1>", "favicon": "/static/img/favicon.svg", "language": "/s/language",
        "signout": "/s/signout", "appointment": "/s/appointment", "reply": "/s/reply", "home": "/s/"}
MESSAGES = ('\n    <li class="pt-message pt-theirs">\n      <p class="pt-meta"><strong>A &amp; B</strong> · '
            '<span>Mon</span></p>\n      <p class="pt-body">Hi<br>there</p>\n    </li>')
ACCESS = "<li><strong>Dr A</strong> · Mon</li>\n    <li><strong>Dr B</strong> · Tue</li>"


def _appointment(lang, *, can_act=True, provider="Dr <Who>", location="Room & 1", kind=""):
    return {"when": "Tuesday <9:00>", "provider": provider, "location": location, "type": kind,
            "status": _strings(lang)["status_booked"], "can_act": can_act}


def _both(*, lang="en", clinic="A & B <Clinic>", notice="", appointment=None, errors=None, values=None,
          messages_html=MESSAGES, access_html=ACCESS, csrf="tok<en>", nonce="n0nce_-"):
    full_errors = {"action": (), "note": (), "body": (), **(errors or {})}
    full_values = {"note": "", "body": "", **(values or {})}
    reference = _REFERENCE.render(Context({
        "t": _strings(lang), "lang": lang, "clinic": clinic, "languages": LANGUAGE_NAMES, "notice": notice,
        "u": URLS, "csrf_token": csrf, "messages_html": mark_safe(messages_html),  # noqa: S308  # test data
        "access_html": mark_safe(access_html), "appointment": appointment,  # noqa: S308  # test data
        "errors": full_errors, "has_errors": bool(errors), "values": full_values, "nonce": nonce,
        "reply_max": 1000}))
    built = patient_html.thread_page(
        t=_strings_html(lang), lang=lang, clinic=clinic, notice=notice, urls=URLS, csrf_token=csrf,
        appointment=appointment, has_errors=bool(errors), errors=full_errors, values=full_values,
        messages_html=messages_html, access_html=access_html, nonce=nonce, reply_max=1000)
    return built, reference


@pytest.mark.parametrize("lang", sorted(STRINGS))
def test_the_plain_page_is_the_template_s(lang):
    built, reference = _both(lang=lang)
    assert built == reference
    assert "&lt;Clinic&gt;" in built and "<Clinic>" not in built  # escaped, not merely equal


@pytest.mark.parametrize(("messages_html", "access_html"), [("", ""), (MESSAGES, ""), ("", ACCESS)])
def test_empty_lists_are_the_template_s(messages_html, access_html):
    built, reference = _both(messages_html=messages_html, access_html=access_html)
    assert built == reference
    assert (STRINGS["en"]["access_none"] in built) == (not access_html)


@pytest.mark.parametrize(("clinic", "notice"), [("", ""), (HOSTILE, HOSTILE), ("Clinic", STRINGS["en"]["notice_sent"])])
def test_clinic_and_notice_are_the_template_s(clinic, notice):
    built, reference = _both(clinic=clinic, notice=notice)
    assert built == reference
    assert "<script>" not in built
    assert ('<footer class="pt-footer">' in built) == bool(clinic)


@pytest.mark.parametrize(("lang", "can_act", "provider", "location", "kind"),
                         list(itertools.product(sorted(STRINGS), (True, False), ("", "Dr <Who>"), ("", "Room & 1"),
                                                ("", "Follow-up"))))
def test_every_appointment_shape_is_the_template_s(lang, can_act, provider, location, kind):
    appointment = _appointment(lang, can_act=can_act, provider=provider, location=location, kind=kind)
    built, reference = _both(lang=lang, appointment=appointment)
    assert built == reference


ERRORS = [{"body": ["Write a message.", HOSTILE]}, {"note": [HOSTILE]}, {"action": ["Too late <now>."]},
          {"action": ["a"], "note": ["b"], "body": ["c"]}, {"other": ["a field the page has no place for"]}]


@pytest.mark.parametrize("errors", ERRORS)
@pytest.mark.parametrize("can_act", [True, False, None])
def test_errors_and_values_are_the_template_s(errors, can_act):
    appointment = None if can_act is None else _appointment("en", can_act=can_act)
    built, reference = _both(appointment=appointment, errors=errors, values={"note": HOSTILE, "body": HOSTILE + "\n2"})
    assert built == reference
    assert built.startswith("<!doctype html>\n<html lang=\"en\">") and f"<title>{STRINGS['en']['error_prefix']}: " in built
    assert "<script>" not in built
