"""Staff pages for secure messaging: the shared inbox, one conversation, compose, saved
replies, triage of texts from unknown numbers and the demo's SMS outbox.

Thin: each view validates a form, then calls one service or selector. Every page that shows
message bodies opens the thread through ``selectors.thread_open`` (THREAD_OPENED); lists go
through selectors that write PATIENT_SEARCHED. POSTs redirect back (PRG) with a flash that
never carries PHI (the flash lives in the session). Another clinic's ids are 404 (the
selectors raise NotFound, ``staff_view`` renders it). Times are shown in the clinic's zone.
"""

from __future__ import annotations

import uuid
from html import escape as _escape

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.safestring import mark_safe

from accounts import permissions as perms
from accounts.context_processors import NAV_UNREAD
from accounts.decorators import permission_denied, staff_view
from accounts.errors import ApplicationError, NotFound
from accounts.forms import apply_service_errors
from accounts.selectors import colleague_list_with_permission
from messaging import links, selectors, services
from messaging.forms import (
    AssignForm,
    ComposeForm,
    InboxFilterForm,
    LinkActionForm,
    NoteForm,
    ReplyForm,
    ReplyTemplateForm,
    StatusForm,
)
from messaging.models import MessageKind, SmsStatus, Thread, ThreadStatus
from patients import selectors as patient_selectors
from patients.services import clinic_zone
from patients.validation import phone_display

_BOX_LABELS = {"unassigned": "Unassigned", "mine": "Mine", "all": "All open", "closed": "Closed"}


def _render(request: HttpRequest, template: str, context: dict, status: int = 200) -> HttpResponse:
    """Render in the clinic's time zone, with what the user may do on the page."""
    granted = request.permissions
    can = {"send": perms.MESSAGES_SEND in granted, "results": perms.RESULTS_SEND in granted,
           "view_phi": perms.PATIENTS_VIEW_PHI in granted}
    with timezone.override(clinic_zone(request.tenant)):
        return render(request, template, {**context, "can_messaging": can,
                                          "sms_local": settings.SMS_GATEWAY == "local"}, status=status)


def _members(request: HttpRequest) -> list:
    """Colleagues a thread may be assigned to: active members who may read messages (users with
    their id, email and name loaded)."""
    return colleague_list_with_permission(tenant=request.tenant, permission=perms.MESSAGES_VIEW)


def _member(members: list, user_id: int | None):
    return next((u for u in members if u.pk == user_id), None)


# --- the inbox ------------------------------------------------------------------------------------


def _tabs(counts: selectors.InboxCounts) -> list[dict]:
    unread = {"unassigned": counts.unread_unassigned, "mine": counts.unread_mine, "all": counts.unread_all,
              "closed": 0}
    return [{"box": box, "label": label, "count": getattr(counts, box), "unread": unread[box]}
            for box, label in _BOX_LABELS.items()]


@staff_view(perms.MESSAGES_VIEW)
def inbox_view(request: HttpRequest) -> HttpResponse:
    counts, members = selectors.inbox_counts_and_colleagues(tenant=request.tenant, user=request.user,
                                                            permission=perms.MESSAGES_VIEW)  # as _members
    form = InboxFilterForm(request.GET, members=members)
    context = {"form": form, "tabs": _tabs(counts), "counts": counts, "page": None, "box": "unassigned"}
    if not form.is_valid():
        return _render(request, "messaging/staff/inbox.html", context, status=400)
    data = form.cleaned_data
    box = data["box"] or "unassigned"
    page = selectors.inbox_page(tenant=request.tenant, user=request.user, box=box, assignee_id=data["assignee"],
                                kind=data["kind"], page=data["page"] or 1, counts=counts)
    filtered = bool(data["assignee"] or data["kind"])
    return _render(request, "messaging/staff/inbox.html",
                   {**context, **_live_context(request, counts), "page": page, "rows": _inbox_rows(request, page, box),
                    "box": box, "box_label": _BOX_LABELS[box], "filtered": filtered,
                    "filter_selects": _filter_selects(form)})


def _filter_selects(form: InboxFilterForm) -> list[dict]:
    """The two filter selects of a valid filter form, for inbox.html to print as plain markup
    (the same as field.html and Django's select widget print, without their dozen template
    renders). A form with errors is rendered through field.html, which wires up the errors."""
    selects = []
    for name in ("assignee", "kind"):
        field, raw = form.fields[name], form[name].value()
        chosen = "" if raw is None else str(raw)
        options = [(str(value), label, str(value) == chosen) for value, label in field.choices]
        selects.append({"name": name, "label": field.label, "options": options})
    return selects


