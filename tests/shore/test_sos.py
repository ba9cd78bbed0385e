"""SOS alerting ashore: an SOS reaching the relay alerts the configured rescue and union
contacts at once (e-mail to a real aiosmtpd smarthost, SMS to the fake provider), retries
what fails, and tells the vessel with a receipt."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from protocol.envelopes import (
    Channel,
    ContactBookChange,
    DeliveryFailure,
    DeliveryReceipt,
    Envelope,
    ReceiptStage,
    Sos,
)
from protocol.languages import Language
from shore.alerts import AlertConfig, AlertConfigError, SosAlerter, alert_text
from shore.fake_sms import FakeSmsProvider
from shore.mail import MailIdentity
from shore.sms import SmsConfig, SmsProvider
from shore.store import SqliteStore, VesselInfo
from tests.kit.clock import FakeClock
from tests.kit.mosquitto import MosquittoBroker
from tests.shore.store_fixtures import (
    T0,
    VESSEL_KEY,
    decoded_downlink,
    decoded_uplink,
    shore_encoder,
    uplink,
)
from tests.shore.test_ingest import relay_in_process, vessel_link
from tests.shore.test_mail import SmtpSink

VESSEL = 7
MINUTES = int(T0 // 60)
IDENTITY = MailIdentity("relay.example.org", "relay@relay.example.org")
RESCUE = "mrcc@rescue.example.org"
UNION_DESK = "desk@union.example.org"
RESCUE_SMS = "+6621234567"


def sos_batch(batch_seq: int = 1, message_seq: int = 1) -> bytes:
    envelopes: list[Envelope] = [
        ContactBookChange(
            crew=3,
            contact=1,
            channel=Channel.EMAIL,
            address="mother@example.com",
            written_minutes=MINUTES,
            contact_lang=Language.MYA,
            crew_name="Ko Aung",
        ),
        Sos(
            message_seq=message_seq,
            crew=3,
            written_minutes=MINUTES,
            lang=Language.ENG,
            note="man overboard",
            position=(812345, 9876543),
        ),
    ]
    return uplink(VESSEL, batch_seq, envelopes)


@dataclass
class Harness:
    store: SqliteStore
    clock: FakeClock
    sink: SmtpSink
    fake: FakeSmsProvider
    sms: SmsProvider

    def alerter(self, config: AlertConfig) -> SosAlerter:
        return SosAlerter(self.store, config, IDENTITY, self.sink.sender(), self.sms, self.clock)

    async def ingest(self, data: bytes) -> None:
        await self.store.ingest_batch(decoded_uplink(data), data, self.clock.now)

    async def downlink_receipts(self) -> list[DeliveryReceipt | DeliveryFailure]:
        made = await self.store.make_downlink_batch(
            VESSEL, self.clock.now, shore_encoder(VESSEL), 200
        )
        if made is None:
            return []
        return [
            e
            for e in decoded_downlink(made.data).envelopes
            if isinstance(e, DeliveryReceipt | DeliveryFailure)
        ]


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    store = await SqliteStore.open(tmp_path / "relay.db")
    info = VesselInfo("Sea Star 7", "TH", "TH-0042", "Andaman Fishing Co", (1,))
    await store.add_vessel(info, VESSEL_KEY.verify_key.key, T0 - 3600, VESSEL)
    async with SmtpSink() as sink, FakeSmsProvider(tmp_path / "sms.jsonl") as fake:
        config = SmsConfig(fake.account_sid, fake.auth_token, "+6620000000", fake.base_url)
        async with SmsProvider(config) as sms:
            try:
                yield Harness(store, FakeClock(T0), sink, fake, sms)
            finally:
                await store.close()


async def test_sos_alerts_rescue_by_mail_and_sms_and_the_vessel_hears_back(
    harness: Harness,
) -> None:
    """A crew member's SOS reaches the relay: the rescue centre gets an e-mail and an SMS
    naming the vessel, the crew member and the position; the vessel gets ACCEPTED_ASHORE
    and then DELIVERED for the SOS; the family is not mailed."""
    await harness.ingest(sos_batch())
    alerter = harness.alerter(AlertConfig(emails=(RESCUE,), sms=(RESCUE_SMS,)))
    assert await alerter.alert_due() == 2
    [(_, recipients, raw)] = harness.sink.handler.received
    assert recipients == [RESCUE]
    mail = message_from_bytes(raw, policy=policy.default)
    assert mail["Subject"] == "SOS: vessel Sea Star 7 (TH TH-0042)"
    assert mail["Message-ID"] == "<sos-7-1-0@relay.example.org>"
    body = mail.get_content()
    assert "Ko Aung" in body
    assert "8.12345°N 98.76543°E" in body
    assert "man overboard" in body
    [sms] = harness.fake.messages()
    assert sms["to"] == RESCUE_SMS
    assert "Sea Star 7" in sms["body"]
    assert "8.12345°N" in sms["body"]
    receipts = await harness.downlink_receipts()
    assert sorted(
        (r.message_seq, type(r).__name__, getattr(r, "stage", None)) for r in receipts
    ) == [
        (1, "DeliveryReceipt", ReceiptStage.ACCEPTED_ASHORE),
        (1, "DeliveryReceipt", ReceiptStage.DELIVERED),
    ]
    [message] = await harness.store.messages(VESSEL)
    assert message.state == "delivered"
    assert await harness.store.deliveries(VESSEL) == []
    assert await alerter.alert_due() == 0


async def test_the_sos_outcome_is_not_held_behind_a_batch_the_vessel_has_not_collected(
    harness: Harness,
) -> None:
    """The vessel sent an SOS and left with the relay's answer (ACCEPTED_ASHORE) not yet
    acknowledged. A family's reply queued meanwhile waits in the relay for the vessel's
    next session; but when the rescue centre takes the alert, its DELIVERED receipt goes
    down at once, and the waiting reply with it."""
    await harness.ingest(sos_batch())
    assert [getattr(r, "stage", None) for r in await harness.downlink_receipts()] == [
        ReceiptStage.ACCEPTED_ASHORE
    ]
    harness.clock.now += 60.0
    await harness.store.queue_reply(
        VESSEL, 3, 1, "we are praying for you", Language.MYA, False, harness.clock.now
    )
    made = await harness.store.make_downlink_batch(
        VESSEL, harness.clock.now, shore_encoder(VESSEL), 200
    )
    assert made is None  # the reply waits: the vessel has not collected its answer yet
    alerter = harness.alerter(AlertConfig(emails=(RESCUE,)))
    assert await alerter.alert_due() == 1
    made = await harness.store.make_downlink_batch(
        VESSEL, harness.clock.now, shore_encoder(VESSEL), 200
    )
    assert made is not None
    envelopes = decoded_downlink(made.data).envelopes
    assert [type(e).__name__ for e in envelopes] == ["Reply", "DeliveryReceipt"]
    assert envelopes[1] == DeliveryReceipt(1, ReceiptStage.DELIVERED, int(harness.clock.now // 60))


async def test_failed_alert_is_retried_with_the_same_message_id(harness: Harness) -> None:
    """The smarthost answers 451 to the first alert: it is retried after the backoff with
    the same Message-ID; the vessel's DELIVERED receipt comes once, after success."""
    await harness.ingest(sos_batch())
    alerter = harness.alerter(AlertConfig(emails=(RESCUE,), retry_first_s=5.0))
    harness.sink.handler.data_reply = "451 4.3.0 try again later"
    assert await alerter.alert_due() == 1
    [record] = await harness.store.sos_alerts(VESSEL)
    assert (record.attempts, record.outcome) == (1, None)
    assert await alerter.alert_due() == 0  # not due before the backoff
    receipts = await harness.downlink_receipts()
    assert [getattr(r, "stage", None) for r in receipts] == [ReceiptStage.ACCEPTED_ASHORE]
    harness.sink.handler.data_reply = None
    harness.clock.now += 5.0
    assert await alerter.alert_due() == 1
    [(_, _, raw)] = harness.sink.handler.received
    assert message_from_bytes(raw, policy=policy.default)["Message-ID"] == (
        "<sos-7-1-0@relay.example.org>"
    )
    [record] = await harness.store.sos_alerts(VESSEL)
    assert (record.attempts, record.outcome) == (2, "delivered")
    receipts = await harness.downlink_receipts()
    assert [getattr(r, "stage", None) for r in receipts] == [ReceiptStage.DELIVERED]
    assert alerter.statistics().retries == 1


