"""The ER7 reader and the ACK writer on their own (no database)."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import pytest

from integrations.hl7 import ack, er7
from integrations.hl7.mllp import FrameTooLarge, frame, read_frames
from tests.integrations.hl7.builders import adt, seg, segments_of

NY = ZoneInfo("America/New_York")


def test_timestamps_use_the_offset_or_the_clinic_zone():
    assert er7.parse_timestamp("202604011030", zone=NY) == datetime.datetime(2026, 4, 1, 10, 30, tzinfo=NY)
    with_offset = er7.parse_timestamp("20260401103015.1234-0500", zone=NY)
    assert with_offset.utcoffset() == datetime.timedelta(hours=-5) and with_offset.second == 15
    for bad in ("20260401", "2026-04-01 10:30", "202613011030", ""):
        with pytest.raises(ValueError):
            er7.parse_timestamp(bad, zone=NY)


def test_dates_take_the_first_eight_digits():
    assert er7.parse_date("19791123") == datetime.date(1979, 11, 23)
    assert er7.parse_date("197911230815") == datetime.date(1979, 11, 23)
    for bad in ("1979", "196203520", "19791323"):
        with pytest.raises(ValueError):
            er7.parse_date(bad)


def test_a_bhs_batch_splits_into_messages_and_keeps_its_header():
    payload = "\n".join(["BHS|^~\\&|EPIC||||20260301||||B-9", adt(control_id="1"), adt(control_id="2"), "BTS|2"])
    envelope = er7.split_payload(payload)
    assert envelope.is_batch and list(envelope.headers) == ["BHS"]
    assert [ack.Header.from_message(m).control_id for m in envelope.messages] == ["1", "2"]
    out = ack.build_batch_ack(envelope, ["MSH|a", "MSH|b"])
    assert [s[0] for s in segments_of(out)] == ["BHS", "MSH", "MSH", "BTS"]
    assert seg(out, "BHS")[11] == "B-9" and seg(out, "BTS") == ["BTS", "2"]


def test_several_messages_without_an_envelope_are_not_a_batch():
    envelope = er7.split_payload(adt(control_id="1") + "\r" + adt(control_id="2"))
    assert not envelope.is_batch and len(envelope.messages) == 2


def test_ack_text_is_escaped_with_the_senders_delimiters():
    header = ack.Header.from_message(adt().replace("^", "$"))
    out = ack.build_ack(header, "AE", "a|b$c&d\\e")
    assert seg(out, "MSA")[3] == "a\\F\\b\\S\\c\\T\\d\\E\\e"


def test_value_never_raises_on_short_segments():
    message = er7.parse_message(adt())
    pid = message.segment("PID")
    assert er7.value(pid, 40, 3, 2) == "" and er7.value(None, 3) == ""
    assert er7.repetitions(pid, 3) == 2 and er7.repetitions(pid, 40) == 0


class _FakeSocket:
    def __init__(self, *chunks: bytes):
        self.chunks = list(chunks)

    def recv(self, size: int) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


def test_frames_split_across_reads_and_back_to_back():
    data = frame(b"one") + frame(b"two")
    sock = _FakeSocket(data[:4], data[4:9], data[9:])
    assert list(read_frames(sock, max_bytes=100)) == [b"one", b"two"]


def test_an_unterminated_frame_is_bounded():
    sock = _FakeSocket(b"\x0b" + b"x" * 60, b"x" * 60)
    with pytest.raises(FrameTooLarge):
        list(read_frames(sock, max_bytes=100))
