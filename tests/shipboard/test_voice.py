"""Voice notes on board (issue 24): a recording from the phone becomes a Codec2 voice message.

A Burmese crew member who does not write records ten seconds for their mother: the agent
decodes what Chromium or Safari recorded, trims the silence, codes it with Codec2 in the
vessel's mode, counts its bytes against the same monthly quota as text and sends it in
its own envelope. Every way a recording can go wrong is refused with a sentence in the
crew member's language, and nothing is stored or charged for it.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from common.speech import CodedSpeech, decode_codec2
from protocol.codebook import Codebook
from protocol.envelopes import VoiceNote
from protocol.languages import Language
from protocol.signing import SigningKey
from protocol.voice import DEFAULT_VOICE_MODE, SAMPLE_RATE_HZ, VoiceMode
from shipboard import errors
from shipboard.config import ShipConfig, VoiceConfig, parse_config
from shipboard.errors import ConfigError, QuotaExceeded
from shipboard.http_api import ApiTokens, create_app
from shipboard.intake import Intake
from shipboard.outbox import Outbox
from shipboard.voice import MAX_RECORDING_BYTES
from shipboard.web.i18n import PAGE_LANGUAGES, Translations
from shipboard.web.voice_sentences import VOICE_REFUSALS
from tests.kit.model_shore import NOW, ModelShore
from tests.kit.speech import BURMESE, estoi, mp4_aac, spoken, wav, webm_opus

from .conftest import Crew

SILENCE = np.zeros(3 * SAMPLE_RATE_HZ, dtype=np.int16)


def _app(config: ShipConfig, outbox: Outbox, codebook: Codebook) -> httpx.AsyncClient:
    app = create_app(Intake(config, outbox, codebook), ApiTokens())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://vessel")


@pytest.fixture
async def api(
    outbox: Outbox, ship_config: ShipConfig, codebook: Codebook
) -> AsyncIterator[httpx.AsyncClient]:
    async with _app(ship_config, outbox, codebook) as client:
        yield client


async def _login(api: httpx.AsyncClient, crew: Crew) -> dict[str, str]:
    response = await api.post("/api/login", json={"crew": crew.member.crew, "pin": crew.pin})
    assert response.status_code == 200
    return {"authorization": f"Bearer {response.json()['token']}"}


def _burmese(msgid: str, **fields: object) -> str:
    return Translations().gettext(Language.MYA, msgid).format(**fields)


async def test_a_recorded_voice_message_goes_home_in_codec2(
    api: httpx.AsyncClient,
    crew: Crew,
    outbox: Outbox,
    codebook: Codebook,
    vessel_key: SigningKey,
    shore: ModelShore,
) -> None:
    """Aung Min records a Burmese sentence in Chromium (WebM/Opus) for his mother: 201,
    its Codec2 bytes are charged like text, and the batch carries a VoiceNote in the
    default mode whose speech is still intelligible against what he said."""
    source = spoken(BURMESE, "my")
    auth = await _login(api, crew)
    sent = await api.post(
        f"/api/voice-notes?contact={crew.mother.contact}",
        content=webm_opus(source),
        headers={**auth, "content-type": "audio/webm;codecs=opus"},
    )
    assert sent.status_code == 201, sent.text
    body = sent.json()
    assert body["state"] == "accepted"
    assert body["mode"] == DEFAULT_VOICE_MODE.label == "1200"
    seconds = len(source) / SAMPLE_RATE_HZ
    # 6 bytes per 40 ms frame, with the trimming margins (at most 0.3 s)
    assert 150 * seconds <= body["voice_bytes"] <= 150 * (seconds + 0.4)
    assert body["remaining_bytes"] == 1024 * 1024 - body["voice_bytes"]
    quota = await api.get("/api/quota", headers=auth)
    assert quota.json()["used_bytes"] == body["voice_bytes"]

    _, data = outbox.make_batch([body["message_seq"]], codebook, vessel_key, NOW)
    batch = shore.receive_batch(data)
    [note] = [e for e in batch.envelopes if isinstance(e, VoiceNote)]
    assert (note.message_seq, note.crew, note.contact) == (
        body["message_seq"],
        crew.member.crew,
        crew.mother.contact,
    )
    assert note.mode is VoiceMode.MODE_1200
    assert len(note.frames) == body["voice_bytes"]
    heard = decode_codec2(CodedSpeech(note.mode, note.duration_ms, note.frames))
    assert estoi(source, heard) > 0.4


async def test_safari_recordings_and_text_share_one_quota(
    api: httpx.AsyncClient, crew: Crew, outbox: Outbox
) -> None:
    """A written message, then a voice message recorded in Safari (MP4/AAC): the month's
    quota counts both, text bytes and Codec2 bytes alike."""
    auth = await _login(api, crew)
    text = await api.post(
        "/api/messages", json={"contact": crew.mother.contact, "text": "နေကောင်းလား"}, headers=auth
    )
    voice = await api.post(
        f"/api/voice-notes?contact={crew.mother.contact}",
        content=mp4_aac(spoken(BURMESE, "my")),
        headers={**auth, "content-type": "audio/mp4"},
    )
    assert voice.status_code == 201, voice.text
    used = text.json()["text_bytes"] + voice.json()["voice_bytes"]
    assert (await api.get("/api/quota", headers=auth)).json()["used_bytes"] == used
    pending = outbox.pending_messages(NOW)
    assert [(m.text_bytes, m.payload_bytes) for m in pending] == [
        (text.json()["text_bytes"],) * 2,
        (voice.json()["voice_bytes"],) * 2,  # the scheduler plans with the voice's bytes
    ]


def test_a_voice_message_over_the_quota_is_refused_and_not_stored(
    outbox: Outbox, crew: Crew
) -> None:
    """A crew member who wrote 1,000 bytes of a 1,100-byte quota cannot send 1,500 bytes
    of voice: QuotaExceeded says 100 are left, and the voice note is not stored."""
    outbox.accept_message(
        crew=crew.member.crew,
        contact=crew.mother.contact,
        lang=Language.MYA,
        now=NOW,
        quota_bytes=1100,
        body="a" * 1000,
    )
    with pytest.raises(QuotaExceeded) as refused:
        outbox.accept_voice_note(
            crew=crew.member.crew,
            contact=crew.mother.contact,
            mode=VoiceMode.MODE_1200,
            duration_ms=10_000,
            frames=bytes(1500),
            now=NOW,
            quota_bytes=1100,
        )
    assert refused.value.remaining_bytes == 100
    assert refused.value.needed_bytes == 1500
    assert [m.text_bytes for m in outbox.pending_messages(NOW)] == [1000]


@pytest.mark.parametrize(
    ("recording", "status", "error"),
    [
        (lambda: wav(SILENCE), 422, errors.VoiceNoteSilent),
        (lambda: b"this is a text file, not a recording\n" * 20, 415, errors.VoiceNoteUnreadable),
        (lambda: _png(), 415, errors.VoiceNoteNotAudio),
        (lambda: webm_opus(np.tile(spoken(BURMESE, "my"), 4)), 413, errors.VoiceNoteTooLong),
    ],
    ids=["silent", "not-a-container", "a-photo", "too-long"],
)
async def test_bad_recordings_are_refused_in_the_crew_members_language(
    outbox: Outbox,
    ship_config: ShipConfig,
    codebook: Codebook,
    crew: Crew,
    recording: object,
    status: int,
    error: type[errors.VoiceNoteRefused],
) -> None:
    """Silence, a text file, a photo, or 16 s of speech against a 10 s limit: each gets
    its status and its sentence in Burmese (Aung Min's language); nothing is stored and
    the quota is untouched."""
    config = replace(ship_config, voice=VoiceConfig(max_seconds=10))
    async with _app(config, outbox, codebook) as api:
        auth = await _login(api, crew)
        refused = await api.post(
            f"/api/voice-notes?contact={crew.mother.contact}",
            content=recording(),  # type: ignore[operator]
            headers=auth,
        )
        assert refused.status_code == status
        problem = refused.json()
        assert problem["type"].endswith(error.code)
        assert error.msgid is not None
        fields = {"limit": 10} if error is errors.VoiceNoteTooLong else {}
        assert problem["detail"] == _burmese(error.msgid, **fields)
        assert problem["detail"] != error.msgid.format(**fields)  # said in Burmese
        assert outbox.pending_messages(NOW) == ()
        assert (await api.get("/api/quota", headers=auth)).json()["used_bytes"] == 0


def _png() -> bytes:
    image = io.BytesIO()
    Image.new("RGB", (8, 8)).save(image, "PNG")
    return image.getvalue()


async def test_a_voice_message_to_an_sms_contact_is_accepted(
    api: httpx.AsyncClient, crew: Crew, outbox: Outbox
) -> None:
    """Aung Min's brother is reached by SMS: his voice message is taken like one to an
    e-mail contact (the relay sends the brother a link that plays it; this test used to
    pin the refusal from before the relay had voice links)."""
    auth = await _login(api, crew)
    sent = await api.post(
        f"/api/voice-notes?contact={crew.brother.contact}",
        content=wav(spoken(BURMESE, "my")),
        headers=auth,
    )
    assert sent.status_code == 201, sent.text
    [pending] = outbox.pending_messages(NOW)
    assert pending.text_bytes == sent.json()["voice_bytes"]


async def test_a_recording_to_a_stranger_is_refused(api: httpx.AsyncClient, crew: Crew) -> None:
    """A voice message to contact 99, who is not in Aung Min's list: 404 with a sentence."""
    auth = await _login(api, crew)
    refused = await api.post(
        "/api/voice-notes?contact=99", content=wav(spoken(BURMESE, "my")), headers=auth
    )
    assert refused.status_code == 404
    assert "not in your list" in refused.json()["detail"]


@pytest.mark.parametrize("query", ["", "?contact=", "?contact=-1", "?contact=1e3", "?contact=x"])
async def test_a_voice_message_needs_a_contact_number(
    api: httpx.AsyncClient, crew: Crew, query: str
) -> None:
    """A page that forgets or garbles the contact gets 400 with a sentence."""
    auth = await _login(api, crew)
    refused = await api.post(f"/api/voice-notes{query}", content=b"x", headers=auth)
    assert refused.status_code == 400
    assert refused.json()["detail"] == "'contact' must be a number."


async def test_a_recording_needs_a_sign_in(api: httpx.AsyncClient, crew: Crew) -> None:
    """Without a token nothing is decoded: 401."""
    refused = await api.post(f"/api/voice-notes?contact={crew.mother.contact}", content=b"x")
    assert refused.status_code == 401


async def test_an_oversized_recording_is_refused_before_it_is_read(
    api: httpx.AsyncClient, crew: Crew
) -> None:
    """A body that says it is over the recording limit gets 413 before the agent reads
    it; one without a length is read only up to the limit."""
    auth = await _login(api, crew)
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b"x" * 65_536

    refused = await api.post(
        f"/api/voice-notes?contact={crew.mother.contact}", content=endless(), headers=auth
    )
    assert refused.status_code == 413
    assert pulled <= MAX_RECORDING_BYTES // 65_536 + 2


def test_the_catalogue_holds_every_refusals_sentence() -> None:
    """The sentences the crew page's catalogue has are the ones the refusals say, and each
    page language has them translated."""
    kinds = [
        errors.VoiceNoteTooLong,
        errors.VoiceNoteSilent,
        errors.VoiceNoteNotAudio,
        errors.VoiceNoteUnreadable,
        errors.VoiceNoteToSms,
    ]
    assert [kind.msgid for kind in kinds] == list(VOICE_REFUSALS)
    translations = Translations()
    for lang in PAGE_LANGUAGES:
        if lang is Language.ENG:
            continue
        for msgid in VOICE_REFUSALS:
            said = translations.gettext(lang, msgid)
            assert said != msgid, (lang, msgid)
            assert ("{limit}" in said) == ("{limit}" in msgid)


def _config(tmp_path: Path, voice: dict[str, object]) -> ShipConfig:
    document = {
        "vessel": {"id": 1, "name": "Sea Star", "signing_key": "vessel.key"},
        "shore": {"broker": "mqtt://127.0.0.1:1883", "public_key": "ab" * 32},
        "voice": voice,
    }
    return parse_config(document, source="ship.toml", base=tmp_path, require_union=False)


def test_the_voice_section_sets_the_limit_and_the_mode(tmp_path: Path) -> None:
    """[voice] max_seconds = 20, mode = "700C": taken; no section: 30 s in mode 1200."""
    assert _config(tmp_path, {"max_seconds": 20, "mode": "700C"}).voice == VoiceConfig(
        20, VoiceMode.MODE_700C
    )
    assert _config(tmp_path, {}).voice == VoiceConfig(30, VoiceMode.MODE_1200)


@pytest.mark.parametrize(
    ("voice", "words"),
    [
        ({"max_seconds": 0}, r"voice.max_seconds = 0 is not from 1 to 120 seconds"),
        ({"max_seconds": 121}, "not from 1 to 120"),
        ({"mode": "450"}, "unknown Codec2 mode '450'; known modes: 3200"),
        ({"volume": 3}, "volume"),
    ],
)
def test_a_wrong_voice_setting_names_the_key(
    tmp_path: Path, voice: dict[str, object], words: str
) -> None:
    """A limit out of range, a mode Codec2 has not, or an unknown key: a ConfigError."""
    with pytest.raises(ConfigError, match=words):
        _config(tmp_path, voice)
