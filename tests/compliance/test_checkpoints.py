"""Tree heads as C2SP checkpoints and witness co-signatures as C2SP tlog-cosignatures, so
existing witness software can check and co-sign them; reports of older relays still verify."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from protocol.compliance import (
    ComplianceReport,
    Cosignature,
    HeadAltered,
    ReportInvalid,
    SignedTreeHead,
    TreeHead,
    cosign,
    cosignature_valid,
    log_origin,
    note_key_id,
    sign_tree_head,
    verify_report,
)
from protocol.signing import SigningKey
from tests.compliance.month import Month
from tests.shore.store_fixtures import SHORE_KEY
from vessel_relay.cli import app

WITNESS = SigningKey.from_seed(bytes(range(7, 39)))
ORIGIN = log_origin(SHORE_KEY.verify_key.key)
ROOT = hashlib.sha256(b"a root").digest()


def test_signed_note_signature_is_the_go_reference_vector() -> None:
    """The key id and signature line follow C2SP signed-note exactly: the example key and
    note of Go's golang.org/x/mod/sumdb/note give its published signature line."""
    seed = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")[1:]
    key = SigningKey.from_seed(seed)
    text = (
        b"If you think cryptography is the answer to your problem,\n"
        b"then you don't know what your problem is.\n"
    )
    key_id = note_key_id("PeterNeumann", key.verify_key.key, 0x01)
    assert key_id.hex() == "c74f20a3"
    assert base64.b64encode(key_id + key.sign(text)).decode() == (
        "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
    )


def test_a_head_is_a_checkpoint_signed_note() -> None:
    """A signed head reads as a C2SP checkpoint: origin, size, base64 root, a time line;
    a blank line; the shore's signature line (key id of the origin and shore key), and a
    witness's tlog-cosignature line (key id type 0x04, 8-byte time, Ed25519 over
    'cosignature/v1', the time and the checkpoint)."""
    head = sign_tree_head(TreeHead(20852163, ROOT, 29_000_000, ORIGIN), SHORE_KEY)
    witnessed = replace(head, witnesses=(cosign(head, "union.example.org/w1", WITNESS),))
    lines = witnessed.note().split("\n")
    assert lines[:5] == [ORIGIN, "20852163", base64.b64encode(ROOT).decode(), "time 1740000000", ""]
    name, blob = lines[5].removeprefix("\u2014 ").split(" ")
    assert name == ORIGIN
    raw = base64.b64decode(blob)
    assert raw[:4] == note_key_id(ORIGIN, SHORE_KEY.verify_key.key, 0x01)
    SHORE_KEY.verify_key.verify(head.head.signed_bytes(), raw[4:], what="checkpoint")
    name, blob = lines[6].removeprefix("\u2014 ").split(" ")
    raw = base64.b64decode(blob)
    assert name == "union.example.org/w1"
    assert raw[:4] == note_key_id(name, WITNESS.verify_key.key, 0x04)
    stamp = int.from_bytes(raw[4:12], "big")
    assert stamp == 1_740_000_000
    message = b"cosignature/v1\ntime 1740000000\n" + head.head.signed_bytes()
    WITNESS.verify_key.verify(message, raw[12:], what="cosignature")
    assert lines[7:] == [""]


def test_heads_round_trip_and_an_altered_checkpoint_is_refused() -> None:
    """A head read back from its JSON is the same head; a head whose fields were changed
    without its checkpoint text (or the other way round) is refused as altered."""
    head = sign_tree_head(TreeHead(5, ROOT, 29_000_000, ORIGIN), SHORE_KEY)
    head = replace(head, witnesses=(cosign(head, "ilo", WITNESS, now_s=1_740_000_100),))
    assert SignedTreeHead.from_obj(head.to_obj()) == head
    with pytest.raises(HeadAltered, match="altered"):
        SignedTreeHead.from_obj(dict(head.to_obj(), tree_size=6))
    text = str(head.to_obj()["checkpoint"]).replace("\n5\n", "\n6\n")
    with pytest.raises(HeadAltered):
        SignedTreeHead.from_obj(dict(head.to_obj(), checkpoint=text))
    with pytest.raises(ReportInvalid, match="without spaces"):
        TreeHead(5, ROOT, 1, "two words")


