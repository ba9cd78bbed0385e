"""Agent: the one supervisor of the shipboard process (intake SMTP, intake HTTP, the link).

``run_agent`` opens the vessel database (:class:`shipboard.database.VesselDatabase`), puts
its repositories together (outbox, crew register, sessions log, the crew's view) with the
process's one grievance lane (:class:`shipboard.lane.VesselLane`, started by intake) and
starts, in one ``asyncio.TaskGroup``, the SMTP intake, the HTTP API and — when
``shipboard.link`` provides it — the link task::

    await shipboard.link.run_link(
        config=config,            # ShipConfig
        outbox=outbox,            # shipboard.outbox.Outbox (sync; call via asyncio.to_thread)
        sessions=sessions,        # shipboard.sessions_log.SessionsLog (the same database)
        signing_key=signing_key,  # protocol.signing.SigningKey of the vessel
        codebook=codebook,        # protocol.codebook.Codebook
        stopping=stopping,        # asyncio.Event: set on SIGTERM/SIGINT, return soon after
        doorbell=doorbell,        # asyncio.Event: set whenever intake committed something
        lane=lane,                # shipboard.lane.VesselLane: released at each period's end
    )

``supervise`` adds the signals: SIGTERM or SIGINT sets ``stopping``; every service stops
accepting, finishes what it is doing and returns; after ``grace_s`` the rest is cancelled.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import signal
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.codebooks import default_codebook
from common.keyfiles import read_secret
from common.signins import SignInGuard
from protocol.codebook import Codebook
from protocol.signing import SigningKey
from shipboard.config import ShipConfig

if TYPE_CHECKING:
    from shipboard.links import PortCarrier, SbdCarrier
from shipboard.crew import CrewRegister
from shipboard.crew_view import VesselCrewView
from shipboard.database import VesselDatabase
from shipboard.errors import OutboxUnavailable
from shipboard.http_api import ApiTokens, create_app, serve_http
from shipboard.intake import Intake
from shipboard.metrics import ShipMetrics, serve_metrics
from shipboard.outbox import Outbox
from shipboard.sessions_log import SessionsLog
from shipboard.smtp_intake import SmtpIntakeHandler, serve_smtp
from shipboard.tls import ensure_certificate, server_context

logger = logging.getLogger(__name__)

LinkRunner = Callable[..., Coroutine[Any, Any, None]]


def _reads_in_port(statistics: Any) -> Callable[[], bool]:
    """What the crew page asks to know whether the vessel is in port reach now."""
    return lambda: bool(statistics.in_port)


def find_link_runner() -> LinkRunner | None:
    """``shipboard.link.run_link`` if that module is there (helper 4b builds it)."""
    try:
        module = importlib.import_module("shipboard.link")
    except ImportError:
        return None
    runner = getattr(module, "run_link", None)
    if runner is None or not inspect.iscoroutinefunction(runner):
        return None
    result: LinkRunner = runner
    return result


def sbd_fallback(config: ShipConfig) -> SbdCarrier:
    """The SBD carrier of ``[sbd]`` (its modem opened at each SBD session)."""
    from shipboard.links import SbdCarrier as Carrier
    from shipboard.sbd_modem import SbdModem

    sbd = config.sbd
    if sbd is None:
        raise ValueError("the vessel's config has no [sbd] section")
    return Carrier(lambda: SbdModem(sbd.device))


def port_carrier(config: ShipConfig) -> PortCarrier:
    """The port link of ``[port]``: the broker over 4G or Wi-Fi, in reach while the
    interface is up."""
    from shipboard.links import PORT_4G, interface_up
    from shipboard.links import PortCarrier as Carrier
    from shipboard.mqtt_link import client_tls_context
    from shipboard.transport import LinkSettings

    port = config.port
    if port is None:
        raise ValueError("the vessel's config has no [port] section")
    settings = LinkSettings.from_config(config, host=port.host, port=port.port, profile=PORT_4G)
    tls = client_tls_context(config.shore.ca_file, config.shore.tls_minimum) if port.tls else None
    interface = port.interface
    return Carrier(settings, lambda: interface_up(interface), tls_context=tls)


def quiet_libraries() -> None:
    """aiosmtpd logs recipient addresses at INFO: keep its logger to warnings."""
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


async def run_agent(
    config: ShipConfig,
    *,
    stopping: asyncio.Event,
    ready: asyncio.Event | None = None,
    codebook: Codebook | None = None,
    with_link: bool = True,
    link_options: Mapping[str, Any] | None = None,
    metrics: ShipMetrics | None = None,
) -> None:
    """Run intake (and the link, if present) until ``stopping`` is set.

    With ``metrics``, sessions are counted and the outbox gauges refreshed (serving them
    is :func:`supervise`'s business).

    ``link_options`` are passed on to ``run_link`` as keywords (the demo and the
    end-to-end tests give ``link_settings`` and ``scheduler_settings`` this way).
    """
    quiet_libraries()
    codebook = codebook or default_codebook()
    signing_key = SigningKey.from_seed(read_secret(config.vessel.signing_key_path))
    cert, key = config.tls_paths()
    await asyncio.to_thread(ensure_certificate, cert, key)
    tls = server_context(cert, key)
    database = await asyncio.to_thread(VesselDatabase.open, config.database_path)
    outbox = Outbox(database, config.vessel.vessel_id)
    # Quota months start at midnight on the 1st in the vessel's time zone, for every part.
    outbox.use_time_zone(config.time_zone)
    loop = asyncio.get_running_loop()
    doorbell = asyncio.Event()

    def ring(kind: str) -> None:
        del kind
        loop.call_soon_threadsafe(doorbell.set)

    intake = Intake(
        config,
        outbox,
        codebook,
        on_accept=ring,
        register=CrewRegister(database),
        view=VesselCrewView(outbox),
    )
    try:
        await asyncio.to_thread(intake.start_lane)
    except OutboxUnavailable as exc:
        logger.error("grievance lane not started (%s); it starts at its first use", exc)
    # One sign-in guard for the process: wrong PINs count per crew member across the
    # crew API, the crew page and SMTP AUTH together (shipboard.signin).
    guard = SignInGuard()
    smtp_ready, http_ready = asyncio.Event(), asyncio.Event()
    runner = find_link_runner() if with_link else None
    options = dict(link_options or {})
    in_port: Callable[[], bool] | None = None
    if runner is not None:
        from shipboard.link import LinkStatistics

        # one set of link counters, shared with the crew page (it says when in port reach)
        statistics = options.setdefault("statistics", LinkStatistics())
        if isinstance(statistics, LinkStatistics):
            in_port = _reads_in_port(statistics)
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(
                serve_smtp(
                    SmtpIntakeHandler(intake, guard=guard),
                    tls,
                    config.intake.smtp_host,
                    config.intake.smtp_port,
                    stopping,
                    smtp_ready,
                ),
                name="smtp-intake",
            )
            group.create_task(
                serve_http(
                    create_app(intake, ApiTokens(), guard=guard, in_port=in_port),
                    config.intake.http_host,
                    config.intake.http_port,
                    stopping,
                    http_ready,
                ),
                name="http-intake",
            )
            if runner is not None and metrics is not None:
                from shipboard.link import run_session

                options["session_runner"] = metrics.instrument(
                    options.get("session_runner", run_session)
                )
            if runner is not None and config.sbd is not None and "fallback" not in options:
                options["fallback"] = sbd_fallback(config)
            if runner is not None and config.port is not None and "port" not in options:
                options["port"] = port_carrier(config)
            if runner is not None:
                group.create_task(
                    runner(
                        config=config,
                        outbox=outbox,
                        sessions=SessionsLog(database),
                        signing_key=signing_key,
                        codebook=codebook,
                        stopping=stopping,
                        doorbell=doorbell,
                        lane=intake.lane,
                        **options,
                    ),
                    name="link",
                )
            else:
                logger.warning("no link task (shipboard.link.run_link not available)")
            if metrics is not None:
                group.create_task(metrics.refresh_forever(outbox, stopping), name="metrics")
            await smtp_ready.wait()
            await http_ready.wait()
            logger.info(
                "agent ready: vessel %d, data in %s", config.vessel.vessel_id, config.data_dir
            )
            if ready is not None:
                ready.set()
    finally:
        await asyncio.to_thread(database.close)
        logger.info("agent stopped")


async def supervise(
    config: ShipConfig,
    *,
    grace_s: float = 10.0,
    with_link: bool = True,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
) -> None:
    """Run the agent with SIGTERM/SIGINT handled: drain for ``grace_s``, then cancel.

    With ``metrics_port``, Prometheus ``/metrics`` is served there (``shipboard.metrics``).
    """
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    metrics = ShipMetrics() if metrics_port is not None else None
    serving = None
    if metrics is not None and metrics_port is not None:
        serving = asyncio.create_task(serve_metrics(metrics, metrics_host, metrics_port, stopping))
        await asyncio.sleep(0)  # the port is bound (or refused) in the task's first step
        if serving.done():
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            serving.result()  # raises OSError: the port is taken
    agent = asyncio.create_task(
        run_agent(config, stopping=stopping, with_link=with_link, metrics=metrics)
    )
    stopped = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({agent, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not agent.done():
            logger.info("stopping: draining for up to %.0f s", grace_s)
            try:
                async with asyncio.timeout(grace_s):
                    await asyncio.shield(agent)
            except TimeoutError:
                logger.warning("drain took longer than %.0f s: cancelling", grace_s)
                agent.cancel()
        try:
            await agent
        except asyncio.CancelledError:
            if not agent.cancelled():
                raise  # we were cancelled ourselves: pass it on
    finally:
        stopped.cancel()
        if serving is not None:
            stopping.set()
            await serving
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def data_paths(config: ShipConfig) -> dict[str, Path]:
    """Where the agent keeps its files (printed at start)."""
    cert, key = config.tls_paths()
    return {
        "outbox": config.database_path,
        "signing key": config.vessel.signing_key_path,
        "TLS certificate": cert,
        "TLS key": key,
    }