async def test_one_contact_enough_and_every_contact_failing_tells_the_vessel(
    harness: Harness,
) -> None:
    """Two SOS: for the first, the union desk refuses but the rescue centre takes it
    (DELIVERED); for the second, every contact refuses for good: the vessel gets a
    DeliveryFailure so the crew member knows to try another way."""
    alerter = harness.alerter(AlertConfig(emails=(RESCUE, UNION_DESK)))
    harness.sink.handler.refuse[UNION_DESK] = "550 5.1.1 no such desk"
    await harness.ingest(sos_batch(1, 1))
    await alerter.alert_due()
    harness.sink.handler.refuse[RESCUE] = "550 5.1.1 no such mailbox"
    await harness.ingest(sos_batch(2, 2))
    await alerter.alert_due()
    outcomes = [(r.message_seq, r.contact, r.outcome) for r in await harness.store.sos_alerts(7)]
    assert sorted(outcomes) == [
        (1, f"email:{UNION_DESK}", "failed"),
        (1, f"email:{RESCUE}", "delivered"),
        (2, f"email:{UNION_DESK}", "failed"),
        (2, f"email:{RESCUE}", "failed"),
    ]
    finals = [
        (r.message_seq, type(r).__name__)
        for r in await harness.downlink_receipts()
        if not (isinstance(r, DeliveryReceipt) and r.stage is ReceiptStage.ACCEPTED_ASHORE)
    ]
    assert sorted(finals) == [(1, "DeliveryReceipt"), (2, "DeliveryFailure")]


