"""The write page's voice recorder in a real browser (Debian's Chromium, issue 24).

Chromium runs with a fake microphone that plays a WAV espeak-ng made of a Burmese
sentence. Aung Min, signed in on the Burmese page, taps Record, taps again to stop,
listens to it, and sends it to his mother, whose contact is an e-mail address. The test
then takes the voice message the way it leaves the vessel (a signed batch from the
outbox), lets the real relay ingest and deliver it to a real SMTP server on loopback,
and decodes the mail's attachment: it lasts as long as the sentence and is still the
sentence (ESTOI against espeak-ng's speech).

The bad recordings a crew member can send from the page (a photo, a text file, a
recording of silence, one too long) are refused with a sentence in Burmese under the
recorder; the recording stays on the page and the voice message already sent is still
in the outbox.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import io
import re
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, sync_playwright

from common.codebooks import default_codebook
from common.speech import CodedSpeech, decode_codec2, decode_recording, trim_silence
from protocol.languages import Language
from protocol.voice import SAMPLE_RATE_HZ
from shipboard import errors
from shipboard.config import VoiceConfig
from shipboard.intake import Intake
from shipboard.outbox import Outbox
from shipboard.web.i18n import Translations
from shipboard.web.local import number
from shore.delivery import DeliveryWorker
from shore.ingest import Ingestor
from shore.store import IngestOutcome, SqliteStore, VesselInfo
from vessel_relay.demo.defaults import demo_ship_config
from vessel_relay.demo.keys import demo_union_private_key

from ..kit.agent_web import agent_web_server
from ..kit.lane import blocks_on_board, union_reads
from ..kit.speech import BURMESE, estoi, need_espeak, pack, spoken_wav, wav
from ..shore.store_fixtures import VESSEL_KEY
from ..shore.test_mail import BOOK, IDENTITY, SmtpSink
from .test_crew_page import ARTIFACTS, CHROMIUM_ARGS

NEW_PIN = "86420975"
#: The page's limit here: the sentence fits, four of them do not.
LIMIT_S = 12


@dataclasses.dataclass
class Agent:
    url: str
    intake: Intake
    outbox: Outbox
    crew: int
    pin: str
    mother: int


def _burmese(msgid: str, **fields: object) -> str:
    return Translations().gettext(Language.MYA, msgid).format(**fields)


@pytest.fixture(scope="module")
def source_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the fake microphone hears: espeak-ng's Burmese sentence, then 3 s of silence
    (Chromium plays the file in a loop)."""
    need_espeak()
    speech = decode_recording(spoken_wav(BURMESE, "my"), limit_s=120)
    padded = np.concatenate([speech, np.zeros(3 * SAMPLE_RATE_HZ, dtype=np.int16)])
    path = tmp_path_factory.mktemp("microphone") / "burmese.wav"
    path.write_bytes(pack(padded, container="wav", codec="pcm_s16le", rate=48_000))
    return path


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    config = dataclasses.replace(demo_ship_config(tmp_path), voice=VoiceConfig(max_seconds=LIMIT_S))
    outbox = Outbox.open(config.database_path, config.vessel.vessel_id)
    intake = Intake(config, outbox, default_codebook())
    member, pin = intake.register.add(
        name="Aung Min",
        document="SB-1",
        nationality="MM",
        language=Language.MYA,
        now=intake.clock(),
    )
    mother = intake.register.add_contact(
        member.crew,
        channel="email",
        address="mother@example.com",
        name="Mother",
        language=Language.MYA,
        now=intake.clock(),
    )
    try:
        with agent_web_server(intake) as url:
            yield Agent(url, intake, outbox, member.crew, pin, mother.contact)
    finally:
        outbox.close()


