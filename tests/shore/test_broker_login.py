"""The relay's broker login in ``[mqtt]``: old configurations keep working, new keys are
checked when the file loads, and the files they name are checked when the relay starts
(the real TLS and password logins against Mosquitto are in tests/e2e/test_deploy.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from common.keyfiles import KeyFileError
from shore.broker_login import BrokerLoginError, broker_login, read_password
from shore.config import ConfigError, RelayConfig, parse_config
from shore.relay import make_client
from tests.kit.tls import make_client_certificate, make_test_ca


def config(tmp_path: Path, **mqtt: Any) -> RelayConfig:
    return parse_config(
        {"relay": {"data_dir": str(tmp_path)}, "mqtt": mqtt}, str(tmp_path / "relay.toml")
    )


def secret(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def test_an_old_configuration_with_credentials_in_the_url_still_logs_in(tmp_path: Path) -> None:
    """A relay.toml from before the [mqtt] login keys (user and password in a plain URL
    to loopback) loads, and the relay presents that user and password, without TLS."""
    relay = config(tmp_path, url="mqtt://relay:relay-secret@127.0.0.1:1883")
    login = broker_login(relay)
    assert (login.username, login.password, login.tls_context) == ("relay", "relay-secret", None)
    assert relay.mqtt_host_port == ("127.0.0.1", 1883)
    assert relay.mqtt_broker == "mqtt://127.0.0.1:1883"  # what logs may show
    assert "relay-secret" not in repr(login)


def test_the_default_configuration_logs_in_anonymously_on_loopback(tmp_path: Path) -> None:
    """An empty [mqtt] section means the local test broker: no user, no password, no TLS."""
    login = broker_login(config(tmp_path))
    assert (login.username, login.password, login.tls_context) == (None, None, None)


async def test_a_tls_login_with_a_password_file(tmp_path: Path) -> None:
    """mqtts:// with a private CA, a user name and a 0600 password file: port 8883 unless
    given, the password read from the file, a TLS context that checks the broker's name."""
    make_test_ca(tmp_path)
    secret(tmp_path / "mqtt.password", "relay-secret\n")
    relay = config(
        tmp_path,
        url="mqtts://broker.example.org",
        username="relay",
        password_file="mqtt.password",
        ca_file="ca.pem",
    )
    assert relay.mqtt_host_port == ("broker.example.org", 8883)
    login = broker_login(relay)
    assert (login.username, login.password) == ("relay", "relay-secret")
    assert login.tls_context is not None
    assert login.tls_context.check_hostname
    client = make_client(relay, login)
    assert client._client._ssl_context is login.tls_context  # paho was handed it


def test_a_tls_login_with_a_client_certificate(tmp_path: Path) -> None:
    """mqtts:// with client_cert and client_key loads the relay's certificate into the TLS
    context; the user name may be left out (the broker takes it from the certificate)."""
    make_test_ca(tmp_path)
    cert, key = make_client_certificate(tmp_path, "relay")
    relay = config(
        tmp_path,
        url="mqtts://127.0.0.1:8883",
        ca_file="ca.pem",
        client_cert=cert.name,
        client_key=key.name,
    )
    login = broker_login(relay)
    assert login.username is None
    assert login.tls_context is not None


@pytest.mark.parametrize(
    ("mqtt", "expected"),
    [
        ({"url": "tcp://127.0.0.1:1883"}, "expected mqtt://HOST:PORT, or mqtts://"),
        ({"url": "mqtts://"}, "expected mqtt://HOST:PORT, or mqtts://"),
        ({"url": "mqtt://127.0.0.1:http"}, "has a bad port"),
        (
            {"url": "mqtt://relay@127.0.0.1", "username": "relay"},
            "url holds a user name and username is set too",
        ),
        (
            {"url": "mqtt://relay:pw@127.0.0.1", "password_file": "p"},
            "remove the password from the URL",
        ),
        ({"password_file": "mqtt.password"}, "password_file needs a user name: write username"),
        ({"ca_file": "ca.pem"}, "ca_file is only used with TLS"),
        ({"client_cert": "c.pem", "client_key": "k.pem"}, "client_cert is only used with TLS"),
        (
            {"url": "mqtts://broker.example.org", "client_cert": "c.pem"},
            "give both client_cert and client_key",
        ),
        (
            {"url": "mqtt://broker.example.org", "username": "relay", "password_file": "p"},
            "the password would cross the network in clear to broker.example.org",
        ),
        ({"username": 7}, "[mqtt] username = 7: expected a str"),
    ],
)
def test_mqtt_keys_that_do_not_fit_together_are_refused_at_load(
    tmp_path: Path, mqtt: dict[str, Any], expected: str
) -> None:
    """Each inconsistent [mqtt] section fails when the file loads, naming the key and the fix,
    before the relay connects anywhere."""
    with pytest.raises(ConfigError) as caught:
        config(tmp_path, **mqtt)
    assert expected in str(caught.value)
    assert "[mqtt]" in str(caught.value)