def _live_context(request: HttpRequest, counts: selectors.InboxCounts) -> dict:
    """What the inbox's polling element needs: the filters to keep and the list's fingerprint.
    Also the nav's unread count: the box counts already hold it (``unread_sum``), so the
    context processor's own query is not needed."""
    keep = {k: v for k, v in request.GET.items() if k in ("box", "assignee", "kind", "page") and v}
    setattr(request, NAV_UNREAD, counts.unread_sum or 0)  # the header's Inbox link (base.html) shows it too
    return {"live_query": urlencode({**keep, "v": selectors.inbox_fingerprint(counts)}),
            "poll_seconds": settings.STAFF_POLL_SECONDS, "inbox_unread": counts.unread_sum or 0}


_URL_SLOT = uuid.UUID(int=0)
_KIND_LABELS = dict(MessageKind.choices)

# One inbox row (``_inbox_list.html`` prints ``row.html``), built here with every value escaped
# (``html.escape``) unless it is markup built below, because rendering 25 rows through the template
# engine (a dozen lookups, tags and filters each) was most of the page's rendering. Change the
# row's markup here; escape every value put into it.
_ROW_HTML = ('<tr class="{}">\n'
             '      <td><a class="thread-link" href="{}">{}</a></td>\n'
             '      <td>{}</td>\n'
             '      <td>{}</td>\n'
             '      <td><time datetime="{}">{}</time></td>\n'
             '      <td>{}</td>\n'
             '    </tr>')
_UNASSIGNED = mark_safe('<span class="muted">Unassigned</span>')  # nosec B308 B703  # fixed markup
_URGENT = '<span class="badge badge-urgent">URGENT</span>'
_LOCKED = '<span class="badge badge-locked">link locked</span>'
_CLOSED = '<span class="muted">Closed</span>'


def _badges(t: Thread) -> str:
    badges = []
    if t.urgent:
        badges.append(_URGENT)
    if t.staff_unread:
        badges.append(f'<span class="badge badge-unread">{int(t.staff_unread)} unread</span>')
    if t.link_locked_at:
        badges.append(_LOCKED)
    if t.status == ThreadStatus.CLOSED:
        badges.append(_CLOSED)
    return mark_safe(" ".join(badges))  # noqa: S308  # nosec B308 B703  # fixed markup and an integer


def _inbox_rows(request: HttpRequest, page, box: str) -> list[dict]:
    """The listed threads as the table prints them, worked out once here rather than by template
    lookups, filters and ``{% url %}`` per row. Times in the clinic's zone, as the page says.
    Each value is escaped with ``html.escape``, which is what ``format_html``/``escape`` apply to
    a plain string, without their lazy-string checks (a few hundred calls a page)."""
    zone = clinic_zone(request.tenant)
    url = reverse("messaging-thread", args=[_URL_SLOT])
    slot, box_query = str(_URL_SLOT), f"?box={box}"
    rows = []
    for t in page.object_list:
        patient, assignee, when = t.patient, t.assigned_to, timezone.localtime(t.last_activity_at, zone)
        row = {
            "url": url.replace(slot, str(t.pk)) + box_query,
            "name": f"{patient.given_name} {patient.family_name}",
            "kind": _KIND_LABELS.get(t.kind, t.kind),
            "assignee": (assignee.full_name or assignee.email) if assignee else "",
            "iso": when.isoformat(), "when": when.strftime("%Y-%m-%d %H:%M"),
            "thread": t,
        }
        row["html"] = mark_safe(_ROW_HTML.format(  # noqa: S308  # nosec B308 B703  # every value escaped here
            "unread" if t.staff_unread else "", _escape(row["url"]), _escape(row["name"]), _escape(str(row["kind"])),
            _escape(row["assignee"]) if assignee else _UNASSIGNED, _escape(row["iso"]), _escape(row["when"]),
            _badges(t)))
        rows.append(row)
    return rows


