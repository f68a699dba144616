"""Staff forms for the inbox. They check types and choices only; the services do the real
validation (empty or oversized bodies, placeholders, consent) and their field errors are shown
with ``accounts.forms.apply_service_errors``, so field names match the services' arguments.

Choices that name the clinic's own objects (colleagues, saved replies) are filled from the
tenant's selectors, so another clinic's id is simply "not one of the choices".
"""

from __future__ import annotations

import secrets

from django import forms

from messaging.models import MessageKind, ThreadStatus

BOX_CHOICES = [("unassigned", "Unassigned"), ("mine", "Mine"), ("all", "All open"), ("closed", "Closed")]
# Generous bounds for what a browser may post; the services give the precise messages
# ("Use at most 2000 characters (this has N)"), so the form must not cut in first.
_BODY_LIMIT = 100_000


def new_idempotency_key() -> str:
    """A fresh key for one rendering of a send form: a double submit of that form sends once."""
    return secrets.token_urlsafe(24)


def _body_field(label: str, rows: int = 4) -> forms.CharField:
    return forms.CharField(label=label, required=False, strip=False, max_length=_BODY_LIMIT,
                           widget=forms.Textarea(attrs={"rows": rows}))


def _template_choices(templates) -> list[tuple[str, str]]:
    return [("", "— none —")] + [(str(t.pk), t.name) for t in templates]


class InboxFilterForm(forms.Form):
    box = forms.ChoiceField(choices=BOX_CHOICES, required=False)
    assignee = forms.TypedChoiceField(label="Assigned to", required=False, coerce=int, empty_value=None)
    kind = forms.ChoiceField(label="Kind", required=False, choices=[("", "Any kind"), *MessageKind.choices])
    page = forms.IntegerField(required=False, min_value=1)

    def __init__(self, *args, members=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["assignee"].choices = [("", "Anyone")] + [(str(u.pk), _user_label(u)) for u in members]


class ReplyForm(forms.Form):
    body = _body_field("Reply")
    template = forms.ChoiceField(label="Saved reply", required=False,
                                 help_text="Leave the reply empty to send the saved reply, filled in for this patient.")
    idempotency_key = forms.CharField(required=False, max_length=100, widget=forms.HiddenInput)

    def __init__(self, *args, templates=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["template"].choices = _template_choices(templates)
        if not self.is_bound:
            self.initial.setdefault("idempotency_key", new_idempotency_key())


class ComposeForm(ReplyForm):
    kind = forms.ChoiceField(label="Kind", choices=[(MessageKind.GENERAL, MessageKind.GENERAL.label)])

    field_order = ["kind", "body", "template", "idempotency_key"]

    def __init__(self, *args, allow_results: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["body"].label = "Message"
        if allow_results:
            self.fields["kind"].choices = [(MessageKind.GENERAL, MessageKind.GENERAL.label),
                                           (MessageKind.RESULT_NOTICE, MessageKind.RESULT_NOTICE.label)]


class NoteForm(forms.Form):
    body = _body_field("Internal note", rows=3)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "note_%s")  # the reply box on the same page is id_body
        super().__init__(*args, **kwargs)


class AssignForm(forms.Form):
    assignee = forms.TypedChoiceField(label="Assign to", required=False, coerce=int, empty_value=None)

    def __init__(self, *args, members=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["assignee"].choices = [("", "Nobody (unassigned)")] + [(str(u.pk), _user_label(u))
                                                                          for u in members]


class StatusForm(forms.Form):
    status = forms.ChoiceField(choices=ThreadStatus.choices)


class LinkActionForm(forms.Form):
    action = forms.ChoiceField(choices=[("revoke", "Revoke link"), ("resend", "Re-send link")])


class ReplyTemplateForm(forms.Form):
    name = forms.CharField(label="Name", required=False, max_length=_BODY_LIMIT)
    body = _body_field("Text", rows=5)


def _user_label(user) -> str:
    return (user.full_name or "").strip() or user.email
