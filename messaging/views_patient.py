"""The patient's secure page (/s/): what a patient sees after tapping the link in an SMS.

The patient is not a Django user and TenantMiddleware sets no tenant for them. Each view finds
its tenant from the row a secret points at (``routing.link_for_token`` for the link,
``routing.patient_session`` for the ``ct_patient`` cookie) and does everything else inside
that row's tenant scope. Nothing the browser sends names a thread, a patient or a clinic:
a session is bound to one link, one thread and one patient, so there is no id to swap.

Flow: ``/s/<token>`` exchanges a usable link for a session cookie and 303s to ``/s/`` (the token
leaves the address bar) → date of birth → a texted code when the thread is a result notice or
the link is older than 24 h → the thread (reply, appointment answer, who at the clinic read it).

What protects the patient here:
- unknown, expired, revoked, superseded and locked links get one byte-identical page and one
  status (404), as does an IP over its open limit; the page names no clinic;
- the token is never logged: the link view answers 4xx itself and marks the response as
  logged, so Django's request logger does not print ``Not Found: /s/<token>``;
- nothing about the patient or the thread is shown before verification, only the clinic name;
- every response is ``Cache-Control: no-store`` under the site's strict CSP (no script at all:
  every page works as plain forms). ``Referrer-Policy`` is ``no-referrer`` on the link, the
  neutral page and the ended page, and ``same-origin`` on pages with forms: under
  ``no-referrer`` a browser sends ``Origin: null`` with a form POST (Fetch standard, "append a
  request Origin header") and Django's CSRF check refuses it. Nothing leaves for another site
  either way: after the 303 no URL here carries a secret, and the pages link nowhere else;
- all writes go through ``messaging.links`` / ``messaging.services`` (audited there); POSTs are
  CSRF-checked and answer 303 (PRG).
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
from html import escape as _escape
from zoneinfo import ZoneInfo

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.template.loader import get_template
from django.templatetags.static import static
from django.urls import get_script_prefix, get_urlconf, reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.text import normalize_newlines

from accounts.errors import ApplicationError
from accounts.requestmeta import current_request_meta
from accounts.tenancy import tenant_scope
from messaging import links, patient_html, routing, selectors, services
from messaging.models import Direction, PatientSession
from messaging.patient_i18n import (
    LANGUAGE_NAMES,
    STRINGS,
    format_datetime,
    language_or_default,
    service_message,
)
from patients.models import AppointmentStatus

COOKIE = "ct_patient"
COOKIE_PATH = "/s/"
NOTICES = ("sent", "confirm", "cancel", "reschedule", "code_sent", "language", "verified")
ACTIONABLE = (AppointmentStatus.BOOKED, AppointmentStatus.CONFIRMED, AppointmentStatus.RESCHEDULE_REQUESTED)
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_CODE_RE = re.compile(r"[0-9]{6}")


# --- what every patient response carries -------------------------------------------------------------


def _private(response: HttpResponse, *, forms: bool = False) -> HttpResponse:
    """PHI never sits in a cache, and no page hands its URL to another site. The CSP comes
    from SecurityHeadersMiddleware (setdefault: we do not touch it). ``forms``: the page posts
    forms, so the browser must send its real Origin to our own site (see the module docstring)."""
    response["Cache-Control"] = "no-store"
    # Set here, before SecurityMiddleware's setdefault(SECURE_REFERRER_POLICY).
    response["Referrer-Policy"] = "same-origin" if forms else "no-referrer"
    response["X-Robots-Tag"] = "noindex, nofollow"
    patch_vary_headers(response, ["Cookie"])
    return response


def _unlogged(response: HttpResponse) -> HttpResponse:
    # Django's BaseHandler logs every 4xx as "<reason>: <request.path>" (django.request); on
    # /s/<token> the path is the secret. This flag is how Django itself avoids logging twice.
    response._has_been_logged = True
    return response


@functools.cache
def _strings(lang: str) -> dict[str, str]:
    """The page's words in ``lang`` (built once per language: templates only read them)."""
    return {k: v.replace("{max}", str(services.PATIENT_REPLY_MAX)) for k, v in STRINGS[lang].items()}


@functools.cache
def _strings_html(lang: str) -> dict[str, str]:
    """``_strings(lang)`` escaped once, for the pages built in Python (``patient_html``)."""
    return {k: _escape(v) for k, v in _strings(lang).items()}


