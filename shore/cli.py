"""Commands of the shore side, mounted under ``vessel-relay shore``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from common.exits import UsageError, fail
from common.keyfiles import (
    KeyFileError,
    keygen_command,
    new_signing_key,
    read_secret,
    write_secret,
)
from common.logs import LOG_LEVELS, LogFormat, LogLevel, LogSetupError, configure_logging
from protocol.signing import SigningKey
from protocol.topics import downlink_topic, uplink_topic
from shore.config import ConfigError, RelayConfig, default_document, load_config

if TYPE_CHECKING:
    from shore.store import RelayStore as SqlStore

# The store, the relay and the metrics are imported by the commands that use them, so
# that 'vessel-relay shore --help' does not load the relay's libraries.

T = TypeVar("T")

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="The relay's TOML file (made by 'shore init').")
]

vessel_app = typer.Typer(help="Register vessels and manage their keys.", no_args_is_help=True)


_fail = fail  # one exit-code rule for every command (common.exits)


def _config(path: Path) -> RelayConfig:
    try:
        return load_config(path)  # never allows the demo's published keys
    except ConfigError as exc:
        raise _fail(exc) from exc


def _with_store(config_path: Path, action: Callable[[SqlStore], Awaitable[T]]) -> T:
    from shore.relay import open_store
    from shore.store import StoreError

    config = _config(config_path)

    async def main() -> T:
        store = await open_store(config)
        try:
            return await action(store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except StoreError as exc:
        raise _fail(exc) from exc


def vessel_add(
    name: Annotated[str, typer.Argument(help="The vessel's name.")],
    flag: Annotated[str, typer.Option(help="Flag state, e.g. TH.")],
    registration: Annotated[str, typer.Option(help="Registration number.")],
    owner: Annotated[str, typer.Option(help="The owner (company or person).")],
    public_key: Annotated[str, typer.Option(help="The vessel's public key (64 hex digits).")],
    union: Annotated[
        list[int] | None, typer.Option(help="Union id of the crew (repeat for several).")
    ] = None,
    vessel_id: Annotated[
        int | None, typer.Option("--id", help="Vessel id to use (default: the next free).")
    ] = None,
    config: ConfigOption = Path("relay.toml"),
) -> None:
    """Register a vessel and print its vessel id and MQTT topics.

    Example: vessel-relay shore vessel add "Sea Star 7" --flag TH --registration TH-0042
    --owner "Andaman Fishing Co" --public-key 3b6a...e1 --union 1
    """
    from shore import registry
    from shore.store import StoreError, VesselInfo

    try:
        info = VesselInfo(name, flag, registration, owner, tuple(union or ()))
    except StoreError as exc:
        raise _fail(exc) from exc
    new_id = _with_store(
        config, lambda store: registry.add_vessel(store, info, public_key, time.time(), vessel_id)
    )
    typer.echo(f"vessel id: {new_id}")
    typer.echo(f"topics:    {uplink_topic(new_id)} (up), {downlink_topic(new_id)} (down)")


def vessel_list(config: ConfigOption = Path("relay.toml")) -> None:
    """List registered vessels.

    Example: vessel-relay shore vessel list -c relay.toml
    """
    records = _with_store(config, lambda store: store.list_vessels())
    if not records:
        typer.echo("no vessels registered; add one with 'shore vessel add'")
    now = time.time()
    for record in records:
        info = record.info
        keys = len(record.keys_valid_at(now))
        typer.echo(
            f"{record.vessel_id:>5}  {info.name}  {info.flag} {info.registration}  "
            f"{info.owner}  ({keys} valid key{'s' if keys != 1 else ''})"
        )


def vessel_show(
    vessel_id: Annotated[int, typer.Argument(help="The vessel id.")],
    config: ConfigOption = Path("relay.toml"),
) -> None:
    """Show a vessel: registration, unions, topics, keys, when last heard from.

    Example: vessel-relay shore vessel show 7
    """
    from shore import registry

    record = _with_store(config, lambda store: registry.require_vessel(store, vessel_id))
    for line in registry.describe(record, time.time()):
        typer.echo(line)


def vessel_rotate_key(
    vessel_id: Annotated[int, typer.Argument(help="The vessel id.")],
    public_key: Annotated[str, typer.Option(help="The new public key (64 hex digits).")],
    revoke_old_after_hours: Annotated[
        float | None,
        typer.Option(help="Revoke the old keys this many hours from now (default: keep them)."),
    ] = None,
    config: ConfigOption = Path("relay.toml"),
) -> None:
    """Add a vessel's new key (valid at once); optionally schedule the old ones' revocation.

    Example: vessel-relay shore vessel rotate-key 7 --public-key 9f2c...0a
    --revoke-old-after-hours 72
    """
    from shore import registry

    after_s = None if revoke_old_after_hours is None else revoke_old_after_hours * 3600
    old = _with_store(
        config,
        lambda store: registry.rotate_key(store, vessel_id, public_key, time.time(), after_s),
    )
    typer.echo(f"vessel {vessel_id}: new key added")
    for key in old:
        typer.echo(f"old key {key.hex()} revoked in {revoke_old_after_hours} h")


def vessel_revoke_key(
    vessel_id: Annotated[int, typer.Argument(help="The vessel id.")],
    public_key: Annotated[str, typer.Option(help="The key to revoke (64 hex digits).")],
    config: ConfigOption = Path("relay.toml"),
) -> None:
    """Revoke a vessel's key now: later batches signed with it are quarantined.

    Example: vessel-relay shore vessel revoke-key 7 --public-key 3b6a...e1
    """
    from shore import registry

    _with_store(
        config, lambda store: registry.revoke_key(store, vessel_id, public_key, time.time())
    )
    typer.echo(f"vessel {vessel_id}: key revoked")


def init(
    data: Annotated[Path, typer.Option("--data", help="Directory for the store and keys.")],
) -> None:
    """Make a relay's data directory: shore key, reply key, relay.toml and the store.

    Example: vessel-relay shore init --data /var/lib/vessel-relay
    """
    data = data.resolve()
    data.mkdir(parents=True, exist_ok=True)
    config_path = data / "relay.toml"
    if not config_path.exists():
        config_path.write_text(default_document(data), encoding="utf-8")
    config = _config(config_path)
    key_path = config.path(config.relay.shore_key)
    try:
        if key_path.exists():
            kept = SigningKey.from_seed(read_secret(key_path))
            typer.echo(f"shore key:  {key_path} (kept)")
            typer.echo(f"public key: {kept.verify_key.hex()}  (give it to every vessel)")
        else:
            key = new_signing_key(key_path)
            typer.echo(f"shore key:  {key_path}")
            typer.echo(f"public key: {key.verify_key.hex()}  (give it to every vessel)")
        reply_key = config.path(config.delivery.reply_key)
        if not reply_key.exists():
            write_secret(reply_key, os.urandom(32))
    except KeyFileError as exc:
        raise _fail(exc) from exc
    _with_store(config_path, _noop)
    typer.echo(f"config:     {config_path}")
    typer.echo(f"store:      {config.store.backend} ({config.path(config.store.path)})")


async def _noop(store: SqlStore) -> None:
    return None


def run(
    config: ConfigOption = Path("relay.toml"),
    grace_s: Annotated[float, typer.Option(help="Seconds to finish work on SIGTERM.")] = 10.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each batch.")] = False,
    log_format: Annotated[
        LogFormat, typer.Option(help="Log lines as text or json (JSON lines).")
    ] = "text",
    log_level: Annotated[
        LogLevel | None,
        typer.Option(
            help=f"One of {', '.join(LOG_LEVELS)} (default warning).", case_sensitive=False
        ),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus /metrics on this port.")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address for /metrics.")] = "127.0.0.1",
) -> None:
    """Run the shore relay (ingest, downlink, delivery, replies) until SIGTERM or SIGINT.

    Example: vessel-relay shore run -c /var/lib/vessel-relay/relay.toml
    """
    from shore.store import StoreError

    relay_config = _config(config)
    try:
        configure_logging(log_format, log_level or ("info" if verbose else "warning"))
    except LogSetupError as exc:
        raise _fail(UsageError(str(exc))) from exc
    typer.echo(
        f"relay {relay_config.client_id}: broker {relay_config.mqtt_broker}, "
        f"store {relay_config.store.backend}, data {relay_config.data_dir}"
    )
    try:
        with asyncio.Runner(loop_factory=_loop_factory(relay_config)) as runner:
            runner.run(_run(relay_config, grace_s, metrics_host, metrics_port))
    except (StoreError, KeyFileError) as exc:
        raise _fail(exc) from exc
    except OSError as exc:
        raise _fail(
            OSError(f"cannot serve /metrics on {metrics_host}:{metrics_port}: {exc.strerror}")
        ) from exc


def retire_worker(
    worker: Annotated[
        int, typer.Option(help="The number of the worker to retire (its [relay] worker).")
    ],
    config: ConfigOption = Path("relay.toml"),
) -> None:
    """End a stopped relay worker's broker session for good, when the relay runs with
    fewer workers from now on.

    Until it expires ([mqtt] session_expiry_s, a week by default) a stopped worker's
    session stays in the workers' shared subscription, and the broker queues it its share
    of the vessels' batches, which then wait until the vessels send them again. This ends
    the session and what was queued for it (the vessels resend those batches: nothing is
    lost). Stop the worker first. A worker that will start again needs nothing: it takes
    its queued batches.

    Example: vessel-relay shore retire-worker -c /etc/vessel-relay/relay.toml --worker 2
    """
    import aiomqtt

    from shore.relay import retire_worker as end_session

    relay_config = _config(config)
    try:
        asyncio.run(end_session(relay_config, worker))
    except ValueError as exc:
        raise _fail(UsageError(str(exc))) from exc
    except aiomqtt.MqttError as exc:
        raise _fail(
            UsageError(f"the broker {relay_config.mqtt_broker} refused or did not answer: {exc}")
        ) from exc
    typer.echo(f"relay-{worker}: its session at {relay_config.mqtt_broker} is ended")


def _loop_factory(config: RelayConfig) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``[relay] event_loop``: uvloop's loop, or None for the standard library's."""
    if config.relay.event_loop != "uvloop":
        return None
    import uvloop

    return uvloop.new_event_loop


