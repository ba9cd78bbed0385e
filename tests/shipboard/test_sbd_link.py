"""SBD sessions end to end: the agent's session over the emulated modem, the fake provider,
the relay's webhook and MT sender; an SOS and a report go up, the shore's BatchAck comes
down, and cut sessions lose and duplicate nothing."""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import pytest

from protocol.codebook import Codebook
from protocol.compact import LinkKeys, is_compact
from protocol.fragments import SBD_MO_BYTES, PayloadKind
from protocol.signing import SigningKey
from shipboard.link import ReservedOnly, run_session
from shipboard.outbox import Outbox
from shipboard.profiles import VSAT
from shipboard.sbd_link import SBD_CREDIT_BYTES, SbdLink, sbd_billed_bytes
from shipboard.transport import LinkDown, LinkSettings
from tests.kit.model_shore import NOW, ModelShore
from tests.kit.sbd_world import SbdWorld, sbd_world
from tests.shipboard.conftest import Crew


def sbd_settings(vessel_id: int) -> LinkSettings:
    return LinkSettings(
        vessel_id=vessel_id,
        host="sbd",
        port=1,
        profile=VSAT,
        downlink_quiet_s=0.3,
        ack_wait_s=10.0,
    )


async def session(
    world: SbdWorld,
    outbox: Outbox,
    vessel_key: SigningKey,
    shore_key: SigningKey,
    codebook: Codebook,
    seqs: list[int],
    link: SbdLink | None = None,
) -> object:
    async with asyncio.timeout(60):
        return await run_session(
            sbd_settings(outbox.vessel_id),
            outbox,
            signing_key=vessel_key,
            codebook=codebook,
            shore_verify_key=shore_key.verify_key,
            message_seqs=seqs,
            clock=lambda: NOW,
            link=link or world.link(),
        )


@pytest.fixture
def model_shore(
    codebook: Codebook, vessel_key: SigningKey, shore_key: SigningKey, outbox: Outbox
) -> ModelShore:
    return ModelShore.for_keys(codebook, vessel_key, shore_key, outbox.vessel_id)


def state(outbox: Outbox, seq: int) -> object:
    stages = outbox.message_stages(seq)
    assert stages is not None
    return stages["state"]


async def test_an_sos_and_a_report_go_over_sbd_and_are_acknowledged(
    outbox: Outbox,
    crew: Crew,
    codebook: Codebook,
    vessel_key: SigningKey,
    shore_key: SigningKey,
    model_shore: ModelShore,
) -> None:
    """An SOS and a sealed report leave over the SBD modem in fragments of at most 340 bytes;
    the relay reassembles and verifies the batch; its BatchAck comes down as MT messages of
    at most 270 bytes (a ring alert) and both end acknowledged on board."""
    sos = outbox.accept_sos(crew=crew.member.crew, now=NOW, position=(1_300_000, 10_050_000))
    report = outbox.accept_grievance(
        union_id=1, sealed=secrets.token_bytes(304), case_key=b"k" * 32, now=NOW
    )
    async with sbd_world(model_shore) as world:
        done = await session(
            world, outbox, vessel_key, shore_key, codebook, [sos.message_seq, report.message_seq]
        )
    assert getattr(done, "acknowledged", None) == (1,)
    assert state(outbox, sos.message_seq) == "acknowledged"
    assert state(outbox, report.message_seq) == "acknowledged"
    assert model_shore.received[0].message_seqs == (sos.message_seq, report.message_seq)
    sent = [record.data for record in world.provider.mo]
    assert len(sent) >= 2  # the report alone is over 300 bytes
    assert all(len(message) <= SBD_MO_BYTES for message in sent)
    stats = world.statistics
    assert stats.mo_messages == len(sent)
    assert stats.mt_messages >= 1
    received = world.provider.mt
    assert all(len(message) <= 270 for message in received)
    assert stats.mt_messages == len(received)
    assert stats.billed_bytes == sum(sbd_billed_bytes(len(m)) for m in [*sent, *received])