def _neutral(request: HttpRequest) -> HttpResponse:
    """The one page for every link that cannot be used. It must not depend on the link (not
    even its clinic or language): the bytes would tell a guesser which tokens exist."""
    response = render(request, "messaging/patient/invalid.html",
                      {"t": STRINGS["en"], "t_es": STRINGS["es"], "u": _urls()}, status=404)
    return _unlogged(_private(response))


def _ended(request: HttpRequest, *, signed_out: bool = False) -> HttpResponse:
    """No session, a forged or ended one, or one that idled out: one page (200), cookie cleared."""
    title, body = ("signed_out_title", "signed_out_body") if signed_out else ("ended_title", "ended_body")
    en, es = STRINGS["en"], STRINGS["es"]
    response = render(request, "messaging/patient/ended.html", {
        "title": en[title], "body": en[body], "title_es": es[title], "body_es": es[body], "u": _urls()})
    response.delete_cookie(COOKIE, path=COOKIE_PATH, samesite="Lax")
    return _private(response)


def _set_cookie(response: HttpResponse, key: str) -> None:
    """HttpOnly, Lax, /s/ only, and never longer-lived than the idle window (renewed on each
    request). Secure follows SECURE_COOKIES (off only for DEBUG, the demo and tests)."""
    response.set_cookie(COOKIE, key, max_age=int(links.SESSION_IDLE.total_seconds()), path=COOKIE_PATH,
                        secure=settings.SECURE_COOKIES, httponly=True, samesite="Lax")


# The patient pages' fixed addresses (``{{ u.<name> }}`` in the templates), reversed once per
# process (per script prefix, URL conf and static URL): a ``reverse`` costs more than the rest of a
# small page, and the two ``{% static %}`` tags base.html had cost 18 µs a page.
_URL_NAMES = ("home", "verify", "code", "code-send", "reply", "appointment", "language", "signout")
_STATIC_FILES = {"css": "css/patient.css", "favicon": "img/favicon.svg"}
_page_urls: dict[tuple, dict[str, str]] = {}


def _urls() -> dict[str, str]:
    key = (get_script_prefix(), get_urlconf() or settings.ROOT_URLCONF, settings.STATIC_URL)
    urls = _page_urls.get(key)
    if urls is None:
        urls = {name.replace("-", "_"): reverse(f"patient-{name}") for name in _URL_NAMES}
        urls.update({name: static(path) for name, path in _STATIC_FILES.items()})
        _page_urls[key] = urls
    return urls


def _see_other(notice: str = "") -> HttpResponse:
    url = _urls()["home"]
    return HttpResponseRedirect(f"{url}?ok={notice}" if notice else url, status=303)


def _client_ip() -> str | None:
    return current_request_meta().get("ip")


# --- the link ------------------------------------------------------------------------------------------


def patient_link_view(request: HttpRequest, token: str) -> HttpResponse:
    """Exchange the SMS link for a session cookie, then 303 to /s/ so the token leaves the bar."""
    if request.method not in ("GET", "HEAD"):
        return _unlogged(_private(HttpResponseNotAllowed(["GET", "HEAD"])))
    # Count first, so a guesser over the limit learns nothing, not even whether a token exists.
    if not links.ip_allowed("open", _client_ip(), links.IP_OPENS_PER_WINDOW):
        return _neutral(request)
    link = routing.link_for_token(token)
    if link is None or not link.tenant.is_active:
        return _neutral(request)
    with tenant_scope(link.tenant):
        if not links.link_usable(link):
            return _neutral(request)
        _, key = links.patient_session_start(tenant=link.tenant, link=link)
    response = _private(_see_other())
    _set_cookie(response, key)
    return response


# --- the session gate -------------------------------------------------------------------------------------


