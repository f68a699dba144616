"""``uuid7`` makes RFC 9562 version-7 ids: the time first (ordered across milliseconds), the
version and variant bits right, random bits otherwise, and an ordinary ``uuid.UUID``."""

from __future__ import annotations

import pickle
import time
import uuid

from accounts.tenancy import uuid7


def test_uuid7_is_a_version_7_rfc_uuid_ordered_by_time():
    first = uuid7()
    time.sleep(0.002)
    later = uuid7()
    assert isinstance(first, uuid.UUID)
    assert first.version == later.version == 7 and first.variant == uuid.RFC_4122
    assert later > first
    assert abs((first.int >> 80) - time.time_ns() // 1_000_000) < 1000  # milliseconds since the epoch
    parsed = uuid.UUID(str(later))
    assert parsed == later and hash(parsed) == hash(later) and parsed.hex == later.hex
    assert pickle.loads(pickle.dumps(later)) == later


def test_uuid7_random_bits_vary():
    ids = [uuid7() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert len({u.int & ((1 << 62) - 1) for u in ids}) == len(ids)  # the low random bits alone differ
