"""Operators' view of a real exchange: metrics scraped from a running relay and agent, and
JSON log lines that carry correlation ids and never a word of what the crew wrote."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.logs import configure_logging
from protocol.languages import Language
from shipboard.agent import run_agent
from shipboard.config import load_config as load_ship_config
from shipboard.metrics import ShipMetrics
from shipboard.metrics import serve_metrics as serve_ship_metrics
from shipboard.outbox import Outbox
from tests.kit.mosquitto import MosquittoBroker
from tests.kit.ports import free_port
from tests.kit.wait import eventually
from tests.shore.test_mail import SmtpSink
from vessel_relay.demo.setup import (
    DemoCrewMember,
    Tuning,
    prepare_relay,
    prepare_union,
    prepare_vessel,
    register_vessels,
)

VESSEL = 7
FAMILY_TEXT = "SECRET-family-text ဘာလဲ 4417"
GRIEVANCE_TEXT = "SECRET-grievance the captain keeps our passports 9931"
CREW = DemoCrewMember("Ko Min Thu", "SB-4417", "MM", Language.ENG, "mother@example.org", "Mother")


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample of a /metrics endpoint, keyed by (name, sorted labels)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


class RelayProcess:
    """``vessel-relay shore run`` with JSON logs and /metrics, stopped by PID."""

    def __init__(self, config: Path, log_path: Path, metrics_port: int) -> None:
        self.log_path = log_path
        self.metrics_port = metrics_port
        self.log_file = log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from vessel_relay.cli import main; main()",
                "shore",
                "run",
                "-c",
                str(config),
                "--log-format",
                "json",
                "--log-level",
                "debug",
                "--metrics-port",
                str(metrics_port),
            ],
            stdout=subprocess.PIPE,
            stderr=self.log_file,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    async def wait_subscribed(self) -> None:
        assert self.process.stdout is not None
        stdout = self.process.stdout
        while True:
            line = await asyncio.to_thread(stdout.readline)
            if not line:
                raise AssertionError(f"relay exited: {self.log_path.read_text()}")
            if line.strip() == b"subscribed":
                return

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.log_file.close()


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as running:
        yield running


@asynccontextmanager
async def json_logs() -> AsyncIterator[io.StringIO]:
    """The agent's log lines (this process) as JSON into a buffer; pytest's handlers back after."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    buffer = io.StringIO()
    configure_logging("json", "debug", stream=buffer)
    try:
        yield buffer
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)


def parse_lines(text: str, source: str) -> list[dict[str, object]]:
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"{source} line {number} is not JSON: {line!r}") from exc
        assert isinstance(record, dict)
        assert {"time", "level", "logger", "message"} <= record.keys(), line
        lines.append(record)
    return lines


