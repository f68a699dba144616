from django import forms

from outbound.models import EventKind


class EndpointForm(forms.Form):
    url = forms.CharField(label="Endpoint URL", max_length=500, help_text="https:// only. We POST FHIR JSON here.",
                          widget=forms.TextInput(attrs={"inputmode": "url", "autocomplete": "off"}))
    events = forms.MultipleChoiceField(label="Events", choices=EventKind.choices, widget=forms.CheckboxSelectMultiple,
                                       initial=list(EventKind.values))