def test_a_password_file_on_loopback_needs_no_tls(tmp_path: Path) -> None:
    """A relay on the broker's own machine may send its password in plain MQTT to
    127.0.0.1 or localhost (deploy/mosquitto's loopback listener)."""
    secret(tmp_path / "mqtt.password", "relay-secret")
    for host in ("127.0.0.1", "localhost", "[::1]"):
        relay = config(
            tmp_path, url=f"mqtt://{host}:1883", username="relay", password_file="mqtt.password"
        )
        assert broker_login(relay).password == "relay-secret"


@pytest.mark.parametrize(
    ("content", "mode", "expected"),
    [
        ("relay-secret", 0o644, "is readable by others; run: chmod 600"),
        ("relay-secret", 0o640, "is readable by others; run: chmod 600"),
        ("  \n", 0o600, "is empty"),
        ("CHANGE-ME\n", 0o600, "still holds the placeholder CHANGE-ME"),
        ("one\ntwo\n", 0o600, "holds several lines"),
    ],
)
def test_a_password_file_that_is_unsafe_or_unusable_stops_the_relay(
    tmp_path: Path, content: str, mode: int, expected: str
) -> None:
    """A password file others can read, an empty one, compose's placeholder or a file of
    several lines stops the relay at start with the key and the fix; the error is a key file
    error, so `shore run` reports it in one line."""
    path = secret(tmp_path / "mqtt.password", content, mode)
    relay = config(
        tmp_path, url="mqtt://127.0.0.1", username="relay", password_file="mqtt.password"
    )
    with pytest.raises(BrokerLoginError) as caught:
        broker_login(relay)
    message = str(caught.value)
    assert expected in message
    assert "[mqtt] password_file" in message
    assert str(path) in message
    assert isinstance(caught.value, KeyFileError)


def test_a_missing_password_file_names_the_key(tmp_path: Path) -> None:
    """The password file named in [mqtt] does not exist: the relay says which key and file."""
    with pytest.raises(BrokerLoginError, match=r"\[mqtt\] password_file: cannot read .*missing"):
        read_password(tmp_path / "missing", "relay.toml")


def test_broker_files_that_cannot_be_used_stop_the_relay(tmp_path: Path) -> None:
    """A CA file that is missing or not a certificate, and a client key others can read,
    each stop the relay at start, naming the [mqtt] key."""
    make_test_ca(tmp_path)
    (tmp_path / "garbage.pem").write_text("not a certificate")
    for ca_file in ("missing.pem", "garbage.pem"):
        relay = config(tmp_path, url="mqtts://127.0.0.1", ca_file=ca_file)
        with pytest.raises(BrokerLoginError, match=r"\[mqtt\] ca_file: cannot use"):
            broker_login(relay)
    (tmp_path / "server-key.pem").chmod(0o644)
    relay = config(
        tmp_path,
        url="mqtts://127.0.0.1",
        ca_file="ca.pem",
        client_cert="server.pem",
        client_key="server-key.pem",
    )
    with pytest.raises(BrokerLoginError, match=r"\[mqtt\] client_key: .* chmod 600"):
        broker_login(relay)
    (tmp_path / "server-key.pem").chmod(0o600)
    relay = config(
        tmp_path,
        url="mqtts://127.0.0.1",
        ca_file="ca.pem",
        client_cert="ca.pem",  # not the key's certificate
        client_key="server-key.pem",
    )
    with pytest.raises(BrokerLoginError, match=r"client_cert / client_key: cannot use"):
        broker_login(relay)


def test_a_password_in_a_plain_url_to_another_host_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Old configurations keep working, but a password sent in clear over a network is
    logged as a warning that says what to change (and never shows the password)."""
    relay = config(tmp_path, url="mqtt://relay:relay-secret@broker.internal:1883")
    with caplog.at_level(logging.WARNING, logger="shore.broker_login"):
        login = broker_login(relay)
    assert login.password == "relay-secret"
    assert "sends the broker password in clear to broker.internal" in caplog.text
    assert "relay-secret" not in caplog.text
