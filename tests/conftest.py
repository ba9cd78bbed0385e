"""Fixtures shared by the whole suite: real Mosquitto brokers and NATS clusters on loopback.

A test that uses `mosquitto`, `fresh_mosquitto`, `make_mosquitto` or `nats_cluster` is
marked `broker` automatically, so `pytest -m "not broker"` leaves it out. When the
`mosquitto` or `nats-server` binary is missing, such a test FAILS and says how to install
it: it is never skipped silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kit.mosquitto import MosquittoBroker, MosquittoMissing, find_mosquitto
from tests.kit.nats import NatsCluster, NatsMissing, find_nats_server

BROKER_FIXTURES = frozenset({"mosquitto", "fresh_mosquitto", "make_mosquitto", "nats_cluster"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if BROKER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.broker)


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A command run in a test may set the root logger up (handlers, level): put it back,
    so one test's setup never writes into another test's captured output."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


def _require_mosquitto() -> None:
    try:
        find_mosquitto()
    except MosquittoMissing as exc:
        missing = str(exc)
    else:
        return
    pytest.fail(missing, pytrace=False)


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """One broker for the whole run (persistence off). Don't kill it: use fresh_mosquitto."""
    _require_mosquitto()
    with MosquittoBroker(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker


@pytest.fixture
def fresh_mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A broker of this test's own (persistence off), free to stop, kill and restart."""
    _require_mosquitto()
    with MosquittoBroker(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture
def make_mosquitto(tmp_path: Path) -> Iterator[Callable[..., MosquittoBroker]]:
    """Start brokers with options (`make_mosquitto(persistence=True)`); all stop at the end."""
    _require_mosquitto()
    brokers: list[MosquittoBroker] = []

    def make(**options: Any) -> MosquittoBroker:
        broker = MosquittoBroker(tmp_path / f"mosquitto-{len(brokers) + 1}", **options)
        brokers.append(broker)
        broker.start()
        return broker

    try:
        yield make
    finally:
        for broker in brokers:
            broker.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three NATS nodes (JetStream, MQTT gateway) of this test's own, free to kill; each
    stopped by its PID at the end."""
    try:
        find_nats_server()
    except NatsMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    with NatsCluster(tmp_path / "nats") as cluster:
        yield cluster
