"""Voice messages ashore (issue 24): the family gets Opus in Ogg that plays what was said.

A Burmese crew member's voice note arrives in a signed batch; the relay stores it, counts
its Codec2 bytes like text, and mails his mother a line in Burmese with the recording
attached as Opus in Ogg. The test decodes the attachment from the mail the SMTP sink
received and compares it with what he said.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from common.codebooks import default_codebook
from common.speech import CodedSpeech, decode_codec2, decode_recording, encode_codec2
from protocol.envelopes import (
    Channel,
    ContactBookChange,
    DeliveryFailure,
    Envelope,
    FailureReason,
    VoiceNote,
)
from protocol.languages import Language
from protocol.voice import DEFAULT_VOICE_MODE, VoiceMode
from shore.delivery import DeliveryWorker
from shore.ingest import Ingestor
from shore.mail import VOICE_LINES, MailSender, VoiceAttachment, compose_family_mail
from shore.store import IngestOutcome, SqliteStore, VesselInfo
from shore.store.transparency_log import leaf_for, month_of_minutes
from shore.store.uplink import CodedVoice
from shore.voice import voice_attachment
from tests.kit.speech import BURMESE, THAI, estoi, spoken
from tests.kit.voyage import voyage
from tests.shore.store_fixtures import (
    T0,
    VESSEL_KEY,
    decoded_downlink,
    decoded_uplink,
    shore_encoder,
    uplink,
)
from tests.shore.test_mail import BOOK, IDENTITY, SmtpSink, family_mail, parse

CODEBOOK = default_codebook()
VESSEL = 7
MINUTES = int(T0 // 60)


def _contact(channel: Channel = Channel.EMAIL, address: str = "mother@example.com") -> Envelope:
    return ContactBookChange(
        crew=3,
        contact=1,
        channel=channel,
        address=address,
        written_minutes=MINUTES,
        contact_lang=Language.MYA,
        crew_name="Ko Aung",
    )


def _note(text: str = BURMESE, voice: str = "my", seq: int = 1) -> tuple[VoiceNote, object]:
    source = spoken(text, voice)
    coded = encode_codec2(source, DEFAULT_VOICE_MODE)
    note = VoiceNote(
        message_seq=seq,
        crew=3,
        contact=1,
        mode=coded.mode,
        duration_ms=coded.duration_ms,
        frames=coded.frames,
        written_minutes=MINUTES,
    )
    return note, source


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A real SQLite store with vessel 7 registered."""
    opened = await SqliteStore.open(tmp_path / "relay.db")
    info = VesselInfo("Sea Star 7", "TH", "TH-0042", "Andaman Fishing Co", (1,))
    await opened.add_vessel(info, VESSEL_KEY.verify_key.key, T0 - 3600, VESSEL)
    try:
        yield opened
    finally:
        await opened.close()


def _attachments(message: EmailMessage) -> list[EmailMessage]:
    return [part for part in message.iter_attachments() if isinstance(part, EmailMessage)]


