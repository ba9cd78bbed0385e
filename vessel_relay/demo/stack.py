"""The whole system on one machine, in one process: broker, relay, SMTP sink, fake SMS,
link emulator and a shipboard agent with a demo crew::

    crew (web page / e-mail app) ─▶ agent ─▶ link emulator ─▶ broker ◀─ relay ─▶ SMTP sink
                                                                                (Maildir)

``async with DemoStack(options) as stack:`` starts everything in that order and stops it
in reverse; :attr:`DemoStack.info` says where everything is (``--info FILE`` writes it).
The work directory must be new, empty, or one an earlier demo run made
(:func:`~vessel_relay.demo.setup.claim_workdir`): then its keys, stores and crew are reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipboard.agent import run_agent
from shipboard.config import load_config
from shore.config import load_config as load_relay_config
from shore.fake_sms import FakeSmsProvider
from shore.relay import run_relay
from vessel_relay import link_emulator
from vessel_relay.demo.brokers import choose_broker, free_port
from vessel_relay.demo.setup import (
    DEMO_CREW,
    Tuning,
    VesselSetup,
    claim_workdir,
    prepare_relay,
    prepare_union,
    prepare_vessel,
    register_vessels,
    union_passphrase_path,
)
from vessel_relay.demo.sinks import MaildirSink

logger = logging.getLogger(__name__)

VESSEL_ID = 1


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What to run: where, which link, which broker."""

    workdir: Path
    link: str = "satellite"  # a vessel_relay.link_emulator.PROFILES name
    broker: str = "auto"  # auto | mosquitto | amqtt

    @property
    def fast(self) -> bool:
        """Seconds-scale timing (no emulated latency or bandwidth)."""
        return self.link in ("fast", "unlimited")


def tuning_for(options: DemoOptions) -> Tuning:
    """Scheduler and link timing for the demo (see vessel_relay.demo.setup)."""
    if options.fast:
        return Tuning(idle_poll_s=2.0, min_gap_s=0.5, resend_after_s=5.0, ack_wait_s=5.0)
    return Tuning(idle_poll_s=8.0, min_gap_s=3.0, resend_after_s=20.0, ack_wait_s=20.0)


