"""The owner's commands: init a vessel, register crew and contacts, sign crew off."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from protocol.signing import SigningKey
from vessel_relay.cli import app

runner = CliRunner()
SHORE = SigningKey.from_seed(bytes(range(40, 72))).verify_key.hex()
SHORE_OPTIONS = ("--broker", "mqtts://relay.example.org:8883", "--shore-key", SHORE)


def _ship(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["ship", *args])
    return result.exit_code, result.stdout, result.stderr


def test_owner_sets_up_a_vessel_and_its_crew(tmp_path: Path) -> None:
    """The owner makes a config, registers a fisher with their Seabook number, gets a crew
    number and a PIN printed once, adds the mother's phone, updates and signs off."""
    code, out, _ = _ship(
        "init", "--data", str(tmp_path), "--vessel-id", "42", "--name", "Sea Star", *SHORE_OPTIONS
    )
    assert code == 0
    assert "vessel public key:" in out
    config = str(tmp_path / "ship.toml")
    assert (tmp_path / "vessel.key").stat().st_mode & 0o077 == 0
    code, out, _ = _ship(
        "crew",
        "add",
        "Aung Min",
        "--document",
        "SB-0012345",
        "--nationality",
        "MM",
        "--language",
        "mya",
        "--config",
        config,
    )
    assert code == 0
    assert re.search(r"PIN:\s+\d{8}", out)
    assert "crew number: 1" in out
    code, out, _ = _ship(
        "contact", "add", "1", "+95 9 123 456 789", "--sms", "--name", "Mother", "--config", config
    )
    assert code == 0
    assert "contact 1 added" in out
    code, out, _ = _ship("contact", "list", "1", "--config", config)
    assert "+959123456789" in out
    code, out, _ = _ship(
        "crew", "update", "1", "--new-pin", "--language", "shn", "--config", config
    )
    assert code == 0
    assert "shn" in out
    assert "PIN:" in out
    code, out, _ = _ship("crew", "sign-off", "1", "--config", config)
    assert "signed off" in out
    code, out, _ = _ship("crew", "list", "--config", config)
    assert "no crew members" in out
    code, out, _ = _ship("crew", "list", "--all", "--config", config)
    assert "Aung Min" in out


def test_mistakes_get_one_line_errors(tmp_path: Path) -> None:
    """A duplicate Seabook number, an unknown crew number and a bad phone number each get
    one clear line on stderr and exit code 1; a missing config file exits 78 (EX_CONFIG),
    and 'init' over an existing config is a usage mistake (exit 2)."""
    _ship("init", "--data", str(tmp_path), *SHORE_OPTIONS)
    config = str(tmp_path / "ship.toml")
    args = ["crew", "add", "A", "--document", "SB-1", "--nationality", "MM", "--config", config]
    assert _ship(*args)[0] == 0
    code, _, err = _ship(*args)
    assert code == 1
    assert "already on board" in err
    code, _, err = _ship("crew", "sign-off", "9", "--config", config)
    assert code == 1
    assert "no crew member number 9" in err
    code, _, err = _ship("contact", "add", "1", "12", "--sms", "--config", config)
    assert code == 1
    assert "international form" in err
    code, _, err = _ship("crew", "list", "--config", str(tmp_path / "missing.toml"))
    assert code == 78
    assert "ship init" in err
    code, _, err = _ship("init", "--data", str(tmp_path), *SHORE_OPTIONS)
    assert code == 2
    assert "already exists" in err


def test_every_command_has_help_with_an_example() -> None:
    """Each ship command explains itself and shows an example."""
    for command in (
        ["init"],
        ["run"],
        ["crew", "add"],
        ["crew", "update"],
        ["crew", "sign-off"],
        ["crew", "list"],
        ["contact", "add"],
        ["contact", "list"],
        ["union", "add"],
        ["union", "list"],
        ["keygen"],
    ):
        code, out, _ = _ship(*command, "--help")
        assert code == 0
        assert "Example" in out, command
