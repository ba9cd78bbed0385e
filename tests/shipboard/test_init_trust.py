"""A real vessel gets no demo key: ``ship init`` as the README shows it, unions from their
cards (checked by fingerprint), and configs holding a published demo key refused at start."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nacl.public
import pytest
from typer.testing import CliRunner

from common.keyfiles import PUBLISHED_DEMO_KEYS, write_secret
from protocol.evidence import fingerprint
from protocol.signing import SigningKey
from shipboard.config import ConfigError, load_config, to_toml
from shore.union.keys import init_union
from tests.kit.ship_config import own_keys_document
from vessel_relay.cli import app
from vessel_relay.demo.defaults import demo_ship_document
from vessel_relay.demo.keys import (
    DEMO_SHORE_SEED,
    DEMO_UNION_SEED,
    demo_shore_signing_key,
    demo_union_public_key,
)

runner = CliRunner()


def _cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _demo_traces(directory: Path) -> list[str]:
    """Every file under ``directory`` that holds a demo seed, a published key or the demo's
    union name, with what it holds."""
    needles: dict[bytes, str] = {}
    for secret, what in ((DEMO_SHORE_SEED, "demo shore seed"), (DEMO_UNION_SEED, "union seed")):
        needles[secret] = what
        needles[secret.hex().encode()] = what
    for key, what in PUBLISHED_DEMO_KEYS.items():
        needles[key] = what
        needles[key.hex().encode()] = what
    needles[b"Demo Union"] = "the demo union's name"
    needles[b"demo key"] = "a demo key's label"
    found = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path}: {what}" for needle, what in needles.items() if needle in data]
    return found


def _shore_public_key(init_output: str) -> str:
    match = re.search(r"public key: ([0-9a-f]{64})", init_output)
    assert match, init_output
    return match.group(1)


def test_ship_init_as_the_readme_shows_writes_no_demo_key(tmp_path: Path) -> None:
    """The README's "relay and agent against a local Mosquitto" steps: shore init, ship
    init with the broker and the printed shore key, vessel and crew registered. Nothing
    either wrote holds a demo seed, a published demo key or the demo union's name; the
    vessel trusts exactly the shore key it was given and has no union yet, so 'ship run'
    refuses to start (exit 78) and says how to add the crew's union."""
    shore, ship = tmp_path / "shore", tmp_path / "ship"
    code, out, err = _cli("shore", "init", "--data", str(shore))
    assert code == 0, err
    shore_key = _shore_public_key(out)
    code, out, err = _cli(
        "ship", "init", "--data", str(ship), "--vessel-id", "1", "--name", "Sea Star 7",
        "--broker", "mqtt://127.0.0.1:1883", "--shore-key", shore_key,
    )  # fmt: skip
    assert code == 0, err
    vessel_key = re.search(r"vessel public key:\s+([0-9a-f]{64})", out)
    assert vessel_key, out
    assert "union: none yet" in out
    config_path = str(ship / "ship.toml")
    code, _, err = _cli(
        "shore", "vessel", "add", "Sea Star 7", "--flag", "TH", "--registration", "12345",
        "--owner", "Owner Co", "--public-key", vessel_key.group(1), "--id", "1",
        "-c", str(shore / "relay.toml"),
    )  # fmt: skip
    assert code == 0, err
    code, _, err = _cli(
        "ship", "crew", "add", "Aung Min", "--document", "SB-0012345", "--nationality", "MM",
        "--language", "mya", "-c", config_path,
    )  # fmt: skip
    assert code == 0, err
    code, _, err = _cli(
        "ship", "contact", "add", "1", "mother@example.org", "--name", "Mother",
        "--language", "mya", "-c", config_path,
    )  # fmt: skip
    assert code == 0, err

    assert _demo_traces(tmp_path) == []
    assert "demo" not in (ship / "ship.toml").read_text(encoding="utf-8").lower()
    config = load_config(ship / "ship.toml", require_union=False)
    assert config.shore.public_key_hex == shore_key
    assert config.unions == ()
    code, _, err = _cli("ship", "run", "-c", config_path)
    assert code == 78
    assert "ship union add --card" in err


def test_ship_init_without_a_shore_is_a_usage_error_that_points_to_the_demo(
    tmp_path: Path,
) -> None:
    """'ship init --data DIR' alone no longer makes a vessel trusting a demo shore: it
    exits 2, names the missing options, points to 'vessel-relay demo', and writes nothing."""
    code, _, err = _cli("ship", "init", "--data", str(tmp_path / "ship"))
    assert code == 2
    assert "--broker and --shore-key" in err
    assert "vessel-relay demo" in err
    assert not (tmp_path / "ship" / "ship.toml").exists()
    code, _, err = _cli(
        "ship", "init", "--data", str(tmp_path / "ship"), "--broker", "mqtt://127.0.0.1:1883"
    )
    assert code == 2
    assert "--shore-key" in err


def test_ship_init_refuses_the_demo_shore_key(tmp_path: Path) -> None:
    """Given the demo shore's key (whose private half is public), 'ship init' refuses with
    exit 78, names the key, and leaves no config behind."""
    code, _, err = _cli(
        "ship", "init", "--data", str(tmp_path), "--broker", "mqtt://127.0.0.1:1883",
        "--shore-key", demo_shore_signing_key().verify_key.hex(),
    )  # fmt: skip
    assert code == 78
    assert "shore.public_key is the demo shore key" in err
    assert not (tmp_path / "ship.toml").exists()


