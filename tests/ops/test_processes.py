"""The operator-facing processes as shipped: ``ship run --metrics-port`` serves agent
metrics with JSON logs, and ``shore dashboard`` serves the login-protected dashboard."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.kit.ports import accepts_connections, free_port
from tests.kit.wait import eventually_blocking
from tests.shipboard.test_agent_process import Vessel
from tests.shipboard.test_agent_process import vessel as vessel  # the fixture
from vessel_relay.cli import app

ROOT = Path(__file__).resolve().parents[2]
CODE = "from vessel_relay.cli import main; main()"


def wait_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    def stopped_and_told() -> str:
        process.kill()  # nothing if it exited
        process.wait()
        return f"did not start: {log.read_text(errors='replace')[-2000:]}"

    def listening() -> bool:
        if process.poll() is not None:
            raise AssertionError(stopped_and_told())  # it exited: it never will
        return accepts_connections("127.0.0.1", port)

    eventually_blocking(listening, 30, what=f"port {port}", explain=stopped_and_told)


@pytest.fixture
def stopper() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_ship_run_serves_metrics_and_logs_json(
    vessel: Vessel, tmp_path: Path, stopper: list[subprocess.Popen[bytes]]
) -> None:
    """The agent started as the crew's vessel would run it, with ``--metrics-port`` and
    ``--log-format json``: /metrics shows the outbox gauges, SIGTERM stops it cleanly,
    and every line it logged is a JSON object."""
    port = free_port()
    log = tmp_path / "agent.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-c", CODE, "ship", "run", "--no-link", "--config",
             str(vessel.config), "--metrics-port", str(port), "--log-format", "json"],
            stdout=subprocess.DEVNULL, stderr=err, cwd=vessel.data,
        )  # fmt: skip
    stopper.append(process)
    wait_listening(process, port, log)

    def scrape() -> str:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text

    eventually_blocking(
        lambda: "vessel_agent_batches_unacknowledged" in scrape(), 20, 0.1, what="the gauges"
    )
    text = scrape()
    assert "vessel_agent_batches_unacknowledged 0.0" in text
    assert "vessel_agent_sessions_total" in text
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]
    assert any(r["message"].startswith("agent ready") for r in records)


def test_shore_dashboard_serves_the_login_page_and_the_fleet(
    tmp_path: Path, stopper: list[subprocess.Popen[bytes]]
) -> None:
    """``shore init``, ``shore operator add``, ``shore dashboard``: the fleet page needs a
    login, and after it lists the registered vessel."""
    runner = CliRunner()
    data = tmp_path / "relay"
    assert runner.invoke(app, ["shore", "init", "--data", str(data)]).exit_code == 0
    config = data / "relay.toml"
    added = runner.invoke(
        app,
        ["shore", "vessel", "add", "Sea Star 7", "--flag", "TH", "--registration", "TH-7",
         "--owner", "Andaman Fishing Co", "--public-key", "ab" * 32, "-c", str(config)],
    )  # fmt: skip
    assert added.exit_code == 0, added.stderr
    password = "a long passphrase"
    made = runner.invoke(
        app, ["shore", "operator", "add", "amara", "-c", str(config)], input=password + "\n"
    )
    assert made.exit_code == 0, made.stderr
    port = free_port()
    log = tmp_path / "dashboard.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-c", CODE, "shore", "dashboard", "-c", str(config),
             "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT, env={**os.environ},
        )  # fmt: skip
    stopper.append(process)
    wait_listening(process, port, log)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        assert client.get("/").headers["location"] == "/login"
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
        assert token is not None
        refused = client.post(
            "/login", data={"operator": "amara", "password": "nope", "csrf": token[1]}
        )
        assert refused.status_code == 401
        client.post("/login", data={"operator": "amara", "password": password, "csrf": token[1]})
        fleet = client.get("/")
        assert fleet.status_code == 200
        assert "Sea Star 7" in fleet.text
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
