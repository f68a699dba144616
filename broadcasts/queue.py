"""The broadcast page's queue figures: how many of its texts are still to go, how many texts the
clinic's sender has queued, and when the broadcast should be done. Counts only (no patient is
named), so no audit event. Call inside ``tenant_scope(tenant)``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from broadcasts.models import Broadcast, BroadcastStatus, RecipientStatus
from messaging.models import OutboundSms, SmsStatus


@dataclass(frozen=True)
class Queue:
    to_write: int  # recipients whose message is not written yet
    written_queued: int  # this broadcast's texts written and waiting for the sender
    sender_queued: int  # all the clinic's texts waiting for its sender (this broadcast's among them)
    rate_per_minute: int  # what the broadcast goes at: its rate, or the sender's if slower
    sender_per_second: float  # the sender's limit; 0: not paced
    drain_seconds: int  # until the last of this broadcast's texts is handed to the SMS provider

    @property
    def remaining(self) -> int:
        return self.to_write + self.written_queued

    @property
    def drain_minutes(self) -> int:
        return math.ceil(self.drain_seconds / 60)


def broadcast_queue(*, tenant, broadcast: Broadcast, progress) -> Queue:
    """``progress``: ``selectors.broadcast_progress`` of the same broadcast (its counts are reused).

    Drain time: the broadcast's remaining texts at its rate, or, when the sender is the
    bottleneck, everything the sender has queued plus what the broadcast has still to write at
    the sender's rate, whichever is longer (reminders and replies on the sender go first)."""
    from broadcasts.services import sending_rate_per_minute
    from messaging.pacing import sender_rate

    sending = broadcast.status == BroadcastStatus.SENDING
    to_write = progress.recipients.get(RecipientStatus.PENDING, 0) if sending else 0
    written = dict((value, n) for value, _, n in progress.sms).get(SmsStatus.QUEUED, 0)
    sender_queued = OutboundSms.objects.filter(status=SmsStatus.QUEUED).count()
    per_minute = sending_rate_per_minute(broadcast)
    per_second = sender_rate(tenant)
    drain = (to_write + written) * 60 / per_minute
    if per_second > 0:
        drain = max(drain, (to_write + sender_queued) / per_second)
    return Queue(to_write=to_write, written_queued=written, sender_queued=sender_queued, rate_per_minute=per_minute,
                 sender_per_second=per_second, drain_seconds=math.ceil(drain))