async def test_relay_and_agent_metrics_and_json_logs_over_a_real_exchange(
    fresh_mosquitto: MosquittoBroker, sink: SmtpSink, tmp_path: Path
) -> None:
    """A crew member's message to his mother and a grievance report go up in a session;
    the relay stores them, e-mails the mother, files the report in the union inbox and
    sends the receipts down. Both /metrics endpoints count it all, with no text or names
    in any label; every log line of both sides is JSON, the lines about the batch and the
    deliveries carry their correlation ids, and neither text appears anywhere."""
    broker_url = f"mqtt://127.0.0.1:{fresh_mosquitto.port}"
    relay = prepare_relay(
        tmp_path / "relay",
        broker_url=broker_url,
        mqtt_version="5",
        smtp_host="127.0.0.1",
        smtp_port=sink.port,
        fast=True,
    )
    tuning = Tuning(idle_poll_s=2.0, ack_wait_s=5.0)
    vessel = prepare_vessel(
        tmp_path / "vessel",
        vessel_id=VESSEL,
        broker_url=broker_url,
        mqtt_version="5",
        shore_public_key=relay.shore_public_key,
        union=prepare_union(tmp_path / "union"),
        crew=(CREW,),
        http_port=free_port(),
        smtp_port=free_port(),
        tuning=tuning,
    )
    await register_vessels(relay, [vessel])
    config = load_ship_config(vessel.config_path)
    login = vessel.crew[0]
    box = Outbox.open(config.database_path, VESSEL)
    try:
        now = time.time()
        message = box.accept_message(
            crew=login.crew,
            contact=login.contact,
            lang=Language.ENG,
            now=now,
            quota_bytes=1 << 20,
            body=FAMILY_TEXT,
        )
        report = box.accept_grievance(
            union_id=1, sealed=GRIEVANCE_TEXT.encode(), case_key=b"k" * 32, now=now
        )
    finally:
        box.close()

    relay_port, agent_port = free_port(), free_port()
    relay_process = RelayProcess(relay.config_path, tmp_path / "relay.log", relay_port)
    ship_metrics = ShipMetrics()
    stopping = asyncio.Event()
    try:
        await asyncio.wait_for(relay_process.wait_subscribed(), 30)
        async with json_logs() as agent_log, asyncio.TaskGroup() as group:
            group.create_task(serve_ship_metrics(ship_metrics, "127.0.0.1", agent_port, stopping))
            group.create_task(
                run_agent(
                    config,
                    stopping=stopping,
                    link_options=tuning.link_options(config),
                    metrics=ship_metrics,
                )
            )
            try:
                # polling scrapes (in a thread: ``scrape`` blocks): no event to wait on
                def deliveries_done() -> bool:
                    scraped = scrape(relay_port)
                    return total(scraped, "vessel_relay_deliveries_total", outcome="delivered") >= 2

                def receipts_applied() -> bool:
                    scraped = scrape(agent_port)
                    kind = "vessel_agent_downlink_batches_total"
                    return total(scraped, kind, outcome="applied") >= 2

                await eventually(
                    lambda: asyncio.to_thread(deliveries_done), 90, 0.3, what="both deliveries"
                )
                await eventually(
                    lambda: asyncio.to_thread(receipts_applied),
                    90,
                    0.3,
                    what="the receipts came down",
                )
                relay_samples, agent_samples = scrape(relay_port), scrape(agent_port)
            finally:
                stopping.set()
    finally:
        relay_process.stop()

    # relay metrics
    assert total(relay_samples, "vessel_relay_batches_total", outcome="stored") >= 1
    # Daily grievance slots (cover) travel beside the two messages, as many as slot periods
    # ended during the run: the counters must equal what the relay's own store holds.
    with sqlite3.connect(f"file:{relay.data_dir / 'relay.db'}?mode=ro", uri=True) as db:
        stored = db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        stored_seqs = {row[0] for row in db.execute("SELECT message_seq FROM messages")}
        delivered = db.execute(
            "SELECT COUNT(*) FROM deliveries WHERE outcome = 'delivered'"
        ).fetchone()[0]
    # (the counters were read before the relay stopped; the store may have taken more since)
    assert 2 <= total(relay_samples, "vessel_relay_messages_total", outcome="stored") <= stored
    delivered_metric = total(relay_samples, "vessel_relay_deliveries_total", outcome="delivered")
    assert 2 <= delivered_metric <= delivered
    assert total(relay_samples, "vessel_relay_deliveries_total", destination="email") == 1
    assert total(relay_samples, "vessel_relay_deliveries_total", destination="union") >= 1
    assert total(relay_samples, "vessel_relay_delivery_repeats_total") == 0
    assert total(relay_samples, "vessel_relay_link_bytes_total", direction="uplink") > 0
    assert total(relay_samples, "vessel_relay_link_bytes_total", direction="downlink") > 0
    assert total(relay_samples, "vessel_relay_vessel_link_bytes_total", vessel=str(VESSEL)) > 0
    assert total(relay_samples, "vessel_relay_ingest_seconds_count") >= 1
    assert total(relay_samples, "vessel_relay_delivery_seconds_count") == delivered_metric
    assert total(relay_samples, "vessel_relay_broker_connected") == 1
    assert total(relay_samples, "vessel_relay_vessels") == 1
    heard = total(relay_samples, "vessel_relay_vessel_last_heard_timestamp_seconds", vessel="7")
    assert time.time() - 120 < heard <= time.time()
    # agent metrics
    assert total(agent_samples, "vessel_agent_sessions_total", outcome="ok") >= 1
    assert total(agent_samples, "vessel_agent_batches_total", event="published") >= 1
    assert total(agent_samples, "vessel_agent_batches_total", event="acknowledged") >= 1
    assert total(agent_samples, "vessel_agent_link_bytes_total", direction="uplink") > 0
    assert total(agent_samples, "vessel_agent_session_seconds_count") >= 1
    # no content, names or addresses in any label
    forbidden = (FAMILY_TEXT, GRIEVANCE_TEXT, CREW.name, CREW.family_address, "SECRET")
    for samples in (relay_samples, agent_samples):
        for _name, labels in samples:
            for _key, value in labels:
                assert not any(word in value for word in forbidden), value

    # logs: every line JSON; batch and delivery lines correlated; no text anywhere
    relay_text = relay_process.log_path.read_text(encoding="utf-8")
    agent_text = agent_log.getvalue()
    relay_lines = parse_lines(relay_text, "relay")
    agent_lines = parse_lines(agent_text, "agent")
    for text in (relay_text, agent_text):
        for word in (FAMILY_TEXT, GRIEVANCE_TEXT, "SECRET", CREW.family_address):
            assert word not in text
    ingest = [r for r in relay_lines if r["logger"] == "shore.ingest"]
    assert ingest, relay_text
    assert all(str(r.get("correlation_id", "")).startswith(f"b{VESSEL}.") for r in ingest)
    downlink = [r for r in relay_lines if r["logger"] == "shore.downlink"]
    assert downlink, relay_text
    assert all(str(r.get("correlation_id", "")).startswith(f"d{VESSEL}.") for r in downlink)
    delivery = [r for r in relay_lines if r["logger"] == "shore.delivery"]
    # the two messages, and any daily slot that left during the run: all stored messages
    logged = {r.get("correlation_id") for r in delivery}
    assert {f"m{VESSEL}.{s}" for s in (message.message_seq, report.message_seq)} <= logged
    assert logged <= {f"m{VESSEL}.{s}" for s in stored_seqs}
    link = [r for r in agent_lines if r["logger"] == "shipboard.link"]
    assert link, agent_text
    assert all(str(r.get("correlation_id", "")).startswith(("v", "b")) for r in link)
    assert any(r.get("correlation_id") == f"b{VESSEL}.1" for r in link)
