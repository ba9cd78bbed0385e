"""One sign-in guard for every door of the agent (issue 18, part 2).

The crew API (``/api/login``), the crew page (``/login``) and SMTP AUTH (a real aiosmtpd
server over STARTTLS, driven by stdlib smtplib) share the process's one
:class:`common.signins.SignInGuard`: wrong PINs for one crew member count together, at
most five are evaluated in five minutes on all doors together, then the right PIN waits
on every door, while another crew member signs in as usual and an SOS from the sign-in
page still goes out, flagged as sent without a PIN, as far as the relay's alert.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from common.signins import SignInGuard
from protocol.codebook import Codebook
from protocol.envelopes import Sos
from protocol.languages import Language
from protocol.signing import SigningKey
from shipboard.config import ShipConfig
from shipboard.crew import PinCheck
from shipboard.http_api import create_app
from shipboard.intake import Intake
from shipboard.outbox import Outbox
from shipboard.smtp_intake import SmtpIntakeHandler, serve_smtp
from shipboard.tls import make_self_signed, server_context
from shipboard.web.phones import SignedInPhones
from shore.alerts import alert_text
from shore.store import SqliteStore, VesselInfo
from tests.kit.clock import FakeClock
from tests.kit.model_shore import ModelShore
from tests.kit.ports import free_port

from .conftest import NOW, VESSEL_ID, Crew


@dataclass
class Doors:
    """The agent's three doors over one intake and one guard, and what they evaluated."""

    api: httpx.AsyncClient
    smtp_port: int
    client_tls: ssl.SSLContext
    clock: FakeClock
    intake: Intake
    evaluated: list[int]  # crew numbers whose PIN was hashed and compared, in order

    async def api_login(self, crew: int, pin: str) -> httpx.Response:
        return await self.api.post("/api/login", json={"crew": crew, "pin": pin})

    async def page_login(self, crew: int, pin: str) -> httpx.Response:
        self.api.cookies.clear()  # another phone, not signed in
        form = await self.api.get("/login")
        match = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert match, form.text[:300]
        return await self.api.post(
            "/login", data={"crew": str(crew), "pin": pin, "csrf": match.group(1)}
        )

    async def smtp_login(self, crew: int, pin: str) -> tuple[int, bytes]:
        def login() -> tuple[int, bytes]:
            with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10) as client:
                client.starttls(context=self.client_tls)
                try:
                    code, text = client.login(str(crew), pin)
                except smtplib.SMTPAuthenticationError as refused:
                    return refused.smtp_code, refused.smtp_error
                return code, text

        return await asyncio.to_thread(login)


@pytest.fixture
async def doors(
    outbox: Outbox, ship_config: ShipConfig, codebook: Codebook, tmp_path: Path
) -> AsyncIterator[Doors]:
    clock = FakeClock(NOW)
    guard = SignInGuard(clock=clock)
    intake = Intake(ship_config, outbox, codebook, clock=clock)
    evaluated: list[int] = []
    check_pin: Callable[[int, str], PinCheck] = intake.register.check_pin

    def counting(crew: int, pin: str) -> PinCheck:
        evaluated.append(crew)
        return check_pin(crew, pin)

    intake.register.check_pin = counting  # type: ignore[method-assign]
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_self_signed(cert, key)
    stopping, ready = asyncio.Event(), asyncio.Event()
    port = free_port()
    smtp = asyncio.create_task(
        serve_smtp(
            SmtpIntakeHandler(intake, guard=guard),
            server_context(cert, key),
            "127.0.0.1",
            port,
            stopping,
            ready,
        )
    )
    await ready.wait()
    app = create_app(intake, guard=guard, phones=SignedInPhones(clock=clock))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://vessel"
        ) as api:
            yield Doors(
                api,
                port,
                ssl.create_default_context(cafile=str(cert)),
                clock,
                intake,
                evaluated,
            )
    finally:
        stopping.set()
        await smtp


