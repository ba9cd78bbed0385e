"""``vessel-relay shore retire-worker``: a relay that goes from two workers to one ends the
stopped worker's broker session, so Mosquitto stops queueing it every other vessel batch.

Real Mosquitto; the workers are the relay's own MQTT clients (``shore.relay.make_client``,
MQTT 5, persistent sessions on the shared subscription)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import pytest
from typer.testing import CliRunner

from shore.config import RelayConfig, parse_config
from shore.relay import SHARED_UPLINKS, make_client
from tests.kit.mosquitto import MosquittoBroker
from vessel_relay.cli import app

runner = CliRunner()


def _config(tmp_path: Path, broker: MosquittoBroker, worker: int) -> RelayConfig:
    return parse_config(
        {
            "relay": {"data_dir": str(tmp_path), "worker": worker},
            "mqtt": {"url": f"mqtt://127.0.0.1:{broker.port}", "protocol": "5"},
        },
        str(tmp_path / f"relay-{worker}.toml"),
    )


async def _publish(broker: MosquittoBroker, count: int, start: int) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="vessel-7") as vessel:
        for n in range(start, start + count):
            await vessel.publish("vr/7/u", str(n).encode(), qos=1)


async def _received(client: aiomqtt.Client, count: int) -> set[int]:
    """What the worker gets in the next second, at most ``count`` payloads."""
    got: set[int] = set()
    try:
        async with asyncio.timeout(1.0):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                got.add(int(message.payload))
                if len(got) == count:
                    break
    except TimeoutError:
        pass
    return got


async def test_a_retired_worker_no_longer_takes_its_share_of_the_batches(
    tmp_path: Path,
) -> None:
    """Worker 2 stopped: about half of the vessel's batches are queued for its session and
    never reach worker 1. After ``shore retire-worker --worker 2``, worker 1 gets them all."""
    with MosquittoBroker(tmp_path / "broker") as broker:
        one, two = (_config(tmp_path, broker, n) for n in (1, 2))
        async with make_client(two) as worker_two:
            await worker_two.subscribe(SHARED_UPLINKS, qos=1)
        async with make_client(one) as worker_one:
            await worker_one.subscribe(SHARED_UPLINKS, qos=1)
            await _publish(broker, 10, 0)
            before = await _received(worker_one, 10)
            assert 0 < len(before) < 10  # the stopped worker's session took its share

            config_file = tmp_path / "relay.toml"
            config_file.write_text(
                f'[relay]\ndata_dir = "{tmp_path}"\nworker = 1\n'
                f'[mqtt]\nurl = "mqtt://127.0.0.1:{broker.port}"\nprotocol = "5"\n',
                encoding="utf-8",
            )
            result = await asyncio.to_thread(  # the command runs its own event loop
                runner.invoke,
                app,
                ["shore", "retire-worker", "-c", str(config_file), "--worker", "2"],
            )
            assert result.exit_code == 0, result.output
            assert "relay-2" in result.output

            await _publish(broker, 10, 100)
            assert await _received(worker_one, 10) == set(range(100, 110))


def test_retiring_a_worker_of_a_nats_cluster_says_there_is_nothing_to_retire(
    tmp_path: Path,
) -> None:
    config_file = tmp_path / "relay.toml"
    config_file.write_text(
        f'[relay]\ndata_dir = "{tmp_path}"\n'
        '[broker]\nkind = "nats"\nnats_urls = ["nats://127.0.0.1:4222"]\n'
        'mqtt_urls = ["mqtt://127.0.0.1:1883"]\n'
        '[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n',
        encoding="utf-8",
    )
    result = runner.invoke(app, ["shore", "retire-worker", "-c", str(config_file), "--worker", "2"])
    assert result.exit_code != 0
    assert "JetStream consumer" in result.output


@pytest.mark.parametrize("worker", ["0", "-1"])
def test_a_worker_number_below_one_is_refused(tmp_path: Path, worker: str) -> None:
    config_file = tmp_path / "relay.toml"
    config_file.write_text(
        f'[relay]\ndata_dir = "{tmp_path}"\n[mqtt]\nurl = "mqtt://127.0.0.1:1"\n',
        encoding="utf-8",
    )
    result = runner.invoke(
        app, ["shore", "retire-worker", "-c", str(config_file), "--worker", worker]
    )
    assert result.exit_code != 0
    assert "1 or more" in result.output
