"""Family messages that outlive their time to live (issue 23), from the crew page to the
relay and back: the relay fails them with a reason, the receipt comes down like any other
delivery failure, and the crew member reads why in their language.

The vessel is the real outbox behind the real crew page; the shore is the real relay's
store, ingest and downlink; bytes go between them as the link would carry them. One fake
clock runs both, so a month passes in an instant.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import httpx
import pytest

from common.codebooks import default_codebook
from common.signins import SignInGuard
from protocol.envelopes import FailureReason
from protocol.languages import Language
from protocol.topics import uplink_topic
from shipboard.downlink import DownlinkOutcome, apply_downlink_payload
from shipboard.http_api import create_app
from shipboard.intake import Intake
from shipboard.outbox import Outbox
from shipboard.web.i18n import Translations
from shipboard.web.phones import SignedInPhones
from shore.downlink import Downlink, DownlinkConfig
from shore.ingest import Ingestor
from shore.store import SqliteStore, VesselInfo
from shore.store.deliveries import MessageTtl
from shore.vocabulary import DeliveryEnd, DeliveryOutcome
from tests.kit.clock import FakeClock
from tests.shore.store_fixtures import SHORE_KEY, VESSEL_KEY
from vessel_relay.demo.defaults import demo_ship_config

DAY_S = 86_400.0
OWN_PIN = "80808080"
DURESS_PIN = "13572468"
TRANSLATIONS = Translations()


@dataclass
class Voyage:
    """The crew page over the vessel's outbox, and the relay's store on the same clock."""

    client: httpx.AsyncClient
    intake: Intake
    outbox: Outbox
    store: SqliteStore
    clock: FakeClock
    crew: int
    mother: int
    vessel_id: int

    async def session(self) -> None:
        """The vessel's link comes up: every queued message goes ashore in one batch, the
        relay stores it, and what the relay has for the vessel comes down and is applied."""
        codebook = self.intake.codebook
        pending = [p.message_seq for p in self.outbox.pending_messages(self.clock.now)]
        batch_seq, data = self.outbox.make_batch(pending, codebook, VESSEL_KEY, self.clock.now)
        self.outbox.mark_sent(batch_seq, self.clock.now)
        ingestor = Ingestor(self.store, codebook, clock=self.clock)
        await ingestor.handle(uplink_topic(self.vessel_id), data)
        await self.downlink()

    async def downlink(self) -> None:
        """The relay publishes what it has for the vessel; the vessel applies it."""
        published: list[bytes] = []

        async def publish(topic: str, data: bytes) -> None:
            published.append(data)

        config = DownlinkConfig(slots=False, tick_s=1.0)
        down = Downlink(self.store, SHORE_KEY, self.intake.codebook, config, clock=self.clock)
        await down.publish_due(publish)
        for data in published:
            verdict = apply_downlink_payload(
                self.outbox,
                data,
                vessel_id=self.vessel_id,
                shore_verify_key=SHORE_KEY.verify_key,
                codebook=self.intake.codebook,
                now=self.clock.now,
            )
            assert verdict.outcome in (DownlinkOutcome.APPLIED, DownlinkOutcome.DUPLICATE)


@contextlib.asynccontextmanager
async def open_voyage(
    tmp_path: Path, lang: Language, ttl: MessageTtl | None
) -> AsyncIterator[Voyage]:
    """The crew member signed in on the crew page, the relay's store with ``ttl``."""
    config = demo_ship_config(tmp_path)
    vessel_id = config.vessel.vessel_id
    outbox = Outbox.open(config.database_path, vessel_id)
    clock = FakeClock()
    intake = Intake(config, outbox, default_codebook(), clock=clock)
    member, pin = intake.register.add(
        name="Aung Min", document="MM-1", nationality="MM", language=lang, now=clock.now
    )
    mother = intake.register.add_contact(
        member.crew,
        channel="sms",
        address="+959123456789",
        name="Mother",
        language=lang,
        now=clock.now,
    )
    store = await SqliteStore.open(tmp_path / "relay" / "relay.db", message_ttl=ttl)
    info = VesselInfo("Sea Star 7", "TH", "TH-0042", "Andaman Fishing Co", (1,))
    await store.add_vessel(info, VESSEL_KEY.verify_key.key, clock.now - 3600, vessel_id)
    app = create_app(intake, phones=SignedInPhones(clock=clock), guard=SignInGuard(clock=clock))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://vessel", follow_redirects=True
        ) as client:
            voyage = Voyage(
                client, intake, outbox, store, clock, member.crew, mother.contact, vessel_id
            )
            await sign_in_with_own_pin(voyage, pin)
            yield voyage
    finally:
        await store.close()
        outbox.close()


@pytest.fixture(params=["mya", "eng"])
async def voyage(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Voyage]:
    async with open_voyage(tmp_path, Language.from_code(request.param), None) as found:
        yield found


def csrf_of(response: httpx.Response) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', response.text)
    assert match, response.text[:300]
    return match.group(1)


async def sign_in_with_own_pin(voyage: Voyage, pin: str) -> None:
    form = await voyage.client.get("/login")
    chosen = await voyage.client.post(
        "/login", data={"crew": str(voyage.crew), "pin": pin, "csrf": csrf_of(form)}
    )
    assert chosen.url.path == "/pin"
    home = await voyage.client.post(
        "/pin",
        data={"pin": OWN_PIN, "pin2": OWN_PIN, "duress": DURESS_PIN, "csrf": csrf_of(chosen)},
    )
    assert home.url.path == "/home"


