"""``vessel-relay demo``: the whole system on one machine, with no services set up.

It starts a broker (a Mosquitto found installed, else amqtt in-process), a shore relay on
SQLite, an SMTP sink that writes family mail to a Maildir, the fake SMS provider, a
shipboard agent with a small crew in several languages and a union, and the link emulator
between the ship and the broker (:mod:`vessel_relay.demo.stack`). ``--script`` plays a
day on board (:mod:`vessel_relay.demo.script`) and exits 0 only if it all came out right.
``--wire`` runs the older protocol-only round trip (:mod:`vessel_relay.demo.wire`).

Run again with the same ``--workdir``, it starts on what the last run left (keys, relay
store, outbox, crew with new PINs); a directory it did not make is refused (exit 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
from pathlib import Path
from typing import Annotated, Literal

import typer

from vessel_relay.link_emulator import PROFILES

__all__ = ["BrokerKind", "LinkName", "demo"]

#: ``--link``: the link emulator's named profiles (:data:`~vessel_relay.link_emulator.PROFILES`).
LinkName = Literal[
    "unlimited", "fast", "narrowband-2400", "certus-100", "satellite", "flaky-satellite"
]
#: ``--broker``: Mosquitto if installed else amqtt, or one of them by name.
BrokerKind = Literal["auto", "mosquitto", "amqtt"]


def _print_where(info: dict[str, object]) -> None:
    intake = info["smtp_intake"]
    broker = info["mqtt_broker"]
    assert isinstance(intake, dict)
    assert isinstance(broker, dict)
    typer.echo(f"crew web page:    {info['crew_web_url']}  (HTTP API {info['http_api']})")
    typer.echo(f"SMTP intake:      {intake['host']}:{intake['port']}  {intake['security']}")
    for login in intake["logins"]:
        typer.echo(
            f"  crew {login['crew']}: user {login['username']}  password {login['password']}"
            f"  ({login['name']}, {login['language']}; family: {login['family_contact']})"
        )
    typer.echo(
        f"MQTT broker:      {broker['kind']} at {broker['address']}"
        f" (MQTT {broker['mqtt_version']}),"
        f" vessel reaches it through the link emulator {broker['link_emulator']}"
        f" ({broker['link_profile']})"
    )
    typer.echo(f"family mail goes: {info['maildir']}  (Maildir)")
    fake_sms = info["fake_sms"]
    assert isinstance(fake_sms, dict)
    typer.echo(f"fake SMS log:     {fake_sms['message_log']}")
    typer.echo(f"agent data:       {info['agent_data_dir']}")
    typer.echo(f"relay data:       {info['relay_data_dir']}")
    typer.echo(f"union keys/card:  {info['union_dir']}")
    if "union_passphrase_file" in info:
        typer.echo(
            f"union store:      encrypted; VESSEL_RELAY_UNION_PASSPHRASE_FILE="
            f"{info['union_passphrase_file']} vessel-relay union fetch --dir {info['union_dir']}"
        )
    if info.get("restarted"):
        typer.echo("restarted on the last run's keys, stores and crew (the PINs above are new)")


async def _run(
    workdir: Path, link: str, broker: str, script: bool, info_path: Path | None, timeout_s: float
) -> bool:
    from vessel_relay.demo.script import run_day
    from vessel_relay.demo.stack import DemoOptions, DemoStack

    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    main = asyncio.current_task()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupted.set)
    try:
        async with DemoStack(DemoOptions(workdir, link=link, broker=broker)) as stack:
            if info_path is not None:
                stack.write_info(info_path)
            _print_where(stack.info)
            if not script:
                typer.echo("running; Ctrl-C stops everything cleanly")
                await interrupted.wait()
                typer.echo("stopping ...")
                return True
            assert stack.vessel is not None
            assert stack.link is not None
            typer.echo("script: a day on board (messages, a grievance report, an SOS) ...")
            day = asyncio.create_task(
                run_day(
                    stack.info["crew_web_url"].rstrip("/"), stack.vessel.crew, timeout_s=timeout_s
                )
            )
            stop = asyncio.create_task(interrupted.wait())
            await asyncio.wait({day, stop}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not day.done():
                day.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await day
                typer.echo("interrupted; stopping ...")
                return False
            summary, _ = day.result()
            ids = stack.sink.message_ids()
            summary.family_mail = sum(ids.values())
            summary.family_mail_duplicates = sum(n - 1 for n in ids.values() if n > 1)
            statistics = stack.link.statistics()
            summary.link_bytes = statistics.ip_bytes_estimate
            summary.sessions = len(statistics.sessions)
            for line in summary.lines():
                typer.echo(line)
            return summary.right
    finally:
        del main
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def demo(
    script: Annotated[
        bool, typer.Option("--script", help="Play a scripted day, print a summary, exit.")
    ] = False,
    link: Annotated[
        LinkName,
        typer.Option(help=f"Link emulator profile: {', '.join(PROFILES)} ('fast' for tests)."),
    ] = "satellite",
    broker: Annotated[
        BrokerKind,
        typer.Option(help="auto (Mosquitto if installed, else amqtt), mosquitto or amqtt."),
    ] = "auto",
    info: Annotated[
        Path | None,
        typer.Option("--info", help="Write every endpoint and login as JSON once all is up."),
    ] = None,
    workdir: Annotated[
        Path | None,
        typer.Option(
            "--workdir",
            "--data",
            help="Directory for all demo data (default: a new temp dir); run again on it to "
            "restart where it stopped.",
        ),
    ] = None,
    timeout_s: Annotated[
        float, typer.Option(help="With --script: longest wait for every message.")
    ] = 150.0,
    wire: Annotated[
        bool, typer.Option("--wire", help="Only the protocol round trip (no services).")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO.")] = False,
) -> None:
    """Run the whole system on this machine: broker, relay, mail sink, agent, crew.

    Example: vessel-relay demo --script --link fast
    """
    if wire:
        from vessel_relay.demo.wire import demo as wire_demo

        wire_demo()
        return
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    from common.exits import fail
    from vessel_relay.demo.setup import DemoDirectoryRefused

    directory = workdir or Path(tempfile.mkdtemp(prefix="vessel-relay-demo-"))
    typer.echo(f"demo data in {directory}")
    try:
        ok = asyncio.run(_run(directory, link, broker, script, info, timeout_s))
    except DemoDirectoryRefused as exc:
        raise fail(exc) from exc
    if not ok:
        raise typer.Exit(1)