class DemoStack:
    """Everything of the demo, started by ``async with`` and stopped at its end."""

    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        self.workdir = options.workdir.resolve()
        self.stopping = asyncio.Event()
        self.vessel: VesselSetup | None = None
        self.link: link_emulator.LinkEmulator | None = None
        self.info: dict[str, Any] = {}
        #: Whether the work directory held an earlier run (keys and stores reused).
        self.reused = False
        self._exit = contextlib.AsyncExitStack()

    async def __aenter__(self) -> DemoStack:
        try:
            await self._start()
        except BaseException:
            await self._exit.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stopping.set()
        await self._exit.aclose()

    async def _start(self) -> None:
        options, work = self.options, self.workdir
        self.reused = claim_workdir(work)
        broker = choose_broker(options.broker, work / "broker")
        await broker.start()
        self._exit.push_async_callback(broker.stop)

        sink = MaildirSink(work / "maildir")
        await asyncio.to_thread(sink.start)
        self._exit.callback(sink.stop)
        self.sink = sink

        sms_log = work / "sms-messages.jsonl"
        sms = FakeSmsProvider(sms_log)
        await sms.start()
        self._exit.push_async_callback(sms.stop)

        profile = link_emulator.PROFILES[options.link]
        self.link = link_emulator.LinkEmulator("127.0.0.1", 0, broker.host, broker.port, profile)
        await self._exit.enter_async_context(self.link)

        relay = prepare_relay(
            work / "relay",
            broker_url=broker.client_url("relay-1"),
            mqtt_version=broker.mqtt_version,
            smtp_host=sink.host,
            smtp_port=sink.port,
            fast=options.fast,
        )
        tuning = tuning_for(options)
        union = await asyncio.to_thread(prepare_union, work / "union")
        self.vessel = vessel = await asyncio.to_thread(
            prepare_vessel,
            work / f"vessel-{VESSEL_ID}",
            vessel_id=VESSEL_ID,
            broker_url=f"mqtt://{self.link.host}:{self.link.port}",
            mqtt_version=broker.mqtt_version,
            shore_public_key=relay.shore_public_key,
            union=union,
            crew=DEMO_CREW,
            http_port=free_port(),
            smtp_port=free_port(),
            tuning=tuning,
            username=f"vessel-{VESSEL_ID}",
        )
        await register_vessels(relay, [vessel])

        relay_config = load_relay_config(relay.config_path)
        subscribed = asyncio.Event()
        relay_task = asyncio.create_task(
            run_relay(relay_config, self.stopping, subscribed.set), name="relay"
        )
        self._exit.push_async_callback(self._finish, relay_task, "relay")
        await self._until(subscribed, relay_task, "relay")

        ship_config = await asyncio.to_thread(load_config, vessel.config_path)
        ready = asyncio.Event()
        agent_task = asyncio.create_task(
            run_agent(
                ship_config,
                stopping=self.stopping,
                ready=ready,
                link_options=tuning.link_options(ship_config),
            ),
            name="agent",
        )
        self._exit.push_async_callback(self._finish, agent_task, "agent")
        await self._until(ready, agent_task, "agent")

        self.info = {
            "crew_web_url": f"http://127.0.0.1:{vessel.http_port}/",
            "http_api": f"http://127.0.0.1:{vessel.http_port}/api/",
            "smtp_intake": {
                "host": "127.0.0.1",
                "port": vessel.smtp_port,
                "security": "STARTTLS (self-signed demo certificate), then AUTH PLAIN/LOGIN",
                "logins": [
                    {
                        "crew": member.crew,
                        "name": member.name,
                        "language": member.language,
                        "username": str(member.crew),
                        "password": member.pin,
                        "family_contact": member.family_address,
                    }
                    for member in vessel.crew
                ],
            },
            "mqtt_broker": {
                "kind": broker.name,
                "address": f"{broker.host}:{broker.port}",
                "mqtt_version": broker.mqtt_version,
                "link_emulator": f"{self.link.host}:{self.link.port}",
                "link_profile": options.link,
            },
            "maildir": str(sink.maildir),
            "family_smtp_sink": f"{sink.host}:{sink.port}",
            "fake_sms": {"url": sms.base_url, "message_log": str(sms_log)},
            "agent_data_dir": str(vessel.data_dir),
            "relay_data_dir": str(relay.data_dir),
            "union_dir": str(work / "union"),
            "union_passphrase_file": str(union_passphrase_path(work / "union")),
            "restarted": self.reused,
        }

    async def _until(self, event: asyncio.Event, task: asyncio.Task[None], what: str) -> None:
        waiter = asyncio.create_task(event.wait())
        try:
            async with asyncio.timeout(30):
                await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError(f"the {what} stopped before it was ready")
        if not event.is_set():
            raise RuntimeError(f"the {what} was not ready within 30 s")

    async def _finish(self, task: asyncio.Task[None], what: str) -> None:
        self.stopping.set()
        try:
            async with asyncio.timeout(10):
                await asyncio.shield(task)
        except TimeoutError:
            # A satellite session in progress does not watch ``stopping``: cut it short.
            logger.info("the %s did not stop within 10 s: cancelling", what)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def write_info(self, path: Path) -> None:
        """Write :attr:`info` as JSON (atomically: other programs poll for it)."""
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(self.info, indent=2, ensure_ascii=False) + "\n")
        temporary.replace(path)


@contextlib.asynccontextmanager
async def demo_stack(options: DemoOptions) -> AsyncIterator[DemoStack]:
    """``async with demo_stack(options) as stack``: the same as ``async with DemoStack``."""
    async with DemoStack(options) as stack:
        yield stack
