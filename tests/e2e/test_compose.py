"""deploy/compose, checked without Docker (no engine and no EMQX image on the CI machine):
the compose file is valid YAML naming the scaled shore the README promises, every file it
mounts exists, each relay worker's configuration loads with the relay's own loader and
reaches a broker and database the compose file defines, and the EMQX ACL confines a
vessel to its own topics. What this cannot show is EMQX itself running these files."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from shore.config import RelayConfig, load_config
from shore.relay import SHARED_UPLINK

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose"
#: Host paths the operator provides before the first start (deploy/README.md).
OPERATOR_PROVIDED = {"./certs"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((COMPOSE / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def relay_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if name.startswith("relay-")}


def relay_config(service: dict[str, Any]) -> tuple[Path, RelayConfig]:
    """The worker's configuration file on the host, found through its command and mounts."""
    command = service["command"]
    container_path = command[command.index("--config") + 1]
    for volume in service["volumes"]:
        host, _, rest = volume.partition(":")
        if rest.split(":")[0] == container_path:
            path = COMPOSE / host
            return path, load_config(path)
    raise AssertionError(f"{container_path} is not mounted into the relay container")


def test_the_compose_file_is_a_scaled_shore(compose: dict[str, Any]) -> None:
    """Two EMQX nodes clustered with each other, PostgreSQL, two or more relay workers."""
    services = compose["services"]
    emqx = {name: s for name, s in services.items() if str(s.get("image", "")).startswith("emqx/")}
    assert len(emqx) >= 2
    seeds = {service["environment"]["EMQX_CLUSTER__STATIC__SEEDS"] for service in emqx.values()}
    assert len(seeds) == 1  # every node knows the same cluster
    (seed_list,) = seeds
    for service in emqx.values():
        assert service["environment"]["EMQX_NODE__NAME"] in seed_list
        assert service["environment"]["EMQX_AUTHORIZATION__NO_MATCH"] == "deny"
    assert str(services["postgres"]["image"]).startswith("postgres:")
    assert len(relay_services(compose)) >= 2
    for service in relay_services(compose).values():
        assert service["restart"] == "unless-stopped"
        assert service["stop_signal"] == "SIGTERM"  # finishes the delivery in hand


def test_every_mounted_file_exists(compose: dict[str, Any]) -> None:
    """A typo in a mount would only show on the operator's first `docker compose up`."""
    mounts = [
        volume.partition(":")[0]
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
        if volume.startswith("./")
    ]
    mounts += [secret["file"] for secret in compose.get("secrets", {}).values()]
    for service in compose["services"].values():
        build = service.get("build")
        if build:
            context = COMPOSE / build["context"]
            assert (context / build["dockerfile"]).is_file()
            assert (context / "pyproject.toml").is_file()
    missing = [m for m in mounts if m not in OPERATOR_PROVIDED and not (COMPOSE / m).exists()]
    assert missing == []


def test_the_dockerfile_copies_every_package_the_wheel_ships() -> None:
    """The image installs the project from copied sources: a package left out would only
    fail when the relay imports it."""
    dockerfile = (COMPOSE / "Dockerfile").read_text(encoding="utf-8")
    copied = {PurePosixPath(match).name for match in re.findall(r"^COPY (\S+) ", dockerfile, re.M)}
    pyproject = (COMPOSE.parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    packages = re.search(r"packages = \[([^\]]*)\]", pyproject)
    assert packages is not None
    assert set(re.findall(r'"(\w+)"', packages.group(1))) <= copied


def test_each_relay_worker_configuration_loads_and_points_inside_the_shore(
    compose: dict[str, Any],
) -> None:
    """The workers' TOML passes the relay's own checks, they share one PostgreSQL store
    and one MQTT 5 shared subscription, each has its own worker number (its client id),
    and their broker and database hosts are services of this compose file."""
    services = compose["services"]
    hostnames = set(services) | {s["hostname"] for s in services.values() if "hostname" in s}
    workers: set[int] = set()
    dsns: set[str] = set()
    for service in relay_services(compose).values():
        path, config = relay_config(service)
        assert config.store.backend == "postgres", path
        assert config.mqtt.protocol == "5", f"{path}: workers share only with MQTT 5"
        assert urlsplit(config.store.dsn).hostname in hostnames, path
        broker = urlsplit(config.mqtt.url).hostname
        assert broker in hostnames, path
        depends = service["depends_on"]
        assert "postgres" in depends
        assert any(host == broker or services[host].get("hostname") == broker for host in depends)
        workers.add(config.relay.worker)
        dsns.add(config.store.dsn)
    assert len(workers) == len(relay_services(compose))  # distinct client ids
    assert len(dsns) == 1  # one shared store


def _acl_rules(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("%%")]
    return [rule.strip() for rule in " ".join(lines).split("}.") if rule.strip()]


def test_the_emqx_acl_confines_a_vessel_to_its_own_topics() -> None:
    """Rules in order: the relay reads every uplink (shared) and writes every downlink;
    anyone else publishes only to vr/<own user name>/u and subscribes only to
    vr/<own user name>/d; everything else is denied."""
    rules = _acl_rules((COMPOSE / "emqx-acl.conf").read_text(encoding="utf-8"))
    relay = [rule for rule in rules if '{user, "relay"}' in rule]
    assert any("subscribe" in rule and f'"{SHARED_UPLINK}"' in rule for rule in relay)
    assert any("publish" in rule and '"vr/+/d"' in rule for rule in relay)
    anyone = [rule for rule in rules if rule.startswith("{allow, all")]
    assert [re.findall(r'"([^"]+)"', rule) for rule in anyone] == [
        ["vr/${username}/u"],
        ["vr/${username}/d"],
    ]
    assert "publish" in anyone[0]
    assert "subscribe" in anyone[1]
    assert rules[-1] == "{deny, all"
