"""CLI: ``vessel-relay dict train/list`` and ``vessel-relay inspect``, driven by typer's CliRunner.

Errors are one line on stderr and exit code 1, never a traceback; ``inspect`` checks the
signature unless told ``--no-verify``; every command's help gives an example.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import zstandard
from typer.testing import CliRunner

from common.codebooks import default_codebook
from protocol.batch import Direction, encode_batch
from protocol.envelopes import CrewMessage, DeliveryReceipt, ReceiptStage
from protocol.languages import Language
from protocol.signing import SigningKey
from vessel_relay.cli import app, full_command

runner = CliRunner()
from tests.kit.corpus import CORPUS  # noqa: E402

VESSEL_KEY = SigningKey(bytes(range(32)))
SHORE_KEY = SigningKey(bytes(range(1, 33)))


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _batch(direction: Direction = Direction.UPLINK) -> bytes:
    if direction is Direction.UPLINK:
        envelopes: list[object] = [
            CrewMessage(
                message_seq=5,
                crew=1,
                contact=2,
                written_minutes=100,
                lang=Language.MYA,
                body="မင်္ဂလာပါ အမေ",
            )
        ]
        key = VESSEL_KEY
    else:
        envelopes = [DeliveryReceipt(5, ReceiptStage.DELIVERED, 100)]
        key = SHORE_KEY
    return encode_batch(
        envelopes,  # type: ignore[arg-type]
        direction=direction,
        vessel_id=42,
        batch_seq=1831,
        batch_minutes=110,
        signing_key=key,
        codebook=default_codebook(),
    )


@pytest.fixture
def batch_file(tmp_path: Path) -> Path:
    path = tmp_path / "batch.bin"
    path.write_bytes(_batch())
    return path


# --- inspect -----------------------------------------------------------------------------------


def test_inspect_prints_a_verified_batch(batch_file: Path) -> None:
    """With the vessel's key, inspect prints the header, frames and envelopes."""
    code, out, err = _run("inspect", str(batch_file), "--vessel-key", VESSEL_KEY.verify_key.hex())
    assert code == 0, err
    assert "batch 1831 from vessel 42" in out
    assert "signature verified" in out
    assert "မင်္ဂလာပါ အမေ" in out
    assert '"kind": "crew_message"' in out