@pytest.fixture
def browser(source_wav: Path) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                *CHROMIUM_ARGS,
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-audio-capture={source_wav}",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 360, "height": 740})
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(str(error)))
    tab.on(
        "console",
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    try:
        yield tab
        assert problems == []  # no script error, no CSP violation
    finally:
        context.close()


def _sign_in(page: Page, agent: Agent) -> None:
    page.goto(f"{agent.url}/lang/mya?next=/login")
    page.fill("input[name=crew]", str(agent.crew))
    page.fill("input[name=pin]", agent.pin)
    page.click("form[action='/login'] button")
    page.wait_for_url("**/pin")
    page.fill("input[name=pin]", NEW_PIN)
    page.fill("input[name=pin2]", NEW_PIN)
    page.click("form[action='/pin'] button")
    page.wait_for_url("**/home")


def _record(page: Page, seconds: int) -> None:
    """Tap Record, wait until the page's clock says ``seconds``, tap again to stop, and
    wait until the recording is ready to play."""
    page.click("#voice-record")
    page.wait_for_selector("#voice[data-state=recording]")
    _record_more(page, seconds)


def _play_back(page: Page) -> float:
    """Play the recording on the page to the end; how far it played (seconds)."""
    return float(
        page.evaluate(
            """() => new Promise((resolve, reject) => {
                const audio = document.getElementById('voice-play');
                audio.addEventListener('ended', () => resolve(audio.currentTime));
                audio.addEventListener('error', () => reject(new Error('cannot play')));
                audio.play().catch(reject);
            })"""
        )
    )


def _queued(agent: Agent) -> list[int]:
    with agent.outbox.reading() as db:
        rows = db.execute(
            "SELECT message_seq FROM messages WHERE crew = ? AND voice IS NOT NULL "
            "ORDER BY message_seq",
            (agent.crew,),
        ).fetchall()
    return [int(seq) for (seq,) in rows]


async def _relay_delivers(agent: Agent, batch: bytes, db: Path) -> list[EmailMessage]:
    """The relay ingests the vessel's batch and mails it to a real SMTP server."""
    store = await SqliteStore.open(db)
    try:
        now = time.time()
        vessel = agent.intake.config.vessel.vessel_id
        info = VesselInfo("Sea Star", "TH", "TH-0042", "Andaman Fishing Co", (1,))
        await store.add_vessel(info, VESSEL_KEY.verify_key.key, now - 3600, vessel)
        ingestor = Ingestor(store, default_codebook(), clock=time.time)
        assert await ingestor.handle(f"vr/{vessel}/u", batch) is IngestOutcome.STORED
        async with SmtpSink() as sink:
            worker = DeliveryWorker(store, sink.sender(), IDENTITY, BOOK, clock=time.time)
            assert await worker.deliver_due() == 1
            return sink.handler.messages()
    finally:
        await store.close()


def test_a_recorded_voice_message_reaches_the_familys_mail_and_plays(
    page: Page, agent: Agent, source_wav: Path, tmp_path: Path
) -> None:
    """Aung Min records his sentence on the Burmese write page, listens to it and sends
    it to his mother; the page shows his message's stages; the relay mails her an
    Opus-in-Ogg attachment as long as the sentence that is still the sentence he said."""
    _sign_in(page, agent)
    page.goto(f"{agent.url}/write")
    page.wait_for_selector("#voice:not([hidden])")
    source = trim_silence(decode_recording(source_wav.read_bytes(), limit_s=120))
    said_s = len(source) / SAMPLE_RATE_HZ
    _record(page, int(said_s) + 2)
    played = _play_back(page)
    assert played >= said_s  # the whole recording played back on the phone
    page.click("#voice-send")
    page.wait_for_url("**/messages/*")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "mya-voice-sent.png"), full_page=True)
    assert page.inner_text("#said-voice") == _burmese("Voice message")
    [seq] = _queued(agent)
    assert page.url.endswith(f"/messages/{seq}")
    page.goto(f"{agent.url}/inbox")  # the conversation with Mother shows it, with ticks
    assert page.inner_text(f"#m{seq} p") == _burmese("Voice message")
    assert page.locator(f"#m{seq} i.on").count() == 1  # queued on board

    now = agent.intake.clock()
    _, batch = agent.outbox.make_batch([seq], agent.intake.codebook, VESSEL_KEY, now)
    with concurrent.futures.ThreadPoolExecutor(1) as relay:  # Playwright owns this thread
        mails = relay.submit(asyncio.run, _relay_delivers(agent, batch, tmp_path / "r.db"))
        [mail] = mails.result(timeout=120)
    assert mail["To"].addresses[0].addr_spec == "mother@example.com"
    [attachment] = [p for p in mail.iter_attachments() if isinstance(p, EmailMessage)]
    assert attachment.get_content_type() == "audio/ogg"
    ogg = attachment.get_content()
    assert isinstance(ogg, bytes)
    heard = trim_silence(decode_recording(ogg, limit_s=120))
    heard_s = len(heard) / SAMPLE_RATE_HZ
    assert abs(heard_s - said_s) < 0.6, (heard_s, said_s)
    score = estoi(source, heard, max_lag_ms=400)
    assert score > 0.45, score  # 0.62 measured (Opus, Codec2 1200, Opus)


def _png() -> bytes:
    image = io.BytesIO()
    Image.new("RGB", (8, 8)).save(image, "PNG")
    return image.getvalue()


