"""Envelopes: every kind round-trips through its skeleton map and through a batch of one.

The hypothesis strategies here (one per kind, and :data:`any_envelope`) are shared by the
batch, fuzz and golden tests. An envelope that cannot exist (negative numbers, empty or
NUL-holding text, text without a language) is refused when built, with a typed error.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.codebooks import default_codebook
from protocol.batch import Direction, decode_batch, encode_batch
from protocol.envelopes import (
    ENVELOPE_TYPES,
    MAX_SUBJECT_CHARS,
    MAX_UINT,
    BatchAck,
    CaseStatus,
    CaseStatusUpdate,
    Channel,
    ContactBookChange,
    CrewMessage,
    DeliveryFailure,
    DeliveryReceipt,
    DictionaryUpdate,
    Envelope,
    FailureReason,
    GrievanceReport,
    Kind,
    LaneBlock,
    QuotaNotice,
    ReceiptStage,
    Reply,
    Sos,
    VoiceNote,
    VoiceReply,
    acknowledges_only,
    from_skeleton,
    text_language,
    to_skeleton,
)
from protocol.errors import InvalidEnvelope, MalformedBatch
from protocol.languages import Language
from protocol.limits import MAX_MINUTES
from protocol.signing import SigningKey
from protocol.voice import MAX_VOICE_NOTE_MS, VoiceMode, frames_for

VESSEL_KEY = SigningKey(bytes(range(32)))
SHORE_KEY = SigningKey(bytes(range(100, 132)))

# --- strategies ----------------------------------------------------------------------------

uints = st.one_of(
    st.integers(min_value=0, max_value=300), st.integers(min_value=0, max_value=MAX_UINT - 1)
)
small = st.integers(min_value=0, max_value=10_000)
#: Any wire time: from 1970 to the last minute before the year 3000 (protocol.limits).
minutes = st.integers(min_value=0, max_value=MAX_MINUTES - 1)
languages = st.sampled_from(list(Language))
#: Any Unicode text an envelope accepts: no NUL, no lone surrogate (hypothesis leaves
#: surrogates out by default), one character at least.
texts = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=80,
)
short_strings = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=40,
)
blobs = st.binary(min_size=1, max_size=300)
#: A mail's Subject line as a crew message carries it: one line, 1 to 200 characters.
subjects = st.text(
    st.characters(blacklist_characters="\x00\r\n", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=MAX_SUBJECT_CHARS,
)


@st.composite
def ranges_above(draw: st.DrawFn, floor: int) -> tuple[tuple[int, int], ...]:
    """Sorted, disjoint, non-adjacent (first, last) ranges starting above ``floor + 1``."""
    out: list[tuple[int, int]] = []
    start = floor + 2
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        first = start + draw(st.integers(min_value=0, max_value=50))
        last = first + draw(st.integers(min_value=0, max_value=50))
        if last >= MAX_UINT:
            break
        out.append((first, last))
        start = last + 2
    return tuple(out)


@st.composite
def crew_messages(draw: st.DrawFn) -> CrewMessage:
    quick = draw(st.booleans())
    return CrewMessage(
        message_seq=draw(uints),
        crew=draw(small),
        contact=draw(small),
        written_minutes=draw(minutes),
        lang=None if quick else draw(languages),
        body=None if quick else draw(texts),
        quick=draw(st.integers(min_value=0, max_value=65_535)) if quick else None,
        subject=None if quick else draw(st.none() | subjects),
    )


grievance_reports = st.builds(
    GrievanceReport, message_seq=uints, union=small, written_minutes=minutes, sealed=blobs
)


@st.composite
def soses(draw: st.DrawFn) -> Sos:
    note = draw(st.none() | texts)
    position = draw(
        st.none()
        | st.tuples(
            st.integers(min_value=-9_000_000, max_value=9_000_000),
            st.integers(min_value=-18_000_000, max_value=18_000_000),
        )
    )
    return Sos(
        message_seq=draw(uints),
        crew=draw(small),
        written_minutes=draw(minutes),
        lang=draw(languages) if note is not None else None,
        note=note,
        position=position,
        unauthenticated=draw(st.none() | st.booleans()),
    )


delivery_receipts = st.builds(
    DeliveryReceipt,
    message_seq=uints,
    stage=st.sampled_from(list(ReceiptStage)),
    written_minutes=minutes,
)


@st.composite
def delivery_failures(draw: st.DrawFn) -> DeliveryFailure:
    detail = draw(st.none() | texts)
    return DeliveryFailure(
        message_seq=draw(uints),
        reason=draw(st.sampled_from(list(FailureReason))),
        written_minutes=draw(minutes),
        lang=draw(languages) if detail is not None else None,
        detail=detail,
    )


replies = st.builds(
    Reply,
    reply_seq=uints,
    crew=small,
    contact=small,
    written_minutes=minutes,
    lang=languages,
    body=texts,
    truncated=st.none() | st.booleans(),
)
case_status_updates = st.builds(
    CaseStatusUpdate,
    report_seq=uints,
    status=st.sampled_from(list(CaseStatus)),
    written_minutes=minutes,
    sealed_note=st.none() | blobs,
)


@st.composite
def batch_acks(draw: st.DrawFn) -> BatchAck:
    up_to = draw(st.integers(min_value=0, max_value=2**40))
    pairs = st.lists(st.tuples(uints, st.integers(min_value=0, max_value=40)), max_size=5)
    return BatchAck(
        up_to=up_to,
        written_minutes=draw(minutes),
        ranges=draw(st.none() | ranges_above(up_to)),
        rejected=draw(st.none() | pairs.map(tuple)),
    )


quota_notices = st.builds(
    QuotaNotice,
    crew=small,
    month=st.integers(min_value=202_001, max_value=209_912),
    used_bytes=uints,
    quota_bytes=uints,
    written_minutes=minutes,
)
contact_book_changes = st.builds(
    ContactBookChange,
    crew=small,
    contact=small,
    channel=st.sampled_from(list(Channel)),
    address=short_strings,
    written_minutes=minutes,
    name=st.none() | short_strings,
    contact_lang=st.none() | languages,
    crew_name=st.none() | short_strings,
)


@st.composite
def dictionary_updates(draw: st.DrawFn) -> DictionaryUpdate:
    parts = draw(st.integers(min_value=1, max_value=500))
    return DictionaryUpdate(
        dictionary_id=draw(st.integers(min_value=1, max_value=65_535)),
        codec=draw(st.integers(min_value=0, max_value=3)),
        part=draw(st.integers(min_value=0, max_value=parts - 1)),
        parts=parts,
        data=draw(blobs),
        written_minutes=draw(minutes),
    )


lane_blocks = st.builds(
    LaneBlock,
    period=uints,
    index=st.integers(min_value=0, max_value=63),
    block=st.binary(min_size=128, max_size=1024),
    written_minutes=minutes,
)


@st.composite
def voice_notes(draw: st.DrawFn) -> VoiceNote:
    mode = draw(st.sampled_from(list(VoiceMode)))
    duration_ms = draw(
        st.one_of(
            st.integers(min_value=1, max_value=3_000),
            st.integers(min_value=1, max_value=MAX_VOICE_NOTE_MS),
        )
    )
    size = frames_for(mode, duration_ms) * mode.bytes_per_frame
    return VoiceNote(
        message_seq=draw(uints),
        crew=draw(uints),
        contact=draw(uints),
        mode=mode,
        duration_ms=duration_ms,
        frames=draw(st.binary(min_size=size, max_size=size)),
        written_minutes=draw(minutes),
    )


@st.composite
def voice_replies(draw: st.DrawFn) -> VoiceReply:
    note = draw(voice_notes())
    return VoiceReply(
        reply_seq=note.message_seq,
        crew=note.crew,
        contact=note.contact,
        mode=note.mode,
        duration_ms=note.duration_ms,
        frames=note.frames,
        written_minutes=note.written_minutes,
    )


#: One strategy per kind; a test below checks that no kind is left out.
STRATEGIES: dict[Kind, st.SearchStrategy[Envelope]] = {
    Kind.CREW_MESSAGE: crew_messages(),
    Kind.GRIEVANCE_REPORT: grievance_reports,
    Kind.SOS: soses(),
    Kind.DELIVERY_RECEIPT: delivery_receipts,
    Kind.DELIVERY_FAILURE: delivery_failures(),
    Kind.REPLY: replies,
    Kind.CASE_STATUS: case_status_updates,
    Kind.BATCH_ACK: batch_acks(),
    Kind.QUOTA_NOTICE: quota_notices,
    Kind.CONTACT_BOOK_CHANGE: contact_book_changes,
    Kind.DICTIONARY_UPDATE: dictionary_updates(),
    Kind.LANE_BLOCK: lane_blocks,
    Kind.VOICE_NOTE: voice_notes(),
    Kind.VOICE_REPLY: voice_replies(),
}
any_envelope: st.SearchStrategy[Envelope] = st.one_of(*STRATEGIES.values())

#: Kinds a vessel sends up, and kinds the shore sends down.
UPLINK_KINDS = (
    Kind.CREW_MESSAGE,
    Kind.GRIEVANCE_REPORT,
    Kind.SOS,
    Kind.BATCH_ACK,
    Kind.CONTACT_BOOK_CHANGE,
    Kind.LANE_BLOCK,
    Kind.VOICE_NOTE,
)
DOWNLINK_KINDS = (
    *(kind for kind in Kind if kind not in UPLINK_KINDS),
    Kind.BATCH_ACK,
    Kind.LANE_BLOCK,
)


def test_every_kind_has_a_strategy() -> None:
    """A new envelope kind cannot be added without a round-trip strategy."""
    assert set(STRATEGIES) == set(Kind) == set(ENVELOPE_TYPES)


# --- round trips ---------------------------------------------------------------------------


def _skeleton_round_trip(envelope: Envelope, batch_minutes: int) -> Envelope:
    entry = to_skeleton(envelope, batch_minutes)
    return from_skeleton(entry, batch_minutes, envelope.text)


@pytest.mark.parametrize("kind", list(Kind), ids=lambda kind: kind.name.lower())
@given(data=st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_kind_round_trips_through_its_skeleton(kind: Kind, data: st.DataObject) -> None:
    """Each kind's map (integer keys, relative time) decodes to an equal envelope."""
    envelope = data.draw(STRATEGIES[kind])
    batch_minutes = data.draw(minutes)
    assert _skeleton_round_trip(envelope, batch_minutes) == envelope