def test_inspect_reads_the_key_from_a_file_and_prints_json(
    batch_file: Path, tmp_path: Path
) -> None:
    """--vessel-key may name a file; --json prints one object a script can read."""
    key_file = tmp_path / "vessel.pub"
    key_file.write_text(VESSEL_KEY.verify_key.hex() + "\n")
    code, out, err = _run("inspect", str(batch_file), "--vessel-key", str(key_file), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["verified"] is True
    assert summary["batch_seq"] == 1831
    assert summary["bytes"] == batch_file.stat().st_size
    assert summary["envelopes"][0]["body"] == "မင်္ဂလာပါ အမေ"


def test_inspect_downlink_needs_the_shore_key(tmp_path: Path) -> None:
    """A downlink batch is checked with --shore-key; without it inspect says which to give."""
    path = tmp_path / "down.bin"
    path.write_bytes(_batch(Direction.DOWNLINK))
    code, out, _ = _run("inspect", str(path), "--shore-key", SHORE_KEY.verify_key.hex())
    assert code == 0
    assert "delivery_receipt" in out
    code, _, err = _run("inspect", str(path), "--vessel-key", VESSEL_KEY.verify_key.hex())
    assert code == 2
    assert "give --shore-key or --no-verify" in err


def test_inspect_opens_a_compact_frame_with_the_relays_key(tmp_path: Path) -> None:
    """A compact SBD frame is encrypted: inspect asks for the vessel's public key and the
    relay's shore key file, then prints it with "tag verified"; a wrong vessel key is
    the typed one-line refusal."""
    from common.keyfiles import write_secret
    from protocol.compact import LinkKeys, encode_compact

    keys = LinkKeys.for_vessel(42, VESSEL_KEY, SHORE_KEY.verify_key)
    message = CrewMessage(
        message_seq=5, crew=1, contact=2, written_minutes=100, lang=Language.MYA, body="နေကောင်းလား"
    )
    frame = encode_compact(
        [message], keys=keys, batch_seq=7, batch_minutes=110, codebook=default_codebook()
    )
    path = tmp_path / "frame.bin"
    path.write_bytes(frame)
    shore_file = tmp_path / "shore.key"
    write_secret(shore_file, SHORE_KEY.seed)
    vessel = VESSEL_KEY.verify_key.hex()
    code, _, err = _run("inspect", str(path), "--vessel-key", vessel)
    assert code == 2
    assert "--shore-secret-key" in err
    code, out, err = _run(
        "inspect", str(path), "--vessel-key", vessel, "--shore-secret-key", str(shore_file)
    )
    assert code == 0, err
    assert "compact batch 7 from vessel 42: 50 bytes, 1 envelopes, tag verified" in out
    assert "နေကောင်းလား" in out
    other = SigningKey(b"\x09" * 32).verify_key.hex()
    code, out, err = _run(
        "inspect", str(path), "--vessel-key", other, "--shore-secret-key", str(shore_file)
    )
    assert code == 1
    assert "does not match the link keys" in err
    assert "Traceback" not in out + err


def test_inspect_no_verify_says_so(batch_file: Path) -> None:
    """--no-verify decodes without a key and says loudly that nothing was checked."""
    code, out, _ = _run("inspect", str(batch_file), "--no-verify")
    assert code == 0
    assert "SIGNATURE NOT CHECKED" in out


def test_inspect_without_a_key_refuses(batch_file: Path) -> None:
    """No key and no --no-verify: a usage error (exit 2) naming the option to give."""
    code, _, err = _run("inspect", str(batch_file))
    assert code == 2
    assert "give --vessel-key or --no-verify" in err


def test_inspect_wrong_key_exits_1_with_the_typed_message(batch_file: Path) -> None:
    """A batch signed by another key: the SignatureInvalid sentence, no traceback."""
    other = SigningKey(b"\x09" * 32).verify_key.hex()
    code, out, err = _run("inspect", str(batch_file), "--vessel-key", other)
    assert code == 1
    assert "does not match the key we hold" in err
    assert "Traceback" not in out + err


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "truncated or not a batch"),
        (b"\x07" + bytes(80), "not a vessel-relay batch"),
        (_batch()[:-70], "truncated|cut short|stray|signature"),
    ],
    ids=["empty", "not-a-batch", "truncated"],
)
def test_inspect_malformed_file_exits_1(tmp_path: Path, content: bytes, words: str) -> None:
    """Malformed input exits 1 with the typed error's message and never a traceback."""
    path = tmp_path / "bad.bin"
    path.write_bytes(content)
    code, out, err = _run("inspect", str(path), "--no-verify")
    assert code == 1
    assert err.startswith("error: ")
    assert "Traceback" not in out + err
    assert re.search(words, err), err


def test_inspect_bad_key_text_and_missing_file(batch_file: Path, tmp_path: Path) -> None:
    """A key that is not hex and a file that is not there are one-line errors too."""
    code, _, err = _run("inspect", str(batch_file), "--vessel-key", "not-hex")
    assert code == 1
    assert "hex digits" in err
    code, _, err = _run("inspect", str(tmp_path / "nope.bin"), "--no-verify")
    assert code == 1
    assert "cannot read" in err


# --- dict ----------------------------------------------------------------------------------------


