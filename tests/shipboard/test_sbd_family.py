"""The least-cost choice the link loop makes (``shipboard.links.route``, built on
``choose``), and the owner's ``[sbd] family_after_minutes``: a family message that has
waited that long while the main link is down (never while the owner paused it) leaves
over the emulated SBD modem, billed against the owner's budget and counted under
``iridium-sbd`` for its writer in the monthly statement."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from protocol.codebook import Codebook
from protocol.languages import Language
from protocol.months import BILLING_ZONE, Month
from protocol.quota import RULE_MONTHLY_TEXT_BYTES
from protocol.signing import SigningKey
from shipboard.config import ShipConfig, parse_config
from shipboard.errors import ConfigError
from shipboard.link import LinkStatistics, billed_so_far, budget_charge, run_link, run_session
from shipboard.links import (
    IRIDIUM_SBD,
    PORT_4G,
    Availability,
    LinkTerms,
    MqttCarrier,
    SbdCarrier,
    route,
)
from shipboard.outbox import Outbox
from shipboard.profiles import IRIDIUM_CERTUS, VSAT
from shipboard.report import build_statement
from shipboard.sbd_modem import SbdModem
from shipboard.session import SessionReport
from shipboard.sessions_log import LinkSession, SessionOutcome, SessionsLog
from shipboard.transport import LinkDown, LinkSettings
from tests.kit.clock import FakeClock
from tests.kit.model_shore import NOW, ModelShore
from tests.kit.sbd_world import sbd_world
from tests.shipboard.conftest import Crew
from tests.shipboard.test_sbd_fallback import HOUR, StopAt, _month, state
from vessel_relay.demo.defaults import demo_ship_document

CERTUS = LinkTerms(IRIDIUM_CERTUS, None, False, frozenset({"message", "sos", "grievance", "lane"}))
SBD = LinkTerms(IRIDIUM_SBD, 340, True, frozenset({"sos", "grievance", "lane"}))
PORT = LinkTerms(PORT_4G, None, False, CERTUS.carries)


@dataclass(frozen=True)
class Waiting:
    message_seq: int
    kind: str
    crew: int | None
    text_bytes: int
    payload_bytes: int
    accepted_at: float


def _route(
    main: Availability,
    pending: list[Waiting],
    *,
    failing: bool = False,
    family_after_s: float | None = None,
    port: Availability | None = None,
    main_terms: LinkTerms = CERTUS,
) -> tuple[bool, bool, tuple[int, ...]]:
    way = route(
        main=(main_terms, main),
        fallback=SBD,
        port=None if port is None else (PORT, port),
        pending=pending,
        now=NOW,
        main_failing=failing,
        family_after_s=family_after_s,
        session_overhead_bytes=2600,
    )
    return way.port, way.fallback, way.family_on_fallback


SOS = Waiting(1, "sos", 1, 0, 20, NOW)
OLD_HOME = Waiting(2, "message", 1, 40, 40, NOW - 2 * HOUR)
NEW_HOME = Waiting(3, "message", 1, 40, 40, NOW - 60)


def test_the_loops_rule_keeps_what_it_did() -> None:
    """Main link up: everything on it, SBD idle. Paused or down: the reserved lane on SBD,
    family messages wait. Last session failed with an SOS waiting: SBD at once. In port:
    the port link, paused main link or not."""
    assert _route(Availability.UP, [SOS, OLD_HOME]) == (False, False, ())
    assert _route(Availability.PAUSED, [SOS, OLD_HOME]) == (False, True, ())
    assert _route(Availability.DOWN, [OLD_HOME]) == (False, True, ())
    assert _route(Availability.UP, [SOS], failing=True) == (False, True, ())
    assert _route(Availability.UP, [OLD_HOME], failing=True) == (False, False, ())
    assert _route(Availability.PAUSED, [SOS], port=Availability.UP) == (True, False, ())
    assert _route(Availability.UP, [], port=Availability.UP) == (True, False, ())
    assert _route(Availability.UP, [SOS], port=Availability.DOWN) == (False, False, ())


def test_the_cheapest_way_wins_even_in_port() -> None:
    """A VSAT terminal ($0.01 per MB) costs less than the harbour's 4G ($0.50): in reach of
    4G the vessel stays on VSAT (least cost is the one rule), and takes 4G once the owner
    pauses VSAT."""
    vsat = LinkTerms(VSAT, None, False, CERTUS.carries)
    assert _route(Availability.UP, [OLD_HOME], port=Availability.UP, main_terms=vsat) == (
        False,
        False,
        (),
    )
    assert _route(Availability.PAUSED, [OLD_HOME], port=Availability.UP, main_terms=vsat)[0]


def test_family_messages_take_sbd_only_when_the_owner_allows_it_and_main_is_down() -> None:
    """[sbd] family_after_minutes = 30: a message home that waited two hours goes over SBD
    while the main link is down; a message a minute old waits; nothing goes while the main
    link is paused or up, in port, or with the option off."""
    half_hour = 1800.0
    waiting = [SOS, OLD_HOME, NEW_HOME]
    assert _route(Availability.DOWN, waiting, family_after_s=half_hour) == (False, True, (2,))
    assert _route(Availability.DOWN, waiting) == (False, True, ())
    assert _route(Availability.PAUSED, waiting, family_after_s=half_hour) == (False, True, ())
    assert _route(Availability.UP, waiting, family_after_s=half_hour) == (False, False, ())
    assert _route(Availability.UP, waiting, failing=True, family_after_s=half_hour) == (
        False,
        True,
        (),
    )
    in_port = _route(Availability.DOWN, waiting, family_after_s=half_hour, port=Availability.UP)
    assert in_port == (True, False, ())
    # only family waiting: SBD opens for it alone
    assert _route(Availability.DOWN, [OLD_HOME], family_after_s=half_hour) == (False, True, (2,))


def _config(tmp_path: Path, shore_key: SigningKey, *, paused: bool, **sbd: Any) -> ShipConfig:
    document = demo_ship_document(tmp_path)
    document["link"] = {**document.get("link", {}), "paused": paused}
    document["shore"] = {**document["shore"], "public_key": shore_key.verify_key.hex()}
    document["sbd"] = {"device": "/dev/ttyUSB0", **sbd}
    return parse_config(document, source="<test>", base=tmp_path, allow_demo_keys=True)


def test_family_after_minutes_is_off_unless_set_and_must_be_positive(
    tmp_path: Path, shore_key: SigningKey
) -> None:
    """No key: never (None). 45: taken. 0 or a word: refused, naming the key."""
    default = _config(tmp_path, shore_key, paused=False).sbd
    assert default is not None
    assert default.family_after_minutes is None
    config = _config(tmp_path, shore_key, paused=False, family_after_minutes=45)
    assert config.sbd is not None
    assert config.sbd.family_after_minutes == 45
    with pytest.raises(ConfigError, match="family_after_minutes must be above zero"):
        _config(tmp_path, shore_key, paused=False, family_after_minutes=0)
    with pytest.raises(ConfigError, match="family_after_minutes must be a whole number"):
        _config(tmp_path, shore_key, paused=False, family_after_minutes="soon")


@dataclass
class Outcome:
    main_offers: list[tuple[int, ...]]
    sbd_sessions: list[tuple[int, ...]]
    stats: LinkStatistics


async def _run(
    tmp_path: Path,
    outbox: Outbox,
    codebook: Codebook,
    vessel_key: SigningKey,
    shore_key: SigningKey,
    *,
    paused: bool,
    family_after_minutes: int | None,
    hours: float = 6,
) -> Outcome:
    """The link loop for ``hours`` with the main link down (or paused) since an hour ago
    and the emulated SBD modem as the fallback."""
    extra = {} if family_after_minutes is None else {"family_after_minutes": family_after_minutes}
    config = _config(tmp_path, shore_key, paused=paused, **extra)
    settings = LinkSettings.from_config(config, profile=IRIDIUM_CERTUS)
    shore = ModelShore.for_keys(codebook, vessel_key, shore_key, outbox.vessel_id)
    clock = FakeClock(NOW)
    main = MqttCarrier(settings, paused=lambda: config.link.paused, after_down_s=900.0)
    main.failed(NOW - HOUR)  # the terminal has been failing for an hour: down
    outcome = Outcome([], [], LinkStatistics())

    async def runner(*args: Any, **kwargs: Any) -> SessionReport:
        if "link" not in kwargs:
            outcome.main_offers.append(tuple(kwargs["message_seqs"]))
            raise LinkDown("the test's main link is down")
        outcome.sbd_sessions.append(tuple(kwargs["message_seqs"]))
        return await run_session(*args, **kwargs)

    async with sbd_world(shore) as world, asyncio.timeout(30):
        fallback = SbdCarrier(
            lambda: SbdModem(world.emulator.device, session_timeout_s=5.0),
            statistics=world.statistics,
        )
        fallback.reassembler = world.reassembler
        quick = dataclasses.replace(
            settings, profile=IRIDIUM_SBD, downlink_quiet_s=0.3, ack_wait_s=10.0
        )
        stopping = asyncio.Event()
        await run_link(
            config=config,
            outbox=outbox,
            signing_key=vessel_key,
            codebook=codebook,
            stopping=stopping,
            doorbell=asyncio.Event(),
            clock=clock,
            link_settings=settings,
            session_runner=runner,
            statistics=outcome.stats,
            lane=StopAt(clock, NOW + hours * HOUR, stopping),
            timers=clock,
            main=main,
            fallback=fallback,
            fallback_settings=quick,
        )
    return outcome


def _message_home(outbox: Outbox, crew: Crew, at: float) -> int:
    return outbox.accept_message(
        crew=crew.member.crew,
        contact=crew.mother.contact,
        lang=Language.MYA,
        now=at,
        quota_bytes=1 << 20,
        body="မင်္ဂလာပါ အမေ",
    ).message_seq


async def test_with_the_option_off_a_message_home_waits_while_main_is_down(
    tmp_path: Path,
    outbox: Outbox,
    crew: Crew,
    codebook: Codebook,
    vessel_key: SigningKey,
    shore_key: SigningKey,
) -> None:
    """The main link has been down for an hour and stays down for six more; the owner did
    not set family_after_minutes. An SOS leaves over SBD; the message home, written two
    hours ago, stays on board and nothing is charged to the budget."""
    home = _message_home(outbox, crew, NOW - 2 * HOUR)
    sos = outbox.accept_sos(crew=crew.member.crew, now=NOW, position=(1_300_000, 10_050_000))
    outcome = await _run(
        tmp_path, outbox, codebook, vessel_key, shore_key, paused=False, family_after_minutes=None
    )
    assert outcome.sbd_sessions == [(sos.message_seq,)]
    assert state(outbox, sos.message_seq) == "acknowledged"
    assert state(outbox, home) == "accepted"
    assert outcome.stats.billed_this_month_bytes == 0


async def test_with_the_option_on_an_old_message_home_leaves_over_sbd_and_costs_budget(
    tmp_path: Path,
    outbox: Outbox,
    crew: Crew,
    codebook: Codebook,
    vessel_key: SigningKey,
    shore_key: SigningKey,
) -> None:
    """family_after_minutes = 30, the main link down: the message home written two hours
    ago leaves over SBD at once and is acknowledged; one written just now waits until it
    is half an hour old, then leaves too. Their SBD bytes are charged to the owner's
    budget at SBD's price (kept with the session, so a restart still counts them), and
    the monthly statement shows them under iridium-sbd for the crew member who wrote
    them."""
    old = _message_home(outbox, crew, NOW - 2 * HOUR)
    new = _message_home(outbox, crew, NOW - 60)
    outcome = await _run(
        tmp_path, outbox, codebook, vessel_key, shore_key, paused=False, family_after_minutes=30
    )
    assert outcome.sbd_sessions[0] == (old,)
    assert (new,) in outcome.sbd_sessions[1:]
    assert state(outbox, old) == "acknowledged"
    assert state(outbox, new) == "acknowledged"
    month = _month(NOW)
    sbd = [s for s in SessionsLog(outbox).sessions_in(month) if s.profile == "iridium-sbd"]
    assert len(sbd) == 2
    for session in sbd:  # family only: the whole session is the family's
        assert session.budget_bytes == budget_charge(
            IRIDIUM_SBD.billed_bytes(session.uplink_payload_bytes + session.downlink_payload_bytes),
            IRIDIUM_CERTUS,
        )
        assert session.budget_bytes >= 50 * 320  # a credit at SBD's price, in Certus bytes
    charged = sum(s.budget_bytes or 0 for s in sbd)
    assert outcome.stats.billed_this_month_bytes == charged
    assert await billed_so_far(outbox, IRIDIUM_CERTUS, Month.of(NOW, BILLING_ZONE)) == charged
    statement = build_statement(
        outbox,
        month,
        quota_bytes=RULE_MONTHLY_TEXT_BYTES,
        profile=IRIDIUM_CERTUS,
        vessel_key=vessel_key,
        now=NOW + 7 * HOUR,
    )
    [entry] = statement.links_of(crew.member.crew)
    assert entry.profile == "iridium-sbd"
    assert entry.text_bytes == 2 * len("မင်္ဂလာပါ အမေ".encode())
    assert entry.wire_bytes > 0
    assert entry.billed_bytes is not None
    assert entry.billed_bytes > 0


async def test_with_the_option_on_a_paused_main_link_still_holds_messages_home(
    tmp_path: Path,
    outbox: Outbox,
    crew: Crew,
    codebook: Codebook,
    vessel_key: SigningKey,
    shore_key: SigningKey,
) -> None:
    """family_after_minutes = 30, but the owner paused the main link (rather than it
    failing): the two-hour-old message home stays on board; SBD carries nothing of it and
    no main session opens."""
    home = _message_home(outbox, crew, NOW - 2 * HOUR)
    outcome = await _run(
        tmp_path, outbox, codebook, vessel_key, shore_key, paused=True, family_after_minutes=30
    )
    assert outcome.sbd_sessions == []
    assert outcome.main_offers == []
    assert state(outbox, home) == "accepted"
    assert outcome.stats.billed_this_month_bytes == 0


async def test_with_the_budget_spent_a_message_home_waits_and_an_sos_still_leaves(
    tmp_path: Path,
    outbox: Outbox,
    crew: Crew,
    codebook: Codebook,
    vessel_key: SigningKey,
    shore_key: SigningKey,
) -> None:
    """family_after_minutes = 30 and the main link down, but the Certus sessions earlier
    this month spent all but 512 bytes of the owner's 40 MB budget, less than one SBD
    credit at SBD's price: the two-hour-old message home stays on board (held for the
    budget); the SOS leaves over SBD all the same (the reserved lane is outside the
    budget) and charges nothing."""
    config = _config(tmp_path, shore_key, paused=False)
    spent = IRIDIUM_CERTUS.billed_bytes(39_999_488)
    assert config.link.monthly_budget_bytes - spent == 512
    SessionsLog(outbox).record(
        LinkSession(
            started_at=NOW - 3 * HOUR,
            ended_at=NOW - 3 * HOUR + 600,
            outcome=SessionOutcome.DONE,
            uplink_payload_bytes=39_999_488,
            downlink_payload_bytes=0,
            overhead_bytes=0,
            profile=IRIDIUM_CERTUS.name,
        )
    )
    home = _message_home(outbox, crew, NOW - 2 * HOUR)
    sos = outbox.accept_sos(crew=crew.member.crew, now=NOW, position=(1_300_000, 10_050_000))
    outcome = await _run(
        tmp_path, outbox, codebook, vessel_key, shore_key, paused=False, family_after_minutes=30
    )
    assert outcome.sbd_sessions == [(sos.message_seq,)]
    assert state(outbox, sos.message_seq) == "acknowledged"
    assert state(outbox, home) == "accepted"
    assert outcome.stats.billed_this_month_bytes == spent
    sbd = [s for s in SessionsLog(outbox).sessions_in(_month(NOW)) if s.profile == "iridium-sbd"]
    assert [s.budget_bytes for s in sbd] == [None]
