from __future__ import annotations

from django.utils import timezone

from accounts.errors import NotFound
from accounts.selectors import _uuid_or_404
from audit.models import BreakGlassGrant


def break_glass_active(*, tenant, user, patient_id) -> BreakGlassGrant | None:
    """The unexpired grant that lets ``user`` open ``patient_id``, if any."""
    return (BreakGlassGrant.objects.filter(user=user, patient_id=patient_id, expires_at__gt=timezone.now())
            .order_by("-expires_at").first())


def break_glass_unacknowledged(*, tenant):
    """Grants the clinic's owners have not reviewed yet, newest first."""
    return BreakGlassGrant.objects.filter(acknowledged_at__isnull=True).select_related("user").order_by("-created_at")


def break_glass_get(*, tenant, grant_id) -> BreakGlassGrant:
    grant = BreakGlassGrant.objects.filter(pk=_uuid_or_404(grant_id)).first()
    if grant is None:
        raise NotFound()
    return grant
