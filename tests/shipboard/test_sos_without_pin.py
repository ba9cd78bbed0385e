"""SOS without a PIN (issue 18, part 5): never refused, flagged on the link, bounded.

A crew member whose sign-in is paused, who forgot the PIN, or anyone on board in danger
can send an SOS from the sign-in page or ``POST /api/sos`` without a token, typing a crew
number. It goes out flagged as unauthenticated; a mistyped number still goes; repeats are
coalesced into the SOS already queued (the answer still says it is on its way).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from protocol.codebook import Codebook
from protocol.envelopes import Sos
from protocol.languages import Language
from protocol.signing import SigningKey
from shipboard.config import ShipConfig
from shipboard.http_api import create_app
from shipboard.intake import Intake
from shipboard.outbox import Outbox
from shipboard.sos_limit import SosLimitPolicy, SosWithoutPinLimit
from tests.kit.clock import FakeClock
from tests.kit.model_shore import ModelShore

from .conftest import NOW, Crew


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def intake(outbox: Outbox, ship_config: ShipConfig, codebook: Codebook, clock: FakeClock) -> Intake:
    return Intake(ship_config, outbox, codebook, clock=clock)


@pytest.fixture
async def api(intake: Intake) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(intake))
    async with httpx.AsyncClient(transport=transport, base_url="http://vessel") as client:
        yield client


def sos_envelopes(outbox: Outbox, vessel_key: SigningKey, shore: ModelShore) -> list[Sos]:
    seqs = [p.message_seq for p in outbox.pending_messages(NOW + 10**6) if p.kind == "sos"]
    _, data = outbox.make_batch(seqs, shore.codebook, vessel_key, NOW)
    return [e for e in shore.receive_batch(data).envelopes if isinstance(e, Sos)]


def test_repeats_join_the_sos_already_queued_and_an_hour_has_a_cap() -> None:
    """The same crew number and note again within ten minutes joins the first; a new note
    is new information and is queued; past ten distinct ones in an hour, every further
    one joins the latest, until the hour has room again. None is ever refused."""
    limit = SosWithoutPinLimit(SosLimitPolicy(repeat_window_s=600, distinct_per_hour=3))
    now = 0.0
    assert limit.joins(7, "fire", now) is None
    limit.queued(7, "fire", 101, now)
    assert limit.joins(7, "fire", now + 599) == 101
    assert limit.joins(7, "fire", now + 601) is None  # ten minutes on: a new alarm
    assert limit.joins(7, "two injured", now + 10) is None
    limit.queued(7, "two injured", 102, now + 10)
    assert limit.joins(8, None, now + 20) is None
    limit.queued(8, None, 103, now + 20)
    assert limit.joins(9, None, now + 30) == 103  # the hour's cap: joins the latest
    assert limit.joins(10, "x", now + 40) == 103
    assert limit.coalesced == 3
    assert limit.joins(9, None, now + 3601) is None  # the first one left the hour


def test_a_mistyped_crew_number_still_goes_flagged_and_a_signed_in_sos_does_not(
    intake: Intake, crew: Crew, outbox: Outbox, vessel_key: SigningKey, shore: ModelShore
) -> None:
    """An SOS without a PIN for crew number 4711, which nobody on board has, is saved and
    leaves flagged as unauthenticated with that number; the crew member's signed-in SOS
    leaves unflagged. The unsigned one is in nobody's messages on board."""
    unsigned = intake.sos_without_pin(4711, note="help", lang=Language.THA)
    signed = intake.sos(crew.member.crew, note=None, lang=None, position=None)
    assert not unsigned.coalesced
    stages = outbox.message_stages(unsigned.message_seq)
    assert stages is not None
    assert stages["crew"] is None
    by_seq = {e.message_seq: e for e in sos_envelopes(outbox, vessel_key, shore)}
    assert (by_seq[unsigned.message_seq].crew, by_seq[unsigned.message_seq].unauthenticated) == (
        4711,
        True,
    )
    assert by_seq[unsigned.message_seq].note == "help"
    assert (by_seq[signed.message_seq].crew, by_seq[signed.message_seq].unauthenticated) == (
        crew.member.crew,
        None,
    )