async def write(voyage: Voyage, text: str) -> int:
    page = await voyage.client.get("/home")
    if page.url.path == "/login":  # the phone's sign-in lapsed while the clock moved on
        page = await voyage.client.post(
            "/login", data={"crew": str(voyage.crew), "pin": OWN_PIN, "csrf": csrf_of(page)}
        )
        assert page.url.path == "/home"
    sent = await voyage.client.post(
        "/write", data={"contact": str(voyage.mother), "text": text, "csrf": csrf_of(page)}
    )
    assert sent.url.path.startswith("/messages/"), sent.text[:500]
    return int(sent.url.path.rsplit("/", 1)[1])


def words(voyage: Voyage, msgid: str) -> str:
    """A page sentence in the crew member's language."""
    return TRANSLATIONS.gettext(voyage.intake.register.get(voyage.crew).language, msgid)


def line_of(html: str, message_seq: int) -> str:
    """The conversation line of one message (up to the next line or the section's end)."""
    start = html.index(f'id="m{message_seq}"')
    ends = [i for i in (html.find('id="m', start + 1), html.find("</section>", start)) if i > 0]
    return html[start : min(ends)]


async def test_a_message_held_on_board_past_its_ttl_fails_and_the_crew_member_reads_why(
    voyage: Voyage,
) -> None:
    """The satellite link is down for 31 days. The crew member's first message to their
    mother waited on board all that time; a second one is written the day the link comes
    back. When both reach the relay, the first is past the vessel's 30-day time to live:
    the relay never sends it, fails it with "could not be delivered in time", and that
    comes down with the next downlink; the second is delivered as usual. The crew
    member's conversation shows the first as failed, with the reason in their language."""
    old = await write(voyage, "Sea is rough, I am well.")
    voyage.clock.advance(31 * DAY_S)
    fresh = await write(voyage, "The link is back, I am well.")
    await voyage.session()

    claimed = await voyage.store.claim_deliveries(voyage.clock.now, 10, "relay-1")
    assert [d.message_seq for d in claimed] == [fresh]  # the old one is never handed out
    await voyage.store.finish_deliveries(
        [DeliveryEnd(claimed[0].key, DeliveryOutcome.DELIVERED)], voyage.clock.now
    )
    (expired,) = [r for r in await voyage.store.deliveries(voyage.vessel_id) if r.key[1] == old]
    assert expired.outcome is DeliveryOutcome.FAILED
    assert expired.reason is FailureReason.DEADLINE_PASSED
    assert expired.detail is not None
    assert "time to live" in expired.detail
    assert expired.attempts == 0  # nothing was sent to the family

    voyage.clock.advance(600)
    await voyage.session()  # the next session: its acknowledgement releases the receipts
    stages = voyage.outbox.message_stages(old)
    assert stages is not None
    assert (stages["state"], stages["failure_reason"]) == ("failed", FailureReason.DEADLINE_PASSED)
    assert voyage.outbox.message_stages(fresh)["state"] == "delivered"  # type: ignore[index]

    page = await voyage.client.get("/inbox")
    assert page.status_code == 200
    failed = unescape(line_of(page.text, old))
    assert words(voyage, "Failed") in failed
    assert unescape(words(voyage, "It could not be delivered in time.")) in failed
    assert words(voyage, "Delivered") in unescape(line_of(page.text, fresh))


async def test_a_message_retried_ashore_past_its_ttl_fails_on_the_relays_clock(
    tmp_path: Path,
) -> None:
    """A vessel whose clock runs 40 days behind sends a message at once; the relay keeps
    retrying it (the family's phone is off). The vessel's clock does not make it expire
    early: it fails only when it has been waiting 14 days ashore, this vessel's time to
    live (others keep 30), and the vessel is told."""
    ttl = MessageTtl(default_s=30 * DAY_S, by_vessel=((1, 14 * DAY_S),))
    async with open_voyage(tmp_path, Language.ENG, ttl) as voyage:
        assert voyage.vessel_id == 1  # the demo ship's id, the one given 14 days
        true_now = voyage.clock.now
        voyage.clock.now = true_now - 40 * DAY_S  # the vessel's clock, wrong
        seq = await write(voyage, "Call me when you can.")
        codebook = voyage.intake.codebook
        batch_seq, data = voyage.outbox.make_batch([seq], codebook, VESSEL_KEY, voyage.clock.now)
        voyage.outbox.mark_sent(batch_seq, voyage.clock.now)
        voyage.clock.now = true_now  # the relay's clock, right
        await Ingestor(voyage.store, codebook, clock=voyage.clock).handle(
            uplink_topic(voyage.vessel_id), data
        )
        await voyage.downlink()  # "accepted ashore" comes down
        (first,) = await voyage.store.claim_deliveries(voyage.clock.now, 10, "relay-1")
        retry = DeliveryEnd(
            first.key, None, retry_at=voyage.clock.now + 13 * DAY_S, detail="phone off"
        )
        await voyage.store.finish_deliveries([retry], voyage.clock.now)

        voyage.clock.advance(13 * DAY_S + 23 * 3600)  # 13 days 23 hours ashore: still alive
        assert await voyage.store.expire_undelivered(voyage.clock.now) == []
        voyage.clock.advance(2 * 3600)
        assert [k.message_seq for k in await voyage.store.expire_undelivered(voyage.clock.now)] == [
            seq
        ]
        assert await voyage.store.claim_deliveries(voyage.clock.now, 10, "relay-1") == []
        await voyage.session()
        stages = voyage.outbox.message_stages(seq)
        assert stages is not None
        assert stages["state"] == "failed"
        assert stages["failure_reason"] == FailureReason.DEADLINE_PASSED
