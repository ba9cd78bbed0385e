"""The shipped relay over SBD: a vessel on its fallback sends through the emulated modem and
the fake RockBLOCK provider to the relay's MO webhook; the relay's ingest verifies and stores
the batch, and its BatchAck comes back down as MT messages."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from common.codebooks import default_codebook
from protocol.compact import LinkKeys, is_compact
from protocol.fragments import PayloadKind, Reassembler, fragment
from protocol.languages import Language
from shipboard.link import ReservedOnly, run_session
from shipboard.links import IRIDIUM_SBD
from shipboard.sbd_link import SbdLink
from shipboard.sbd_modem import SbdModem
from shipboard.transport import LinkSettings
from shore.config import parse_config
from shore.fake_rockblock import FakeRockBlock
from shore.relay import run_relay
from shore.sbd import MO_WEBHOOK_PATH, SbdDownlink, parse_vessels
from shore.store import SqliteStore
from tests.kit.mosquitto import MosquittoBroker
from tests.kit.ports import free_port
from tests.kit.sbd_modem import ModemEmulator
from tests.kit.sbd_world import provider_key
from tests.shipboard.test_link import relay_vessel_outbox
from tests.shore.store_fixtures import SHORE_KEY, VESSEL_KEY
from tests.shore.test_ingest import VESSEL, make_batches, relay_in_process, stored_seqs
from tests.shore.test_sbd_webhook_auth import form_for, rockblock_jwt

IMEI = "300234010753370"
SECRET = "a-webhook-secret-of-some-length"
PASSWORD = "provider-password"


def secret_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    os.chmod(path, 0o600)


@pytest.mark.parametrize(
    ("compact", "signed"),
    [(False, True), (True, False)],
    ids=["signed-batch-jwt", "compact-frame-secret"],
)
async def test_an_sos_over_sbd_is_stored_by_the_relay_and_acknowledged_over_sbd(
    fresh_mosquitto: MosquittoBroker, tmp_path: Path, compact: bool, signed: bool
) -> None:
    """The main link is paused; an SOS and a message home wait. Over SBD only the SOS
    goes; the relay (as shipped, [sbd] enabled) reassembles it from the provider's
    webhook, verifies and stores it, and its BatchAck reaches the vessel as MT messages in
    the same SBD session. The message home stays on board. As the agent sends it (link
    keys given), the SOS goes as a compact frame, which the relay's webhook takes too.
    The provider signs its posts as RockBLOCK does and the relay, given its public key,
    verifies them; or (a provider without JWT) the webhook URL carries the secret."""
    relay_dir = tmp_path / "relay"
    port = free_port()
    webhook_url = f"http://127.0.0.1:{port}{MO_WEBHOOK_PATH}"
    async with FakeRockBlock(
        webhook_url if signed else f"{webhook_url}?secret={SECRET}",
        {IMEI},
        username="relay",
        password=PASSWORD,
        signing_key=provider_key() if signed else None,
    ) as provider:
        secret_file(relay_dir / "sbd.password", PASSWORD)
        if signed:
            pem = (
                provider_key()
                .public_key()
                .public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
            (relay_dir / "rockblock.pem").write_bytes(pem)
            auth = 'provider_public_key_file = "rockblock.pem"\n'
        else:
            secret_file(relay_dir / "sbd.secret", SECRET)
            auth = 'webhook_auth = "secret"\n'
        extra = (
            "[sbd]\nenabled = true\n" + auth + f"webhook_port = {port}\n"
            f'provider_url = "{provider.base_url}"\n'
            'username = "relay"\n'
            f'vessels = ["{IMEI}={VESSEL}"]\n'
        )
        outbox_path = tmp_path / "outbox.sqlite3"
        with (
            relay_vessel_outbox(outbox_path, "Ko Ko", Language.MYA, time.time()) as (box, accept),
            ModemEmulator(provider, IMEI) as emulator,
        ):
            family = accept("နေကောင်းလား အမေ")
            sos = box.accept_sos(crew=1, now=time.time(), position=(1_300_000, 10_050_000))
            settings = LinkSettings(
                vessel_id=VESSEL,
                host="sbd",
                port=1,
                profile=IRIDIUM_SBD,
                downlink_quiet_s=0.3,
                ack_wait_s=15.0,
            )
            link = SbdLink(SbdModem(emulator.device, session_timeout_s=5.0), Reassembler())
            link_keys = LinkKeys.for_vessel(VESSEL, VESSEL_KEY, SHORE_KEY.verify_key)
            async with (
                relay_in_process(relay_dir, fresh_mosquitto, extra=extra),
                asyncio.timeout(60),
            ):
                report = await run_session(
                    settings,
                    ReservedOnly(box, link_keys if compact else None),
                    signing_key=VESSEL_KEY,
                    codebook=default_codebook(),
                    shore_verify_key=SHORE_KEY.verify_key,
                    message_seqs=[sos.message_seq],
                    link=link,
                )
            assert report.acknowledged == (1,)
            stages = box.message_stages(sos.message_seq)
            assert stages is not None
            assert stages["state"] == "acknowledged"
            family_stages = box.message_stages(family)
            assert family_stages is not None
            assert family_stages["state"] == "accepted"
        assert await stored_seqs(relay_dir) == [sos.message_seq]
        assert provider.mt  # the BatchAck came down over SBD
        assert all(len(message) <= 270 for message in provider.mt)
        assert link.statistics.mo_messages == len(provider.mo)
        assert any(is_compact(record.data) for record in provider.mo) is compact


def test_the_vessel_list_is_checked() -> None:
    """[sbd] vessels entries must be IMEI=VESSEL with a 15-digit IMEI, each IMEI once."""
    assert parse_vessels(("300234010753370=7",)) == {"300234010753370": 7}
    for bad in (("12345=7",), ("300234010753370",), ("300234010753370=7", "300234010753370=8")):
        with pytest.raises(ValueError, match=r"\[sbd\] vessels"):
            parse_vessels(bad)


async def test_small_downlink_goes_over_sbd_only_to_vessels_heard_over_sbd() -> None:
    """The relay publishes a BatchAck: on MQTT always; over SBD too when the vessel was
    heard over SBD within the hour and the batch fits in two MT messages, never else."""
    async with FakeRockBlock(None, {IMEI}, username="relay", password=PASSWORD) as provider:
        from shore.sbd import MtSender, SbdConfig

        config = SbdConfig(
            {IMEI: VESSEL},
            webhook_secret=SECRET,
            provider_url=provider.base_url,
            username="relay",
            password=PASSWORD,
        )
        now = [1000.0]
        sender = MtSender(config, httpx.AsyncClient())
        router = SbdDownlink(sender, window_s=3600.0, max_payload_bytes=540, clock=lambda: now[0])
        published: list[tuple[str, int]] = []

        async def mqtt(topic: str, data: bytes) -> None:
            published.append((topic, len(data)))

        routed = router.wrap(mqtt)
        await routed(f"vr/{VESSEL}/d", b"a" * 100)  # not heard over SBD: MQTT only
        router.heard(VESSEL, now[0])
        await routed(f"vr/{VESSEL}/d", b"b" * 100)  # heard: MQTT and one MT message
        await routed(f"vr/{VESSEL}/d", b"c" * 600)  # too big: MQTT only
        now[0] += 3601
        await routed(f"vr/{VESSEL}/d", b"d" * 100)  # heard too long ago: MQTT only
        await sender.aclose()
    assert len(published) == 4
    assert provider.mt == [bytes([1]) + b"b" * 100]
    assert (router.sent, router.too_big, router.failed) == (1, 1, 0)


@contextlib.asynccontextmanager
async def relay_again(relay_dir: Path) -> AsyncIterator[None]:
    """The relay started again on the data directory it ran on (its vessel registered)."""
    config_path = relay_dir / "relay.toml"
    config = parse_config(tomllib.loads(config_path.read_text()), str(config_path))
    stopping = asyncio.Event()
    subscribed = asyncio.Event()
    task = asyncio.create_task(run_relay(config, stopping, subscribed.set))
    try:
        async with asyncio.timeout(10):
            await subscribed.wait()
        yield
    finally:
        stopping.set()
        async with asyncio.timeout(10):
            await task


async def test_fragments_posted_before_a_relay_restart_complete_the_batch_after_it(
    fresh_mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """A vessel's batch goes over SBD as four MO messages. The provider posts two, and the
    relay restarts (process stopped, store closed); the provider posts the other two, in
    another order, and the first again: the relay stores the batch's messages once, the
    vessel resends nothing, and no fragment of it stays held."""
    relay_dir = tmp_path / "relay"
    port = free_port()
    secret_file(relay_dir / "sbd.password", PASSWORD)
    relay_dir.mkdir(parents=True, exist_ok=True)
    (relay_dir / "rockblock.pem").write_bytes(
        provider_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    extra = (
        '[sbd]\nenabled = true\nprovider_public_key_file = "rockblock.pem"\n'
        f'webhook_port = {port}\nusername = "relay"\nvessels = ["{IMEI}={VESSEL}"]\n'
    )
    batch = make_batches(1, 4)[0]
    messages = fragment(batch, PayloadKind.BATCH, 60)
    assert len(messages) == 4
    url = f"http://127.0.0.1:{port}{MO_WEBHOOK_PATH}"

    async def post(client: httpx.AsyncClient, momsn: int) -> None:
        form = form_for(messages[momsn], momsn=momsn)
        form["JWT"] = rockblock_jwt(form, iat=time.time())
        answer = await client.post(url, data=form)
        assert (answer.status_code, answer.text) == (200, "OK")

    async with httpx.AsyncClient() as client:
        async with relay_in_process(relay_dir, fresh_mosquitto, extra=extra):
            await post(client, 0)
            await post(client, 1)
        assert await stored_seqs(relay_dir) == []
        async with relay_again(relay_dir):
            for momsn in (3, 0, 2):
                await post(client, momsn)
    assert await stored_seqs(relay_dir) == [1, 2, 3, 4]
    store = await SqliteStore.open(relay_dir / "relay.db")
    try:
        held = await store.sbd_fragments_held(VESSEL)
    finally:
        await store.close()
    assert held.partials == 0
