"""Configuration: every mistake is named with its file, key and fix, and no setting may
weaken the grievance channel."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from shipboard.config import (
    MIN_GRIEVANCE_RESERVE_BYTES,
    ConfigError,
    load_config,
    to_toml,
)
from shipboard.mqtt_link import client_tls_context
from tests.kit.ship_config import own_keys_document
from vessel_relay.demo.defaults import demo_ship_config, demo_ship_document


def _write(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "ship.toml"
    path.write_text(to_toml(document), encoding="utf-8")
    return path


def test_defaults_round_trip_through_a_file(tmp_path: Path) -> None:
    """The demo's settings, written to a file, load back unchanged (with the demo's
    allowance for its published keys)."""
    path = _write(tmp_path, demo_ship_document(tmp_path / "data"))
    config = load_config(path, allow_demo_keys=True)
    defaults = demo_ship_config(tmp_path / "data")
    assert (config.shore, config.link, config.quota, config.unions, config.intake) == (
        defaults.shore,
        defaults.link,
        defaults.quota,
        defaults.unions,
        defaults.intake,
    )
    assert config.quota.crew_text_bytes == 1024 * 1024
    assert config.shore.port == 1883
    assert not config.shore.tls
    assert str(config.time_zone) == "Asia/Bangkok"
    assert config.vessel.signing_key_path == tmp_path / "vessel.key"


def _broken(tmp_path: Path, change: dict[str, Any]) -> str:
    document = own_keys_document(tmp_path)
    for dotted, value in change.items():
        section, _, key = dotted.partition(".")
        if key:
            if value is None:
                document[section].pop(key, None)
            else:
                document[section][key] = value
        elif value is None:
            document.pop(section)
        else:
            document[section] = value
    with pytest.raises(ConfigError) as refused:
        load_config(_write(tmp_path, document))
    message = str(refused.value)
    assert str(tmp_path / "ship.toml") in message
    return message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"vessel.id": None}, "vessel.id is missing"),
        ({"vessel.id": "forty-two"}, "vessel.id must be a whole number"),
        ({"shore.broker": "http://relay:80"}, 'write "mqtt://HOST:PORT"'),
        ({"shore.public_key": "abc"}, "shore.public_key must be the shore's Ed25519"),
        ({"shore.mqtt_version": "4"}, 'must be "5" or "3.1.1"'),
        ({"shore.tls_minimum": "1.1"}, 'shore.tls_minimum must be "1.3" or "1.2"'),
        ({"shore.username": "ship"}, "give both shore.username and shore.password"),
        ({"link.profile": "starlink-gold"}, "choose one of: iridium-certus"),
        ({"link.monthly_budget_bytes": 0}, "must be above zero"),
        ({"quota.crew_text_bytes": 500_000}, "below the legal minimum"),
        ({"time.zone": "Mars/Olympus"}, "is not a time zone"),
        ({"intake.smtp_port": 70000}, "TCP port from 1 to 65535"),
        ({"intake.tls_cert": "cert.pem"}, "give both intake.tls_cert and intake.tls_key"),
        ({"vessel.colour": "red"}, "vessel.colour is not a known setting"),
        ({"radio": {}}, "[radio] is not a known section"),
        ({"shore.relay_reads_subjects": "yes"}, "shore.relay_reads_subjects must be a bool"),
    ],
)
def test_mistakes_name_the_key_and_the_fix(
    tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    """An owner who mistypes a setting learns which key, in which file, and what to write."""
    assert expected in _broken(tmp_path, change)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"grievances.reserve_bytes": MIN_GRIEVANCE_RESERVE_BYTES - 1}, "cannot be lowered"),
        ({"grievances.enabled": False}, "cannot be turned off"),
        ({"grievances.owner_copy": "captain@vessel"}, "nobody on board may receive a copy"),
        ({"grievances.escrow_key": "00" * 32}, "sealed to the union's key only"),
        ({"grievances.quota": 1000}, "outside every quota"),
        ({"unions": None}, "grievances cannot be turned off"),
        ({"unions": []}, "at least one union"),
        ({"latency_minutes.grievance": 2000}, "may not wait longer"),
        ({"grievances.slot_period_s": 43_200}, "would delay every grievance report"),
        ({"grievances.slot_period_s": 7_000}, "divisor of 86400"),
        ({"latency_minutes.sos": 60}, "an SOS goes out within"),
        ({"link.monthly_budget_bytes": 1000}, "below the grievance reserve"),
    ],
)
def test_settings_that_weaken_grievances_are_refused(
    tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    """The owner cannot lower the reserved grievance/SOS budget, switch grievances off,
    delay them, or get a copy: the agent refuses to start and says why."""
    assert expected in _broken(tmp_path, change)


def test_the_lanes_defaults_are_its_longest_and_may_only_be_shortened(tmp_path: Path) -> None:
    """The grievance lane's period is six hours and its blocks wait at most a day for a
    session, by default; the owner may shorten both (costlier), never lengthen them, and a
    family message's latency no longer bounds the lane's (it would only cost sessions)."""
    document = own_keys_document(tmp_path)
    document["grievances"].pop("slot_period_s", None)
    document["latency_minutes"].pop("grievance", None)
    config = load_config(_write(tmp_path, document))
    assert config.quota.slot_period_s == 21_600
    assert config.latency_minutes["grievance"] == 24 * 60
    assert config.latency_minutes["message"] == 360  # shorter than the lane's: allowed
    document["grievances"]["slot_period_s"] = 3_600
    document["latency_minutes"]["grievance"] = 60
    shorter = load_config(_write(tmp_path, document))
    assert shorter.quota.lane_shape().period_s == 3_600
    assert shorter.latency_minutes["grievance"] == 60


def test_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    """Starting with a config path that does not exist points at ship init."""
    with pytest.raises(ConfigError, match="ship init"):
        load_config(tmp_path / "nope.toml")


def test_bad_toml_is_reported(tmp_path: Path) -> None:
    """A file that is not TOML is reported with its name."""
    path = tmp_path / "ship.toml"
    path.write_text("[vessel\nid = ", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_subjects_travel_only_when_the_owner_says_the_relay_reads_them(tmp_path: Path) -> None:
    """A vessel set up by ``ship init`` may talk to a relay older than subjects, which
    would refuse a batch carrying one: it sends none until ``relay_reads_subjects = true``
    is written (the demo, whose relay is of the same release, says so)."""
    document = own_keys_document(tmp_path / "data")
    del document["shore"]["relay_reads_subjects"]
    assert not load_config(_write(tmp_path, document)).shore.relay_reads_subjects
    document["shore"]["relay_reads_subjects"] = True
    assert load_config(_write(tmp_path, document)).shore.relay_reads_subjects
    assert demo_ship_config(tmp_path / "data").shore.relay_reads_subjects


def test_tls_is_1_3_only_unless_the_broker_needs_1_2(tmp_path: Path) -> None:
    """A vessel offers TLS 1.3 only by default: its hello is smaller than one that also
    offers 1.2 (no 1.2 cipher suites; neither is padded to 517 bytes any more), paid on
    every full handshake over the satellite; ``tls_minimum = "1.2"`` reaches an older
    broker."""
    document = demo_ship_document(tmp_path / "data")
    assert load_config(_write(tmp_path, document), allow_demo_keys=True).shore.tls_minimum == "1.3"
    document["shore"]["tls_minimum"] = "1.2"
    config = load_config(_write(tmp_path, document), allow_demo_keys=True)
    assert config.shore.tls_minimum == "1.2"

    def hello(context: ssl.SSLContext) -> int:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_hostname="relay.example.org")
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        return len(outgoing.read())

    only_1_3, with_1_2 = client_tls_context(), client_tls_context(minimum="1.2")
    assert only_1_3.minimum_version is ssl.TLSVersion.TLSv1_3
    assert with_1_2.minimum_version is ssl.TLSVersion.TLSv1_2
    assert hello(only_1_3) < min(300, hello(with_1_2))
    assert hello(with_1_2) < 500  # no padding extension (shipboard.mqtt_link)