def test_union_card_is_checked_by_fingerprint_at_init_and_add(tmp_path: Path) -> None:
    """The owner gets the union's card file and reads its fingerprint off the union's
    printed card: a matching card goes into ship.toml and its fingerprint is printed; a card
    whose fingerprint differs, a card edited after it was made, or a card holding the demo
    union's key is refused (exit 78) and the config is left as it was."""
    union = init_union(tmp_path / "union", 7, "Fishers' Rights Network", "https://r.example")
    card = union.card_path
    printed = fingerprint(union.box_public)
    shore = SigningKey.from_seed(bytes(range(5, 37))).verify_key.hex()
    base = ("--broker", "mqtt://127.0.0.1:1883", "--shore-key", shore)

    wrong = fingerprint(bytes(32))
    code, _, err = _cli(
        "ship", "init", "--data", str(tmp_path / "a"), *base,
        "--union-card", str(card), "--union-fingerprint", wrong,
    )  # fmt: skip
    assert code == 78
    assert f"fingerprint is {printed}, not {wrong!r}" in err
    assert not (tmp_path / "a" / "ship.toml").exists()

    code, out, err = _cli(
        "ship", "init", "--data", str(tmp_path / "b"), *base,
        "--union-card", str(card), "--union-fingerprint", printed.upper().replace(" ", ""),
    )  # fmt: skip
    assert code == 0, err
    assert printed in out
    assert "matches the fingerprint you gave" in out
    config = load_config(tmp_path / "b" / "ship.toml")
    assert [(u.union_id, u.name, u.public_key) for u in config.unions] == [
        (7, "Fishers' Rights Network", union.box_public)
    ]

    edited = json.loads(card.read_text(encoding="utf-8"))
    edited["report_key"] = demo_union_public_key().hex()
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(edited), encoding="utf-8")
    code, _, err = _cli(
        "ship", "init", "--data", str(tmp_path / "c"), *base, "--union-card", str(forged)
    )
    assert code == 78
    assert "report_key_fingerprint does not match report_key" in err

    edited["report_key_fingerprint"] = fingerprint(demo_union_public_key())
    edited["union_id"] = 8
    forged.write_text(json.dumps(edited), encoding="utf-8")
    before = (tmp_path / "b" / "ship.toml").read_bytes()
    code, _, err = _cli(
        "ship", "union", "add", "--card", str(forged), "-c", str(tmp_path / "b" / "ship.toml")
    )
    assert code == 78
    assert "the demo union key" in err
    assert (tmp_path / "b" / "ship.toml").read_bytes() == before


def test_union_add_appends_to_an_existing_config_and_keeps_its_comments(tmp_path: Path) -> None:
    """A vessel set up without a union gets one with 'ship union add' (name and key); the
    owner's comments stay, 'ship union list' shows its fingerprint, the agent's loader now
    accepts the file, and adding the same union id again is refused."""
    ship = tmp_path / "ship"
    shore = SigningKey.from_seed(bytes(range(6, 38))).verify_key.hex()
    code, _, err = _cli(
        "ship", "init", "--data", str(ship), "--broker", "mqtt://127.0.0.1:1883",
        "--shore-key", shore,
    )  # fmt: skip
    assert code == 0, err
    path = ship / "ship.toml"
    path.write_text("# the owner's note\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(ConfigError, match="at least one union"):
        load_config(path)
    key = bytes(nacl.public.PrivateKey.generate().public_key)
    code, out, err = _cli(
        "ship", "union", "add", "--name", "Stella Maris", "--key", key.hex(), "--id", "3",
        "--language", "tha", "--language", "mya", "-c", str(path),
    )  # fmt: skip
    assert code == 0, err
    assert fingerprint(key) in out
    assert path.read_text(encoding="utf-8").startswith("# the owner's note\n")
    config = load_config(path)
    assert [(u.union_id, u.name, [lang.code for lang in u.languages]) for u in config.unions] == [
        (3, "Stella Maris", ["tha", "mya"])
    ]
    code, out, _ = _cli("ship", "union", "list", "-c", str(path))
    assert code == 0
    assert "Stella Maris" in out
    assert fingerprint(key) in out
    before = path.read_bytes()
    code, _, err = _cli(
        "ship", "union", "add", "--name", "Again", "--key", key.hex(), "--id", "3", "-c", str(path)
    )
    assert code == 78
    assert "listed twice" in err
    assert path.read_bytes() == before
    code, _, err = _cli("ship", "union", "add", "--name", "No key", "-c", str(path))
    assert code == 2
    assert "--key" in err


@pytest.mark.parametrize(
    ("demo", "named"),
    [
        (
            "union",
            "unions[0].public_key ('Demo Union (demo key: not secret)') is the demo union key",
        ),
        ("shore", "shore.public_key is the demo shore key"),
        ("vessel key", "holds the demo shore key (Ed25519)"),
    ],
)
def test_ship_run_refuses_a_config_with_a_demo_key(tmp_path: Path, demo: str, named: str) -> None:
    """A ship.toml as the old 'ship init' wrote it (the demo union), one trusting the demo
    shore key, and one whose vessel key file holds a demo seed: 'ship run' exits 78 before
    starting anything, naming the key and the fix; the demo's allowance reads the same file."""
    document = own_keys_document(tmp_path)
    demo_document = demo_ship_document(tmp_path)
    if demo == "union":
        document["unions"] = demo_document["unions"]
    elif demo == "shore":
        document["shore"]["public_key"] = demo_document["shore"]["public_key"]
    write_secret(
        tmp_path / "vessel.key", DEMO_SHORE_SEED if demo == "vessel key" else bytes(range(32))
    )
    path = tmp_path / "ship.toml"
    path.write_text(to_toml(document), encoding="utf-8")
    code, _, err = _cli("ship", "run", "--no-link", "-c", str(path))
    assert code == 78
    assert named in err
    assert "published" in err
    assert load_config(path, allow_demo_keys=True).vessel.vessel_id == 1
