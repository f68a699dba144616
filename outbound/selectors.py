"""Reads for the webhooks page: endpoints with their recent delivery counts (no payloads)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from accounts.errors import NotFound
from outbound.models import DeliveryStatus, WebhookEndpoint

RECENT = timedelta(days=7)


def endpoint_list(*, tenant) -> QuerySet[WebhookEndpoint]:
    """Active endpoints first; each with ``recent_<status>`` counts over the last seven days."""
    since = timezone.now() - RECENT
    counts = {f"recent_{status}": Count("deliveries", filter=Q(deliveries__status=status,
                                                               deliveries__created_at__gte=since))
              for status in DeliveryStatus.values}
    return (WebhookEndpoint.objects.select_related("created_by").annotate(**counts)
            .order_by("-is_active", "-created_at"))


def endpoint_get(*, tenant, endpoint_id) -> WebhookEndpoint:
    """Another clinic's endpoint and a missing one are the same 404 (RLS + scope)."""
    try:
        pk = uuid.UUID(str(endpoint_id))
    except ValueError:
        raise NotFound() from None
    endpoint = WebhookEndpoint.objects.filter(pk=pk).first()
    if endpoint is None:
        raise NotFound()
    return endpoint