def test_bad_recordings_are_refused_on_the_page_in_burmese(
    page: Page, agent: Agent, source_wav: Path, tmp_path: Path
) -> None:
    """After one voice message is queued, Aung Min chooses a photo, a text file, a
    recording of silence and one of four sentences (over the page's 12 s): each time the
    page says why in Burmese, his recording stays ready to send again, nothing more is
    queued and the first voice message is still in the outbox. The page is served as a
    vessel's Wi-Fi serves it, over plain HTTP, where a browser lets no page record: the
    Record button stays hidden and a recording made with the phone's own recorder is
    chosen instead."""
    page.add_init_script("Object.defineProperty(window, 'isSecureContext', {value: false})")
    _sign_in(page, agent)
    page.goto(f"{agent.url}/write")
    page.wait_for_selector("#voice:not([hidden])")
    assert page.is_hidden("#voice-record")
    assert page.is_visible("#voice-file")
    first = page.evaluate("document.getElementById('voice').dataset.limit")
    assert first == str(LIMIT_S)
    page.set_input_files("#voice-file", str(source_wav))
    page.click("#voice-send")
    page.wait_for_url("**/messages/*")
    queued = _queued(agent)
    assert len(queued) == 1

    speech = decode_recording(source_wav.read_bytes(), limit_s=120)
    bad = {
        "photo.png": (_png(), errors.VoiceNoteNotAudio, {}),
        "notes.txt": (b"not a recording\n" * 40, errors.VoiceNoteUnreadable, {}),
        "quiet.wav": (wav(np.zeros(4 * SAMPLE_RATE_HZ, np.int16)), errors.VoiceNoteSilent, {}),
        "long.wav": (wav(np.tile(speech, 4)), errors.VoiceNoteTooLong, {"limit": LIMIT_S}),
    }
    in_burmese = {  # numbers in the page's digits
        "long.wav": {"limit": number(LIMIT_S, Language.MYA)},
    }
    page.goto(f"{agent.url}/write")
    page.fill("textarea[name=text]", "စာ မပို့ရသေးဘူး")  # typed, not sent: must stay
    for name, (data, refusal, fields) in bad.items():
        path = tmp_path / name
        path.write_bytes(data)
        page.set_input_files("#voice-file", str(path))
        page.click("#voice-send")
        page.wait_for_selector("#voice[data-state=refused]")
        assert refusal.msgid is not None
        said = page.inner_text("#voice-message")
        assert said == _burmese(refusal.msgid, **in_burmese.get(name, fields)), name
        assert said != refusal.msgid.format(**fields)
        page.screenshot(path=str(ARTIFACTS / f"mya-voice-{refusal.code}.png"), full_page=True)
        assert page.is_enabled("#voice-send")  # the recording is kept: send again
        page.evaluate("document.getElementById('voice').dataset.state = 'ready'")
    assert _queued(agent) == queued
    assert page.input_value("textarea[name=text]") == "စာ မပို့ရသေးဘူး"


def test_a_spoken_report_is_recorded_on_the_report_page_and_sealed_to_the_union(
    page: Page, agent: Agent, source_wav: Path
) -> None:
    """On the Burmese report page Aung Min holds the button down while he says what
    happened, is told to pick what it is about, picks "wages withheld" and sends it: the
    page shows his case number and receipt code, and the union's key opens, from the
    lane's sealed blocks on board, a report with his speech in it and no text."""
    _sign_in(page, agent)
    page.goto(f"{agent.url}/report")
    page.wait_for_selector("#voice:not([hidden])")
    # held down, the button records until it is let go (no category chosen yet)
    page.hover("#voice-record")
    page.mouse.down()
    page.wait_for_selector("#voice[data-state=recording]")
    source = trim_silence(decode_recording(source_wav.read_bytes(), limit_s=120))
    said_s = len(source) / SAMPLE_RATE_HZ
    page.wait_for_function(
        "(seconds) => Number(document.getElementById('voice').dataset.seconds || 0) >= seconds",
        arg=int(said_s) + 2,
        timeout=(int(said_s) + 20) * 1000,
    )
    page.mouse.up()
    page.wait_for_selector("#voice[data-state=recorded]")
    page.click("#voice-send")
    assert page.inner_text("#voice-message") == _burmese("Choose what the problem is about.")
    page.check("input[name=category][value='8']")
    page.click("#voice-send")
    page.wait_for_selector("#voice-done:not([hidden])")
    page.screenshot(path=str(ARTIFACTS / "mya-voice-report.png"), full_page=True)
    case_number = page.inner_text("#voice-case")
    receipt = page.inner_text("#voice-receipt")
    assert re.fullmatch(rf"{agent.intake.config.vessel.vessel_id}-\d{{12}}", case_number)
    [opened] = union_reads(
        blocks_on_board(agent.outbox), demo_union_private_key(), agent.intake.codebook
    )
    assert (opened.case_number, opened.receipt_code) == (case_number, receipt)
    assert opened.text == ""
    assert opened.voice is not None
    heard = decode_codec2(
        CodedSpeech(opened.voice.mode, opened.voice.duration_ms, opened.voice.frames)
    )
    assert abs(len(heard) - len(source)) < 0.6 * SAMPLE_RATE_HZ
    assert estoi(source, heard, max_lag_ms=400) > 0.45


def _record_more(page: Page, seconds: int) -> None:
    """Wait until the page's clock says ``seconds``, tap to stop, wait for the recording."""
    page.wait_for_function(
        "(seconds) => Number(document.getElementById('voice').dataset.seconds || 0) >= seconds",
        arg=seconds,
        timeout=(seconds + 20) * 1000,
    )
    page.click("#voice-record")
    page.wait_for_selector("#voice[data-state=recorded]")
