"""The union inbox end to end over the relay's real union API (uvicorn on loopback, SQLite).

A crew member files a grievance on board (real intake and outbox); the batch is ingested
by the relay's store; the union fetches it over HTTP with signed requests, opens it
locally, replies and moves the case on; the downlink batch is applied on board, and the
reporter (and only the reporter) opens the notes in their inbox.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from common.codebooks import default_codebook
from protocol.batch import Direction, decode_batch
from protocol.cases import is_receipt_code, open_case_note, reporter_reply_keys
from protocol.envelopes import CaseStatus
from protocol.errors import SealedBoxInvalid
from protocol.languages import Language
from protocol.sealing import GrievanceCategory
from protocol.signing import SigningKey
from shipboard.config import UnionConfig
from shipboard.crew import CrewRegister
from shipboard.intake import Intake
from shipboard.outbox import Outbox
from shore.store import SqliteStore, VesselInfo
from shore.union.cli import PASSPHRASE_FILE_ENV
from shore.union.inbox import create_encrypted_store
from shore.union.keys import init_union, load_union
from shore.union_api import UnionAccount, make_union_api, request_to_sign
from tests.kit.ports import free_port
from tests.kit.wait import until_started
from tests.shore.store_fixtures import decoded_downlink, shore_encoder
from vessel_relay.cli import app
from vessel_relay.demo.defaults import demo_ship_config

NOW = 1_790_000_000.0
STORE_PASSPHRASE = "tide gauge mooring line"
VESSEL_KEY = SigningKey.from_seed(bytes(range(32)))
REPORT = "ကျွန်ုပ်တို့ လစာ သုံးလ မရသေးပါ။ ပတ်စ်ပို့ကို ကပ္ပတိန် သိမ်းထားသည်။"

runner = CliRunner()


@dataclasses.dataclass
class World:
    store: SqliteStore
    vessel_id: int
    outbox: Outbox
    intake: Intake
    union_dir: Path
    other_dir: Path
    port: int


@pytest.fixture
def sealed_stores(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both unions' stores encrypted at rest, as 'union init' makes them, the passphrase in
    the file the union's commands read ('union fetch' refuses a store in clear). Without
    it, ``world``'s stores are in clear, as an older version left them (the Python API
    tests of encryption start from there)."""
    secret = world.union_dir.parent / "union-passphrase"
    secret.write_text(STORE_PASSPHRASE + "\n", encoding="utf-8")
    secret.chmod(0o600)
    monkeypatch.setenv(PASSPHRASE_FILE_ENV, str(secret))
    for directory in (world.union_dir, world.other_dir):
        create_encrypted_store(load_union(directory), default_codebook(), STORE_PASSPHRASE)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    union = init_union(tmp_path / "union", 7, "Fishers' Union", url)
    other = init_union(tmp_path / "other", 8, "Other Union", url)
    store = await SqliteStore.open(tmp_path / "relay.db")
    info = VesselInfo("Sea Star", "TH", "TH-0042", "Owner Co", unions=(7,))
    vessel_id = await store.add_vessel(info, VESSEL_KEY.verify_key.key, NOW)
    config = demo_ship_config(tmp_path / "ship")
    config = dataclasses.replace(
        config,
        unions=(UnionConfig(7, "Fishers' Union", union.box_public, (Language.MYA,)),),
        # slots (on by default) are shown in test_daily_slots.py; here a report goes at once
        quota=dataclasses.replace(config.quota, daily_slots=False),
    )
    outbox = Outbox.open(tmp_path / "outbox.sqlite3", vessel_id)
    intake = Intake(config, outbox, default_codebook(), clock=lambda: NOW)
    accounts = [
        UnionAccount(7, union.signing_key.verify_key),
        UnionAccount(8, other.signing_key.verify_key),
    ]
    api = make_union_api(store, accounts)
    server = uvicorn.Server(
        uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    await until_started(server, task)
    try:
        yield World(store, vessel_id, outbox, intake, tmp_path / "union", tmp_path / "other", port)
    finally:
        server.should_exit = True
        await task
        outbox.close()
        await store.close()


async def _uplink(world: World) -> None:
    """The vessel batches what is pending; the relay stores it."""
    seqs = [m.message_seq for m in world.outbox.pending_messages(NOW)]
    _, data = world.outbox.make_batch(seqs, default_codebook(), VESSEL_KEY, NOW)
    batch = decode_batch(
        data,
        codebook=default_codebook(),
        verify_key=VESSEL_KEY.verify_key,
        direction=Direction.UPLINK,
    )
    await world.store.ingest_batch(batch, data, NOW)


async def _downlink(world: World) -> None:
    """The relay makes its downlink batch; the vessel applies it."""
    encode = shore_encoder(world.vessel_id, NOW)
    made = await world.store.make_downlink_batch(world.vessel_id, NOW + 60, encode, 200)
    assert made is not None
    world.outbox.apply_downlink(decoded_downlink(made.data), NOW + 120)


async def _cli(*args: str) -> str:
    result = await asyncio.to_thread(runner.invoke, app, list(args))
    assert result.exit_code == 0, result.output + str(result.exception)
    return result.output


@pytest.mark.usefixtures("sealed_stores")
async def test_grievance_to_union_and_answer_back_to_the_reporter(
    world: World, tmp_path: Path
) -> None:
    """A Burmese wage grievance reaches the union sealed, is answered, and the reporter reads it."""
    register = CrewRegister(world.outbox)
    member, pin = register.add(
        name="Aung Min", document="SB-0012345", nationality="MM", language=Language.MYA, now=NOW
    )
    signed_in = register.sign_in(member.crew, pin)
    filed = world.intake.file_grievance(
        signed_in,
        union_id=7,
        category=GrievanceCategory.WITHHOLDING_OF_WAGES,
        text=REPORT,
        lang=Language.MYA,
        anonymous=False,
    )
    assert is_receipt_code(filed.receipt_code)
    await _uplink(world)
    union = ["--dir", str(world.union_dir)]

    assert "1 new cases" in await _cli("union", "fetch", *union)
    listed = await _cli("union", "list", *union, "--category", "withholding of wages")
    assert filed.case_number in listed
    assert "received" in listed
    assert "no cases" in await _cli("union", "list", *union, "--vessel", "999")
    shown = await _cli("union", "show", *union, filed.receipt_code)
    assert REPORT in shown  # the reporter's words, as written
    assert "Aung Min" in shown

    await _cli("union", "status", *union, filed.case_number, "acknowledged")
    await _cli("union", "reply", *union, filed.case_number, "ကျွန်ုပ်တို့ အေဂျင်စီကို ဖုန်းဆက်ပါမည်။")
    refused = await asyncio.to_thread(
        runner.invoke, app, ["union", "status", *union, filed.case_number, "resolved"]
    )
    assert refused.exit_code == 1
    assert "cannot become resolved" in refused.output

    await _downlink(world)
    cases = world.outbox.my_cases(signed_in.case_key)
    assert cases == [filed.message_seq]
    with world.outbox.reading() as db:
        rows = db.execute(
            "SELECT case_seq, code, sealed_note FROM inbox WHERE kind = 'case' ORDER BY entry"
        ).fetchall()
    assert [(row[0], row[1]) for row in rows] == [(filed.message_seq, 2), (filed.message_seq, 2)]
    keys = reporter_reply_keys(signed_in.case_key)
    opened = [open_case_note(bytes(row[2]), keys.private_key) for row in rows]
    assert opened[0].status is CaseStatus.ACKNOWLEDGED
    assert opened[0].case == filed.case_number
    assert opened[1].text == "ကျွန်ုပ်တို့ အေဂျင်စီကို ဖုန်းဆက်ပါမည်။"
    assert opened[1].lang is Language.MYA
    stranger = reporter_reply_keys(b"another crew member's case key")
    with pytest.raises(SealedBoxInvalid):
        open_case_note(bytes(rows[0][2]), stranger.private_key)

    export = tmp_path / "case.json"
    await _cli("union", "export", *union, filed.case_number, "-o", str(export))
    verified = await _cli("union", "verify", str(export))
    assert "verified: case" in verified
    assert "3 entries" in verified
    document = json.loads(export.read_text())
    document["entries"] = document["entries"][:1] + document["entries"][2:]
    export.write_text(json.dumps(document))
    tampered = await asyncio.to_thread(runner.invoke, app, ["union", "verify", str(export)])
    assert tampered.exit_code == 1
    assert "NOT VERIFIED" in tampered.output


@pytest.mark.usefixtures("sealed_stores")
async def test_a_union_sees_only_its_own_reports_and_requests_must_be_signed(
    world: World,
) -> None:
    """Another union fetches nothing, cannot answer this union's case, and unsigned or
    replayed requests are refused."""
    register = CrewRegister(world.outbox)
    member, pin = register.add(
        name="Sok", document="KH-77", nationality="KH", language=Language.KHM, now=NOW
    )
    filed = world.intake.file_grievance(
        register.sign_in(member.crew, pin),
        union_id=7,
        category=GrievanceCategory.RETENTION_OF_DOCUMENTS,
        text="They keep my passport.",
        lang=Language.ENG,
        anonymous=True,
    )
    await _uplink(world)
    other = ["--dir", str(world.other_dir)]
    assert "0 new cases" in await _cli("union", "fetch", *other)

    identity = load_union(world.other_dir)
    vessel, seq = filed.case_number.split("-")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{world.port}") as http:
        unsigned = await http.get("/union/v1/reports")
        assert unsigned.status_code == 401
        path = f"/union/v1/cases/{vessel}/{seq}/notes"
        body = json.dumps({"status": 2, "sealed_note": ""}).encode()
        at = int(time.time())
        headers = {
            "X-Union": "8",
            "X-Time": str(at),
            "X-Signature": identity.signing_key.sign(request_to_sign("POST", path, at, body)).hex(),
        }
        foreign = await http.post(path, content=body, headers=headers)
        assert foreign.status_code == 404
        replayed = await http.post(path, content=body, headers=headers)
        assert replayed.status_code == 401
        assert "already used" in replayed.json()["error"]


CANARIES = {
    Language.MYA: "ကနရီ-မြန်မာ လစာမရ ၄၄၁၇",
    Language.KHM: "កាណារី ខ្មែរ ប្រាក់ខែ ៤៤១៧",
    Language.THA: "คานารี ไทย ค่าจ้าง ๔๔๑๗",
    Language.LAO: "ຄານາຣີ ລາວ ຄ່າຈ້າງ ໔໔໑໗",
    Language.ENG: "canary-english wages 4417",
}
ZAWGYI_CANARY = "ကနရီ ေဇာ္ဂ်ီ လစာ ၄၄၁၇"  # Zawgyi-encoded text, converted at intake


def _forms(text: str) -> list[bytes]:
    words = [text, *text.split()]
    found: list[bytes] = []
    for word in words:
        if len(word) >= 4:
            found += [word.encode("utf-8"), word.encode("utf-16-le"), word.encode("utf-16-be")]
    return found


@pytest.mark.usefixtures("sealed_stores")
async def test_canaries_leave_no_trace_on_board_or_at_the_relay(
    world: World, tmp_path: Path
) -> None:
    """Canary reports in five languages (and Zawgyi) are filed, batched and stored by the
    relay; no file the agent or the relay wrote (db, -wal, -shm) holds any of their words
    in UTF-8 or UTF-16. (The union's own database holds them, by design: excluded.)"""
    register = CrewRegister(world.outbox)
    member, pin = register.add(
        name="Canary Crew", document="CAN-1", nationality="MM", language=Language.MYA, now=NOW
    )
    signed_in = register.sign_in(member.crew, pin)
    texts = [*CANARIES.items(), (Language.MYA, ZAWGYI_CANARY)]
    for lang, text in texts:
        world.intake.file_grievance(
            signed_in,
            union_id=7,
            category=GrievanceCategory.OTHER,
            text=text,
            lang=lang,
            anonymous=True,
        )
    await _uplink(world)
    world.outbox.checkpoint()
    needles = [form for _, text in texts for form in _forms(text)]
    skip = (world.union_dir, world.other_dir)
    hits, scanned = await asyncio.to_thread(_scan, tmp_path, needles, skip)
    assert hits == []
    assert scanned >= 3  # outbox, relay store, their WAL files at least
    # and the union does read them
    assert "6 new cases" in await _cli("union", "fetch", "--dir", str(world.union_dir))


def _scan(root: Path, needles: list[bytes], skip: tuple[Path, ...]) -> tuple[list[str], int]:
    """Files under ``root`` (outside ``skip``) holding any needle, and how many were read."""
    hits: list[str] = []
    scanned = 0
    for path in root.rglob("*"):
        if not path.is_file() or any(folder in path.parents for folder in skip):
            continue
        data = path.read_bytes()
        scanned += 1
        hits += [f"{path}: {needle!r}" for needle in needles if needle in data]
    return hits, scanned
