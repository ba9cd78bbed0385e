"""The SBD fallback: the owner pauses the main link; SOS and reports still leave over the
emulated SBD modem within their targets, family messages wait for the main link, and the
fallback cannot be switched off in the vessel's config."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import secrets
from pathlib import Path
from typing import Any

import pytest

from protocol.codebook import Codebook
from protocol.languages import Language
from protocol.signing import SigningKey
from shipboard.config import ConfigError, ShipConfig, parse_config
from shipboard.link import LinkStatistics, run_link, run_session
from shipboard.links import (
    IRIDIUM_SBD,
    PORT_4G,
    Availability,
    LinkTerms,
    MqttCarrier,
    PortCarrier,
    SbdCarrier,
    choose,
)
from shipboard.outbox import Outbox
from shipboard.profiles import IRIDIUM_CERTUS, VSAT
from shipboard.sbd_modem import SbdModem
from shipboard.session import SessionReport
from shipboard.sessions_log import SessionsLog
from shipboard.transport import Link, LinkDown, LinkSettings
from tests.kit.clock import FakeClock
from tests.kit.fakelink import DOWN, LinkPair
from tests.kit.model_shore import NOW, ModelShore
from tests.kit.sbd_world import sbd_world
from tests.shipboard.conftest import Crew
from vessel_relay.demo.defaults import demo_ship_document

HOUR = 3600.0


def config_for(tmp_path: Path, shore_key: SigningKey, **link: Any) -> ShipConfig:
    document = demo_ship_document(tmp_path)
    document["link"] = {**document.get("link", {}), **link}
    document["shore"] = {**document["shore"], "public_key": shore_key.verify_key.hex()}
    return parse_config(document, source="<test>", base=tmp_path, allow_demo_keys=True)


def state(outbox: Outbox, seq: int) -> object:
    stages = outbox.message_stages(seq)
    assert stages is not None
    return stages["state"]


class StopAt:
    """A lane stand-in that stops the loop once the fake clock reaches ``end``."""

    def __init__(self, clock: FakeClock, end: float, stopping: asyncio.Event) -> None:
        self.clock, self.end, self.stopping = clock, end, stopping

    def release_due(self, now: float) -> int:
        if now >= self.end:
            self.stopping.set()
        return 0

    def next_release_at(self) -> float:
        return self.end


async def test_paused_main_link_sos_and_report_go_over_sbd_family_waits(
    tmp_path: Path,
    outbox: Outbox,
    crew: Crew,
    codebook: Codebook,
    vessel_key: SigningKey,
    shore_key: SigningKey,
) -> None:
    """The owner pauses the main link. An SOS, a sealed report and a message home are
    waiting: the SOS and the report leave over SBD in the first minute (their targets: at
    once, a day) and are acknowledged; the message home stays on board for two days of
    pause and no session ever opens on the main link. Once the owner lifts the pause, the
    message home is offered to the main link, and only to it."""
    sos = outbox.accept_sos(crew=crew.member.crew, now=NOW, position=(1_300_000, 10_050_000))
    report = outbox.accept_grievance(
        union_id=1, sealed=secrets.token_bytes(304), case_key=b"k" * 32, now=NOW
    )
    family = outbox.accept_message(
        crew=crew.member.crew,
        contact=crew.mother.contact,
        lang=Language.MYA,
        now=NOW,
        quota_bytes=1 << 20,
        body="မင်္ဂလာပါ အမေ",
    )
    paused = config_for(tmp_path, shore_key, paused=True)
    settings = LinkSettings.from_config(paused, profile=IRIDIUM_CERTUS)
    shore = ModelShore.for_keys(codebook, vessel_key, shore_key, outbox.vessel_id)
    clock = FakeClock(NOW)
    main_offers: list[tuple[int, ...]] = []
    sbd_sessions: list[tuple[float, tuple[int, ...]]] = []

    async def runner(*args: Any, **kwargs: Any) -> SessionReport:
        if "link" not in kwargs:  # the main link: it must never open while paused
            main_offers.append(tuple(kwargs["message_seqs"]))
            raise LinkDown("the test's main link is not there")
        sbd_sessions.append((clock(), tuple(kwargs["message_seqs"])))
        return await run_session(*args, **kwargs)

    async with sbd_world(shore) as world, asyncio.timeout(20):
        fallback = SbdCarrier(
            lambda: SbdModem(world.emulator.device, session_timeout_s=5.0),
            statistics=world.statistics,
        )
        fallback.reassembler = world.reassembler
        quick = dataclasses.replace(
            settings, profile=IRIDIUM_SBD, downlink_quiet_s=0.3, ack_wait_s=10.0
        )
        stopping = asyncio.Event()
        stats = LinkStatistics()
        await run_link(
            config=paused,
            outbox=outbox,
            signing_key=vessel_key,
            codebook=codebook,
            stopping=stopping,
            doorbell=asyncio.Event(),
            clock=clock,
            link_settings=settings,
            session_runner=runner,
            statistics=stats,
            lane=StopAt(clock, NOW + 48 * HOUR, stopping),
            timers=clock,
            fallback=fallback,
            fallback_settings=quick,
        )
    assert main_offers == []
    assert len(sbd_sessions) == 1
    at, seqs = sbd_sessions[0]
    assert at - NOW < 60
    assert set(seqs) == {sos.message_seq, report.message_seq}
    assert state(outbox, sos.message_seq) == "acknowledged"
    assert state(outbox, report.message_seq) == "acknowledged"
    assert state(outbox, family.message_seq) == "accepted"
    assert stats.fallback_sessions == 1
    logged = SessionsLog(outbox).sessions_in(_month(NOW))
    assert [s.profile for s in logged] == ["iridium-sbd"]

    # the owner lifts the pause: the message home goes to the main link, not to SBD
    lifted = config_for(tmp_path, shore_key, paused=False)
    stopping = asyncio.Event()

    async def main_only(*args: Any, **kwargs: Any) -> SessionReport:
        assert "link" not in kwargs, "nothing may go over SBD while the main link is up"
        main_offers.append(tuple(kwargs["message_seqs"]))
        stopping.set()
        raise LinkDown("the test's main link is not there")

    await run_link(
        config=lifted,
        outbox=outbox,
        signing_key=vessel_key,
        codebook=codebook,
        stopping=stopping,
        doorbell=asyncio.Event(),
        clock=clock,
        link_settings=settings,
        session_runner=main_only,
        timers=clock,
        fallback=fallback,
    )
    assert main_offers == [(family.message_seq,)]


@pytest.mark.parametrize(("base_s", "cap_s"), [(15.0, 1800.0), (0.5, 4.0)])
async def test_failed_sessions_are_tried_again_on_the_backoff_given(
    tmp_path: Path,
    outbox: Outbox,
    crew: Crew,
    codebook: Codebook,
    vessel_key: SigningKey,
    shore_key: SigningKey,
    base_s: float,
    cap_s: float,
) -> None:
    """The satellite is gone and a message home is due: the link tries again after a
    backoff that doubles from ``reconnect_base_s`` up to ``reconnect_cap_s`` (15 s to 30
    minutes by default; a time-compressed benchmark divides both), jittered between half
    and all of it."""
    outbox.accept_message(
        crew=crew.member.crew,
        contact=crew.mother.contact,
        lang=Language.MYA,
        now=NOW,
        quota_bytes=1 << 20,
        body="မင်္ဂလာပါ အမေ",
    )
    config = config_for(tmp_path, shore_key)
    settings = LinkSettings.from_config(config, profile=VSAT)
    clock = FakeClock(NOW)
    stopping = asyncio.Event()
    attempts: list[float] = []

    async def runner(*args: Any, **kwargs: Any) -> SessionReport:
        attempts.append(clock())
        if len(attempts) == 12:
            stopping.set()
        raise LinkDown("the satellite is gone")

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
        timers=clock,
        reconnect_base_s=base_s,
        reconnect_cap_s=cap_s,
    )
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    for failures, gap in enumerate(gaps, start=1):
        ceiling = min(cap_s, base_s * 2 ** (failures - 1))
        assert ceiling / 2 <= gap <= ceiling + 1e-6


def _month(now: float) -> int:
    from protocol.months import BILLING_ZONE, Month

    return Month.of(now, BILLING_ZONE).key


def test_the_main_link_is_down_after_its_threshold_and_up_again_after_a_session() -> None:
    """Sessions on the main link fail for 15 minutes: it counts as down (SOS and reports
    take SBD); one good session and it is up again. A pause is a pause at once."""
    paused = [False]
    settings = LinkSettings(vessel_id=1, host="h", port=1, profile=VSAT)
    main = MqttCarrier(settings, paused=lambda: paused[0], after_down_s=900.0)
    assert main.availability(0.0) is Availability.UP
    main.failed(100.0)
    assert main.availability(999.0) is Availability.UP
    assert main.availability(1000.0) is Availability.DOWN
    main.succeeded()
    assert main.availability(1000.0) is Availability.UP
    paused[0] = True
    assert main.availability(1000.0) is Availability.PAUSED


def test_sbd_bills_each_message_in_50_byte_credits() -> None:
    """A 40-byte lone message costs one credit; a 1,000-byte batch four messages' worth."""
    sbd = LinkTerms(IRIDIUM_SBD, 340, True, frozenset({"sos"}))
    assert sbd.billed_bytes(40) == 50
    assert sbd.billed_bytes(49) == 50
    assert sbd.billed_bytes(50) == 100  # one byte of framing makes it 51
    # 1,000 bytes: fragments of 333 + 7 bytes: 340, 340, 340 (333*3=999), then 1 + 7
    assert sbd.billed_bytes(1000) == 3 * 350 + 50
    assert sbd.cost_usd(40) == pytest.approx(0.16)


