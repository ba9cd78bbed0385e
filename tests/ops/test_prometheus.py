"""Operations people's tools: the shipped Prometheus alert rules pass promtool and their
unit tests, and every query of the shipped Grafana dashboard runs on a real Prometheus
scraping a real relay (Grafana itself is not installable here)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.keyfiles import write_secret
from tests.kit.mosquitto import MosquittoBroker
from tests.kit.ports import free_port
from tests.kit.prometheus import PrometheusMissing, PrometheusServer, find_binary
from tests.kit.relay_process import RelayProcess
from tests.kit.wait import eventually
from tests.shore.test_ingest import (
    make_batches,
    register_vessel,
    vessel_link,
    write_relay,
)
from tests.shore.test_mail import SmtpSink

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "vessel-relay.json"
#: What Grafana puts for $__rate_interval at a 1 s scrape interval is about this.
RATE_INTERVAL = "30s"
PANEL_TYPES = {"row", "stat", "timeseries", "table", "gauge", "bargauge", "text"}


def promtool() -> str:
    try:
        return find_binary("promtool")
    except PrometheusMissing as exc:
        pytest.fail(str(exc), pytrace=False)


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard()["panels"]
        for target in panel.get("targets", ())
    ]


def test_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    """An operator loads deploy/prometheus: the rules and the scrape config are valid, and
    each alert fires exactly when its unit test says (worker down, all down, broker lost,
    ingest backlog, failed deliveries, quarantine, a silent vessel, no tree head signed, a
    disk filling up)."""
    tool = promtool()
    for command in (
        ["check", "rules", "alerts.yml"],
        ["check", "config", "prometheus.yml"],
        ["test", "rules", "alerts.test.yml"],
    ):
        done = subprocess.run(
            [tool, *command], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"promtool {' '.join(command)}:\n{done.stdout}{done.stderr}"
    names = set(re.findall(r"- alert: (\w+)", (PROMETHEUS / "alerts.yml").read_text()))
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "alerts.test.yml").read_text()))
    # the delivery queue and retry alerts need hours of series; every other one is tested
    assert names - tested <= {"VesselRelayDeliveryQueueGrowing", "VesselRelayDeliveryRetries"}


def test_the_grafana_dashboard_is_well_formed() -> None:
    """The dashboard imports into Grafana as one would expect: a uid, a Prometheus data
    source chosen at import, unique panel ids, panels inside the 24-column grid without
    overlapping, and every target a PromQL expression with its own refId."""
    board = dashboard()
    assert board["uid"] == "vessel-relay"
    assert isinstance(board["schemaVersion"], int)
    (variable,) = board["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    panels = board["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        assert panel["type"] in PANEL_TYPES, panel["title"]
        grid = panel["gridPos"]
        assert all(isinstance(grid[key], int) for key in ("x", "y", "w", "h")), panel["title"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not mine & cells, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        targets = panel["targets"]
        assert targets, panel["title"]
        assert len({target["refId"] for target in targets}) == len(targets)
        assert all(target["expr"].strip() for target in targets)


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as running:
        yield running


async def test_every_dashboard_query_runs_on_prometheus_scraping_a_relay(
    fresh_mosquitto: MosquittoBroker, sink: SmtpSink, tmp_path: Path
) -> None:
    """A relay worker ingests a vessel's two batches (and a resend), quarantines a garbage
    payload and delivers six family mails; a real Prometheus scrapes its /metrics every
    second with the shipped alert rules loaded. Then every query of the Grafana dashboard
    evaluates without error and returns data, every metric it names is one the relay
    exports, and every alert rule evaluates without error."""
    prometheus_binary = find_binary_or_fail("prometheus")
    data = tmp_path / "relay"
    metrics_port = free_port()
    config = write_relay(
        data,
        fresh_mosquitto,
        extra=(f'[delivery]\nenabled = true\nsmtp_host = "127.0.0.1"\nsmtp_port = {sink.port}\n'),
    )
    write_secret(data / "reply.key", b"r" * 32)
    await register_vessel(data)
    relay = RelayProcess(config, data / "relay.log", ["--metrics-port", str(metrics_port)])
    try:
        await relay.start()
        async with vessel_link(fresh_mosquitto) as vessel:
            first, second = make_batches(2, 3)
            await vessel.publish(first)
            await vessel.publish(second)
            await vessel.publish(b"not a batch at all")
            await vessel.wait_for(lambda: {1, 2} <= vessel.acked)
            await vessel.publish(first)  # a resend: a duplicate
            await eventually(lambda: len(sink.handler.messages()) >= 6, 30, what="6 mails")
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
        exported = answer.text
        assert prometheus_binary
        with PrometheusServer(
            tmp_path / "prometheus",
            targets=[f"127.0.0.1:{metrics_port}"],
            rule_files=[PROMETHEUS / "alerts.yml"],
        ) as prometheus:
            await prometheus.wait_for_scrapes(5)
            failures = []
            for title, expr in queries():
                names = set(re.findall(r"\bvessel_relay_\w+", expr))
                missing = [name for name in names if not exported_name(exported, name)]
                if missing:
                    failures.append(f"{title}: {expr}: the relay exports no {missing}")
                    continue
                result = prometheus.query(expr.replace("$__rate_interval", RATE_INTERVAL))
                if not result["result"]:
                    failures.append(f"{title}: {expr}: no data")
            rules = prometheus.api("rules")["groups"]
    finally:
        relay.ensure_stopped()
    assert not failures, "\n".join(failures)
    assert [(group["name"], len(group["rules"])) for group in rules] == [
        ("vessel-relay", 10),
        ("vessel-relay-machines", 1),
    ]
    for group in rules:
        assert all(rule["health"] == "ok" for rule in group["rules"]), group["rules"]


def find_binary_or_fail(name: str) -> str:
    try:
        return find_binary(name)
    except PrometheusMissing as exc:
        pytest.fail(str(exc), pytrace=False)


def exported_name(exposition: str, name: str) -> bool:
    """Whether a /metrics text has a sample called ``name`` (histogram series included), or
    declares its family (a labelled counter before its first increment has no sample)."""
    if re.search(rf"^{re.escape(name)}[{{ ]", exposition, re.MULTILINE):
        return True
    family = re.sub(r"_(bucket|sum|count)$", "", name)
    declared = re.findall(r"^# TYPE (\S+) ", exposition, re.MULTILINE)
    return name in declared or family in declared