@pytest.mark.parametrize("kind", list(Kind), ids=lambda kind: kind.name.lower())
@given(data=st.data())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_kind_round_trips_through_a_signed_batch(kind: Kind, data: st.DataObject) -> None:
    """A batch of one envelope of each kind decodes, verified, to the same envelope."""
    envelope = data.draw(STRATEGIES[kind])
    direction = Direction.UPLINK if kind in UPLINK_KINDS else Direction.DOWNLINK
    key = VESSEL_KEY if direction is Direction.UPLINK else SHORE_KEY
    batch_minutes = data.draw(minutes)
    codebook = default_codebook()
    wire = encode_batch(
        [envelope],
        direction=direction,
        vessel_id=42,
        batch_seq=7,
        batch_minutes=batch_minutes,
        signing_key=key,
        codebook=codebook,
    )
    batch = decode_batch(wire, codebook=codebook, verify_key=key.verify_key, direction=direction)
    assert batch.envelopes == (envelope,)
    assert (batch.vessel_id, batch.batch_seq, batch.batch_minutes) == (42, 7, batch_minutes)


def test_a_batch_of_acknowledgements_only_is_answered_lazily() -> None:
    """One rule on both sides: only BatchAcks means "acknowledge me later"; anything else
    beside them (a message, a contact change) wants its answer now."""
    ack = BatchAck(up_to=3, written_minutes=0)
    message = CrewMessage(
        message_seq=1, crew=2, contact=3, written_minutes=0, lang=Language.ENG, body="hi"
    )
    contact = ContactBookChange(
        crew=2, contact=3, channel=Channel.EMAIL, address="a@example.org", written_minutes=0
    )
    assert acknowledges_only([ack])
    assert acknowledges_only([ack, BatchAck(up_to=4, written_minutes=0)])
    assert not acknowledges_only([ack, message])
    assert not acknowledges_only([contact, ack])
    assert not acknowledges_only([message])