def test_choose_takes_the_cheapest_available_link_that_may_carry_everything() -> None:
    """Certus up: everything goes on it (cheaper, even a lone SOS). Certus paused: an SOS
    takes SBD, a family message has nowhere to go."""
    certus = LinkTerms(IRIDIUM_CERTUS, None, False, frozenset({"message", "sos", "lane"}))
    sbd = LinkTerms(IRIDIUM_SBD, 340, True, frozenset({"sos", "lane", "grievance"}))
    up = [(certus, Availability.UP), (sbd, Availability.UP)]
    assert choose(up, {"sos"}, 2000, 2600) == 0
    assert choose(up, {"message"}, 2000, 2600) == 0
    paused = [(certus, Availability.PAUSED), (sbd, Availability.UP)]
    assert choose(paused, {"sos"}, 100, 2600) == 1
    assert choose(paused, {"message"}, 100, 2600) is None
    # a lone SOS: one SBD credit ($0.16) still costs more than a whole 5 KB Certus
    # session ($0.05) at these tariffs, so the main link keeps it while it is up
    assert sbd.cost_usd(40) > certus.cost_usd(40, 2600)
    assert choose(up, {"sos"}, 40, 2600) == 0


@pytest.mark.parametrize("key", ["enabled", "disabled", "paused", "sos", "grievances"])
def test_the_owner_cannot_switch_the_sbd_fallback_off(tmp_path: Path, key: str) -> None:
    """[sbd] enabled = false (or any key that would switch SOS or reports off): refused."""
    document = demo_ship_document(tmp_path)
    document["sbd"] = {"device": "/dev/ttyUSB0", key: False}
    with pytest.raises(ConfigError, match="cannot be switched off"):
        parse_config(document, source="<test>", base=tmp_path, allow_demo_keys=True)