async def _run(
    config: RelayConfig,
    grace_s: float,
    metrics_host: str = "127.0.0.1",
    metrics_port: int | None = None,
) -> None:
    from shore.metrics import RelayMetrics, serve_metrics
    from shore.relay import run_relay

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)

    def subscribed() -> None:
        print("subscribed", flush=True)

    metrics = (
        RelayMetrics(fleet_gauges=config.exports_fleet_gauges) if metrics_port is not None else None
    )
    serving = None
    if metrics is not None and metrics_port is not None:
        serving = asyncio.create_task(serve_metrics(metrics, metrics_host, metrics_port, stopping))
        await asyncio.sleep(0)  # the port is bound (or refused) in the task's first step
        if serving.done():
            serving.result()  # raises OSError: the port is taken
        print(f"metrics: http://{metrics_host}:{metrics_port}/metrics", flush=True)
    relay = asyncio.create_task(run_relay(config, stopping, subscribed, metrics))
    stop = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({relay, stop}, return_when=asyncio.FIRST_COMPLETED)
        if not relay.done():
            try:
                async with asyncio.timeout(grace_s):
                    await asyncio.shield(relay)
            except TimeoutError:
                relay.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relay
        else:
            relay.result()
    finally:
        stop.cancel()
        if serving is not None:
            stopping.set()
            await serving
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    logging.getLogger("shore.relay").info("relay stopped")