def test_cosignatures_are_bound_to_their_head_and_format() -> None:
    """A co-signature checks only against the head it signed; an older relay's witness
    signature is not taken for a checkpoint co-signature, nor the other way round."""
    head = sign_tree_head(TreeHead(5, ROOT, 29_000_000, ORIGIN), SHORE_KEY)
    good = cosign(head, "ilo", WITNESS)
    assert cosignature_valid(head.head, good)
    assert not cosignature_valid(replace(head.head, tree_size=6), good)
    assert not cosignature_valid(head.head, replace(good, timestamp_s=good.timestamp_s + 1))
    legacy_head = sign_tree_head(TreeHead(5, ROOT, 29_000_000), SHORE_KEY)
    legacy = cosign(legacy_head, "ilo", WITNESS)
    assert legacy.timestamp_s is None
    assert cosignature_valid(legacy_head.head, legacy)
    assert not cosignature_valid(head.head, legacy)
    stolen = Cosignature("ilo", legacy.public_key, good.signature, None)
    assert not cosignature_valid(legacy_head.head, stolen)


def _legacy(head: SignedTreeHead) -> SignedTreeHead:
    older = TreeHead(head.head.tree_size, head.head.root, head.head.timestamp_minutes)
    return sign_tree_head(older, SHORE_KEY)


def test_a_report_made_by_an_older_relay_still_verifies(month: Month, tmp_path: Path) -> None:
    """A report of version 1 (tree heads in the older relay's own format) reads and verifies
    with the shore's key, offline, and fails with another key; so does one of version 2
    (checkpoint heads, no weekly access); today's reports are version 3 with checkpoint
    heads and weekly access."""
    report = month.report
    assert report.version == 3
    assert report.weekly is not None
    assert report.head.head.origin == ORIGIN
    version_2 = replace(report, weekly=None).signed(SHORE_KEY)
    data_2 = version_2.to_json()
    assert b'"version": 2' in data_2
    assert b"weekly_access" not in data_2
    again_2 = ComplianceReport.from_json(data_2)
    assert verify_report(again_2, shore_key=SHORE_KEY.verify_key.key) == []
    older = replace(
        report,
        head=_legacy(report.head),
        earlier_heads=tuple(replace(e, head=_legacy(e.head)) for e in report.earlier_heads),
    ).signed(SHORE_KEY)
    data = older.to_json()
    assert b'"version": 1' in data
    assert b"checkpoint" not in data
    again = ComplianceReport.from_json(data)
    assert verify_report(again, shore_key=SHORE_KEY.verify_key.key) == []
    assert verify_report(again, shore_key=WITNESS.verify_key.key) != []
    path = tmp_path / "older.json"
    path.write_bytes(data)
    result = CliRunner().invoke(
        app, ["report", "verify", str(path), "--shore-key", SHORE_KEY.verify_key.hex()]
    )
    assert result.exit_code == 0, result.output
    assert "OK: the report verifies" in result.stdout
    assert "report version 1, made by an older relay" in result.stdout


def test_a_report_of_a_newer_version_says_so(month: Month, tmp_path: Path) -> None:
    """A report made by a newer vessel-relay than the inspector's is not called broken: the
    inspector is told to update vessel-relay."""
    data = month.report.to_json().replace(b'"version": 3', b'"version": 4')
    path = tmp_path / "newer.json"
    path.write_bytes(data)
    result = CliRunner().invoke(
        app, ["report", "verify", str(path), "--shore-key", SHORE_KEY.verify_key.hex()]
    )
    assert result.exit_code == 1
    assert "made by a newer vessel-relay" in result.stderr
    assert "update vessel-relay" in result.stderr