def test_written_time_travels_relative_to_the_batch() -> None:
    """A message written 90 minutes before the batch carries 90, not the absolute time."""
    message = CrewMessage(
        message_seq=1, crew=2, contact=3, written_minutes=28_000_000, lang=Language.THA, body="x"
    )
    entry = to_skeleton(message, 28_000_090)
    assert entry[4] == 90
    assert text_language(entry) is Language.THA
    assert 28_000_000 not in entry.values()


def test_quick_message_language_is_dropped_when_built() -> None:
    """A quick code's language never travels (the shore expands it in the contact's own
    language), so the envelope drops it when built and equals what the shore decodes."""
    message = CrewMessage(
        message_seq=1, crew=2, contact=3, written_minutes=0, lang=Language.MYA, quick=12
    )
    assert message.lang is None
    assert _skeleton_round_trip(message, 5) == message


# --- envelopes that cannot exist -------------------------------------------------------------

BASE = CrewMessage(
    message_seq=1, crew=2, contact=3, written_minutes=10, lang=Language.ENG, body="hello"
)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"message_seq": -1}, "whole number from 0"),
        ({"message_seq": MAX_UINT}, "whole number from 0"),
        ({"crew": True}, "whole number from 0"),
        ({"written_minutes": -5}, "not a time from 0 to"),
        ({"written_minutes": MAX_MINUTES}, "before the year 3000"),
        ({"written_minutes": 2**32 - 1}, "check the sender's clock"),
        ({"written_minutes": True}, "not a time from 0 to"),
        ({"body": ""}, "is empty"),
        ({"body": "a\x00b"}, "NUL"),
        ({"body": "a\ud800b"}, "lone surrogate"),
        ({"body": "x" * 16_385}, "over the limit of 16384"),
        ({"lang": None}, "has text but no language"),
        ({"quick": 3}, "either a text body or a quick code"),
        ({"body": None}, "either a text body or a quick code"),
        ({"lang": 1}, "must be a Language"),
        ({"subject": ""}, "subject is empty"),
        ({"subject": "x" * 201}, "201 characters, over the limit of 200"),
        ({"subject": "two\nlines"}, "one line"),
        ({"subject": "a\x00b"}, "NUL"),
        ({"body": None, "lang": None, "quick": 3, "subject": "hi"}, "with a text body only"),
    ],
)
def test_impossible_crew_messages_are_refused(changes: dict[str, object], words: str) -> None:
    """Each refusal is an InvalidEnvelope whose message says what is wrong."""
    with pytest.raises(InvalidEnvelope, match=words):
        replace(BASE, **changes)  # type: ignore[arg-type]