def test_the_sbd_threshold_may_be_lowered_not_raised(tmp_path: Path) -> None:
    """after_down_minutes 5 is taken; 120 is refused (reports would wait two hours)."""
    document = demo_ship_document(tmp_path)
    document["sbd"] = {"device": "/dev/ttyUSB0", "after_down_minutes": 5}
    config = parse_config(document, source="<test>", base=tmp_path, allow_demo_keys=True)
    assert config.sbd is not None
    assert config.sbd.after_down_minutes == 5
    document["sbd"] = {"device": "/dev/ttyUSB0", "after_down_minutes": 120}
    with pytest.raises(ConfigError, match="may not wait more than 60"):
        parse_config(document, source="<test>", base=tmp_path, allow_demo_keys=True)


def test_the_owner_pauses_the_main_link_in_the_config(tmp_path: Path) -> None:
    """[link] paused = true is an owner's setting; without [sbd] the vessel has no fallback."""
    document = demo_ship_document(tmp_path)
    document["link"] = {**document.get("link", {}), "paused": True}
    config = parse_config(document, source="<test>", base=tmp_path, allow_demo_keys=True)
    assert config.link.paused
    assert config.sbd is None


class ModelShoreEnd:
    """The model shore on the fake link: answers every uplink payload at once."""

    def __init__(self, shore: ModelShore, pair: LinkPair) -> None:
        self.shore, self.pair = shore, pair

    async def on_uplink(self, data: bytes) -> None:
        self.shore.receive(data, self.pair.clock())
        await self.tick()

    async def tick(self) -> None:
        for data in self.shore.send(self.pair.clock()):
            self.pair.send(DOWN, data)


