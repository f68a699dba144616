"""Reads for the webhooks page: endpoints with their recent delivery counts (no payloads); and
``SUBSCRIBED_EXISTS_SQL`` for a written-out query that asks whether an event has subscribers."""

from __future__ import annotations

import json
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


# For a written-out query that asks, in a round trip it makes anyway (messaging.inbound), whether
# ``event_emit`` may find an active endpoint of the clinic subscribed to an event kind: a
# PostgreSQL boolean expression whose parameters are ``subscribed_exists_params``. The caller
# skips ``event_emit`` when it is false. Conservative: an ``events`` value that is not a JSON
# array counts as subscribed, so ``event_emit``'s own rule decides for it (a false "no" would
# lose an event).
SUBSCRIBED_EXISTS_SQL = (
    f"EXISTS (SELECT 1 FROM {WebhookEndpoint._meta.db_table} e WHERE e.tenant_id = %s "  # noqa: S608  # nosec B608  # names from _meta
    "AND e.is_active AND (jsonb_typeof(e.events) <> 'array' OR e.events @> %s::jsonb))")


def subscribed_exists_params(*, tenant_id: int, kind: str) -> list:
    return [tenant_id, json.dumps([kind])]
