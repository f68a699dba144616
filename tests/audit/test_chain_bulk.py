"""``chain.link_many`` (a bulk write's linking: the fields its events share encoded once) gives
every event exactly the hash ``link_hash`` gives it, whatever the events hold."""

from __future__ import annotations

import datetime
import uuid

import pytest

from audit import chain
from audit.models import AuditEvent

AT = datetime.datetime(2026, 3, 2, 12, 0, 0, 123456, tzinfo=datetime.UTC)


def _event(i: int, **overrides) -> AuditEvent:
    values = {
        "id": uuid.UUID(int=(7 << 76) + i), "tenant_id": 12, "occurred_at": AT, "event_type": 30 + i % 3,
        "actor_type": "system", "actor_user_id": None, "actor_label": "", "object_type": "messaging.Message",
        "object_id": str(uuid.UUID(int=i)), "patient_id": uuid.UUID(int=1000 + i) if i % 4 else None,
        "ip_address": None, "user_agent": "", "request_id": "",
        "details": {"thread_id": str(uuid.UUID(int=2000 + i)), "kind": "reminder", "direction": "outbound",
                    "source": "system"},
    }
    values.update(overrides)
    return AuditEvent(**values)


def _expected(prev: str, events, first_seq: int) -> list[tuple[int, str, str]]:
    out = []
    for n, event in enumerate(events, start=first_seq):
        twin = AuditEvent(**{f.attname: getattr(event, f.attname) for f in AuditEvent._meta.concrete_fields})
        twin.seq, twin.prev_hash = n, prev
        prev = chain.link_hash(prev, twin)
        out.append((n, twin.prev_hash, prev))
    return out


def _linked(events) -> list[tuple[int, str, str]]:
    return [(e.seq, e.prev_hash, e.hash) for e in events]


ODD_TEXT = 'Zoë "quoted" \\ back\nslash\t\u2028 ☃ \x01 </script>'


@pytest.mark.parametrize("overrides", [
    {},
    {"actor_label": ODD_TEXT, "user_agent": ODD_TEXT, "request_id": "req-1", "ip_address": "2001:db8::1"},
    {"actor_type": "user", "actor_user_id": 42, "ip_address": "203.0.113.9", "tenant_id": 7},
    {"details": {"z": [1, True, None, {"é": "ü", "a": -3}], "a": ODD_TEXT, "m": {"b": 2, "a": 1}}},
    {"details": {}, "object_type": "", "object_id": "", "patient_id": None},
])
def test_link_many_hashes_as_link_hash_does(overrides):
    events = [_event(i, **overrides) for i in range(7)]
    expected = _expected("a" * 64, events, 41)
    last = chain.link_many("a" * 64, events, 41)
    assert _linked(events) == expected
    assert last == expected[-1][2]


def test_events_that_do_not_share_the_batch_fields_are_hashed_one_by_one():
    events = [_event(0), _event(1, actor_label="front desk"), _event(2, occurred_at=AT + datetime.timedelta(seconds=1)),
              _event(3, actor_type="user", actor_user_id=5), _event(4, ip_address="198.51.100.7"), _event(5)]
    expected = _expected(chain.GENESIS, events, 1)
    chain.link_many(chain.GENESIS, events, 1)
    assert _linked(events) == expected


def test_a_shortcut_that_disagrees_with_canonical_is_dropped_for_the_batch(monkeypatch):
    monkeypatch.setattr(chain._SharedCanonical, "__call__", lambda self, event: b"{}")
    events = [_event(i) for i in range(3)]
    expected = _expected(chain.GENESIS, events, 1)
    chain.link_many(chain.GENESIS, events, 1)
    assert _linked(events) == expected


def test_chain_verifies_after_link_many():
    events = [_event(i) for i in range(5)]
    head = chain.link_many(chain.GENESIS, events, 1)
    assert chain.verify_events(events, base_seq=0, base_hash=chain.GENESIS, head_seq=5, head_hash=head) is None
    events[2].details = {**events[2].details, "kind": "broadcast"}
    assert "contents changed" in str(chain.verify_events(events, base_seq=0, base_hash=chain.GENESIS, head_seq=5,
                                                         head_hash=head))