async def test_failed_sessions_are_retried_then_the_link_is_down_and_nothing_is_lost(
    outbox: Outbox,
    crew: Crew,
    codebook: Codebook,
    vessel_key: SigningKey,
    shore_key: SigningKey,
    model_shore: ModelShore,
) -> None:
    """No network service, busy, RF drop: the modem tries three times, then the satellite
    session ends as LinkDown with the SOS still on board; the next session, after two more
    failed tries, sends it."""
    sos = outbox.accept_sos(crew=crew.member.crew, now=NOW, position=(1_300_000, 10_050_000))
    async with sbd_world(model_shore) as world:
        world.emulator.fail_sessions(32, 35, 18)
        with pytest.raises(LinkDown, match="mo_status 18"):
            await session(world, outbox, vessel_key, shore_key, codebook, [sos.message_seq])
        assert world.provider.mo == []
        assert state(outbox, sos.message_seq) != "acknowledged"
        world.emulator.fail_sessions(32, 35)
        await session(world, outbox, vessel_key, shore_key, codebook, [sos.message_seq])
        assert world.statistics.failed_sessions == 5
    assert state(outbox, sos.message_seq) == "acknowledged"
    assert [r.batch_seq for r in model_shore.received] == [1]


async def test_a_session_cut_after_the_gateway_loses_and_duplicates_nothing(
    outbox: Outbox,
    crew: Crew,
    codebook: Codebook,
    vessel_key: SigningKey,
    shore_key: SigningKey,
    model_shore: ModelShore,
) -> None:
    """The antenna cable is pulled right after the satellite took the report's first
    fragment: the session fails; the next one sends the batch again, the relay drops the
    repeated fragment and takes the batch once, and the report ends acknowledged."""
    report = outbox.accept_grievance(
        union_id=1, sealed=secrets.token_bytes(600), case_key=b"k" * 32, now=NOW
    )
    async with sbd_world(model_shore) as world:
        world.emulator.cut_after_gateway()
        cut = world.link(session_timeout_s=0.5)
        with pytest.raises(LinkDown, match="did not answer"):
            await session(
                world, outbox, vessel_key, shore_key, codebook, [report.message_seq], link=cut
            )
        await world.provider.wait_settled()
        assert len(world.provider.mo) == 1
        await session(world, outbox, vessel_key, shore_key, codebook, [])
        await world.provider.wait_settled()
    assert state(outbox, report.message_seq) == "acknowledged"
    assert [r.batch_seq for r in model_shore.received] == [1]
    first, *rest = world.provider.mo
    assert first.data == rest[0].data  # the first fragment went twice ...
    assert world.webhook.statistics.payloads == 1  # ... and the relay took the batch once


async def test_the_webhook_refuses_a_caller_without_the_secret(
    model_shore: ModelShore,
) -> None:
    """Someone who found the webhook's address posts a message: 403, nothing reassembled.
    (A provider without JWT: the webhook URL carries the secret.)"""
    import httpx

    from shore.sbd import MO_WEBHOOK_PATH

    async with sbd_world(model_shore, signed=False) as world:
        url = world.provider.webhook_url
        assert url is not None
        wrong = url.split("?")[0] + "?secret=guess"
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                wrong, data={"imei": "300234010753370", "momsn": "1", "data": "01ff"}
            )
            assert answer.status_code == 403
            bad_hex = await client.post(url, data={"imei": "300234010753370", "data": "zz"})
            assert bad_hex.status_code == 400
    assert world.webhook.statistics.forged == 1
    assert world.webhook.statistics.payloads == 0
    assert MO_WEBHOOK_PATH in url


