"""The operator's commands: init a relay, register vessels, rotate and revoke their keys;
configuration errors that name the file, the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from protocol.signing import SigningKey
from shore.config import ConfigError, RelayConfig, load_config, parse_config
from vessel_relay.cli import app

runner = CliRunner()
KEY_A = SigningKey.from_seed(b"\x0a" * 32).verify_key.hex()
KEY_B = SigningKey.from_seed(b"\x0b" * 32).verify_key.hex()


def shore(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["shore", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def relay(tmp_path: Path) -> Path:
    """A relay data directory made by 'shore init'; returns its config file."""
    code, out, err = shore("init", "--data", str(tmp_path / "relay"))
    assert code == 0, err
    assert "public key:" in out
    return tmp_path / "relay" / "relay.toml"


def test_init_makes_keys_config_and_store_and_keeps_them(relay: Path) -> None:
    """'shore init' writes a 0600 shore key, a config and the store; run again, it keeps them."""
    data = relay.parent
    assert (data / "shore.key").stat().st_mode & 0o777 == 0o600
    assert (data / "relay.db").exists()
    code, out, _ = shore("init", "--data", str(data))
    assert code == 0
    assert "(kept)" in out
    config = load_config(relay)
    assert config.data_dir == data.resolve()


def test_vessel_add_list_show_rotate_and_revoke(relay: Path) -> None:
    """The operator registers a vessel, sees it listed, rotates its key with an overlap,
    revokes the old key; revoking the last key is refused."""
    code, out, err = shore(
        "vessel", "add", "Sea Star 7", "--flag", "TH", "--registration", "TH-0042",
        "--owner", "Andaman Fishing Co", "--public-key", KEY_A, "--union", "1",
        "--union", "2", "-c", str(relay),
    )  # fmt: skip
    assert code == 0, err
    assert "vessel id: 1" in out
    assert "vr/1/u" in out
    code, out, _ = shore("vessel", "list", "-c", str(relay))
    assert "Sea Star 7" in out
    assert "(1 valid key)" in out
    code, out, _ = shore("vessel", "rotate-key", "1", "--public-key", KEY_B, "-c", str(relay))
    assert code == 0
    code, out, _ = shore("vessel", "show", "1", "-c", str(relay))
    assert "unions: 1, 2" in out
    assert out.count("(valid)") == 2
    code, out, _ = shore("vessel", "revoke-key", "1", "--public-key", KEY_A, "-c", str(relay))
    assert code == 0
    code, _, err = shore("vessel", "revoke-key", "1", "--public-key", KEY_B, "-c", str(relay))
    assert code == 1
    assert "without a key" in err
    code, out, _ = shore("vessel", "show", "1", "-c", str(relay))
    assert out.count("(valid)") == 1


def test_registry_errors_are_one_line_with_a_fix(relay: Path) -> None:
    """A bad key, a duplicate registration and an unknown vessel each end in one line on
    stderr that says what to do, with exit code 1."""
    add = ["vessel", "add", "X", "--flag", "TH", "--registration", "R1", "--owner", "O"]
    code, _, err = shore(*add, "--public-key", "12ab", "-c", str(relay))
    assert (code, "ship keygen" in err) == (1, True)
    assert shore(*add, "--public-key", KEY_A, "-c", str(relay))[0] == 0
    code, _, err = shore(*add, "--public-key", KEY_B, "-c", str(relay))
    assert (code, "already registered" in err) == (1, True)
    code, _, err = shore("vessel", "show", "42", "-c", str(relay))
    assert (code, "shore vessel list" in err) == (1, True)


def test_config_defaults_and_errors_name_file_key_and_fix(tmp_path: Path) -> None:
    """Defaults run with no keys at all; a wrong type, an unknown key or a bad backend is
    refused naming the file, the key and what was expected."""
    assert parse_config({}) == RelayConfig(source="<text>")
    assert parse_config({}).client_id == "relay-1"
    cases = {
        "[store]\nbackend = 'mysql'\n": "[store] backend = 'mysql': expected",
        "[mqtt]\nport = 1883\n": "[mqtt] has no key 'port'",
        "[relay]\nworker = 'one'\n": "[relay] worker = 'one': expected a int",
        "[mqtt]\nprotocol = '4'\n": "[mqtt] protocol",
        "[store]\nbackend = 'postgres'\n": "dsn is empty",
        "[nope]\n": "unknown section [nope]",
        "[relay]\nevent_loop = 'trio'\n": "[relay] event_loop = 'trio': expected \"uvloop\"",
        "[relay]\ndecode_processes = -1\n": "[relay] decode_processes = -1: expected 0",
    }
    for text, expected in cases.items():
        path = tmp_path / "relay.toml"
        path.write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert str(path) in str(caught.value)
        assert expected in str(caught.value)
    code, _, err = shore("vessel", "list", "-c", str(tmp_path / "missing.toml"))
    assert code == 78  # EX_CONFIG: a service manager should not restart it
    assert "shore init" in err


def test_every_shore_command_has_help_with_an_example() -> None:
    """Each shore command's help says what it does and gives an Example."""
    commands = [
        ("init",),
        ("run",),
        ("vessel", "add"),
        ("vessel", "list"),
        ("vessel", "show"),
        ("vessel", "rotate-key"),
        ("vessel", "revoke-key"),
    ]
    for command in commands:
        code, out, _ = shore(*command, "--help")
        assert code == 0, command
        assert "Example" in out, command
