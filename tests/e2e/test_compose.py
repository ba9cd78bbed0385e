"""deploy/compose, checked without Docker (no engine and no EMQX image on the CI machine):
the compose file is valid YAML naming the scaled shore the README promises, every file it
mounts exists (or is made by make-secrets, or is the operator's certificate), each relay
worker's configuration loads with the relay's own loader and reaches a broker and database
the compose file defines over TLS with its own login, EMQX authenticates every client
against its built-in database and offers only TLS, make-secrets writes matching 0600
secrets, and the EMQX ACL confines a vessel to its own topics. What this cannot show is
EMQX itself running these files."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from protocol.topics import SHARED_UPLINKS
from shore.broker_login import read_password
from shore.config import RelayConfig, load_config

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose"
#: Secrets make-secrets writes before the first start (never in the repository).
MADE_BY_MAKE_SECRETS = {"./relay-mqtt-password.txt", "./emqx-users.csv"}
#: Host paths the operator provides before the first start (deploy/README.md).
OPERATOR_PROVIDED = {"./certs", "./certs/ca.pem"} | MADE_BY_MAKE_SECRETS
#: Where EMQX finds the operator's certificates (the ./certs mount).
EMQX_CERTS = "/opt/emqx/etc/certs/vessel-relay/"


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
    assert any("subscribe" in rule and f'"{SHARED_UPLINKS}"' in rule for rule in relay)
    assert any("publish" in rule and '"vr/+/d"' in rule for rule in relay)
    anyone = [rule for rule in rules if rule.startswith("{allow, all")]
    assert [re.findall(r'"([^"]+)"', rule) for rule in anyone] == [
        ["vr/${username}/u"],
        ["vr/${username}/d"],
    ]
    assert "publish" in anyone[0]
    assert "subscribe" in anyone[1]
    assert rules[-1] == "{deny, all"


def emqx_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: s
        for name, s in compose["services"].items()
        if str(s.get("image", "")).startswith("emqx/")
    }


def secret_paths(compose: dict[str, Any], service: dict[str, Any]) -> dict[str, str]:
    """The service's secrets: path inside the container -> host file."""
    paths = {}
    for entry in service.get("secrets", []):
        source = entry if isinstance(entry, str) else entry["source"]
        target = source if isinstance(entry, str) else entry.get("target", source)
        inside = target if target.startswith("/") else f"/run/secrets/{target}"
        paths[inside] = compose["secrets"][source]["file"]
    return paths


def test_emqx_authenticates_every_client_and_offers_only_tls(compose: dict[str, Any]) -> None:
    """Each EMQX node has exactly one authenticator, password-based against its built-in
    database by user name, hashing with bcrypt, seeded from the emqx-users.csv secret (a
    CSV, mounted where the authenticator reads it), so a client it does not know is
    refused. Its only MQTT listener is TLS on 8883 with the operator's certificates, and
    the dashboard is published on this host's loopback only."""
    for name, service in emqx_services(compose).items():
        env = {key: str(value) for key, value in service["environment"].items()}
        authn = {k: v for k, v in env.items() if k.startswith("EMQX_AUTHENTICATION__")}
        assert {k.split("__")[1] for k in authn} == {"1"}, f"{name}: one authenticator"
        assert env["EMQX_AUTHENTICATION__1__MECHANISM"] == "password_based"
        assert env["EMQX_AUTHENTICATION__1__BACKEND"] == "built_in_database"
        assert env["EMQX_AUTHENTICATION__1__USER_ID_TYPE"] == "username"  # = vessel id
        assert env["EMQX_AUTHENTICATION__1__PASSWORD_HASH_ALGORITHM__NAME"] == "bcrypt"
        assert env["EMQX_AUTHENTICATION__1__BOOTSTRAP_TYPE"] == "plain"  # hashed on load
        bootstrap = env["EMQX_AUTHENTICATION__1__BOOTSTRAP_FILE"]
        assert bootstrap.endswith(".csv")  # EMQX picks the format by extension
        assert secret_paths(compose, service)[bootstrap] == "./emqx-users.csv"
        for listener in ("TCP", "WS", "WSS"):
            assert env[f"EMQX_LISTENERS__{listener}__DEFAULT__ENABLE"] == "false", name
        assert env["EMQX_LISTENERS__SSL__DEFAULT__BIND"].endswith(":8883")
        mounts = {
            v.partition(":")[2].rsplit(":", 1)[0]: v.partition(":")[0] for v in service["volumes"]
        }
        assert mounts[EMQX_CERTS.rstrip("/")] == "./certs"
        for option in ("CACERTFILE", "CERTFILE", "KEYFILE"):
            path = env[f"EMQX_LISTENERS__SSL__DEFAULT__SSL_OPTIONS__{option}"]
            assert path.startswith(EMQX_CERTS), f"{name}: {option} outside ./certs"
        for port in service.get("ports", []):
            published = str(port).split(":")
            assert published[-1] != "1883", f"{name}: plain MQTT published"
            if published[-1] == "18083":
                assert published[0] == "127.0.0.1", f"{name}: dashboard on every address"


