"""The SBD path end to end for tests: emulated modem, fake provider, the relay's webhook and
MT sender, and a model shore behind them.

``async with sbd_world(shore) as world:`` starts the relay's MO webhook
(:class:`shore.sbd.MoWebhook`) on loopback, the fake RockBLOCK provider posting to it, and a
9602 emulator on a pty attached to the provider. Every whole payload the webhook
reassembles goes to ``shore`` (:class:`tests.kit.model_shore.ModelShore`); whatever the
shore then publishes goes back down through :class:`shore.sbd.MtSender` and the provider's
``/rockblock/MT``. :meth:`SbdWorld.link` makes the vessel's :class:`shipboard.sbd_link.
SbdLink` on the emulator's port. The provider signs its posts as RockBLOCK does, with
:func:`provider_key` (an RSA key made for the test run, standing in for Rock Seven's), and
the webhook verifies them with its public half.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa

from common.serving import AsgiServer
from protocol.fragments import PayloadKind, Reassembler
from shipboard.sbd_link import SbdLink, SbdStatistics
from shipboard.sbd_modem import SbdModem
from shore.fake_rockblock import FakeRockBlock
from shore.sbd import MO_WEBHOOK_PATH, MoWebhook, MtSender, SbdConfig
from shore.sbd_auth import ProviderJwt
from tests.kit.model_shore import ModelShore
from tests.kit.sbd_modem import ModemEmulator

IMEI = "300234010753370"
#: The webhook URL's secret, for a world whose provider does not sign (``signed=False``).
SECRET = "sbd-webhook-secret-for-tests"


@functools.cache
def provider_key() -> rsa.RSAPrivateKey:
    """The fake provider's signing key, made once per test run (never a committed key)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class SbdWorld:
    """The running SBD path (see the module docstring)."""

    shore: ModelShore
    provider: FakeRockBlock
    emulator: ModemEmulator
    webhook: MoWebhook
    sender: MtSender
    #: The vessel's reassembler and counters, kept across sessions as the agent keeps them.
    reassembler: Reassembler = field(default_factory=Reassembler)
    statistics: SbdStatistics = field(default_factory=SbdStatistics)

    def link(self, *, session_timeout_s: float = 5.0, mailbox_poll_s: float = 30.0) -> SbdLink:
        """A new vessel link (one satellite session) on the emulated modem."""
        modem = SbdModem(
            self.emulator.device, command_timeout_s=5.0, session_timeout_s=session_timeout_s
        )
        return SbdLink(
            modem,
            self.reassembler,
            statistics=self.statistics,
            mailbox_poll_s=mailbox_poll_s,
        )


@contextlib.asynccontextmanager
async def sbd_world(shore: ModelShore, *, signed: bool = True) -> AsyncIterator[SbdWorld]:
    """Start the SBD path for ``shore``'s vessel (see the module docstring); ``signed``
    False: a provider without JWT, the webhook URL carrying :data:`SECRET`."""
    provider = FakeRockBlock(None, {IMEI}, signing_key=provider_key() if signed else None)
    await provider.start()
    config = SbdConfig(
        {IMEI: shore.vessel_id},
        webhook_secret="" if signed else SECRET,
        provider_jwt=ProviderJwt(provider_key().public_key()) if signed else None,
        provider_url=provider.base_url,
        username=provider.username,
        password=provider.password,
    )
    sender = MtSender(config)

    async def on_payload(vessel_id: int, kind: PayloadKind, payload: bytes) -> None:
        assert vessel_id == shore.vessel_id
        assert kind in (PayloadKind.BATCH, PayloadKind.COMPACT)  # both are uplink payloads
        shore.receive(payload)
        for down in shore.send():
            await sender.send_payload(vessel_id, PayloadKind.BATCH, down)

    webhook = MoWebhook(config, on_payload)
    server = AsgiServer(webhook.app, "127.0.0.1", 0, name="SBD webhook")
    await server.start()
    provider.webhook_url = f"http://127.0.0.1:{server.port}{MO_WEBHOOK_PATH}" + (
        "" if signed else f"?secret={SECRET}"
    )
    try:
        with ModemEmulator(provider, IMEI, write_timeout_s=2.0) as emulator:
            yield SbdWorld(shore, provider, emulator, webhook, sender)
    finally:
        await provider.stop()
        await server.stop()
        await sender.aclose()
