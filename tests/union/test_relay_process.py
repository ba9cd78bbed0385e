"""The union API as the relay serves it (``[union_api]`` in relay.toml), and the grievance
channel end to end through real processes.

Mosquitto, the relay (``vessel-relay shore run``) and the vessel's agent are separate
processes; the vessel reaches the broker through the link emulator. A crew member files a
grievance on the agent's HTTP API; the union fetches it with ``vessel-relay union fetch``
(signed requests to the relay's union API), opens it, acknowledges it and replies; the
status change and the reply travel down the link, and the crew member reads both in their
case on board (``GET /api/cases/{seq}``), opened with the key their PIN unlocks. Another
crew member cannot open the case.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from shore.config import ConfigError, parse_config
from shore.union.cli import PASSPHRASE_FILE_ENV
from shore.union.keys import UnionIdentity, load_union
from tests.kit.mosquitto import find_mosquitto
from tests.kit.wait import eventually
from vessel_relay import link_emulator
from vessel_relay.cli import app
from vessel_relay.demo.brokers import MosquittoBroker, free_port, wait_listening
from vessel_relay.demo.setup import (
    RelaySetup,
    Tuning,
    VesselSetup,
    numbered_crew,
    prepare_relay,
    prepare_vessel,
    register_vessels,
)
from vessel_relay.demo.sinks import MaildirSink
from vessel_relay.demo.system import Child

runner = CliRunner()
KEY = "ab" * 32
REPORT = "ကျွန်ုပ်တို့ လစာ သုံးလ မရသေးပါ။"
ANSWER = "ကျွန်ုပ်တို့ အေဂျင်စီကို ဖုန်းဆက်ပါမည်။"
UNION_PASSPHRASE = "long line of harbour lights"


def _config(text: str) -> None:
    parse_config(tomllib.loads(text), "relay.toml")


def test_union_api_section_is_read_and_checked() -> None:
    """A registered union is read with its key; every mistake names the key and the fix."""
    config = parse_config(
        tomllib.loads(
            "[union_api]\nenabled = true\nport = 8041\n"
            f"[[union_api.unions]]\nid = 7\nname = 'Fishers'\npublic_key = '{KEY}'\n"
        ),
        "relay.toml",
    )
    assert config.union_api.port == 8041
    assert [(u.union_id, u.public_key, u.name) for u in config.union_api.unions] == [
        (7, bytes.fromhex(KEY), "Fishers")
    ]
    assert not parse_config({}, "relay.toml").union_api.enabled
    cases = {
        "[union_api]\nenabled = true\n": "no union is registered",
        f"[[union_api.unions]]\nid = 0\npublic_key = '{KEY}'\n": "from 1 to 65535",
        "[[union_api.unions]]\nid = 7\npublic_key = 'abcd'\n": "64 hex digits",
        "[[union_api.unions]]\nid = 7\npublic_key = 'zz'\n": "Ed25519 signing key",
        f"[[union_api.unions]]\nid = 7\npublic_key = '{KEY}'\nkey = 1\n": "no key 'key'",
        (
            f"[[union_api.unions]]\nid = 7\npublic_key = '{KEY}'\n"
            f"[[union_api.unions]]\nid = 7\npublic_key = '{KEY}'\n"
        ): "listed twice",
        "[union_api]\nport = 'x'\n": "port = 'x': expected a int",
        "[union_api]\nunions = 3\n": "write [[union_api.unions]]",
    }
    for text, expected in cases.items():
        with pytest.raises(ConfigError, match=re.escape(expected)) as error:
            _config(text)
        assert "relay.toml" in str(error.value)


def test_lane_settings_are_read_and_checked() -> None:
    """The lane's settings: "lane silent" after a day and a half and 64 blocks waiting per
    union and vessel by default, both settable; a bad value names the key and the fix; a
    downlink period the lane cannot take is refused at load, naming [downlink]."""
    default = parse_config({}, "relay.toml")
    assert (default.union_api.lane_silent_after_s, default.union_api.lane_queue_blocks) == (
        129_600.0,
        64,
    )
    assert default.lane_shape.down_period_s == 86_400
    config = parse_config(
        tomllib.loads(
            "[downlink]\nslot_period_s = 3600\n"
            "[union_api]\nlane_silent_after_s = 7200\nlane_queue_blocks = 128\n"
        ),
        "relay.toml",
    )
    assert (config.union_api.lane_silent_after_s, config.union_api.lane_queue_blocks) == (
        7200.0,
        128,
    )
    assert config.lane_shape.down_period_s == 3600
    for text, expected in {
        "[union_api]\nlane_silent_after_s = 0\n": "lane_silent_after_s must be positive",
        "[union_api]\nlane_queue_blocks = 0\n": "lane_queue_blocks = 0: expected 1 to 4096",
        "[downlink]\nslot_period_s = 7\n": "[downlink] slot_period_s",
        "[downlink]\nslot_period_s = 7000\n": "divisor of 86400",
    }.items():
        with pytest.raises(ConfigError, match=re.escape(expected)):
            _config(text)


@dataclass
class System:
    union: UnionIdentity
    vessel: VesselSetup
    relay: Child
    agent: Child


@contextlib.asynccontextmanager
async def running_system(work: Path) -> AsyncIterator[System]:
    """Broker, link emulator, relay (with the union API) and one vessel's agent, as processes."""
    find_mosquitto()
    api_port = free_port()
    # as a union following the README: 'union init', its store encrypted from the start
    secret = work / "union-passphrase"
    secret.write_text(UNION_PASSPHRASE + "\n", encoding="utf-8")
    secret.chmod(0o600)
    made = runner.invoke(
        app,
        [
            "union", "init", "--dir", str(work / "union"), "--id", "1", "--name",
            "Fishers' Union", "--relay", f"http://127.0.0.1:{api_port}", "--language", "mya",
            "--language", "eng", "--passphrase-file", str(secret),
        ],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    union = load_union(work / "union")
    broker = MosquittoBroker(work / "broker", persistence=False)
    await broker.start()
    sink = MaildirSink(work / "maildir")
    sink.start()
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(sink.stop)
        stack.push_async_callback(broker.stop)
        relay_setup: RelaySetup = prepare_relay(
            work / "relay",
            broker_url=broker.client_url(),
            mqtt_version="5",
            smtp_host=sink.host,
            smtp_port=sink.port,
            fast=True,
        )
        with relay_setup.config_path.open("a", encoding="utf-8") as toml:
            toml.write(
                f"\n[union_api]\nenabled = true\nhost = '127.0.0.1'\nport = {api_port}\n"
                '[[union_api.unions]]\nid = 1\nname = "Fishers\' Union"\n'
                f"public_key = '{union.signing_key.verify_key.key.hex()}'\n"
            )
        link = link_emulator.LinkEmulator(
            "127.0.0.1", 0, broker.host, broker.port, link_emulator.UNLIMITED, seed=1
        )
        await stack.enter_async_context(link)
        tuning = Tuning(
            idle_poll_s=0.5, min_gap_s=0.2, resend_after_s=3.0, ack_wait_s=4.0, min_timeout_s=4.0
        )
        vessel = await asyncio.to_thread(
            prepare_vessel,
            work / "vessel-1",
            vessel_id=1,
            broker_url=f"mqtt://{link.host}:{link.port}",
            mqtt_version="5",
            shore_public_key=relay_setup.shore_public_key,
            union=union.card,
            crew=numbered_crew(2, 1),
            http_port=free_port(),
            smtp_port=free_port(),
            tuning=tuning,
        )
        await register_vessels(relay_setup, [vessel])
        relay = Child(
            [
                str(Path(sys.executable).parent / "vessel-relay"),
                "shore",
                "run",
                "--config",
                str(relay_setup.config_path),
            ],
            work / "relay.log",
        )
        agent = Child(
            [sys.executable, "-m", "vessel_relay.demo.agent_main", str(vessel.data_dir)],
            work / "agent.log",
        )
        relay.start()
        stack.callback(relay.stop)
        agent.start()
        stack.callback(agent.stop)
        for what, child, port in (("relay", relay, api_port), ("agent", agent, vessel.http_port)):
            if not await wait_listening("127.0.0.1", port, timeout_s=60):
                raise RuntimeError(f"the {what} did not start:\n{child.log()}")
        yield System(union, vessel, relay, agent)


async def _cli(*args: str, passphrase_file: Path) -> str:
    """A union command, its store's passphrase read from ``passphrase_file``."""
    env = {PASSPHRASE_FILE_ENV: str(passphrase_file)}
    result = await asyncio.to_thread(runner.invoke, app, list(args), env=env)
    assert result.exit_code == 0, result.output + str(result.exception)
    return result.output


async def _login(http: httpx.AsyncClient, crew: int, pin: str) -> dict[str, str]:
    response = await http.post("/api/login", json={"crew": crew, "pin": pin})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def test_grievance_through_broker_and_relay_to_the_union_and_back(tmp_path: Path) -> None:
    """Filed on board, fetched and opened by the union through the relay process's union
    API, acknowledged and answered; the reporter reads stage and answer on board."""
    async with running_system(tmp_path) as system:
        reporter, other = system.vessel.crew
        union = ["--dir", str(system.union.directory)]
        secret = tmp_path / "union-passphrase"
        url = f"http://127.0.0.1:{system.vessel.http_port}"
        async with httpx.AsyncClient(base_url=url, timeout=20) as http:
            mine = await _login(http, reporter.crew, reporter.pin)
            filed = await http.post(
                "/api/grievances",
                json={
                    "union": 1,
                    "category": "withholding_of_wages",
                    "text": REPORT,
                    "lang": "mya",
                    "anonymous": False,
                },
                headers=mine,
            )
            assert filed.status_code == 201, filed.text
            case_number = filed.json()["case_number"]
            seq = filed.json()["message_seq"]

            async def fetched() -> bool:
                return "1 new cases" in await _cli("union", "fetch", *union, passphrase_file=secret)

            await eventually(fetched, 60, 0.3, what="the union to fetch the report from the relay")
            shown = await _cli("union", "show", *union, case_number, passphrase_file=secret)
            assert REPORT in shown
            await _cli(
                "union", "status", *union, case_number, "acknowledged", passphrase_file=secret
            )
            await _cli("union", "reply", *union, case_number, ANSWER, passphrase_file=secret)

            async def answered() -> bool:
                response = await http.get(f"/api/cases/{seq}", headers=mine)
                assert response.status_code == 200, response.text
                return len(response.json()["notes"]) >= 2

            # each note rides the reporter's downlink slot of a later period (20 s here)
            await eventually(answered, 150, 0.3, what="the union's notes to reach the vessel")
            case = (await http.get(f"/api/cases/{seq}", headers=mine)).json()
            assert case["case_number"] == case_number
            assert case["stage"] == "acknowledged"
            assert [note["stage"] for note in case["notes"]] == ["acknowledged", "acknowledged"]
            assert case["notes"][1]["text"] == ANSWER
            assert case["notes"][1]["lang"] == "mya"
            assert not any(note.get("unreadable") for note in case["notes"])

            theirs = await _login(http, other.crew, other.pin)
            foreign = await http.get(f"/api/cases/{seq}", headers=theirs)
            assert foreign.status_code == 404
            # nothing on board says which crew member has a case: the notes came in the
            # vessel's downlink lane, blocks kept by (period, index) with no crew number
            on_board = _downlink_on_board(system.vessel.data_dir)
            assert on_board["visible case updates"] == 0
            assert on_board["per-crew items"] == 0
            assert on_board["lane blocks"] >= 2
        relay_log = (tmp_path / "relay.log").read_text(errors="replace")
        assert REPORT not in relay_log
        assert ANSWER not in relay_log


def _downlink_on_board(data_dir: Path) -> dict[str, int]:
    """Downlink lane blocks kept on board, per-crew downlink items, visible case updates."""
    import sqlite3

    db = sqlite3.connect(next(data_dir.glob("outbox*.sqlite3")))
    try:
        cases, per_crew = db.execute(
            "SELECT COALESCE(SUM(kind = 'case'), 0), COALESCE(SUM(kind = 'slot'), 0) FROM inbox"
        ).fetchone()
        (blocks,) = db.execute("SELECT COUNT(*) FROM lane_down").fetchone()
    finally:
        db.close()
    return {
        "visible case updates": int(cases),
        "per-crew items": int(per_crew),
        "lane blocks": int(blocks),
    }
