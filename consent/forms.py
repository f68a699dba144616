from django import forms

from consent.documents import CURRENT_DISCLOSURE_VERSION, DISCLOSURES
from consent.models import STAFF_METHODS, ConsentAction
from consent.services import EVIDENCE_MAX, NAME_MAX


class ConsentRecordForm(forms.Form):
    """What staff record by hand. Keyword and EHR consent arrive through their own services."""

    # No preselected action or method: recording the wrong one by leaving a default is too easy.
    action = forms.ChoiceField(choices=[("", "Choose…"), *ConsentAction.choices], label="Consent")
    method = forms.ChoiceField(choices=[("", "Choose…"), *((m.value, m.label) for m in STAFF_METHODS)],
                               label="How it was given")
    disclosure_version = forms.ChoiceField(
        choices=[(v, v) for v in DISCLOSURES], initial=CURRENT_DISCLOSURE_VERSION, required=False,
        label="Disclosure given", help_text="The text the patient heard or read (needed for a grant).")
    evidence = forms.CharField(
        max_length=EVIDENCE_MAX, required=False, label="Note", widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Who gave it and how; for a paper form, where it is filed. Required for verbal and paper.")


class BaaSignForm(forms.Form):
    signer_name = forms.CharField(max_length=NAME_MAX, label="Your full name")
    signer_title = forms.CharField(max_length=NAME_MAX, label="Your title", help_text="For example: Practice owner")
    agree = forms.BooleanField(label="I have read the agreement and agree to it on behalf of this clinic.",
                               error_messages={"required": "Tick the box to agree to the agreement."})
    document_sha256 = forms.CharField(widget=forms.HiddenInput, max_length=64)