async def test_in_port_everything_waiting_goes_at_once_over_the_cheap_link(
    tmp_path: Path,
    outbox: Outbox,
    crew: Crew,
    codebook: Codebook,
    vessel_key: SigningKey,
    shore_key: SigningKey,
) -> None:
    """On Iridium Certus a message home waits to fill the 5 KB session. The vessel comes
    into port and 4G is in reach: the message goes at once over the port link, no
    satellite session opens, and the session is logged as a port session. Out of reach
    again, a new message waits for the satellite plan."""
    first = outbox.accept_message(
        crew=crew.member.crew,
        contact=crew.mother.contact,
        lang=Language.MYA,
        now=NOW,
        quota_bytes=1 << 20,
        body="ဆိပ်ကမ်းရောက်ပြီ အမေ",
    )
    config = config_for(tmp_path, shore_key)
    settings = LinkSettings.from_config(config, profile=IRIDIUM_CERTUS)
    clock = FakeClock(NOW)
    pair = LinkPair(clock)
    shore = ModelShore.for_keys(codebook, vessel_key, shore_key, outbox.vessel_id)
    pair.attach_shore(ModelShoreEnd(shore, pair))
    reach = [True]

    class Port(PortCarrier):
        def open(self) -> Link:
            return pair.vessel_link()

    port = Port(dataclasses.replace(settings, profile=PORT_4G), lambda: reach[0])
    satellite: list[tuple[int, ...]] = []
    stopping = asyncio.Event()

    async def runner(*args: Any, **kwargs: Any) -> SessionReport:
        if "link" not in kwargs:
            satellite.append(tuple(kwargs["message_seqs"]))
            raise LinkDown("no satellite in this test")
        report = await run_session(*args, timers=clock, **kwargs)
        stopping.set()
        return report

    stats = LinkStatistics()
    async with asyncio.timeout(30):
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
            statistics=stats,
            timers=clock,
            port=port,
        )
    assert satellite == []
    assert stats.in_port
    assert stats.port_sessions == 1
    assert state(outbox, first.message_seq) == "acknowledged"
    assert [s.profile for s in SessionsLog(outbox).sessions_in(_month(NOW))] == ["port-4g"]

    # the vessel leaves port: a new message waits for the satellite's own plan
    reach[0] = False
    clock.advance(600)
    second = outbox.accept_message(
        crew=crew.member.crew,
        contact=crew.mother.contact,
        lang=Language.MYA,
        now=clock(),
        quota_bytes=1 << 20,
        body="ထွက်ခွာပြီ",
    )
    stopping = asyncio.Event()
    async with asyncio.timeout(30):
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
            statistics=stats,
            timers=clock,
            port=port,
            lane=StopAt(clock, clock() + HOUR, stopping),
        )
    assert not stats.in_port
    assert stats.port_sessions == 1
    assert satellite == []  # not due within the hour: the Certus session waits to fill
    assert state(outbox, second.message_seq) == "accepted"


def test_the_agent_makes_the_sbd_carrier_from_the_config(tmp_path: Path) -> None:
    """A vessel with [sbd] device gets an SBD carrier that carries SOS, reports and lane
    blocks only, and is never paused."""
    from shipboard.agent import sbd_fallback

    document = demo_ship_document(tmp_path)
    document["sbd"] = {"device": "/dev/ttyUSB7"}
    config = parse_config(document, source="<test>", base=tmp_path, allow_demo_keys=True)
    carrier = sbd_fallback(config)
    assert carrier.terms.carries == {"sos", "grievance", "lane"}
    assert carrier.terms.mtu_bytes == 340
    assert carrier.availability(NOW) is Availability.UP
    assert carrier.open().modem is not None


def test_the_port_link_is_in_reach_while_its_interface_is_up(tmp_path: Path) -> None:
    """[port] names the broker over 4G and the interface: in reach while the interface is
    up (or "unknown", as ppp links say), not when it is down or missing."""
    from shipboard.agent import port_carrier
    from shipboard.links import interface_up

    sysfs = tmp_path / "net"
    for name, state in (("wwan0", "up"), ("ppp0", "unknown"), ("wlan1", "down")):
        (sysfs / name).mkdir(parents=True)
        (sysfs / name / "operstate").write_text(state + "\n")
    assert interface_up("wwan0", sysfs)
    assert interface_up("ppp0", sysfs)
    assert not interface_up("wlan1", sysfs)
    assert not interface_up("eth9", sysfs)

    document = demo_ship_document(tmp_path)
    document["port"] = {"broker": "mqtt://10.8.0.1:1884", "interface": "wwan0"}
    config = parse_config(document, source="<test>", base=tmp_path, allow_demo_keys=True)
    assert config.port is not None
    carrier = port_carrier(config)
    assert (carrier.settings.host, carrier.settings.port) == ("10.8.0.1", 1884)
    assert carrier.terms.profile is PORT_4G


@pytest.mark.parametrize(
    ("port", "error"),
    [
        ({"broker": "http://x", "interface": "wwan0"}, "not a broker URL"),
        ({"broker": "mqtt://u:p@x:1883", "interface": "wwan0"}, "not a broker URL"),
        ({"broker": "mqtt://x:1883", "interface": "../etc"}, "not an interface name"),
        ({"broker": "mqtt://x:1883"}, "interface is missing"),
    ],
)
def test_a_wrong_port_section_is_refused(tmp_path: Path, port: dict[str, str], error: str) -> None:
    """A port broker that is not an MQTT URL, carries credentials, or an interface name
    that is not one: refused at load, naming the key."""
    document = demo_ship_document(tmp_path)
    document["port"] = port
    with pytest.raises(ConfigError, match=error):
        parse_config(document, source="<test>", base=tmp_path, allow_demo_keys=True)