operator_app = typer.Typer(help="Dashboard operator accounts.", no_args_is_help=True)


def operator_add(
    name: Annotated[str, typer.Argument(help="The operator's login name.")],
    config: ConfigOption = Path("relay.toml"),
) -> None:
    """Add (or reset) a dashboard operator; the password is asked for (or read from stdin).

    Example: vessel-relay shore operator add alice -c /var/lib/vessel-relay/relay.toml
    """
    from shore.dashboard.auth import OperatorFileError, add_operator
    from shore.dashboard.serve import operators_path

    relay_config = _config(config)
    if sys.stdin.isatty():
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        add_operator(operators_path(relay_config), name, password)
    except (OperatorFileError, OSError) as exc:
        raise _fail(exc) from exc
    typer.echo(f"operator {name} saved in {operators_path(relay_config)}")


def dashboard(
    config: ConfigOption = Path("relay.toml"),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8090,
    silent_after_h: Annotated[
        float, typer.Option(help="Hours without a batch before a vessel is listed as silent.")
    ] = 36.0,
    https_only: Annotated[
        bool, typer.Option(help="Send the session cookie only over HTTPS (behind a proxy).")
    ] = False,
    log_format: Annotated[LogFormat, typer.Option(help="Log lines as text or json.")] = "text",
    log_level: Annotated[
        LogLevel, typer.Option(help="debug, info, warning or error.", case_sensitive=False)
    ] = "info",
) -> None:
    """Serve the operator dashboard (fleet, vessels, delivery failures, silent vessels).

    Example: vessel-relay shore dashboard -c /var/lib/vessel-relay/relay.toml --port 8090
    """
    from shore.dashboard.auth import OperatorFileError
    from shore.dashboard.serve import serve_dashboard
    from shore.store import StoreError

    relay_config = _config(config)
    try:
        configure_logging(log_format, log_level)
    except LogSetupError as exc:
        raise _fail(UsageError(str(exc))) from exc
    typer.echo(f"dashboard: http://{host}:{port}/ (store {relay_config.store.backend})")

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        await serve_dashboard(
            relay_config,
            host,
            port,
            stopping,
            silent_after_s=silent_after_h * 3600,
            https_only=https_only,
        )

    try:
        asyncio.run(main())
    except (StoreError, OperatorFileError) as exc:
        raise _fail(exc) from exc
    except OSError as exc:  # the port is taken, or the address is not this machine's
        raise _fail(exc) from exc


def register(app: typer.Typer) -> None:
    """Add this side's commands to its group."""
    app.command("keygen")(keygen_command("shore", "shore"))
    app.command("init")(init)
    app.command("run")(run)
    app.command("retire-worker")(retire_worker)
    from shore.reports import fleet_command, log_app, report_command  # compliance (issue 9)

    app.command("report")(report_command)
    app.command("fleet-report")(fleet_command)
    app.add_typer(log_app, name="log")
    vessel_app.command("add")(vessel_add)
    vessel_app.command("list")(vessel_list)
    vessel_app.command("show")(vessel_show)
    vessel_app.command("rotate-key")(vessel_rotate_key)
    vessel_app.command("revoke-key")(vessel_revoke_key)
    app.add_typer(vessel_app, name="vessel")
    app.command("dashboard")(dashboard)
    operator_app.command("add")(operator_add)
    app.add_typer(operator_app, name="operator")