async def test_a_compact_payload_rides_in_one_message_with_one_byte_of_framing(
    model_shore: ModelShore,
) -> None:
    """A 49-byte compact frame (the lone-message format to come) leaves in one MO message
    of 50 bytes: one SBD credit; the relay's webhook hands it on as kind COMPACT."""
    from protocol.fragments import PayloadKind

    async with sbd_world(model_shore) as world:
        kinds: list[tuple[PayloadKind, bytes]] = []

        async def on_payload(vessel_id: int, kind: PayloadKind, payload: bytes) -> None:
            kinds.append((kind, payload))

        world.webhook.on_payload = on_payload
        link = world.link()
        await link.connect()
        sent = await link.publish_payload(b"c" * 49, PayloadKind.COMPACT)
        await link.close()
        await world.provider.wait_posted(1)
    assert sent == 1
    assert [len(record.data) for record in world.provider.mo] == [50]
    assert world.statistics.billed_bytes == 50
    assert kinds == [(PayloadKind.COMPACT, b"c" * 49)]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_stormy_night_over_sbd_loses_nothing_and_stores_nothing_twice(
    seed: int,
    outbox: Outbox,
    crew: Crew,
    codebook: Codebook,
    vessel_key: SigningKey,
    shore_key: SigningKey,
    model_shore: ModelShore,
) -> None:
    """Three SOS and three reports over a night of bad sky: sessions fail (no service,
    busy, RF drop) or are cut after the satellite took a fragment, at random. Sessions go
    on until everything is acknowledged: every message reaches the shore exactly once (the
    model shore fails the test on a number stored twice with other bytes) and the relay's
    webhook hands each batch on once however many fragments were repeated."""
    import random

    rng = random.Random(seed)
    seqs = []
    for index in range(3):
        seqs.append(
            outbox.accept_sos(
                crew=crew.member.crew, now=NOW + index, position=(1_300_000, 10_050_000)
            ).message_seq
        )
        seqs.append(
            outbox.accept_grievance(
                union_id=1, sealed=secrets.token_bytes(400), case_key=b"k" * 32, now=NOW + index
            ).message_seq
        )
    troubles: list[str] = []
    async with sbd_world(model_shore) as world:
        for _ in range(20):
            waiting = [seq for seq in seqs if state(outbox, seq) != "acknowledged"]
            if not waiting:
                break
            trouble = rng.choice(["fail", "cut"] if not troubles else ["none", "fail", "cut"])
            troubles.append(trouble)
            if trouble == "fail":
                world.emulator.fail_sessions(
                    *rng.choices([10, 13, 18, 32, 35], k=rng.randint(1, 4))
                )
            elif trouble == "cut":
                world.emulator.cut_after_gateway()
            pending = [
                seq
                for seq in waiting
                if (outbox.message_stages(seq) or {}).get("state") == "accepted"
            ]
            with contextlib.suppress(LinkDown):  # the storm: the next session goes on
                await session(
                    world,
                    outbox,
                    vessel_key,
                    shore_key,
                    codebook,
                    pending[:2],
                    link=world.link(session_timeout_s=0.5),
                )
            await world.provider.wait_settled()
        else:
            raise AssertionError("20 sessions did not get everything acknowledged")
    assert all(state(outbox, seq) == "acknowledged" for seq in seqs)
    stored = sorted(seq for received in model_shore.received for seq in received.message_seqs)
    assert sorted(set(stored)) == sorted(seqs)
    batches = [received.batch_seq for received in model_shore.received]
    assert world.webhook.statistics.payloads == len(batches)
    assert {"fail", "cut"} & set(troubles), troubles  # the night was stormy


def fallback_outbox(outbox: Outbox, vessel_key: SigningKey, shore_key: SigningKey) -> ReservedOnly:
    """The outbox as the agent's SBD fallback session sees it (compact frames on)."""
    keys = LinkKeys.for_vessel(outbox.vessel_id, vessel_key, shore_key.verify_key)
    return ReservedOnly(outbox, keys)


async def test_an_sos_alone_goes_in_one_credit_as_a_compact_frame_and_is_stored_once(
    outbox: Outbox,
    crew: Crew,
    codebook: Codebook,
    vessel_key: SigningKey,
    shore_key: SigningKey,
    model_shore: ModelShore,
) -> None:
    """The main link is paused and a fisher presses SOS: the fallback session sends it as a
    compact frame in ONE 50-byte SBD message (one credit, where a signed batch costs three);
    the relay checks its tag, stores it once and its BatchAck comes down."""
    outbox.make_batch([], codebook, vessel_key, NOW)  # the contact book, announced before
    sos = outbox.accept_sos(crew=crew.member.crew, now=NOW, position=(1_300_000, 10_050_000))
    async with sbd_world(model_shore) as world:
        mo_before = len(world.provider.mo)
        async with asyncio.timeout(60):
            await run_session(
                sbd_settings(outbox.vessel_id),
                fallback_outbox(outbox, vessel_key, shore_key),
                signing_key=vessel_key,
                codebook=codebook,
                shore_verify_key=shore_key.verify_key,
                message_seqs=[sos.message_seq],
                clock=lambda: NOW,
                link=world.link(),
            )
    sent = [record.data for record in world.provider.mo[mo_before:]]
    assert [len(message) for message in sent] == [50]
    assert is_compact(sent[0])
    assert sbd_billed_bytes(len(sent[0])) == SBD_CREDIT_BYTES
    assert state(outbox, sos.message_seq) == "acknowledged"
    sos_batches = [r for r in model_shore.received if sos.message_seq in r.message_seqs]
    assert len(sos_batches) == 1
    assert sos.message_seq in model_shore.messages