def test_each_relay_worker_logs_into_emqx_over_tls_with_its_password_file(
    compose: dict[str, Any],
) -> None:
    """Every worker's [mqtt] says mqtts:// to its EMQX node's TLS port, checks the broker
    against the operator's CA (mounted from ./certs/ca.pem), and signs in as the ACL's
    relay user with the password compose mounts from the relay_mqtt_password secret, the
    file make-secrets writes."""
    acl = (COMPOSE / "emqx-acl.conf").read_text(encoding="utf-8")
    for name, service in relay_services(compose).items():
        path, config = relay_config(service)
        assert config.mqtt_tls, f"{path}: plain MQTT"
        assert config.mqtt_host_port[1] == 8883, path
        assert f'{{user, "{config.mqtt_username}"}}' in acl, f"{path}: not the ACL's relay"
        assert config.mqtt_username == "relay"
        assert urlsplit(config.mqtt.url).password is None, f"{path}: password in the URL"
        secrets = secret_paths(compose, service)
        assert secrets[config.mqtt.password_file] == "./relay-mqtt-password.txt", name
        mounts = {
            volume.split(":")[1]: volume.split(":")[0]
            for volume in service["volumes"]
            if volume.startswith("./")
        }
        assert mounts[config.mqtt.ca_file] == "./certs/ca.pem", f"{path}: ca_file not mounted"


def test_make_secrets_writes_one_password_for_the_relay_and_emqx(tmp_path: Path) -> None:
    """make-secrets, run before the first start, writes a random relay password and EMQX's
    user list with the same password on the relay line, both 0600; the relay accepts the
    password file; a second run refuses to overwrite them."""
    script = tmp_path / "make-secrets"
    shutil.copy(COMPOSE / "make-secrets", script)
    done = subprocess.run(["sh", str(script)], capture_output=True, text=True, check=True)
    assert "wrote relay-mqtt-password.txt and emqx-users.csv" in done.stdout
    password_file = tmp_path / "relay-mqtt-password.txt"
    users_file = tmp_path / "emqx-users.csv"
    for made in (password_file, users_file):
        assert made.stat().st_mode & 0o777 == 0o600, made
        assert f"./{made.name}" in MADE_BY_MAKE_SECRETS
    if os.geteuid() == 0:  # owned by the containers' users, who must read them
        assert (password_file.stat().st_uid, users_file.stat().st_uid) == (10001, 1000)
        os.chown(password_file, 0, 0)
    password = read_password(password_file)
    assert len(password) >= 32
    rows = list(csv.DictReader(io.StringIO(users_file.read_text(encoding="utf-8"))))
    assert rows == [{"user_id": "relay", "password": password, "is_superuser": "false"}]
    again = subprocess.run(["sh", str(script)], capture_output=True, text=True, check=False)
    assert again.returncode != 0
    assert "exists; move it away first" in again.stderr
    assert read_password(password_file) == password
    ignored = (COMPOSE / ".gitignore").read_text(encoding="utf-8").split()
    assert {name.removeprefix("./") for name in MADE_BY_MAKE_SECRETS} <= set(ignored)