@staff_view(perms.MESSAGES_VIEW)
def inbox_live_view(request: HttpRequest) -> HttpResponse:
    """The inbox's background poll. 204 while nothing changed (no names listed, nothing audited);
    otherwise the list again (audited like the page) with the tabs and the nav's unread count."""
    counts = selectors.inbox_counts(tenant=request.tenant, user=request.user)
    if request.GET.get("v") == selectors.inbox_fingerprint(counts):
        return HttpResponse(status=204)
    form = InboxFilterForm(request.GET, members=_members(request))
    if not form.is_valid():
        return HttpResponse(_field_errors(form), status=400, content_type="text/plain")
    data = form.cleaned_data
    box = data["box"] or "unassigned"
    page = selectors.inbox_page(tenant=request.tenant, user=request.user, box=box, assignee_id=data["assignee"],
                                kind=data["kind"], page=data["page"] or 1, counts=counts)
    context = {**_live_context(request, counts), "page": page, "rows": _inbox_rows(request, page, box), "box": box,
               "tabs": _tabs(counts),
               "filtered": bool(data["assignee"] or data["kind"]), "oob": True}
    return _render(request, "messaging/staff/_inbox_live.html", context)


def _field_errors(form) -> str:
    return "; ".join(f"{name}: {' '.join(errors)}" for name, errors in form.errors.items())


# --- one conversation -------------------------------------------------------------------------------


def _refusal(tenant, thread: Thread) -> str | None:
    sms_kind = services.sms_kind_for(thread, thread.kind, timezone.now())
    return services.send_refusal(tenant=tenant, patient=thread.patient, sms_kind=sms_kind)


def _can_reply(request: HttpRequest, thread: Thread) -> bool:
    if perms.MESSAGES_SEND not in request.permissions:
        return False
    return thread.kind != MessageKind.RESULT_NOTICE or perms.RESULTS_SEND in request.permissions


def _thread_page(request: HttpRequest, thread_id, *, status: int = 200, **forms) -> HttpResponse:
    """The conversation. Opening it is audited (THREAD_OPENED) and resets the unread count, also
    when it is shown again with a form's errors (the page shows the bodies again)."""
    tenant = request.tenant
    thread = selectors.thread_open(tenant=tenant, actor=request.user, thread_id=thread_id)
    templates = selectors.reply_templates(tenant=tenant)
    members = _members(request)
    context = {
        "thread": thread,
        "now": timezone.now(),
        "patient": thread.patient,
        "thread_messages": selectors.thread_messages(tenant=tenant, thread=thread),
        "sms_rows": selectors.thread_sms(tenant=tenant, thread=thread),
        "link_rows": [{"link": link, "state": selectors.link_state_now(link)}
                      for link in selectors.thread_links(tenant=tenant, thread=thread)],
        "refusal": _refusal(tenant, thread),
        "can_reply": _can_reply(request, thread),
        "templates": templates,
        "me_assignable": _member(members, request.user.pk) is not None,
        "reply_form": forms.get("reply_form") or ReplyForm(templates=templates),
        "note_form": forms.get("note_form") or NoteForm(),
        "assign_form": forms.get("assign_form") or AssignForm(members=members,
                                                              initial={"assignee": thread.assigned_to_id}),
        "status_form": forms.get("status_form"),
        "link_form": forms.get("link_form"),
    }
    box = _box_of(request, thread)
    previous, following = selectors.thread_neighbours(tenant=tenant, user=request.user, thread=thread, box=box)
    context.update({"box": box, "previous_thread": previous, "next_thread": following,
                    "poll": _poll_context(thread, context["thread_messages"], selectors.unread_total(tenant=tenant))})
    return _render(request, "messaging/staff/thread.html", context, status=status)


def _box_of(request: HttpRequest, thread: Thread) -> str:
    """The inbox tab the conversation was opened from (``?box=``), for its next/previous links."""
    box = request.GET.get("box", "")
    if box in _BOX_LABELS:
        return box
    return "closed" if thread.status == ThreadStatus.CLOSED else "all"


def _poll_context(thread: Thread, shown: list, unread: int) -> dict:
    """The conversation's polling element: ask for messages after the last one shown, and
    say which unread count the page shows (the nav badge is re-sent only when it changed)."""
    query = {"unread": unread}
    if shown:
        query["after"] = str(shown[-1].pk)
    return {"url": reverse("messaging-thread-messages", args=[thread.pk]) + "?" + urlencode(query),
            "seconds": settings.STAFF_POLL_SECONDS}


