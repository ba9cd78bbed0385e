"""Intake mode A in a real browser (Debian's Chromium): the crew member's own key on the phone.

The agent's app runs under uvicorn on loopback with a union whose private key only this
test holds. In Chromium a crew member signs in, opens the mode-A page, which makes an
Ed25519 key pair in the phone's storage, shows the union key's fingerprint to compare,
and seals and signs a Burmese report with the vendored libsodium. The test then checks
that the agent's files hold no plaintext, that the union opens what the phone sent with a
verified phone signature whose fingerprint the page showed and the case number the agent
drew for the page inside the seal, and that a report a modified agent makes with its own
key opens as another signer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import nacl.public
import nacl.signing
import pytest
from playwright.sync_api import Page, sync_playwright

from common.codebooks import default_codebook
from protocol.cases import make_receipt_code, reporter_reply_keys
from protocol.evidence import EntryKind, EvidenceInvalid, fingerprint, make_entry, verify_chain
from protocol.languages import Language
from protocol.sealing import (
    A1_DOMAIN,
    GrievanceCategory,
    GrievancePlaintext,
    a1_message,
    open_grievance,
    seal_grievance_a1,
)
from shipboard.config import UnionConfig
from shipboard.crew import CrewRegister
from shipboard.errors import BadText
from shipboard.intake import Intake
from shipboard.outbox import Outbox
from shore.union.keys import load_union
from vessel_relay.demo.defaults import demo_ship_config

from ..kit.agent_web import agent_web_server
from ..kit.lane import blocks_on_board, union_reads
from ..union.test_union_inbox import (  # noqa: F401
    NOW,
    World,
    _cli,
    _uplink,
    sealed_stores,
    world,
)
from .test_crew_page import CHROMIUM_ARGS

UNION = nacl.public.PrivateKey(bytes(range(50, 82)))
CANARY = "ကျွန်ုပ်ကို သုံးလ လစာ မပေးပါ CANARY-A1-7f3e"
NEW_PIN = "86420975"


@dataclasses.dataclass
class Agent:
    url: str
    intake: Intake
    outbox: Outbox
    data_dir: Path
    crew: int
    pin: str


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    base = demo_ship_config(tmp_path)
    config = dataclasses.replace(
        base,
        unions=(UnionConfig(7, "Fishers' Union", bytes(UNION.public_key), (Language.MYA,)),),
    )
    codebook = default_codebook()
    outbox = Outbox.open(config.database_path, config.vessel.vessel_id)
    intake = Intake(config, outbox, codebook)
    member, pin = intake.register.add(
        name="Aung Min",
        document="SB-1",
        nationality="MM",
        language=Language.MYA,
        now=intake.clock(),
    )
    try:
        with agent_web_server(intake) as url:
            yield Agent(url, intake, outbox, tmp_path, member.crew, pin)
    finally:
        outbox.close()


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


def test_phone_enrols_seals_and_signs_and_the_agent_sees_only_ciphertext(agent: Agent) -> None:
    codebook = default_codebook()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 360, "height": 740})
            page = context.new_page()
            posted: list[bytes] = []
            problems: list[str] = []
            page.on(
                "console",
                lambda m: (
                    problems.append(m.text)
                    if m.type == "error" and not m.text.startswith("Failed to load resource")
                    else None
                ),
            )
            page.on(
                "response",
                lambda r: (
                    problems.append(f"{r.status} {r.url}")
                    if r.status >= 400 and not r.url.endswith("/favicon.ico")
                    else None
                ),
            )
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on(
                "request",
                lambda r: (
                    posted.append(r.post_data_buffer or b"")
                    if r.method == "POST" and "/report/phone/sealed" in r.url
                    else None
                ),
            )
            _sign_in(page, agent)
            page.goto(f"{agent.url}/report/phone")
            try:
                page.wait_for_selector(
                    "#phone-keys[data-ready=yes]", timeout=20_000, state="attached"
                )
            finally:
                assert problems == []
            assert page.is_hidden("#no-script")
            shown_union = page.inner_text(".union-fingerprint")
            assert shown_union == fingerprint(bytes(UNION.public_key))
            phone_fp = page.inner_text("#phone-fingerprint")
            stored_pk = page.evaluate(
                "() => sodium.from_base64(JSON.parse(localStorage.getItem("
                "Object.keys(localStorage).find(k => k.startsWith('vr.a1.key.')))).pk,"
                " sodium.base64_variants.ORIGINAL).join(',')"
            )
            phone_key = bytes(int(b) for b in stored_pk.split(","))
            assert phone_fp == fingerprint(phone_key)

            # not compared with the union's card yet: nothing is sent
            page.check("input[name=category][value='8']")
            page.fill("#text", CANARY)
            page.click("#seal-send")
            assert page.is_visible("#message")
            assert posted == []

            page.check("#compared")
            page.click("#seal-send")
            page.wait_for_selector("#done:not([hidden])", timeout=10_000)
            case_number = page.inner_text("#case")
            receipt = page.inner_text("#receipt").replace(" ", "")
            # the union key is now pinned: a page serving another key is refused on the phone
            page.evaluate(
                "() => { const u = document.querySelector('input[name=union]');"
                " u.dataset.key = sodium.to_base64(new Uint8Array(32).fill(9),"
                " sodium.base64_variants.ORIGINAL); u.dispatchEvent(new Event('change')); }"
            )
            assert page.is_disabled("#seal-send")
            assert "union" in page.inner_text("#message").lower() or page.is_visible("#message")
            context.close()
        finally:
            browser.close()

    # only ciphertext went over the Wi-Fi, and the agent stored only ciphertext
    assert len(posted) == 1
    assert CANARY.encode() not in posted[0]
    agent.outbox.checkpoint()
    for path in agent.data_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert CANARY.encode() not in data, path
            assert "CANARY-A1-7f3e".encode("utf-16-le") not in data, path

    # the union opens it from the lane's blocks: the phone's signature verifies and names
    # the phone's key, and the case number the page drew is inside the seal ("case")
    (opened,) = union_reads(blocks_on_board(agent.outbox), bytes(UNION), codebook)
    assert opened.case_number == case_number
    assert case_number.startswith(f"{agent.intake.config.vessel.vessel_id}-")
    assert len(case_number.split("-")[1]) == 12
    assert opened.text == CANARY
    assert opened.signer_key == phone_key
    assert opened.receipt_code == receipt
    assert opened.crew_name == "Aung Min"
    assert opened.reply_key is not None
    # the same bytes the browser posted (a JS-made ciphertext opens in Python)
    from_browser = open_grievance(posted[0], bytes(UNION), codebook)
    assert from_browser.signer_key == phone_key
    assert from_browser.case_number == case_number
    # the reporter finds the case on board by their PIN (the casebook), mode A: no receipt
    who = agent.intake.register.sign_in(agent.crew, NEW_PIN)
    (entry,) = agent.intake.view.casebook(agent.crew, who.case_key)
    assert (entry.case_number, entry.receipt_code, entry.mode) == (case_number, None, "A")

    # a modified agent makes its own report with its own key: it opens as another signer
    forged = GrievancePlaintext(
        category=opened.category,
        text="I withdraw my complaint.",
        lang=Language.MYA,
        receipt_code=receipt,
        written_minutes=opened.written_minutes + 1,
    )
    sealed = seal_grievance_a1(forged, bytes(range(200, 232)), bytes(UNION.public_key))
    other = open_grievance(sealed, bytes(UNION), codebook)
    assert other.signer_key is not None
    assert fingerprint(other.signer_key) != phone_fp


# --- union side: what `union show` says, pinned phone key, offline evidence ------------

PHONE_SEED = bytes(range(100, 132))
AGENT_SEED = bytes(range(200, 232))  # a modified agent's own key


def _a1(seed: bytes, receipt: str, text: str, reply_key: bytes | None) -> GrievancePlaintext:
    return GrievancePlaintext(
        category=GrievanceCategory.WITHHOLDING_OF_WAGES,
        text=text,
        lang=Language.MYA,
        receipt_code=receipt,
        written_minutes=int(NOW // 60),
        crew_name="Aung Min",
        crew_document="SB-1",
        reply_key=reply_key,
    )


@pytest.mark.usefixtures("sealed_stores")
async def test_union_shows_phone_signer_refuses_other_keys_and_verifies_offline(
    world: World,  # noqa: F811 - the union inbox's fixture, imported
    tmp_path: Path,
) -> None:
    """The union sees who signed (mode A) or that the agent sealed (mode B); an addition
    signed by another key than the case's phone key is not filed; the export verifies
    offline with the reporter's signature, and a changed reporter text does not."""
    register = CrewRegister(world.outbox)
    member, pin = register.add(
        name="Aung Min", document="SB-1", nationality="MM", language=Language.MYA, now=NOW
    )
    signed_in = register.sign_in(member.crew, pin)
    reply = reporter_reply_keys(signed_in.case_key).public_key
    union_key = load_union(world.union_dir).box_public
    receipt = make_receipt_code("123456789012345")

    def file(report: GrievancePlaintext, seed: bytes) -> str:
        sealed = seal_grievance_a1(report, seed, union_key)
        return world.intake.file_sealed_grievance(signed_in, union_id=7, sealed=sealed).case_number

    case = file(_a1(PHONE_SEED, receipt, "လစာ မရသေးပါ။", reply), PHONE_SEED)
    file(_a1(AGENT_SEED, receipt, "I withdraw my complaint.", None), AGENT_SEED)
    file(_a1(PHONE_SEED, receipt, "ပတ်စ်ပို့ကို ကပ္ပတိန် သိမ်းထားသည်။", reply), PHONE_SEED)
    mode_b = world.intake.file_grievance(
        signed_in,
        union_id=7,
        category=GrievanceCategory.OTHER,
        text="mode B report",
        lang=Language.ENG,
        anonymous=True,
    )
    with pytest.raises(BadText):
        world.intake.file_sealed_grievance(signed_in, union_id=7, sealed=b"x" * 300)
    await _uplink(world)
    union = ["--dir", str(world.union_dir)]
    fetched = await _cli("union", "fetch", *union)
    assert "2 new cases, 1 additions, 1 unreadable" in fetched

    shown = await _cli("union", "show", *union, case)
    phone_fp = fingerprint(bytes(nacl.signing.SigningKey(PHONE_SEED).verify_key))
    assert f"signed on the reporter's phone, key {phone_fp}" in shown
    assert "ပတ်စ်ပို့ကို" in shown  # the genuine addition, signed by the same phone key
    assert "I withdraw my complaint." not in shown  # the modified agent's one: not filed
    other = await _cli("union", "show", *union, mode_b.case_number)
    assert "sealed by the vessel agent (mode B)" in other

    export = tmp_path / "case.json"
    await _cli("union", "export", *union, case, "-o", str(export))
    assert "verified: case" in await _cli("union", "verify", str(export))

    # an inspector's check: a report entry whose text is not what the phone signed fails,
    # even when the union (re-)signs it
    identity = load_union(world.union_dir)
    message = a1_message(
        _a1(PHONE_SEED, receipt, "signed text", reply),
        phone_key := bytes(nacl.signing.SigningKey(PHONE_SEED).verify_key),
    )
    signature = nacl.signing.SigningKey(PHONE_SEED).sign(A1_DOMAIN + message).signature
    fields: dict[str, str | int | bytes] = {
        "text": "signed text",
        "reporter_key": phone_key,
        "reporter_signature": signature,
        "reporter_signed": message,
    }
    good = make_entry(
        case="1-1",
        previous=None,
        kind=EntryKind.REPORT,
        author=identity.signing_key,
        at_minutes=1,
        fields=fields,
    )
    authors = {identity.signing_key.verify_key.key: "union"}
    verify_chain([good], authors)
    for change in ({"text": "other text"}, {"reporter_signature": bytes(64)}):
        bad = make_entry(
            case="1-1",
            previous=None,
            kind=EntryKind.REPORT,
            author=identity.signing_key,
            at_minutes=1,
            fields={**fields, **change},
        )
        with pytest.raises(EvidenceInvalid, match=r"reporter|signed"):
            verify_chain([bad], authors)
