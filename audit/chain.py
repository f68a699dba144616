"""The hash chain: canonical form of an event, appending, and verification.

Each event stores ``seq`` (1, 2, 3 … per chain), ``prev_hash`` and
``hash = SHA-256(prev_hash || canonical(event))``. Changing, deleting or inserting a row
anywhere breaks the recomputation from that row on; the chain head (and exported checkpoints)
catch a truncated tail. If this format changes, old chains must still verify: version it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from datetime import UTC

GENESIS = "0" * 64
CANONICAL_VERSION = 1


def _ip(value) -> str | None:
    return str(ipaddress.ip_address(str(value))) if value else None


def canonical(event) -> bytes:
    payload = {
        "v": CANONICAL_VERSION,
        "id": str(event.id),
        "tenant": event.tenant_id,
        "seq": event.seq,
        "at": event.occurred_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "type": int(event.event_type),
        "actor_type": event.actor_type,
        "actor_user": event.actor_user_id,
        "actor_label": event.actor_label,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "patient": str(event.patient_id) if event.patient_id else None,
        "ip": _ip(event.ip_address),
        "user_agent": event.user_agent,
        "request_id": event.request_id,
        "details": event.details,
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def link_hash(prev_hash: str, event) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(event)).hexdigest()


@dataclass
class ChainProblem:
    seq: int | None
    event_id: str | None
    reason: str

    def __str__(self) -> str:
        where = f"event seq {self.seq} (id {self.event_id})" if self.seq is not None else "chain head"
        return f"{where}: {self.reason}"


def verify_events(events, *, base_seq: int, base_hash: str, head_seq: int, head_hash: str) -> ChainProblem | None:
    """The first problem in ``events`` (ordered by seq, id), or None if the chain is intact."""
    expected_seq, prev = base_seq + 1, base_hash
    for event in events:
        if event.seq < expected_seq:
            return ChainProblem(event.seq, str(event.id), "duplicate or out-of-order sequence number (inserted row?)")
        if event.seq > expected_seq:
            return ChainProblem(expected_seq, None, f"missing; next present is seq {event.seq} (deleted row?)")
        if event.prev_hash != prev:
            return ChainProblem(event.seq, str(event.id), "does not link to the previous event (inserted or deleted row?)")
        if link_hash(prev, event) != event.hash:
            return ChainProblem(event.seq, str(event.id), "contents changed since it was written")
        prev, expected_seq = event.hash, expected_seq + 1
    if expected_seq - 1 != head_seq or prev != head_hash:
        return ChainProblem(None, None, f"head says seq {head_seq} but the chain ends at seq {expected_seq - 1} "
                                        f"(events deleted from the end?)")
    return None
