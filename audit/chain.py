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
# What ``json.dumps(…, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` builds on
# every call, built once; the same output.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_text = json.encoder.encode_basestring  # how that encoder writes a str (ensure_ascii=False)


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
    return _ENCODER.encode(payload).encode()


def link_hash(prev_hash: str, event) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(event)).hexdigest()


def _shared(event) -> tuple:
    return (event.tenant_id, event.occurred_at, event.actor_type, event.actor_user_id, event.ip_address,
            event.user_agent, event.request_id)


class _SharedCanonical:
    """``canonical`` for events that share ``_shared``'s fields (a bulk write's): those written
    once, the rest per event, in the same key order (sorted) and encoding. Checked against
    ``canonical`` by ``link_many`` and tests/audit/test_chain_bulk.py."""

    def __init__(self, first):
        enc = _ENCODER.encode
        at = first.occurred_at.astimezone(UTC).isoformat(timespec="microseconds")
        self.shared = _shared(first)
        self.after_label = (f',"actor_type":{enc(first.actor_type)},"actor_user":{enc(first.actor_user_id)},'
                            f'"at":{enc(at)},"details":')
        self.after_id = f',"ip":{enc(_ip(first.ip_address))},"object_id":'
        self.after_patient = f',"request_id":{enc(first.request_id)},"seq":'
        self.after_seq = f',"tenant":{enc(first.tenant_id)},"type":'
        self.after_type = f',"user_agent":{enc(first.user_agent)},"v":{enc(CANONICAL_VERSION)}}}'

    def __call__(self, event) -> bytes:
        return "".join((
            '{"actor_label":', _text(event.actor_label), self.after_label, _ENCODER.encode(event.details),
            ',"id":', _text(str(event.id)), self.after_id, _text(event.object_id), ',"object_type":',
            _text(event.object_type), ',"patient":', _text(str(event.patient_id)) if event.patient_id else "null",
            self.after_patient, str(int(event.seq)), self.after_seq, str(int(event.event_type)), self.after_type,
        )).encode()


def link_many(prev_hash: str, events: list, first_seq: int) -> str:
    """Link ``events`` in order after ``prev_hash``, numbering them from ``first_seq``: set each
    one's ``seq``, ``prev_hash`` and ``hash`` (``link_hash``'s); returns the last hash.

    For a bulk write's thousands of events, whose tenant, time, actor and request are the same:
    those are encoded once, not per event. An event that differs in them, and the whole batch
    if the first event's shortcut would not match ``canonical``, go through ``link_hash``."""
    fast = _SharedCanonical(events[0]) if events else None
    prev = prev_hash
    for n, event in enumerate(events, start=first_seq):
        event.seq, event.prev_hash = n, prev
        if fast is not None and _shared(event) == fast.shared:
            text = fast(event)
            if n == first_seq and text != canonical(event):  # never expected: the format changed on one side
                fast, text = None, canonical(event)
        else:
            text = canonical(event)
        event.hash = prev = hashlib.sha256(prev.encode() + text).hexdigest()
    return prev


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