def test_dict_train_writes_a_zstd_dictionary(tmp_path: Path) -> None:
    """dict train makes a dictionary zstandard can load, with the id asked for."""
    out_file = tmp_path / "eng.dict"
    code, out, err = _run(
        "dict",
        "train",
        str(CORPUS / "eng.train.txt"),
        "--size",
        "4K",
        "--id",
        "9",
        "-o",
        str(out_file),
    )
    assert code == 0, err
    assert f"wrote {out_file}" in out
    assert "read " in err  # progress goes to stderr
    dictionary = zstandard.ZstdCompressionDict(out_file.read_bytes())
    assert dictionary.dict_id() == 9
    assert len(out_file.read_bytes()) <= 4096


def test_dict_train_context_model(tmp_path: Path) -> None:
    """--codec context trains a character model that loads back."""
    from protocol.context_model import ContextModel

    out_file = tmp_path / "eng.ctx"
    code, _, err = _run(
        "dict", "train", str(CORPUS / "eng.dev.txt"), "--codec", "context", "-o", str(out_file)
    )
    assert code == 0, err
    ContextModel.from_bytes(out_file.read_bytes())


def test_dict_train_refuses_too_little_text(tmp_path: Path) -> None:
    """Too few lines is a one-line error, exit 1, no file written."""
    lines = tmp_path / "few.txt"
    lines.write_text("one\ntwo\n")
    out_file = tmp_path / "few.dict"
    code, out, err = _run("dict", "train", str(lines), "-o", str(out_file))
    assert code == 1
    assert "at least 8 non-empty lines" in err
    assert "Traceback" not in out + err
    assert not out_file.exists()


def test_dict_train_bad_size(tmp_path: Path) -> None:
    """A size that is not like 16K is refused with the expected form."""
    code, _, err = _run(
        "dict", "train", str(CORPUS / "eng.dev.txt"), "--size", "lots", "-o", str(tmp_path / "x")
    )
    assert code == 1
    assert "not like 16K" in err


def test_dict_list_shows_the_shipped_codebook() -> None:
    """dict list shows every shipped entry; --json gives ids, codecs and hashes."""
    code, out, _ = _run("dict", "list")
    assert code == 0
    assert "zstd" in out
    assert "context" in out
    code, out, _ = _run("dict", "list", "--json")
    entries = json.loads(out)
    assert len(entries) == len(default_codebook())
    assert {entry["codec"] for entry in entries} == {"zstd", "context"}
    assert all(len(str(entry["sha256"])) == 64 for entry in entries)


def test_dict_list_missing_manifest(tmp_path: Path) -> None:
    """A folder without a manifest: one line saying how to make one."""
    code, _, err = _run("dict", "list", "--directory", str(tmp_path))
    assert code == 1
    assert "train-defaults" in err


# --- help ---------------------------------------------------------------------------------


def _commands(group: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths of every leaf command (typer vendors its own click, so duck-type groups)."""
    subcommands = getattr(group, "commands", None)
    if isinstance(subcommands, dict) and subcommands:
        found: list[tuple[str, ...]] = []
        for name, command in subcommands.items():
            found += _commands(command, (*path, name))
        return found
    return [path]


def test_every_command_has_help_with_an_example() -> None:
    """Every command of vessel-relay (all groups) has help text with an "Example".

    The help text is what --help prints (checked for real on three commands below);
    rendering all of them through the runner would cost a second each on a busy machine.
    """
    root = full_command()  # every group loaded (the root imports each one on first use)
    commands = _commands(root)
    assert ("inspect",) in commands
    assert ("dict", "train") in commands
    missing = []
    for path in commands:
        command: object = root
        for name in path:
            command = command.commands[name]  # type: ignore[attr-defined]
        if "Example" not in (getattr(command, "help", None) or ""):
            missing.append(" ".join(path))
    assert not missing, f"commands without an Example in --help: {missing}"


@pytest.mark.parametrize("path", [("inspect",), ("dict", "train"), ("dict", "list")])
def test_help_prints_the_example(path: tuple[str, ...]) -> None:
    """--help really prints the example line."""
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0
    assert "Example: vessel-relay " + " ".join(path) in result.stdout