@staff_view(perms.MESSAGES_VIEW)
def thread_messages_view(request: HttpRequest, thread_id) -> HttpResponse:
    """The open conversation's background poll (``GET ?after=<message id>&unread=<n>``): the
    messages after ``after`` (audited as THREAD_OPENED only when there are any), and the nav's
    unread count when it changed. 204 when there is nothing new."""
    thread = services.thread_get(tenant=request.tenant, thread_id=thread_id)
    after = None
    if request.GET.get("after"):
        try:
            after = selectors.thread_message_get(tenant=request.tenant, thread=thread,
                                                 message_id=uuid.UUID(request.GET["after"]))
        except (ValueError, NotFound):
            return HttpResponse("after: not a message of this conversation.", status=400, content_type="text/plain")
    unread = selectors.unread_total(tenant=request.tenant)
    shown_unread = request.GET.get("unread", "")
    new = selectors.thread_messages_after(tenant=request.tenant, actor=request.user, thread=thread, after=after)
    unread_changed = shown_unread != str(unread)
    if not new and not unread_changed:
        return HttpResponse(status=204)
    context = {"thread": thread, "now": timezone.now(), "new_messages": new, "oob": True,
               "nav_unread": unread if unread_changed else None,
               "poll": _poll_context(thread, new or ([after] if after else []), unread)}
    return _render(request, "messaging/staff/_messages_poll.html", context)


@staff_view(perms.MESSAGES_VIEW)
def thread_view(request: HttpRequest, thread_id) -> HttpResponse:
    return _thread_page(request, thread_id)


def _body_from(request: HttpRequest, form, *, patient, appointment=None) -> str:
    """The typed body, or the chosen saved reply filled in for the patient when none was typed."""
    body, template_id = form.cleaned_data["body"], form.cleaned_data["template"]
    if body.strip() or not template_id:
        return body
    template = selectors.reply_template_get(tenant=request.tenant, template_id=template_id)
    return services.reply_template_render(tenant=request.tenant, template=template, patient=patient,
                                          appointment=appointment)


@staff_view(perms.MESSAGES_SEND, methods=("POST",))
def thread_reply_view(request: HttpRequest, thread_id) -> HttpResponse:
    thread = services.thread_get(tenant=request.tenant, thread_id=thread_id)
    if thread.kind == MessageKind.RESULT_NOTICE and perms.RESULTS_SEND not in request.permissions:
        return permission_denied(request, perms.RESULTS_SEND)
    form = ReplyForm(request.POST, templates=selectors.reply_templates(tenant=request.tenant))
    if form.is_valid():
        try:
            body = _body_from(request, form, patient=thread.patient, appointment=thread.appointment)
            services.message_send(tenant=request.tenant, actor=request.user, thread=thread, body=body,
                                  idempotency_key=form.cleaned_data["idempotency_key"])
        except ApplicationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, "Reply sent. The patient gets a text with a secure link to read it.")
            return redirect("messaging-thread", thread_id=thread.pk)
    return _thread_page(request, thread.pk, status=400, reply_form=form)


@staff_view(perms.MESSAGES_SEND, methods=("POST",))
def thread_note_view(request: HttpRequest, thread_id) -> HttpResponse:
    thread = services.thread_get(tenant=request.tenant, thread_id=thread_id)
    form = NoteForm(request.POST)
    if form.is_valid():
        try:
            services.note_add(tenant=request.tenant, actor=request.user, thread=thread, body=form.cleaned_data["body"])
        except ApplicationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, "Internal note added. The patient never sees it.")
            return redirect("messaging-thread", thread_id=thread.pk)
    return _thread_page(request, thread.pk, status=400, note_form=form)


@staff_view(perms.MESSAGES_SEND, methods=("POST",))
def thread_assign_view(request: HttpRequest, thread_id) -> HttpResponse:
    thread = services.thread_get(tenant=request.tenant, thread_id=thread_id)
    members = _members(request)
    form = AssignForm(request.POST, members=members)
    if form.is_valid():
        assignee = _member(members, form.cleaned_data["assignee"])
        try:
            services.thread_assign(tenant=request.tenant, actor=request.user, thread=thread, assignee=assignee)
        except ApplicationError as exc:
            apply_service_errors(form, exc)
        else:
            mine = assignee is not None and assignee.pk == request.user.pk
            messages.success(request, "Conversation assigned to you." if mine else
                             "Conversation assigned." if assignee else "Conversation unassigned.")
            return redirect("messaging-thread", thread_id=thread.pk)
    return _thread_page(request, thread.pk, status=400, assign_form=form)


