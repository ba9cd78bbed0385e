"""A spoken grievance (issue 24): said on the crew page, sealed on board, carried by the
grievance lane, filed by the union's app and played on its web page; never in the clear on
the vessel's disk or at the relay.

Aung Min cannot write well. On the Burmese report page he records what happened (Chromium's
WebM/Opus, made here from espeak-ng's Burmese) and sends it to his union. The agent codes
it with Codec2 in memory, seals it to the union's key with the case number inside, and
writes only sealed blocks into the lane. Then the canary scan: no file under the vessel's
data directory holds any piece of the recording as it was posted or of its Codec2 speech.
The lane releases its blocks period after period; each batch goes to the real relay store
through its ingest; the relay's files are scanned the same way. The union fetches over the
real union API, files the case with the speech in its evidence chain, and its web page
plays it: the Opus the caseworker's browser gets decodes to what Aung Min said.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import pyotp
import pytest
import uvicorn
from typer.testing import CliRunner

from common.codebooks import default_codebook
from common.signins import SignInGuard
from common.speech import decode_recording
from protocol.languages import Language
from protocol.voice import SAMPLE_RATE_HZ
from shipboard.config import UnionConfig
from shipboard.errors import VoiceNoteSilent
from shipboard.http_api import create_app
from shipboard.intake import Intake
from shipboard.lane_plan import ReservoirParams
from shipboard.outbox import Outbox
from shipboard.voice import code_recording
from shipboard.web.i18n import Translations
from shipboard.web.phones import SignedInPhones
from shore.ingest import Ingestor
from shore.store import IngestOutcome, SqliteStore, VesselInfo
from shore.union.client import RelayClient
from shore.union.inbox import UnionInbox
from shore.union.keys import UnionIdentity, init_union, load_union
from shore.union.totp import SecondFactorBook, read_second_factors, totp_path
from shore.union.web import UnionWebSettings, read_caseworkers
from shore.union.web import create_app as union_web_app
from shore.union_api import UnionAccount, make_union_api
from tests.kit.clock import FakeClock
from tests.kit.ports import free_port
from tests.kit.speech import BURMESE, estoi, spoken, wav, webm_opus
from tests.kit.wait import until_started
from tests.shore.store_fixtures import VESSEL_KEY
from vessel_relay.cli import app as cli_app
from vessel_relay.demo.defaults import demo_ship_config

DAY = 86_400
START = (1_790_000_000 // DAY) * DAY
PASSWORD = "a long caseworker passphrase"
OWN_PIN = "80808080"
#: Bytes of a piece looked for: four Codec2 1200 frames, or a slice of the posted file.
PIECE = 24


@dataclasses.dataclass
class Ship:
    client: httpx.AsyncClient
    intake: Intake
    outbox: Outbox
    clock: FakeClock
    crew: int
    pin: str
    data_dir: Path


@pytest.fixture
def union(tmp_path: Path) -> UnionIdentity:
    port = free_port()
    made = init_union(tmp_path / "union", 7, "Fishers' Union", f"http://127.0.0.1:{port}")
    added = CliRunner().invoke(
        cli_app,
        ["union", "user", "add", "thida", "--dir", str(made.directory)],
        input=PASSWORD + "\n",
    )
    assert added.exit_code == 0, added.output
    return made


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(tmp_path / "relay" / "relay.db")
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def ship(tmp_path: Path, union: UnionIdentity, store: SqliteStore) -> AsyncIterator[Ship]:
    info = VesselInfo("Sea Star", "TH", "TH-0042", "Owner Co", unions=(7,))
    vessel_id = await store.add_vessel(info, VESSEL_KEY.verify_key.key, START - DAY)
    data_dir = tmp_path / "ship"
    config = dataclasses.replace(
        demo_ship_config(data_dir),
        unions=(UnionConfig(7, "Fishers' Union", union.box_public, (Language.MYA,)),),
    )
    assert config.quota.daily_slots  # the grievance lane, as deployed
    config = dataclasses.replace(
        config, vessel=dataclasses.replace(config.vessel, vessel_id=vessel_id)
    )
    outbox = Outbox.open(config.database_path, vessel_id)
    clock = FakeClock(START + 3600)
    intake = Intake(config, outbox, default_codebook(), clock=clock)
    member, pin = intake.register.add(
        name="Aung Min", document="SB-1", nationality="MM", language=Language.MYA, now=clock()
    )
    app = create_app(intake, phones=SignedInPhones(clock=clock), guard=SignInGuard(clock=clock))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://vessel", follow_redirects=True
    ) as client:
        yield Ship(client, intake, outbox, clock, member.crew, pin, data_dir)
    outbox.close()


def _csrf(response: httpx.Response) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', response.text)
    assert match, response.text[:300]
    return match.group(1)


async def _signed_in(ship: Ship) -> str:
    """Aung Min signs in on the Burmese page and chooses his PIN; the page's CSRF token."""
    await ship.client.get("/lang/mya?next=/login")
    form = await ship.client.get("/login")
    chosen = await ship.client.post(
        "/login", data={"crew": str(ship.crew), "pin": ship.pin, "csrf": _csrf(form)}
    )
    assert chosen.url.path == "/pin"
    home = await ship.client.post(
        "/pin", data={"pin": OWN_PIN, "pin2": OWN_PIN, "csrf": _csrf(chosen)}
    )
    assert home.url.path == "/home"
    report_page = await ship.client.get("/report")
    assert 'data-action="/report/voice"' in report_page.text
    return _csrf(report_page)