async def test_alert_survives_a_crash_between_claim_and_send(harness: Harness) -> None:
    """The alerter claims an SOS and dies before sending: after the claim's lease the
    next alerter sends it."""
    await harness.ingest(sos_batch())
    config = AlertConfig(emails=(RESCUE,))
    claimed = await harness.store.claim_sos_alerts(harness.clock.now, config.contacts, 10)
    assert len(claimed) == 1  # ... and the process dies here
    alerter = harness.alerter(config)
    assert await alerter.alert_due() == 0
    harness.clock.now += 61.0
    assert await alerter.alert_due() == 1
    assert len(harness.sink.handler.received) == 1


async def test_sos_sent_without_a_pin_says_so_in_the_alert(harness: Harness) -> None:
    """Someone on board sends an SOS from the sign-in page without a PIN, typing crew
    number 3: the rescue centre is alerted at once, and the mail and the SMS say that it
    was sent without a PIN and that crew number 3 was only typed. A signed-in SOS in the
    same batch reads as before."""
    envelopes: list[Envelope] = [
        ContactBookChange(
            crew=3,
            contact=1,
            channel=Channel.EMAIL,
            address="mother@example.com",
            written_minutes=MINUTES,
            crew_name="Ko Aung",
        ),
        Sos(
            message_seq=1,
            crew=3,
            written_minutes=MINUTES,
            lang=Language.ENG,
            note="fire in the engine room",
            unauthenticated=True,
        ),
        Sos(message_seq=2, crew=3, written_minutes=MINUTES),
    ]
    await harness.ingest(uplink(VESSEL, 1, envelopes))
    alerter = harness.alerter(AlertConfig(emails=(RESCUE,), sms=(RESCUE_SMS,)))
    assert await alerter.alert_due() == 4
    bodies = {}
    for _, _, raw in harness.sink.handler.received:
        mail = message_from_bytes(raw, policy=policy.default)
        bodies[mail["Message-ID"]] = mail.get_content()
    unsigned = bodies["<sos-7-1-0@relay.example.org>"]
    assert "sent without a PIN" in unsigned
    assert "typed crew number 3, registered as Ko Aung: not verified" in unsigned
    assert "fire in the engine room" in unsigned
    signed = bodies["<sos-7-2-0@relay.example.org>"]
    assert signed.startswith("SOS from Ko Aung on vessel Sea Star 7")
    assert "without a PIN" not in signed
    sms_bodies = sorted(m["body"] for m in harness.fake.messages())
    assert sum("NO PIN, typed crew 3" in body for body in sms_bodies) == 1


def test_alert_contacts_are_checked() -> None:
    """An alert contact that is not an address or an E.164 number is refused at start."""
    with pytest.raises(AlertConfigError, match=r"E\.164"):
        AlertConfig(sms=("0812345678",))
    with pytest.raises(AlertConfigError, match="address"):
        AlertConfig(emails=("rescue\r\nBcc: x@y.org",))


def test_alert_text_cannot_inject_lines_through_names() -> None:
    """A vessel name with CR/LF does not make extra lines or headers in the alert."""
    from shore.store import SosAlertDue

    alert = SosAlertDue(
        7,
        1,
        "email:a@b.org",
        0,
        "Sea\r\nBcc: x@y.org",
        "TH",
        "R",
        3,
        None,
        None,
        None,
        None,
        MINUTES,
        T0,
    )
    first_line = alert_text(alert).splitlines()[0]
    assert "Bcc: x@y.org" in first_line  # kept as text, on the same line


async def test_relay_alerts_at_once_on_an_sos_over_mqtt(
    fresh_mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """End to end: ``[alerts]`` configured, a vessel publishes an SOS over Mosquitto; the
    relay mails the rescue centre, sends it an SMS, and the vessel receives DELIVERED."""
    with SmtpSink() as sink:
        async with FakeSmsProvider(tmp_path / "sms.jsonl") as fake:
            (tmp_path / "sms.token").write_text(fake.auth_token)
            (tmp_path / "sms.token").chmod(0o600)
            extra = (
                f"[delivery]\nenabled = true\nsmtp_host = '127.0.0.1'\nsmtp_port = {sink.port}\n"
                f"[sms]\nenabled = true\naccount_sid = '{fake.account_sid}'\n"
                f"from_number = '+6620000000'\nbase_url = '{fake.base_url}'\n"
                f"[alerts]\nenabled = true\nemails = ['{RESCUE}']\nsms = ['{RESCUE_SMS}']\n"
            )
            async with contextlib.AsyncExitStack() as stack:
                await stack.enter_async_context(relay_in_process(tmp_path, fresh_mosquitto, extra))
                v = await stack.enter_async_context(vessel_link(fresh_mosquitto))
                await v.publish(sos_batch())
                await v.wait_for(lambda: (1, ReceiptStage.DELIVERED) in v.receipts)
            texts = fake.messages()
        received = list(sink.handler.received)
    assert [recipients for _, recipients, _ in received] == [[RESCUE]]
    assert [t["to"] for t in texts] == [RESCUE_SMS]