@staff_view(perms.MESSAGES_SEND, methods=("POST",))
def thread_status_view(request: HttpRequest, thread_id) -> HttpResponse:
    thread = services.thread_get(tenant=request.tenant, thread_id=thread_id)
    form = StatusForm(request.POST)
    if form.is_valid():
        try:
            thread = services.thread_set_status(tenant=request.tenant, actor=request.user, thread=thread,
                                                status=form.cleaned_data["status"])
        except ApplicationError as exc:
            apply_service_errors(form, exc)
        else:
            closed = thread.status == ThreadStatus.CLOSED
            messages.success(request, "Conversation closed." if closed else "Conversation reopened.")
            return redirect("messaging-thread", thread_id=thread.pk)
    return _thread_page(request, thread.pk, status=400, status_form=form)


@staff_view(perms.MESSAGES_SEND, methods=("GET", "POST"))
def compose_find_view(request: HttpRequest) -> HttpResponse:
    """"New message" from the inbox: find the patient (exact match, like the patients page;
    a POST, so nothing identifying lands in a URL), then write to them."""
    from patients.forms import PatientSearchForm

    form = PatientSearchForm(request.POST if request.method == "POST" else None)
    results, status = None, 200
    if request.method == "POST":
        if form.is_valid():
            try:
                _, results = patient_selectors.patient_search(tenant=request.tenant, actor=request.user,
                                                              **form.cleaned_data)
            except ApplicationError as exc:
                apply_service_errors(form, exc)
                status = 400
        else:
            status = 400
    return _render(request, "messaging/staff/compose_find.html", {"form": form, "results": results}, status=status)


@staff_view(perms.RESULTS_SEND, methods=("POST",))
def message_release_view(request: HttpRequest, message_id) -> HttpResponse:
    """Release a held result notice now (the clinician has spoken to the patient)."""
    message = services.message_get(tenant=request.tenant, message_id=message_id)
    services.message_release(tenant=request.tenant, actor=request.user, message=message)
    messages.success(request, "Released: the patient can read it now and will be texted a link.")
    return redirect("messaging-thread", thread_id=message.thread_id)


@staff_view(perms.MESSAGES_SEND, methods=("POST",))
def thread_link_view(request: HttpRequest, thread_id) -> HttpResponse:
    thread = services.thread_get(tenant=request.tenant, thread_id=thread_id)
    form = LinkActionForm(request.POST)
    if form.is_valid():
        try:
            notice = _link_action(request, thread, form.cleaned_data["action"])
        except ApplicationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, notice)
            return redirect("messaging-thread", thread_id=thread.pk)
    return _thread_page(request, thread.pk, status=400, link_form=form)


def _link_action(request: HttpRequest, thread: Thread, action: str) -> str:
    if action == "revoke":
        count = links.link_revoke(tenant=request.tenant, actor=request.user, thread=thread)
        return "Link revoked: it no longer opens this conversation." if count else "There was no live link to revoke."
    sms = services.link_resend(tenant=request.tenant, actor=request.user, thread=thread)
    if sms.status == SmsStatus.WAITING:
        return "A new link was queued. It is held for quiet hours or the daily text limit; older links stopped working."
    return "A new link is on its way to the patient; older links stopped working."


# --- compose --------------------------------------------------------------------------------------


def _compose_page(request: HttpRequest, patient, form, *, status: int = 200) -> HttpResponse:
    probe = Thread(last_inbound_at=None)  # a new conversation: the patient has not written
    sms_kind = services.sms_kind_for(probe, MessageKind.GENERAL, timezone.now())
    refusal = services.send_refusal(tenant=request.tenant, patient=patient, sms_kind=sms_kind)
    return _render(request, "messaging/staff/compose.html",
                   {"patient": patient, "form": form, "refusal": refusal}, status=status)


