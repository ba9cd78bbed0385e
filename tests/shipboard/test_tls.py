"""The agent's link over TLS to the shore broker as deployed (deploy/mosquitto, a private CA).

The vessel's config names the CA that signed the broker's certificate (``[shore] ca_file``);
the link builds its one TLS context from it, signs in with the vessel's user name and
password, publishes, and resumes the TLS session on the next connection (a resumed
handshake costs ~750 B less on the satellite link, FIELD-NOTES).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.codebooks import default_codebook
from protocol.languages import Language
from protocol.signing import SigningKey
from shipboard.config import ShipConfig, load_config, to_toml
from shipboard.crew import CrewRegister
from shipboard.errors import ConfigError
from shipboard.link import LinkSettings, SessionReport, run_link, run_session, uplink_topic
from shipboard.outbox import Outbox
from shipboard.scheduler import SchedulerSettings
from tests.e2e.test_deploy import PASSWORDS, DeployedBroker, _wait_up
from tests.kit.mosquitto import find_mosquitto
from tests.kit.mqtt import next_message
from tests.kit.ship_config import own_keys_document

VESSEL = 7  # a vessel with a password in the deployed broker's test password file
NOW = 1_790_000_000.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[DeployedBroker]:
    find_mosquitto()
    deployed = DeployedBroker(tmp_path / "broker")
    deployed.start()
    try:
        yield deployed
    finally:
        deployed.stop()


def _write_config(data: Path, shore: dict[str, Any]) -> Path:
    document = own_keys_document(data)
    document["vessel"]["id"] = VESSEL
    document["shore"].update(shore)
    path = data / "ship.toml"
    data.mkdir(parents=True, exist_ok=True)
    path.write_text(to_toml(document), encoding="utf-8")
    return path


def _vessel_config(data: Path, broker: DeployedBroker) -> ShipConfig:
    shutil.copy(broker.ca, data / "shore-ca.pem")
    path = _write_config(
        data,
        {
            "broker": f"mqtts://127.0.0.1:{broker.tls_port}",
            "ca_file": "shore-ca.pem",  # relative to the config file
            "username": str(VESSEL),
            "password": PASSWORDS[str(VESSEL)],
        },
    )
    return load_config(path)


async def test_the_link_signs_in_over_tls_with_the_shore_ca_and_resumes_the_session(
    broker: DeployedBroker, tmp_path: Path
) -> None:
    """Vessel 7's agent, configured with the shore's private CA, opens a session to the
    deployed broker over TLS and publishes a crew member's message; the shore has not
    acknowledged it, so the next session resends it, and that session's TLS handshake is
    resumed from the first one's ticket. The relay sees the same batch both times."""
    data = tmp_path / "vessel"
    data.mkdir()
    config = _vessel_config(data, broker)
    assert config.shore.ca_file == data / "shore-ca.pem"
    outbox = Outbox.open(config.database_path, VESSEL)
    await _wait_up(broker)
    try:
        member, _pin = CrewRegister(outbox).add(
            name="Nguyen Van An", document="WP-77", nationality="VN", language=Language.VIE, now=NOW
        )
        home = CrewRegister(outbox).add_contact(
            member.crew,
            channel="email",
            address="home@example.org",
            name="Home",
            language=None,
            now=NOW,
        )
        outbox.accept_message(
            crew=member.crew,
            contact=home.contact,
            lang=Language.ENG,
            now=NOW,
            quota_bytes=config.quota.crew_text_bytes,
            body="we reach port on Friday",
        )
        reports: list[SessionReport] = []
        stopping = asyncio.Event()

        async def counted(*args: Any, **kwargs: Any) -> SessionReport:
            report = await run_session(*args, **kwargs)
            reports.append(report)
            if len(reports) == 2:
                stopping.set()
            return report

        policy = SchedulerSettings(
            latency_s={"sos": 0.0, "grievance": 0.0, "message": 0.0},
            min_gap_s=0.0,
            resend_after_s=0.0,  # no BatchAck comes: resend in the next session
        )
        async with broker.relay() as relay, asyncio.timeout(60):
            await relay.subscribe(uplink_topic(VESSEL), qos=1)
            await run_link(
                config=config,
                outbox=outbox,
                signing_key=SigningKey.from_seed(bytes(32)),
                codebook=default_codebook(),
                stopping=stopping,
                doorbell=asyncio.Event(),
                link_settings=LinkSettings.from_config(
                    config, ack_wait_s=0.5, downlink_quiet_s=0.2
                ),
                scheduler_settings=policy,
                session_runner=counted,
            )
            first = await next_message(relay)
            again = await next_message(relay)
    finally:
        outbox.close()
    assert [len(r.published) for r in reports] == [1, 1]
    assert [r.tls_resumed for r in reports] == [False, True]
    assert first.payload == again.payload  # the same batch, byte for byte
    assert str(first.topic) == uplink_topic(VESSEL)


def test_a_ca_file_needs_tls_and_must_exist(tmp_path: Path) -> None:
    """``ca_file`` with a plain ``mqtt://`` broker, or naming a missing file, is refused at
    start with what to write instead."""
    plain = _write_config(tmp_path / "a", {"broker": "mqtt://127.0.0.1:1883", "ca_file": "ca.pem"})
    with pytest.raises(ConfigError, match="only used with TLS"):
        load_config(plain)
    missing = _write_config(
        tmp_path / "b", {"broker": "mqtts://relay.example.org:8883", "ca_file": "ca.pem"}
    )
    with pytest.raises(ConfigError, match="not a file"):
        load_config(missing)