def _patient_view(methods: tuple[str, ...], *, verified: bool = False):
    """Decorate a page that needs a live patient session: find it from the cookie, open its
    tenant's scope, end it politely if it is gone, touch it (idle timer) and renew the cookie.
    ``verified``: the view needs the birth date (and code, if required) done; otherwise → /s/."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method not in methods:
                return _private(HttpResponseNotAllowed(methods))
            key = request.COOKIES.get(COOKIE, "")
            # The session, its clinic's scope, link, thread, patient (and on PostgreSQL the
            # appointment) in one statement. Elsewhere the appointment is loaded for the thread
            # page only (GET; a POST shows it again only on an error, when one more query does
            # not matter).
            with routing.patient_session(key, appointment=request.method == "GET") as row:
                if row is None:
                    return _ended(request, signed_out=request.GET.get("signed_out") == "1")
                state = links.session_state(row)
                if state is None:
                    return _ended(request)
                links.session_touch(row)
                if verified and not state.verified:
                    response = _see_other()
                else:
                    response = view(request, state, *args, **kwargs)
            # A redirect (the 303 after a POST) leads to /s/, whose answer renews the cookie: renewing
            # it on the redirect as well was work for nothing. Sign-out and a lock delete it.
            if COOKIE not in response.cookies and not 300 <= response.status_code < 400:
                _set_cookie(response, key)
                return _private(response, forms=True)
            return _private(response)

        return wrapper

    return decorator


def _lang(state) -> str:
    return language_or_default(state.session.language)


def _render(request, state, template: str, context: dict | None = None, status: int = 200) -> HttpResponse:
    """A page of a live session (it has forms: the footer's language and sign-out). Rendered with
    this context and the CSRF token only, not the site's context processors: those are the staff
    pages' (the clinic's navigation, the signed-in user, flash messages), which no patient template
    reads, and cost a tenth of a millisecond a page."""
    lang = _lang(state)
    base = {"t": _strings(lang), "lang": lang, "clinic": state.session.tenant.name, "languages": LANGUAGE_NAMES,
            "notice": _notice(request, lang), "u": _urls(),
            "csrf_token": get_token(request)}
    return HttpResponse(get_template(template).render({**base, **(context or {})}), status=status)


def _notice(request, lang: str) -> str:
    """What the 303 after a POST asked the page to say (``?ok=…``), in ``lang``; "" for anything else."""
    notice = request.GET.get("ok", "")
    return _strings(lang)[f"notice_{notice}"] if notice in NOTICES else ""


def _field_errors(exc: ApplicationError, lang: str) -> dict[str, list[str]]:
    return {name: [service_message(lang, m, max=services.PATIENT_REPLY_MAX) for m in messages]
            for name, messages in exc.fields.items()}


@_patient_view(("GET", "HEAD"))
def patient_home_view(request: HttpRequest, state) -> HttpResponse:
    return _home(request, state)


def _home(request, state, *, status: int = 200) -> HttpResponse:
    """The step the session is at: birth date, then the code (if needed), then the thread."""
    if not state.dob_ok:
        return _verify_page(request, state, status=status)
    if state.code_needed:
        return _code_page(request, state, status=status)
    return _thread_page(request, state, status=status)


# --- step 1: date of birth ------------------------------------------------------------------------------------


def _verify_page(request, state, *, errors=None, values=None, message: str = "", status: int = 200):
    lang = _lang(state)
    t = _strings(lang)
    order = ("day", "month", "year") if lang == "es" else ("month", "day", "year")
    sizes = {"day": 2, "month": 2, "year": 4}
    errors, values = errors or {}, values or {}
    fields = [{"name": n, "label": t[n], "autocomplete": f"bday-{n}", "size": sizes[n], "value": values.get(n, ""),
               "errors": errors.get(n, [])} for n in order]
    return _render(request, state, "messaging/patient/verify.html",
                   {"fields": fields, "message": message, "has_errors": bool(errors or message)}, status)


@_patient_view(("POST",))
def patient_verify_view(request: HttpRequest, state) -> HttpResponse:
    if state.dob_ok:
        return _see_other()
    t, ip = _strings(_lang(state)), _client_ip()
    values = {n: request.POST.get(n, "")[:8] for n in ("day", "month", "year")}
    try:
        birth_date = links.parse_birth_date(**values)
    except ApplicationError as exc:  # a typo is not a wrong answer: not counted
        return _verify_page(request, state, errors=_field_errors(exc, _lang(state)), values=values,
                            message=t["check_date"], status=400)
    if links.ip_blocked("verify", ip, links.IP_FAILURES_PER_WINDOW):
        return _verify_page(request, state, message=t["too_many_tries"], status=429)
    tenant = state.session.tenant
    if links.verify_birth_date(tenant=tenant, session=state.session, birth_date=birth_date):
        return _see_other("verified")
    links.ip_allowed("verify", ip, links.IP_FAILURES_PER_WINDOW)
    if links.session_state(_reloaded(state.session)) is None:  # that answer locked the link
        return _locked(request)
    # Never say how many tries remain: that would tell a guesser how close the lock is.
    return _verify_page(request, state, message=t["no_match"], status=400)


def _reloaded(session: PatientSession) -> PatientSession:
    session.refresh_from_db(fields=["ended_at", "dob_verified_at", "code_verified_at", "code_sent_at", "last_seen_at"])
    session.link.refresh_from_db(fields=["locked_until", "revoked_at", "revoked_reason", "expires_at",
                                         "failed_attempts"])
    return session


def _locked(request: HttpRequest) -> HttpResponse:
    response = _neutral(request)
    response.delete_cookie(COOKIE, path=COOKIE_PATH, samesite="Lax")
    return response


# --- step 2 (result notices, links older than 24 h): a texted code -----------------------------------------


def _code_page(request, state, *, errors=None, message: str = "", status: int = 200):
    sent = _reloaded(state.session).code_sent_at is not None
    return _render(request, state, "messaging/patient/code.html",
                   {"sent": sent, "errors": errors or {}, "message": message}, status)


@_patient_view(("POST",))
def patient_code_send_view(request: HttpRequest, state) -> HttpResponse:
    if not (state.dob_ok and state.code_needed):
        return _see_other()
    try:
        links.code_send(tenant=state.session.tenant, session=state.session)
    except ApplicationError as exc:
        status = 429 if exc.code in ("too_soon", "too_many") else 400
        return _code_page(request, state, message=service_message(_lang(state), exc.message), status=status)
    return _see_other("code_sent")


@_patient_view(("POST",))
def patient_code_view(request: HttpRequest, state) -> HttpResponse:
    if not (state.dob_ok and state.code_needed):
        return _see_other()
    t, ip = _strings(_lang(state)), _client_ip()
    code = request.POST.get("code", "").strip().replace(" ", "")
    if not _CODE_RE.fullmatch(code):  # a typo is not a wrong answer: not counted
        return _code_page(request, state, errors={"code": [t["err_code_format"]]}, status=400)
    if links.ip_blocked("verify", ip, links.IP_FAILURES_PER_WINDOW):
        return _code_page(request, state, message=t["too_many_tries"], status=429)
    if links.verify_code(tenant=state.session.tenant, session=state.session, code=code):
        return _see_other("verified")
    links.ip_allowed("verify", ip, links.IP_FAILURES_PER_WINDOW)
    if links.session_state(_reloaded(state.session)) is None:
        return _locked(request)
    return _code_page(request, state, message=t["code_wrong"], status=400)


# --- the thread ---------------------------------------------------------------------------------------------------


def _zone(patient, tenant) -> ZoneInfo:
    try:
        return ZoneInfo(patient.timezone or tenant.timezone)
    except (ValueError, KeyError):
        return ZoneInfo(tenant.timezone)


def _when(lang: str, moment, zone: ZoneInfo, *, weekday: bool = False) -> str:
    return format_datetime(lang, timezone.localtime(moment, zone), weekday=weekday)


def _appointment(appointment, lang: str, zone: ZoneInfo) -> dict | None:
    if appointment is None:
        return None
    t = _strings(lang)
    return {"when": _when(lang, appointment.starts_at, zone, weekday=True), "provider": appointment.provider_name,
            "location": appointment.location_name, "type": appointment.appointment_type,
            "status": t.get(f"status_{appointment.status}", appointment.get_status_display()),
            "can_act": appointment.status in ACTIONABLE and appointment.starts_at > timezone.now()}


# One message of the thread and one entry of the access list, built here with every value escaped
# (``html.escape``, what ``escape`` applies to a plain string) because 20 messages through the
# template engine (lookups, tags, autoescape per value) were a third of the page's rendering
# (as the staff inbox's rows: ``views_staff._ROW_HTML``). Change the markup here; escape every
# value put into it. ``patient_html.thread_page`` prints the joined items inside its <ol>/<ul>.
_MESSAGE_HTML = ('\n    <li class="pt-message {}">\n'
                 '      <p class="pt-meta"><strong>{}</strong> · <span>{}</span></p>\n'
                 '      <p class="pt-body">{}</p>\n'
                 '    </li>')
_ACCESS_HTML = "<li><strong>{}</strong> · {}</li>"
_NO_ERRORS = {"action": (), "note": (), "body": ()}
_NO_VALUES = {"note": "", "body": ""}


def _thread_page(request, state, *, errors=None, values=None, status: int = 200) -> HttpResponse:
    """The verified patient's thread: opening it is audited (THREAD_OPENED by the patient)."""
    session, lang = state.session, _lang(state)
    tenant = session.tenant
    opened = selectors.patient_thread_open(tenant=tenant, session=session)  # also marks them read
    thread = opened.thread
    zone = _zone(thread.patient, tenant)
    # What each message shows: the side, who wrote it, when, and the body escaped with its line
    # breaks kept.
    mine, theirs = ("pt-mine", _escape(_strings(lang)["from_you"])), ("pt-theirs", _escape(tenant.name))
    items = []
    for m in opened.messages:
        side, who = mine if m.direction == Direction.INBOUND else theirs
        items.append(_MESSAGE_HTML.format(side, who, _escape(_when(lang, m.created_at, zone)), _body_html(m.body)))
    access = [_ACCESS_HTML.format(_escape(e.who), _escape(_when(lang, e.at, zone)))
              for e in opened.access]
    html = patient_html.thread_page(
        t=_strings_html(lang), lang=lang, clinic=tenant.name, notice=_notice(request, lang),
        urls=_urls(), csrf_token=get_token(request), appointment=_appointment(thread.appointment, lang, zone),
        has_errors=bool(errors), errors={**_NO_ERRORS, **(errors or {})}, values={**_NO_VALUES, **(values or {})},
        messages_html="".join(items), access_html="\n    ".join(access), nonce=secrets.token_urlsafe(16),
        reply_max=services.PATIENT_REPLY_MAX)
    return HttpResponse(html, status=status)


