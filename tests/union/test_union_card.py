"""The union's card: written by 'union init' with public keys only, read back by vessels,
refused when its fingerprints do not match its keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from protocol.evidence import fingerprint
from protocol.languages import Language
from protocol.union_card import UnionCard, UnionCardInvalid, same_fingerprint
from shore.union.keys import BOX_KEY, SIGN_KEY, load_union
from vessel_relay.cli import app

runner = CliRunner()


def test_union_init_writes_a_card_with_public_keys_only(tmp_path: Path) -> None:
    """'union init' prints both fingerprints and writes union-card.json: id, name, relay URL,
    languages and both public keys, no private key; 'union card' writes it again elsewhere."""
    directory = tmp_path / "union"
    result = runner.invoke(
        app,
        [
            "union", "init", "--dir", str(directory), "--id", "7", "--relay",
            "https://relay.example.org", "--name", "Fishers' Rights Network",
            "--language", "tha", "--language", "mya",
        ],
        input="sea wall lantern rope\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    identity = load_union(directory)
    card = UnionCard.from_json((directory / "union-card.json").read_bytes())
    assert card == identity.card
    assert (card.union_id, card.name, card.relay_url) == (
        7,
        "Fishers' Rights Network",
        "https://relay.example.org",
    )
    assert card.languages == (Language.THA, Language.MYA)
    assert card.report_key == identity.box_public
    assert fingerprint(identity.box_public) in result.stdout
    text = (directory / "union-card.json").read_text(encoding="utf-8")
    for private in (BOX_KEY, SIGN_KEY):
        assert (directory / private).read_text().strip() not in text
    copy = tmp_path / "copy.json"
    result = runner.invoke(app, ["union", "card", "--dir", str(directory), "-o", str(copy)])
    assert result.exit_code == 0, result.stderr
    assert UnionCard.from_json(copy.read_bytes()) == card


def test_a_card_must_match_its_fingerprints(tmp_path: Path) -> None:
    """A card round-trips; one whose key was swapped, that lacks a key, or that is not a card
    at all is refused with a sentence; fingerprints compare without spaces or case."""
    card = UnionCard(3, "Stella Maris", "https://r.example", bytes(range(32)), bytes(32), ())
    assert UnionCard.from_json(card.to_json()) == card
    assert same_fingerprint(card.report_fingerprint.upper().replace(" ", ""), card.report_key)
    assert not same_fingerprint("", card.report_key)
    obj = json.loads(card.to_json())
    obj["report_key"] = bytes(range(1, 33)).hex()
    with pytest.raises(UnionCardInvalid, match="report_key_fingerprint does not match"):
        UnionCard.from_json(json.dumps(obj).encode())
    del obj["report_key"]
    with pytest.raises(UnionCardInvalid, match="report_key must be 64 hex digits"):
        UnionCard.from_json(json.dumps(obj).encode())
    with pytest.raises(UnionCardInvalid, match="not a version 1 vessel-relay union card"):
        UnionCard.from_json(b'{"kind": "something else"}')
    with pytest.raises(UnionCardInvalid, match="not a JSON union card"):
        UnionCard.from_json(b"\xff")
    with pytest.raises(UnionCardInvalid, match="from 1 to 65535"):
        UnionCard(0, "x", "", bytes(32), bytes(32))


def test_a_union_directory_holding_a_demo_key_is_refused(tmp_path: Path) -> None:
    """A union whose report key file holds the demo union's published seed cannot be
    loaded: every command on it exits 78 and says to make new keys."""
    from common.keyfiles import write_secret
    from vessel_relay.demo.keys import DEMO_UNION_SEED

    directory = tmp_path / "union"
    made = runner.invoke(
        app,
        ["union", "init", "--dir", str(directory), "--id", "2", "--relay", "x"],
        input="sea wall lantern rope\n",
    )
    assert made.exit_code == 0, made.output
    (directory / BOX_KEY).unlink()
    write_secret(directory / BOX_KEY, DEMO_UNION_SEED)
    result = runner.invoke(app, ["union", "list", "--dir", str(directory)])
    assert result.exit_code == 78
    assert "holds the demo union key (X25519)" in result.stderr
    assert "vessel-relay union init --dir NEW --id 2" in result.stderr
