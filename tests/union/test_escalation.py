"""Deadlines and escalation through the real relay: a case not acknowledged within its
deadline goes to the union's second organisation (another union at the relay), with the
report only if the reporter agreed at filing; the reporter is told on board; both
organisations see the case's history.

Real intake and outbox on board, the relay's store and union API (uvicorn on loopback),
two unions' own apps; the downlink batch is applied on board and the reporter opens it.
"""

from __future__ import annotations

import asyncio
import re

import httpx
import pyotp

from common.codebooks import default_codebook
from common.passwords import hash_password
from protocol.cases import open_case_note, reporter_reply_keys
from protocol.envelopes import CaseStatus
from protocol.errors import SealedBoxInvalid
from protocol.languages import Language
from protocol.sealing import GrievanceCategory
from protocol.union_card import UnionCard
from shipboard.crew import CrewRegister
from shore.union.client import RelayClient
from shore.union.inbox import UnionInbox
from shore.union.keys import load_union
from shore.union.totp import SecondFactorBook
from shore.union.web import UnionWebSettings, create_app
from tests.union.test_union_inbox import NOW, World, _downlink, _uplink, world

__all__ = ["world"]  # the fixture, imported for these tests

SHARED = "The captain hit me and keeps my passport. Please tell the labour office."
PRIVATE = "They will punish me if anyone finds out I wrote this."


async def test_an_unacknowledged_case_escalates_at_its_deadline(world: World) -> None:
    """Two reports to union 7, one agreeing to be passed on, one not. Union 7 names union 8
    for the vessel (deadline 2 days) and does not answer. A day later nothing happens; past
    two days the next fetch escalates both: union 8 receives the first report as written
    and only a notice (no text, no category, no name) for the second; both reporters see
    "referred" on board; union 7's case history and access log say what went where."""
    register = CrewRegister(world.outbox)
    one, pin_one = register.add(
        name="Aung Min", document="SB-1", nationality="MM", language=Language.MYA, now=NOW
    )
    two, pin_two = register.add(
        name="Ko Ko", document="SB-2", nationality="MM", language=Language.MYA, now=NOW
    )
    first_in = register.sign_in(one.crew, pin_one)
    second_in = register.sign_in(two.crew, pin_two)
    agreed = world.intake.file_grievance(
        first_in,
        union_id=7,
        category=GrievanceCategory.PHYSICAL_OR_SEXUAL_VIOLENCE,
        text=SHARED,
        lang=Language.ENG,
        anonymous=False,
        consent_to_escalate=True,
    )
    kept = world.intake.file_grievance(
        second_in,
        union_id=7,
        category=GrievanceCategory.INTIMIDATION_AND_THREATS,
        text=PRIVATE,
        lang=Language.ENG,
        anonymous=False,
    )
    await _uplink(world)

    now = [NOW]
    mine = load_union(world.union_dir)
    theirs = load_union(world.other_dir)
    union = UnionInbox(mine, default_codebook(), client=RelayClient(mine), clock=lambda: now[0])
    second = UnionInbox(
        theirs, default_codebook(), client=RelayClient(theirs), clock=lambda: now[0]
    )
    try:
        card = UnionCard.from_json((world.other_dir / "union-card.json").read_bytes())
        union.set_escalation_route(card=card, vessel=world.vessel_id, deadline_days=2)
        assert (await asyncio.to_thread(union.fetch)).new_cases == 2
        now[0] += 1 * 86_400
        await asyncio.to_thread(union.fetch)
        assert {c.status for c in union.cases()} == {CaseStatus.RECEIVED}
        now[0] += 1 * 86_400 + 60
        await asyncio.to_thread(union.fetch)
        assert {c.status for c in union.cases()} == {CaseStatus.REFERRED}

        await asyncio.to_thread(second.fetch)
        received = {case.case_number: case for case in second.received_escalations()}
        assert set(received) == {agreed.case_number, kept.case_number}
        shared = received[agreed.case_number]
        assert shared.from_union == 7
        assert shared.report is not None
        assert shared.report["text"] == SHARED
        assert shared.report["crew_name"] == "Aung Min"
        notice = received[kept.case_number]
        assert notice.report is None
        assert PRIVATE not in str(notice.body)
        assert "Ko Ko" not in str(notice.body)
        assert "intimidation" not in str(notice.body)
        history = notice.body["history"]
        assert isinstance(history, list)
        assert [step["stage"] for step in history] == ["received"]

        # union 7's own history of the case says what was sent and to whom
        view = union.show(kept.case_number)
        reason = view.entries[-1].fields["reason"]
        assert isinstance(reason, str)
        assert "Other Union (union 8)" in reason
        assert "notice without content" in reason
        escalations = [r for r in union.access_log(kept.case_number) if r.action == "escalate"]
        assert [r.detail for r in escalations] == ["to union 8, no content"]
        assert [f.escalated for f in union.case_facts()] == [True, True]
        assert await asyncio.to_thread(union.escalate_due) == []  # once

        # the second organisation's caseworker reads them on the web app's page
        page = await _escalations_page(second)
        assert SHARED in page
        assert PRIVATE not in page
        assert "A notice without content" in page

        # the reporters are told on board: their case is referred
        await _downlink(world)
        with world.outbox.reading() as db:
            notes = db.execute(
                "SELECT sealed_note FROM inbox WHERE kind = 'case' ORDER BY entry"
            ).fetchall()
        opened = []
        for signed_in in (first_in, second_in):
            keys = reporter_reply_keys(signed_in.case_key)
            for row in notes:
                try:
                    opened.append(open_case_note(bytes(row[0]), keys.private_key))
                except SealedBoxInvalid:  # the other reporter's note: not theirs to open
                    continue
        assert sorted((n.case, n.status) for n in opened) == sorted(
            [(agreed.case_number, CaseStatus.REFERRED), (kept.case_number, CaseStatus.REFERRED)]
        )
    finally:
        for inbox in (union, second):
            if inbox.client is not None:
                inbox.client.close()
            inbox.close()


async def _escalations_page(inbox: UnionInbox) -> str:
    """The /escalations page as a signed-in caseworker of ``inbox``'s union sees it."""
    secret = pyotp.random_base32(32)
    settings = UnionWebSettings(
        {"lin": hash_password("tide table 1983")},
        second_factor=SecondFactorBook({"lin": secret}),
    )
    transport = httpx.ASGITransport(app=create_app(inbox, settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://union.test") as client:
        login = await client.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', login.text)
        assert token is not None
        form = {"caseworker": "lin", "password": "tide table 1983", "csrf": token[1]}
        signed_in = await client.post("/login", data=form | {"code": pyotp.TOTP(secret).now()})
        assert signed_in.status_code == 303
        page = await client.get("/escalations")
        assert page.status_code == 200
        return page.text