def _body_html(body: str) -> str:
    """A message body as HTML: escaped, line breaks as ``<br>`` (the ``linebreaksbr`` filter)."""
    body = body or ""
    if "\r" in body:
        body = normalize_newlines(body)
    return _escape(body).replace("\n", "<br>")


def _reply_key(session: PatientSession, nonce: str) -> str:
    """The idempotency key for a reply form: the form's nonce bound to this session, so a
    double submit stores one message and no client can pick a key used elsewhere."""
    if not _NONCE_RE.fullmatch(nonce or ""):
        return ""
    return "pt:" + hashlib.sha256(f"{session.pk}:{nonce}".encode()).hexdigest()[:60]


@_patient_view(("POST",), verified=True)
def patient_reply_view(request: HttpRequest, state) -> HttpResponse:
    body = request.POST.get("body", "")
    try:
        services.patient_reply(tenant=state.session.tenant, session=state.session, body=body,
                               idempotency_key=_reply_key(state.session, request.POST.get("nonce", "")))
    except ApplicationError as exc:
        return _thread_page(request, state, errors=_field_errors(exc, _lang(state)),
                            values={"body": body[:services.PATIENT_REPLY_MAX * 2]}, status=400)
    return _see_other("sent")


@_patient_view(("POST",), verified=True)
def patient_appointment_view(request: HttpRequest, state) -> HttpResponse:
    action, note = request.POST.get("action", ""), request.POST.get("note", "")
    try:
        services.patient_appointment_action(tenant=state.session.tenant, session=state.session, action=action,
                                            note=note)
    except ApplicationError as exc:
        errors = _field_errors(exc, _lang(state))
        return _thread_page(request, state, errors=errors, values={"note": note[:services.PATIENT_REPLY_MAX * 2]},
                            status=409 if exc.code == "conflict" else 400)
    return _see_other(action)


# --- language and sign-out ------------------------------------------------------------------------------------


@_patient_view(("POST",))
def patient_language_view(request: HttpRequest, state) -> HttpResponse:
    lang = request.POST.get("lang", "")
    if lang not in STRINGS:  # only a hand-made request sends another value
        return _home(request, state, status=400)
    links.patient_session_set_language(session=state.session, language=lang)
    return _see_other("language")


@_patient_view(("POST",))
def patient_signout_view(request: HttpRequest, state) -> HttpResponse:
    links.patient_sign_out(tenant=state.session.tenant, session=state.session)
    response = HttpResponseRedirect(f"{_urls()['home']}?signed_out=1", status=303)
    response.delete_cookie(COOKIE, path=COOKIE_PATH, samesite="Lax")
    return response