def test_an_unreadable_note_or_a_position_off_the_earth_never_stops_an_sos(
    intake: Intake, crew: Crew, outbox: Outbox, vessel_key: SigningKey, shore: ModelShore
) -> None:
    """A note with a lone surrogate and control characters is cleaned, a note of 5,000
    bytes is cut to the SOS limit, and a position off the Earth is left out, for both
    kinds of SOS; the batch carrying them is made (a bad position used to be stored and
    then stop every batch)."""
    intake.sos(crew.member.crew, note="fire\ud800\x07 aft", lang=None, position=(10**9, 0))
    intake.sos_without_pin(3, note="ไฟไหม้" * 400, lang=Language.THA, position=(0, 10**9))
    first, second = sos_envelopes(outbox, vessel_key, shore)
    assert first.note == "fire? aft"
    assert first.position is None
    assert second.note is not None
    assert len(second.note.encode("utf-8")) <= 1024
    assert second.position is None


async def test_api_sos_without_a_token_goes_and_repeats_are_coalesced(
    api: httpx.AsyncClient, crew: Crew, outbox: Outbox, clock: FakeClock
) -> None:
    """POST /api/sos with a crew number and no token (or an expired one) is saved at
    once (201); the same again a minute later gets 201 with the same message number,
    coalesced. Nothing in a readable body refuses an SOS: without a crew number, with a
    crew number of 10**15, a language nobody knows and a position that is no position,
    it still goes (crew number 0: none), and the answer names what was left out."""
    first = await api.post("/api/sos", json={"crew": crew.member.crew, "note": "help"})
    assert first.status_code == 201
    assert first.json()["signed_in"] is False
    assert first.json()["coalesced"] is False
    clock.now += 60
    again = await api.post(
        "/api/sos",
        json={"crew": crew.member.crew, "note": "help"},
        headers={"authorization": "Bearer expired-or-made-up"},
    )
    assert again.status_code == 201
    assert again.json()["message_seq"] == first.json()["message_seq"]
    assert again.json()["coalesced"] is True
    nameless = await api.post("/api/sos", json={"note": "fire"})
    assert nameless.status_code == 201
    assert nameless.json()["ignored"] == []
    odd = await api.post(
        "/api/sos",
        json={"crew": 10**15, "lang": "klingon", "position": ["north", 5], "note": 7},
    )
    assert odd.status_code == 201
    assert sorted(odd.json()["ignored"]) == ["crew", "lang", "note", "position"]
    with outbox.reading() as db:
        typed = db.execute(
            "SELECT typed_crew FROM messages WHERE kind = 'sos' ORDER BY message_seq"
        ).fetchall()
    assert [row[0] for row in typed] == [crew.member.crew, 0, 0]


async def test_sos_form_without_a_pin_in_the_visitors_language(
    api: httpx.AsyncClient, outbox: Outbox
) -> None:
    """A visitor whose phone asks for Khmer opens the SOS page from the sign-in page: it
    is in Khmer and says the SOS goes without a PIN; pressing send with no crew number
    typed still saves an SOS (crew number 0: none), and the answer says it is saved."""
    page = await api.get("/sos", headers={"accept-language": "km"})
    assert page.status_code == 200
    assert '<html lang="km">' in page.text
    assert 'name="crew"' in page.text
    assert "csrf" not in page.text  # a stale form must never stop an SOS
    sent = await api.post("/sos", data={"crew": "", "note": ""}, headers={"accept-language": "km"})
    assert sent.status_code == 201
    assert '<html lang="km">' in sent.text
    [pending] = [p for p in outbox.pending_messages(NOW + 10**6) if p.kind == "sos"]
    with outbox.reading() as db:
        row = db.execute(
            "SELECT crew, typed_crew FROM messages WHERE message_seq = ?",
            (pending.message_seq,),
        ).fetchone()
    assert tuple(row) == (None, 0)
