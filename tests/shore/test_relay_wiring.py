"""`vessel-relay shore run` wiring: the SMS adapter, the inbound SMS webhook and the
quick-message phrases are started and used by the relay itself (real Mosquitto, real
aiosmtpd smarthost, the fake SMS provider)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from email import message_from_bytes, policy
from pathlib import Path

import httpx

from common.speech import decode_recording, encode_codec2
from protocol.envelopes import (
    BatchAck,
    Channel,
    ContactBookChange,
    CrewMessage,
    DeliveryReceipt,
    Envelope,
    ReceiptStage,
    Reply,
    VoiceNote,
    acknowledges_only,
)
from protocol.languages import Language
from protocol.phrases import phrase
from protocol.replay import RangeSet
from protocol.voice import DEFAULT_VOICE_MODE
from shore.fake_sms import FakeSmsProvider, send_inbound
from tests.kit.mosquitto import MosquittoBroker
from tests.kit.mqtt import persistent_client
from tests.kit.ports import free_port
from tests.kit.speech import BURMESE, estoi, spoken
from tests.kit.wait import eventually
from tests.shore.store_fixtures import T0, decoded_downlink, decoded_uplink, uplink
from tests.shore.test_ingest import relay_in_process
from tests.shore.test_mail import SmtpSink

VESSEL = 7
MINUTES = int(T0 // 60)
MOTHER_SMS = "+959250000001"
RELAY_NUMBER = "+6620000000"


def family_batch() -> bytes:
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
        ContactBookChange(
            crew=3,
            contact=2,
            channel=Channel.SMS,
            address=MOTHER_SMS,
            written_minutes=MINUTES,
            contact_lang=Language.MYA,
            crew_name="Ko Aung",
        ),
        CrewMessage(message_seq=1, crew=3, contact=1, written_minutes=MINUTES, quick=1),
        CrewMessage(
            message_seq=2,
            crew=3,
            contact=2,
            written_minutes=MINUTES,
            lang=Language.MYA,
            body="နေကောင်းလား",
        ),
    ]
    return uplink(VESSEL, 1, envelopes)


async def test_relay_sends_sms_expands_quick_messages_and_takes_sms_replies(
    fresh_mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """A crew member sends a quick message ("I am safe") to his mother's e-mail and a text
    to her phone: the mail carries the phrase in Burmese, the SMS goes through the provider,
    both come back DELIVERED; the mother answers by SMS and her reply reaches him (the
    vessel collecting its downlink as it comes)."""
    port = free_port()
    webhook_url = f"http://127.0.0.1:{port}/sms/inbound"
    received: list[Envelope] = []
    changed = asyncio.Event()
    with SmtpSink() as sink:
        async with FakeSmsProvider(tmp_path / "sms.jsonl") as fake:
            token = tmp_path / "sms.token"
            token.write_text(fake.auth_token)
            token.chmod(0o600)
            extra = (
                f"[delivery]\nenabled = true\nsmtp_host = '127.0.0.1'\nsmtp_port = {sink.port}\n"
                f"[sms]\nenabled = true\naccount_sid = '{fake.account_sid}'\n"
                f"from_number = '{RELAY_NUMBER}'\nbase_url = '{fake.base_url}'\n"
                f"webhook = true\nwebhook_url = '{webhook_url}'\nwebhook_port = {port}\n"
            )
            client = persistent_client(fresh_mosquitto.host, fresh_mosquitto.port, "v7")
            seen = RangeSet()
            next_uplink = iter(range(2, 1000))

            async def listen() -> None:
                """Collect the downlink and acknowledge each batch with items at once, as
                the vessel's next session would (the relay holds what it queues later
                until then: ``protocol.exchange.downlink_release_due``)."""
                async for message in client.messages:
                    assert isinstance(message.payload, bytes)
                    batch = decoded_downlink(message.payload)
                    received.extend(batch.envelopes)
                    seen.add(batch.batch_seq)
                    if not acknowledges_only(batch.envelopes):
                        ack = BatchAck(seen.up_to, MINUTES, seen.ranges or None)
                        data = uplink(VESSEL, next(next_uplink), [ack])
                        await client.publish(f"vr/{VESSEL}/u", data, qos=1)
                    changed.set()

            async def wait_for(predicate: object) -> None:
                assert callable(predicate)
                async with asyncio.timeout(20):
                    while not predicate():
                        changed.clear()
                        await changed.wait()

            def delivered() -> set[int]:
                return {
                    e.message_seq
                    for e in received
                    if isinstance(e, DeliveryReceipt) and e.stage is ReceiptStage.DELIVERED
                }

            async with relay_in_process(tmp_path, fresh_mosquitto, extra), client:
                await client.subscribe(f"vr/{VESSEL}/d", qos=1)
                listener = asyncio.create_task(listen())
                try:
                    await client.publish(f"vr/{VESSEL}/u", family_batch(), qos=1)
                    await wait_for(lambda: delivered() >= {1, 2})
                    answer = await send_inbound(
                        webhook_url,
                        from_number=MOTHER_SMS,
                        to_number=RELAY_NUMBER,
                        body="သားရေ နေကောင်းလား",
                        auth_token=fake.auth_token,
                    )
                    assert answer.status_code == 200
                    await wait_for(lambda: any(isinstance(e, Reply) for e in received))
                finally:
                    listener.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await listener
            texts = fake.messages()
        mails = list(sink.handler.received)
    [(_, recipients, raw)] = mails
    assert recipients == ["mother@example.com"]
    body = message_from_bytes(raw, policy=policy.default).get_body(("plain",))
    assert body is not None
    expected = phrase(1, Language.MYA)
    assert expected is not None
    assert expected in body.get_content()
    assert [(t["to"], t["body"]) for t in texts] == [(MOTHER_SMS, "Ko Aung: နေကောင်းလား")]
    [reply] = [e for e in received if isinstance(e, Reply)]
    assert (reply.crew, reply.contact, reply.body) == (3, 2, "သားရေ နေကောင်းလား")


async def test_relay_sends_an_sms_contact_a_voice_link_that_plays_on_its_public_app(
    fresh_mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """Ko Aung's voice note to his mother's phone: the relay (as `shore run` wires it)
    sends her an SMS through the provider with a link at the webhook's origin, and that
    link, fetched over HTTP from the relay's public app, plays what he said."""
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    source = spoken(BURMESE, "my")
    coded = encode_codec2(source, DEFAULT_VOICE_MODE)
    note = VoiceNote(
        message_seq=1,
        crew=3,
        contact=2,
        mode=coded.mode,
        duration_ms=coded.duration_ms,
        frames=coded.frames,
        written_minutes=MINUTES,
    )
    contacts = [
        e for e in decoded_uplink(family_batch()).envelopes if not isinstance(e, CrewMessage)
    ]
    with SmtpSink() as sink:
        async with FakeSmsProvider(tmp_path / "sms.jsonl") as fake:
            token = tmp_path / "sms.token"
            token.write_text(fake.auth_token)
            token.chmod(0o600)
            extra = (
                f"[delivery]\nenabled = true\nsmtp_host = '127.0.0.1'\nsmtp_port = {sink.port}\n"
                f"[sms]\nenabled = true\naccount_sid = '{fake.account_sid}'\n"
                f"from_number = '{RELAY_NUMBER}'\nbase_url = '{fake.base_url}'\n"
                f"webhook = true\nwebhook_url = '{origin}/sms/inbound'\nwebhook_port = {port}\n"
            )
            async with relay_in_process(tmp_path, fresh_mosquitto, extra):
                async with persistent_client(
                    fresh_mosquitto.host, fresh_mosquitto.port, "v7"
                ) as client:
                    await client.publish(f"vr/{VESSEL}/u", uplink(VESSEL, 1, [*contacts, note]))
                # the fake provider writes a log and has no event to wait on
                await eventually(fake.messages, 20, what="the SMS with the voice link")
                [sms] = fake.messages()
                pattern = rf"{re.escape(origin)}/voice/[A-Za-z0-9_-]{{43}}"
                [url] = re.findall(pattern, sms["body"])
                async with httpx.AsyncClient() as http:
                    page = await http.get(url)
                    ogg = await http.get(f"{url}.ogg")
    assert sms["to"] == MOTHER_SMS
    assert page.status_code == 200
    assert "<audio" in page.text
    assert ogg.status_code == 200
    assert ogg.headers["content-type"] == "audio/ogg"
    assert estoi(source, decode_recording(ogg.content, limit_s=120)) > 0.4