@contextlib.contextmanager
def _inbox(identity: UnionIdentity) -> Iterator[UnionInbox]:
    """The union's app over the relay (closed afterwards, its HTTP client too)."""
    client = RelayClient(identity)
    inbox = UnionInbox(load_union(identity.directory), default_codebook(), client=client)
    try:
        yield inbox
    finally:
        inbox.close()
        client.close()


def _pieces(data: bytes, size: int = PIECE, count: int = 40) -> list[bytes]:
    """``count`` pieces of ``size`` bytes spread over ``data``."""
    step = max(1, (len(data) - size) // count)
    return [data[at : at + size] for at in range(0, len(data) - size, step)][:count]


def _scan(root: Path, needles: list[bytes]) -> tuple[list[str], int]:
    hits: list[str] = []
    scanned = 0
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            scanned += 1
            hits += [f"{path.name}: piece {n}" for n, piece in enumerate(needles) if piece in data]
    return hits, scanned


async def test_a_spoken_grievance_reaches_the_union_sealed_and_plays_there(
    ship: Ship,
    union: UnionIdentity,
    store: SqliteStore,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Said on the Burmese report page, found nowhere in the clear on board or at the
    relay, filed by the union with its speech, and played on the union's web page."""
    csrf = await _signed_in(ship)
    source = spoken(BURMESE, "my")
    recording = webm_opus(source)

    # a silent recording is refused in Burmese, and nothing is filed
    quiet = await ship.client.post(
        "/report/voice?category=8&union=7",
        content=wav(np.zeros(3 * SAMPLE_RATE_HZ, np.int16)),
        headers={"x-csrf-token": csrf},
    )
    assert quiet.status_code == 422
    assert VoiceNoteSilent.msgid is not None
    said = Translations().gettext(Language.MYA, VoiceNoteSilent.msgid)
    assert quiet.json()["detail"] == said != VoiceNoteSilent.msgid

    ship.intake.release_lane(ship.clock())  # the agent's link starts the lane at start-up
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        filed = await ship.client.post(
            "/report/voice?category=8&union=7",
            content=recording,
            headers={"x-csrf-token": csrf, "content-type": "audio/webm;codecs=opus"},
        )
    assert filed.status_code == 201, filed.text
    # the journal (the owner's) gets no line at all when someone speaks a report
    assert [r.getMessage() for r in caplog.records if r.name.startswith("shipboard")] == []
    case_number = filed.json()["case_number"]
    assert case_number.startswith(f"{ship.intake.config.vessel.vessel_id}-")
    assert re.fullmatch(r"\d{16}", filed.json()["receipt_code"])

    # what is looked for: pieces of the file as posted, and of its Codec2 speech
    voice = ship.intake.config.voice
    speech = code_recording(recording, limit_s=voice.max_seconds, mode=voice.mode)
    needles = _pieces(recording) + _pieces(speech.frames)
    planted = tmp_path / "planted" / "speech.bin"  # the scan finds what it looks for
    planted.parent.mkdir()
    planted.write_bytes(b"x" + speech.frames + recording)
    assert len(_scan(planted.parent, needles)[0]) == len(needles) == 80
    ship.outbox.checkpoint()
    hits, scanned = await asyncio.to_thread(_scan, ship.data_dir, needles)
    assert hits == []
    assert scanned >= 1

    # the lane releases its blocks, a period at a time, and the relay ingests each batch
    ingestor = Ingestor(store, default_codebook(), clock=ship.clock)
    shape = ship.intake.config.quota.lane_shape()
    # every row of the reservoir leaves once in pool_rows periods: the report's too
    for _ in range(ReservoirParams.for_lane(shape).pool_rows + 2):
        ship.clock.advance(shape.period_s)
        ship.intake.release_lane(ship.clock())
        pending = [m.message_seq for m in ship.outbox.pending_messages(ship.clock())]
        _, data = ship.outbox.make_batch(pending, default_codebook(), VESSEL_KEY, ship.clock())
        topic = f"vr/{ship.intake.config.vessel.vessel_id}/u"
        assert await ingestor.handle(topic, data) is IngestOutcome.STORED
    hits, scanned = await asyncio.to_thread(_scan, tmp_path / "relay", needles)
    assert hits == []
    assert scanned >= 1

    # the union fetches over its API, files the case with the speech, and plays it
    relay_port = int(union.relay_url.rsplit(":", 1)[1])
    api = make_union_api(store, [UnionAccount(7, union.signing_key.verify_key)])
    server = uvicorn.Server(
        uvicorn.Config(api, host="127.0.0.1", port=relay_port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    await until_started(server, task)
    try:
        with _inbox(union) as inbox:
            fetched = await asyncio.to_thread(inbox.fetch)
            assert fetched.new_cases == 1
            view = inbox.show(case_number)
            [report] = view.entries[:1]
            assert report.fields["text"] == ""
            assert report.fields["voice"] == speech.frames
            settings = UnionWebSettings(
                read_caseworkers(union.directory),
                second_factor=SecondFactorBook.load(union.directory),
            )
            code = pyotp.TOTP(read_second_factors(totp_path(union.directory))["thida"]).now()
            web = union_web_app(inbox, settings)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=web), base_url="http://union"
            ) as http:
                form = await http.get("/login")
                await http.post(
                    "/login",
                    data={
                        "caseworker": "thida",
                        "password": PASSWORD,
                        "code": code,
                        "csrf": _csrf(form),
                    },
                )
                page = await http.get(f"/cases/{case_number}")
                assert page.status_code == 200
                link = f"/cases/{case_number}/voice/{report.index}.ogg"
                assert f'src="{link}"' in page.text
                ogg = await http.get(link)
                assert ogg.status_code == 200
                assert ogg.headers["content-type"] == "audio/ogg"
                assert ogg.headers["cache-control"] == "no-store"
                heard = decode_recording(ogg.content, limit_s=120)
                assert abs(len(heard) - len(source)) < 0.5 * SAMPLE_RATE_HZ
                assert estoi(source, heard) > 0.4
                elsewhere = await http.get(f"/cases/{case_number}/voice/99.ogg")
                assert elsewhere.status_code == 404
    finally:
        server.should_exit = True
        await task