async def test_wrong_pins_count_across_every_door_and_sos_still_goes(
    doors: Doors, crew: Crew, outbox: Outbox, vessel_key: SigningKey, shore: ModelShore
) -> None:
    """Someone guesses crew member 1's PIN on the API, the crew page and SMTP in turn.
    Five guesses are evaluated in all; the sixth is not even looked at, and then the
    right PIN is refused on every door (429, 429 page, 454) with the minutes to wait and
    no word of the captain. Crew member 2 signs in on every door meanwhile. From the
    sign-in page, with no PIN, an SOS for crew number 1 is saved, leaves in a batch
    flagged as unauthenticated, and the relay's alert says it was sent without a PIN.
    After the pause the right PIN works again on every door."""
    other, other_pin = doors.intake.register.add(
        name="Sok Dara", document="KH-9", nationality="KH", language=Language.KHM, now=NOW
    )
    me = crew.member.crew
    assert (await doors.api_login(me, "11111111")).status_code == 401
    assert (await doors.page_login(me, "22222222")).status_code == 400
    # smtplib tries AUTH PLAIN, then AUTH LOGIN: two guesses
    assert (await doors.smtp_login(me, "33333333"))[0] == 535
    doors.clock.now += 60  # a minute later: still the same window
    assert (await doors.api_login(me, "44444444")).status_code == 401
    assert doors.evaluated == [me] * 5
    assert (await doors.smtp_login(me, "55555555"))[0] == 454

    api = await doors.api_login(me, crew.pin)
    assert api.status_code == 429
    assert "Try again in 5 min" in api.json()["detail"]
    page = await doors.page_login(me, crew.pin)
    assert page.status_code == 429
    assert "Try again in 5 min" in page.text
    assert 'href="/sos?crew=1"' in page.text  # the SOS button, with the number typed
    code, text = await doors.smtp_login(me, crew.pin)
    assert code == 454
    assert b"Try again in 5 min" in text
    for answer in (api.text, page.text, text.decode()):
        assert "captain" not in answer
    assert doors.evaluated == [me] * 5  # the right PIN was not even looked at

    assert (await doors.api_login(other.crew, other_pin)).status_code == 200
    assert (await doors.page_login(other.crew, other_pin)).status_code == 303
    assert (await doors.smtp_login(other.crew, other_pin))[0] == 235

    doors.api.cookies.clear()
    form = await doors.api.get("/sos", params={"crew": str(me)})
    assert form.status_code == 200
    assert 'value="1"' in form.text
    sent = await doors.api.post("/sos", data={"crew": str(me), "note": "man overboard"})
    assert sent.status_code == 201
    assert "SOS" in sent.text
    [pending] = [p for p in outbox.pending_messages(doors.clock.now) if p.kind == "sos"]
    _, data = outbox.make_batch(
        [pending.message_seq], doors.intake.codebook, vessel_key, doors.clock.now
    )
    [sos] = [e for e in shore.receive_batch(data).envelopes if isinstance(e, Sos)]
    assert (sos.crew, sos.unauthenticated, sos.note) == (me, True, "man overboard")
    alert = await _relay_alert(data, vessel_key, Path(str(outbox.path) + ".relay"))
    assert "sent without a PIN" in alert
    assert "crew number 1" in alert

    doors.clock.now += 300
    assert (await doors.api_login(me, crew.pin)).status_code == 200
    assert (await doors.page_login(me, crew.pin)).status_code == 303
    assert (await doors.smtp_login(me, crew.pin))[0] == 235


async def _relay_alert(data: bytes, vessel_key: SigningKey, path: Path) -> str:
    """The relay ingests the vessel's batch; the words of the SOS alert it would send."""
    from common.codebooks import default_codebook
    from protocol.batch import Direction, decode_batch

    store = await SqliteStore.open(path)
    try:
        info = VesselInfo("Sea Star", "TH", "TH-0001", "Owner Co", (1,))
        await store.add_vessel(info, vessel_key.verify_key.key, NOW - 3600, VESSEL_ID)
        batch = decode_batch(
            data,
            codebook=default_codebook(),
            verify_key=vessel_key.verify_key,
            direction=Direction.UPLINK,
        )
        await store.ingest_batch(batch, data, NOW)
        [due] = await store.claim_sos_alerts(NOW, ["email:mrcc@rescue.example.org"], 10)
        return alert_text(due)
    finally:
        await store.close()


async def test_the_duress_pin_opens_every_door_and_counts_as_right(
    doors: Doors, crew: Crew
) -> None:
    """A crew member forced to sign in types the duress PIN: every door lets them in as
    the PIN would (the API shows an empty inbox), and it clears the wrong-PIN count
    like the PIN does, so nothing tells the two apart."""
    me = crew.member.crew
    doors.intake.register.choose_pin(me, "24681357", "13572468", NOW)
    for _ in range(4):
        assert (await doors.api_login(me, "00000000")).status_code == 401
    signed = await doors.api_login(me, "13572468")
    assert signed.status_code == 200
    auth = {"authorization": f"Bearer {signed.json()['token']}"}
    assert (await doors.api.get("/api/inbox", headers=auth)).json() == {
        "entries": [],
        "cases": [],
        "messages": [],
    }
    for _ in range(4):  # the count started again: four more wrong ones are not a pause
        assert (await doors.api_login(me, "00000000")).status_code == 401
    assert (await doors.smtp_login(me, "13572468"))[0] == 235
    page = await doors.page_login(me, "13572468")
    assert page.status_code == 303
    assert page.headers["location"] == "/home"