async def test_the_family_gets_a_playable_recording_of_what_was_said(
    store: SqliteStore,
) -> None:
    """Ko Aung's Burmese voice note goes through ingest and delivery to an SMTP sink: his
    mother's mail has a line in Burmese and one audio/ogg attachment whose Opus decodes
    to what he said (ESTOI against his 8 kHz speech well above chance, and close to the
    Codec2 speech the vessel sent)."""
    note, source = _note()
    ingestor = Ingestor(store, CODEBOOK, clock=lambda: T0 + 60)
    data = uplink(VESSEL, 1, [_contact(), note])
    assert await ingestor.handle(f"vr/{VESSEL}/u", data) is IngestOutcome.STORED
    [stored] = await store.messages(VESSEL)
    assert stored.message_seq == 1
    with SmtpSink() as sink:
        worker = DeliveryWorker(
            store, MailSender(sink.config), IDENTITY, BOOK, clock=lambda: T0 + 120
        )
        assert await worker.deliver_due() == 1
        [mail] = sink.handler.messages()
    assert mail["To"].addresses[0].addr_spec == "mother@example.com"
    assert mail["Content-Language"] == "my"
    seconds = -(-note.duration_ms // 1000)
    body = mail.get_body(("plain",))
    assert isinstance(body, EmailMessage)
    assert VOICE_LINES[Language.MYA].format(name="Ko Aung", seconds=seconds) in body.get_content()
    [attachment] = _attachments(mail)
    assert attachment.get_content_type() == "audio/ogg"
    assert attachment.get_filename() == f"voice-{VESSEL}-1.ogg"
    ogg = attachment.get_content()
    assert isinstance(ogg, bytes)
    assert ogg[:4] == b"OggS"
    heard = decode_recording(ogg, limit_s=120)
    sent = decode_codec2(CodedSpeech(note.mode, note.duration_ms, note.frames))
    assert abs(len(heard) - len(sent)) < 400
    assert estoi(sent, heard) > 0.9  # Opus adds little to what Codec2 left
    assert estoi(source, heard) > 0.4  # and it is still the sentence he said


async def test_a_voice_note_for_an_sms_contact_fails_with_a_reason(
    store: SqliteStore,
) -> None:
    """An (older or altered) agent sends a voice note to a contact reached by SMS, which
    cannot carry it yet: nothing is sent, the delivery fails for good as refused by the
    relay, and the vessel is told so in a DeliveryFailure."""
    note, _ = _note(seq=2)
    ingestor = Ingestor(store, CODEBOOK, clock=lambda: T0 + 60)
    contact = _contact(Channel.SMS, "+66812345678")
    assert await ingestor.handle(f"vr/{VESSEL}/u", uplink(VESSEL, 1, [contact, note])) is (
        IngestOutcome.STORED
    )
    with SmtpSink() as sink:
        worker = DeliveryWorker(
            store, MailSender(sink.config), IDENTITY, BOOK, clock=lambda: T0 + 120
        )
        assert await worker.deliver_due() == 1
        assert sink.handler.messages() == []
    made = await store.make_downlink_batch(VESSEL, T0 + 180, shore_encoder(VESSEL), 200)
    assert made is not None
    failures = [e for e in decoded_downlink(made.data).envelopes if isinstance(e, DeliveryFailure)]
    assert [(f.message_seq, f.reason) for f in failures] == [(2, FailureReason.REJECTED_BY_RELAY)]


def test_voice_bytes_count_like_text_in_the_transparency_log() -> None:
    """The log leaf of a batch with a voice note counts its Codec2 bytes for the crew
    member and month, as it counts a text's UTF-8 bytes (the compliance report reads it)."""
    note, _ = _note(THAI, "th")
    data = uplink(VESSEL, 1, [note])
    batch = decoded_uplink(data)
    leaf = leaf_for(batch, hashlib.sha256(data).digest(), T0, [note])
    [crew_bytes] = leaf.crew_bytes
    assert (crew_bytes.crew, crew_bytes.month, crew_bytes.text_bytes) == (
        3,
        month_of_minutes(MINUTES),
        len(note.frames),
    )


@pytest.mark.parametrize("lang", [*VOICE_LINES, Language.SHN, None])
def test_the_line_above_the_recording_is_in_the_familys_language(
    lang: Language | None,
) -> None:
    """Each language with a voice line gets it (with the name and the seconds); Shan and an
    unknown language get English. The text the vessel sent (none) is not in the mail."""
    attachment = VoiceAttachment(b"OggS" + bytes(60), 4_100)
    message = parse(
        compose_family_mail(
            family_mail(text="", contact_lang=lang, voice=attachment), IDENTITY, BOOK, T0
        )
    )
    body = message.get_body(("plain",))
    assert isinstance(body, EmailMessage)
    expected = VOICE_LINES.get(lang or Language.ENG, VOICE_LINES[Language.ENG])
    assert expected.format(name="Ko Aung", seconds=5) in body.get_content()
    [part] = _attachments(message)
    assert part.get_content() == attachment.ogg


def test_frames_cut_short_are_refused_not_played() -> None:
    """Frames that are not whole Codec2 frames (a store fault) raise ValueError; the
    delivery worker turns that into a permanent failure rather than a broken file."""
    with pytest.raises(ValueError, match="not whole 1200 frames"):
        voice_attachment(CodedVoice(VoiceMode.MODE_1200, 80, bytes(11)))


async def test_a_voice_note_crosses_the_link_reaches_the_family_and_comes_back_delivered(
    tmp_path: Path,
) -> None:
    """End to end on the fake link: a voice note and a text message accepted on board go
    up in one session, the relay mails the voice note (Opus attachment) and the text, and
    in the next session (the crew member writes again) the vessel hears both were
    delivered."""
    source = spoken(BURMESE, "my")
    coded = encode_codec2(source, DEFAULT_VOICE_MODE)
    async with voyage(tmp_path) as (vessel, shore, _link, clock):
        voice = vessel.outbox.accept_voice_note(
            crew=vessel.crew,
            contact=vessel.contact,
            mode=coded.mode,
            duration_ms=coded.duration_ms,
            frames=coded.frames,
            now=clock(),
            quota_bytes=1 << 20,
        )
        [text] = vessel.write(1)
        report = await vessel.session()
        assert report.acknowledged == (1,)
        assert sorted(await shore.stored_seqs()) == sorted([voice.message_seq, text])
        assert shore.store is not None
        with SmtpSink() as sink:
            worker = DeliveryWorker(
                shore.store, MailSender(sink.config), IDENTITY, BOOK, clock=clock
            )
            assert await worker.deliver_due() == 2
            mails = sink.handler.messages()
        [with_voice] = [m for m in mails if _attachments(m)]
        [attachment] = _attachments(with_voice)
        ogg = attachment.get_content()
        assert isinstance(ogg, bytes)
        assert estoi(source, decode_recording(ogg, limit_s=120)) > 0.4
        clock.advance(60)
        vessel.write(1)  # the relay answers a session that brings something
        await vessel.session()
        assert vessel.states([voice.message_seq, text]) == ["delivered", "delivered"]