@staff_view(perms.MESSAGES_SEND, methods=("GET", "POST"))
def compose_view(request: HttpRequest, patient_id) -> HttpResponse:
    tenant, allow_results = request.tenant, perms.RESULTS_SEND in request.permissions
    templates = selectors.reply_templates(tenant=tenant)
    if request.method == "GET":  # the page names the patient: audited as a view
        patient = patient_selectors.patient_view(tenant=tenant, actor=request.user, patient_id=patient_id)
        return _compose_page(request, patient, ComposeForm(templates=templates, allow_results=allow_results))
    patient = patient_selectors.patient_get(tenant=tenant, patient_id=patient_id)
    form = ComposeForm(request.POST, templates=templates, allow_results=allow_results)
    if form.is_valid():
        try:
            body = _body_from(request, form, patient=patient)
            message = services.message_send(tenant=tenant, actor=request.user, patient=patient, body=body,
                                            kind=form.cleaned_data["kind"],
                                            idempotency_key=form.cleaned_data["idempotency_key"])
        except ApplicationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, "Message sent. The patient gets a text with a secure link to read it.")
            return redirect("messaging-thread", thread_id=message.thread_id)
    patient = patient_selectors.patient_view(tenant=tenant, actor=request.user, patient_id=patient.pk)
    return _compose_page(request, patient, form, status=400)


# --- saved replies --------------------------------------------------------------------------------


@staff_view(perms.MESSAGES_SEND, methods=("GET", "POST"))
def templates_view(request: HttpRequest) -> HttpResponse:
    form = ReplyTemplateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            services.reply_template_create(tenant=request.tenant, actor=request.user, **form.cleaned_data)
        except ApplicationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, "Saved reply added.")
            return redirect("messaging-templates")
    context = {"form": form, "templates": selectors.reply_templates(tenant=request.tenant),
               "placeholders": [f"{{{name}}}" for name in services.PLACEHOLDERS]}
    return _render(request, "messaging/staff/templates.html", context,
                   status=400 if request.method == "POST" else 200)


@staff_view(perms.MESSAGES_SEND, methods=("POST",))
def template_delete_view(request: HttpRequest, template_id) -> HttpResponse:
    template = selectors.reply_template_get(tenant=request.tenant, template_id=template_id)
    services.reply_template_delete(tenant=request.tenant, actor=request.user, template=template)
    messages.success(request, "Saved reply deleted.")
    return redirect("messaging-templates")


# --- texts from unknown numbers -----------------------------------------------------------------------


@staff_view(perms.MESSAGES_VIEW)
def unknown_view(request: HttpRequest) -> HttpResponse:
    include_handled = request.GET.get("handled") == "1"
    rows = selectors.unknown_inbound(tenant=request.tenant, actor=request.user, include_triaged=include_handled)
    items = [{"inbound": row, "number": phone_display(row.from_number)} for row in rows]
    return _render(request, "messaging/staff/unknown.html", {"items": items, "include_handled": include_handled})


@staff_view(perms.MESSAGES_SEND, methods=("POST",))
def unknown_triage_view(request: HttpRequest, inbound_id) -> HttpResponse:
    inbound = selectors.inbound_get(tenant=request.tenant, inbound_id=inbound_id)
    services.inbound_triage(tenant=request.tenant, actor=request.user, inbound=inbound)
    messages.success(request, "Marked as handled.")
    return redirect("messaging-unknown")


# --- the demo's SMS outbox (local gateway only) -------------------------------------------------------


@staff_view(perms.MESSAGES_VIEW)
def sms_outbox_view(request: HttpRequest) -> HttpResponse:
    if settings.SMS_GATEWAY != "local":
        raise NotFound()
    page = selectors.local_sms_page(tenant=request.tenant, actor=request.user, page=request.GET.get("page"))
    return _render(request, "messaging/staff/sms_outbox.html", {"page": page})


# --- the patient page's "Messages" panel ----------------------------------------------------------------


def patient_messages_panel_context(tenant, patient, *, permissions=frozenset()) -> dict:
    """Context for ``{% include "messaging/staff/_patient_panel.html" %}`` on a patient page:
    the patient's conversations (with messages.view) and a compose link (with messages.send).
    Empty when the user may do neither, and the panel is then not shown."""
    can_view, can_send = perms.MESSAGES_VIEW in permissions, perms.MESSAGES_SEND in permissions
    if not (can_view or can_send):
        return {}
    threads = selectors.patient_threads(tenant=tenant, patient=patient) if can_view else []
    return {"messaging_panel": {"patient": patient, "threads": threads, "can_view": can_view, "can_send": can_send}}
