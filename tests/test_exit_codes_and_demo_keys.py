"""One exit-code rule for every command, and the demo's published keys kept in the demo.

Exit codes: 78 (EX_CONFIG) for a configuration error, so systemd's
``RestartPreventExitStatus=78`` stops restarting a broken config every 5 s; 2 for usage
errors (typer's own code); 1 for the rest.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from common.exits import EX_CONFIG, EX_FAILURE, EX_USAGE, UsageError, exit_code, fail
from common.keyfiles import PUBLISHED_DEMO_KEYS, KeyFileError, KeyFileExists
from shipboard.errors import ConfigError as ShipConfigError
from shipboard.errors import OutboxUnavailable
from shore.config import ConfigError as RelayConfigError
from shore.union.keys import UnionSetupError
from vessel_relay.cli import app
from vessel_relay.demo.keys import derived_public_keys

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_the_rule_is_one_table() -> None:
    """Config errors of every part and key file errors are 78, usage errors 2, anything
    else 1; fail() prints one line and carries the code."""
    assert EX_CONFIG == 78
    assert EX_USAGE == 2
    for error in (
        ShipConfigError("x"),
        RelayConfigError("x"),
        UnionSetupError("x"),
        KeyFileError("x"),
    ):
        assert exit_code(error) == EX_CONFIG, error
    assert exit_code(UsageError("x")) == EX_USAGE
    assert exit_code(KeyFileExists("x")) == EX_USAGE
    assert exit_code(OutboxUnavailable("disk full")) == EX_FAILURE
    assert exit_code(RuntimeError("x")) == EX_FAILURE
    exit_ = fail(ShipConfigError("ship.toml: vessel.id is missing"))
    assert isinstance(exit_, typer.Exit)
    assert exit_.exit_code == 78


def test_usage_and_config_errors_of_each_cli(tmp_path: Path) -> None:
    """Each command group: a bad option value is 2, a missing config or directory is 78."""
    assert _cli("ship", "run", "-c", str(tmp_path / "none.toml"))[0] == 78
    assert _cli("ship", "crew", "list", "-c", str(tmp_path / "none.toml"))[0] == 78
    assert _cli("shore", "vessel", "list", "-c", str(tmp_path / "none.toml"))[0] == 78
    code, _, err = _cli("union", "list", "--dir", str(tmp_path / "no-union"))
    assert code == 78
    assert "vessel-relay union init" in err
    code, _, err = _cli("union", "init", "--dir", str(tmp_path / "u"), "--id", "0", "--relay", "x")
    assert code == 2
    assert "--id must be from 1 to 65535" in err
    code, _, err = _cli("ship", "keygen", "--bogus")  # typer's own usage error
    assert code == 2
    key = tmp_path / "vessel.key"
    assert _cli("ship", "keygen", "-o", str(key))[0] == 0
    code, _, err = _cli("ship", "keygen", "-o", str(key))
    assert code == 2
    assert "already exists" in err


def test_published_keys_are_exactly_the_demo_seeds_keys() -> None:
    """The loaders' refusal list is every public key made from the demo's seeds."""
    assert dict(PUBLISHED_DEMO_KEYS) == derived_public_keys()


def test_demo_seeds_live_only_in_the_demo() -> None:
    """No module outside vessel_relay/demo derives a key from the demo's seed phrases, and
    none names the demo union; the shipped packages hold only the refusal list."""
    phrase = re.compile(rb"vessel-relay demo (shore signing|union) key|Demo Union")
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("protocol", "shipboard", "shore", "vessel_relay")
        for path in (ROOT / package).rglob("*.py")
        if "demo" not in path.relative_to(ROOT).parts and phrase.search(path.read_bytes())
    ]
    assert offenders == []


@pytest.mark.parametrize("command", [("union", "card"), ("ship", "union", "add")])
def test_new_commands_have_help_with_an_example(command: tuple[str, ...]) -> None:
    """New commands explain themselves with an Example, like every other."""
    code, out, _ = _cli(*command, "--help")
    assert code == 0
    assert "Example" in out