def test_a_subject_is_the_last_optional_field_so_older_batches_still_decode() -> None:
    """A crew message without a subject is the same map, and the same batch bytes, as
    before subjects existed; one with a subject adds key 34 and the next presence bit."""
    plain = to_skeleton(BASE, 10)
    assert 34 not in plain
    with_subject = replace(BASE, subject="Happy birthday, Mother")
    entry = to_skeleton(with_subject, 10)
    assert entry == {**plain, 34: "Happy birthday, Mother"}
    assert from_skeleton(entry, 10, "hello") == with_subject
    assert [spec.key for spec in CrewMessage.FIELDS][-1] == 34


def _batch(envelopes: list[Envelope]) -> bytes:
    return encode_batch(
        envelopes,
        direction=Direction.UPLINK,
        vessel_id=7,
        batch_seq=1,
        batch_minutes=100,
        signing_key=VESSEL_KEY,
        codebook=default_codebook(),
    )


def test_a_relay_older_than_subjects_reads_messages_without_one_and_refuses_one_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Why a vessel sends subjects only to relays that read them: a relay whose crew
    message has no subject field (simulated by today's schema without it) decodes a batch
    of messages without a subject as ever, but refuses a batch that holds one as
    malformed (an unknown presence bit), whole."""
    plain = replace(BASE, written_minutes=100)
    with_subject = replace(plain, message_seq=2, subject="Money sent")
    new_batch = _batch([plain, with_subject])
    plain_batch = _batch([plain])
    monkeypatch.setattr(CrewMessage, "FIELDS", CrewMessage.FIELDS[:-1])
    old = decode_batch(
        plain_batch,
        codebook=default_codebook(),
        verify_key=VESSEL_KEY.verify_key,
        direction=Direction.UPLINK,
    )
    assert old.envelopes == (plain,)
    with pytest.raises(MalformedBatch, match="presence mask"):
        decode_batch(
            new_batch,
            codebook=default_codebook(),
            verify_key=VESSEL_KEY.verify_key,
            direction=Direction.UPLINK,
        )


@pytest.mark.parametrize(
    "build",
    [
        lambda: GrievanceReport(message_seq=1, union=1, written_minutes=0, sealed=b""),
        lambda: GrievanceReport(message_seq=1, union=1, written_minutes=0, sealed=bytes(65_537)),
        lambda: Sos(message_seq=1, crew=1, written_minutes=0, position=(9_000_001, 0)),
        lambda: Sos(message_seq=1, crew=1, written_minutes=0, position=(1.5, 2)),  # type: ignore[arg-type]
        lambda: DeliveryReceipt(message_seq=1, stage=2, written_minutes=0),  # type: ignore[arg-type]
        lambda: BatchAck(up_to=5, written_minutes=0, ranges=((6, 9),)),
        lambda: BatchAck(up_to=5, written_minutes=0, ranges=((10, 12), (13, 14))),
        lambda: BatchAck(up_to=5, written_minutes=0, ranges=((12, 10),)),
        lambda: ContactBookChange(
            crew=1, contact=1, channel=Channel.SMS, address="x" * 321, written_minutes=0
        ),
        lambda: DictionaryUpdate(
            dictionary_id=1, codec=1, part=3, parts=3, data=b"x", written_minutes=0
        ),
        lambda: Reply(
            reply_seq=1, crew=1, contact=1, written_minutes=0, lang=Language.ENG, body=""
        ),
    ],
)
def test_impossible_envelopes_of_other_kinds_are_refused(build: object) -> None:
    """Out-of-range positions, unsorted ack ranges, empty blobs: refused when built."""
    with pytest.raises(InvalidEnvelope):
        build()  # type: ignore[operator]


# --- skeleton maps from the link ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ([1, 2], "not a map"),
        ({0: "x"}, "not a number"),
        ({0: 99}, "not known to this version"),
        ({0: 4, 1: 1, 9: 1, 77: 0}, "unknown keys"),
        ({0: 4, 1: 1, 9: 1, 4: 2**60}, "bad relative time"),
        ({0: 4, 1: 1, 9: 9}, "code 9 is not known"),
        ({0: 4, 1: 1}, "missing a required field"),
        ({0: 4, 1: -1, 9: 1}, "bad DeliveryReceipt"),
        ({0: 1, 1: 1, 2: 1, 3: 1, 5: 77}, "language 77"),
        ({0: 6, 1: 1, 2: 1, 3: 1, 5: 1, 22: 2}, "not 0 or 1"),
        ({0: 3, 1: 1, 2: 1, 10: 5}, "not a list"),
        ({0: 8, 11: 1, 12: [1]}, "not a list of pairs"),
    ],
)
def test_bad_skeleton_maps_are_malformed_batches(entry: object, words: str) -> None:
    """A map from the link that does not fit its kind raises MalformedBatch, never more."""
    with pytest.raises(MalformedBatch, match=words):
        from_skeleton(entry, 100, "text")


@pytest.mark.parametrize(
    ("block", "index", "words"),
    [
        (bytes(127), 0, "128 to 8192"),
        (bytes(8193), 0, "128 to 8192"),
        (bytes(384), 64, "over 63 blocks"),
    ],
)
def test_a_lane_block_has_a_lane_blocks_size_and_place(
    block: bytes, index: int, words: str
) -> None:
    """A lane block outside the lane's sizes, or past a period's places, is not built."""
    with pytest.raises(InvalidEnvelope, match=words):
        LaneBlock(period=1, index=index, block=block, written_minutes=29_000_000)