async def test_a_cut_sbd_session_resends_the_same_compact_frame_and_the_shore_keeps_one(
    outbox: Outbox,
    crew: Crew,
    codebook: Codebook,
    vessel_key: SigningKey,
    shore_key: SigningKey,
    model_shore: ModelShore,
) -> None:
    """The antenna cable is pulled right after the satellite took a lone SOS's compact
    frame, and the shore's acknowledgement never reaches the vessel: the next session sends
    the very same bytes again; the shore recognises the batch number, stores nothing twice
    and acknowledges it, and the SOS ends acknowledged on board."""
    outbox.make_batch([], codebook, vessel_key, NOW)
    sos = outbox.accept_sos(crew=crew.member.crew, now=NOW, position=(1_300_000, 10_050_000))
    fallback = fallback_outbox(outbox, vessel_key, shore_key)
    async with sbd_world(model_shore) as world:
        relay_on_payload = world.webhook.on_payload
        calls = 0

        async def ack_lost_once(vessel_id: int, kind: PayloadKind, payload: bytes) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                model_shore.receive(payload)  # stored; the answer is lost with the session
                return
            await relay_on_payload(vessel_id, kind, payload)

        world.webhook.on_payload = ack_lost_once
        world.emulator.cut_after_gateway()
        cut = world.link(session_timeout_s=0.5)
        with pytest.raises(LinkDown, match="did not answer"):
            async with asyncio.timeout(60):
                await run_session(
                    sbd_settings(outbox.vessel_id),
                    fallback,
                    signing_key=vessel_key,
                    codebook=codebook,
                    shore_verify_key=shore_key.verify_key,
                    message_seqs=[sos.message_seq],
                    clock=lambda: NOW,
                    link=cut,
                )
        await world.provider.wait_settled()
        assert state(outbox, sos.message_seq) != "acknowledged"
        async with asyncio.timeout(60):
            await run_session(
                sbd_settings(outbox.vessel_id),
                fallback,
                signing_key=vessel_key,
                codebook=codebook,
                shore_verify_key=shore_key.verify_key,
                message_seqs=[],
                clock=lambda: NOW,
                link=world.link(),
            )
        await world.provider.wait_settled()
    frames = [record.data for record in world.provider.mo if is_compact(record.data)]
    assert len(frames) == 2
    assert frames[0] == frames[1]  # byte-identical resend
    assert len(frames[0]) == 50
    assert state(outbox, sos.message_seq) == "acknowledged"
    copies = [r for r in model_shore.received if sos.message_seq in r.message_seqs]
    assert len(copies) == 2  # the shore saw it twice ...
    assert len({r.batch_seq for r in copies}) == 1
    assert list(model_shore.messages).count(sos.message_seq) == 1  # ... and kept it once
    assert copies[0].batch_seq in model_shore.batches


async def test_a_report_with_its_sealed_block_keeps_the_signed_batch_over_sbd(
    outbox: Outbox,
    crew: Crew,
    codebook: Codebook,
    vessel_key: SigningKey,
    shore_key: SigningKey,
    model_shore: ModelShore,
) -> None:
    """A sealed grievance report (a 304-byte sealed box) does not fit one SBD message as a
    compact frame: the fallback session makes the vessel-signed batch, as before."""
    outbox.make_batch([], codebook, vessel_key, NOW)
    report = outbox.accept_grievance(
        union_id=1, sealed=secrets.token_bytes(304), case_key=b"k" * 32, now=NOW
    )
    fallback = fallback_outbox(outbox, vessel_key, shore_key)
    seq, data = fallback.make_batch([report.message_seq], codebook, vessel_key, NOW)
    assert not is_compact(data)
    assert model_shore.receive_batch(data).batch_seq == seq
