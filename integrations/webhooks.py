"""Twilio webhooks (placeholder until the webhook views land)."""

from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST


@csrf_exempt
@require_POST
def twilio_inbound_view(request):
    return HttpResponse(status=501)


@csrf_exempt
@require_POST
def twilio_status_view(request):
    return HttpResponse(status=501)
