"""A relay holding one of the demo's published keys refuses to start outside the demo, and
its configuration errors exit 78 so a service manager stops restarting it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from common.keyfiles import write_secret
from protocol.signing import SigningKey
from shore.config import ConfigError, load_config
from vessel_relay.cli import app
from vessel_relay.demo.keys import DEMO_SHORE_SEED, DEMO_UNION_SEED

runner = CliRunner()


def shore(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["shore", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def relay(tmp_path: Path) -> Path:
    code, _, err = shore("init", "--data", str(tmp_path / "relay"))
    assert code == 0, err
    return tmp_path / "relay" / "relay.toml"


def test_shore_run_refuses_the_demo_shore_key(relay: Path) -> None:
    """A relay whose shore.key holds the demo seed (as the old demo wrote it) exits 78 at
    'shore run', naming the key file, the key and how to make a new one; the demo's
    allowance still reads the same config."""
    key_path = relay.parent / "shore.key"
    key_path.unlink()
    write_secret(key_path, DEMO_SHORE_SEED)
    code, _, err = shore("run", "-c", str(relay))
    assert code == 78
    assert f"shore_key {key_path} holds the demo shore key (Ed25519)" in err
    assert "vessel-relay shore keygen" in err
    assert load_config(relay, allow_demo_keys=True).relay.shore_key == "shore.key"


def test_a_union_registered_with_a_demo_key_is_refused(relay: Path) -> None:
    """A [[union_api.unions]] entry whose signing key is made from a demo seed: refused."""
    demo = SigningKey.from_seed(DEMO_UNION_SEED).verify_key.hex()
    with relay.open("a", encoding="utf-8") as toml:
        toml.write(f"\n[[union_api.unions]]\nid = 4\nname = 'Demo'\npublic_key = '{demo}'\n")
    with pytest.raises(ConfigError, match=r"id 4 public_key is the demo union key \(Ed25519\)"):
        load_config(relay)


def test_shore_init_prints_the_public_key_again_when_it_keeps_the_key(relay: Path) -> None:
    """Run again, 'shore init' keeps the key and prints its public half once more, so the
    operator can give it to vessels and inspectors."""
    code, out, _ = shore("init", "--data", str(relay.parent))
    assert code == 0
    assert "(kept)" in out
    match = re.search(r"public key: ([0-9a-f]{64})", out)
    assert match
    assert load_config(relay).relay.shore_key == "shore.key"


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("missing", "cannot read"),
        ("not toml", "not valid TOML"),
        ("bad key", "[store] backend = 'mysql'"),
        ("open key file", "readable by others"),
    ],
)
def test_configuration_errors_exit_78(relay: Path, damage: str, expected: str) -> None:
    """A missing or broken config file, a bad setting and a shore key file readable by
    others each end 'shore run' with exit 78 (EX_CONFIG) and one line saying what is wrong."""
    if damage == "missing":
        relay.unlink()
    elif damage == "not toml":
        relay.write_text("[relay\n", encoding="utf-8")
    elif damage == "bad key":
        text = relay.read_text(encoding="utf-8")
        relay.write_text(text.replace('backend = "sqlite"', "backend = 'mysql'"), encoding="utf-8")
    else:
        (relay.parent / "shore.key").chmod(0o644)
    code, _, err = shore("run", "-c", str(relay))
    assert code == 78, err
    assert expected in err
    assert err.startswith("error: ")
