"""The union's store encrypted at rest by default.

'union init' sets the store's passphrase (``--passphrase-file``, the file named by
``VESSEL_RELAY_UNION_PASSPHRASE_FILE``, or typed twice), so the first report fetched is
already sealed; a store left in clear by an older version makes 'union fetch' and
'union web' refuse (exit 78, naming 'union encrypt') unless the union says it accepts
that, with ``--allow-plaintext`` or ``allow_plaintext_store = true`` in union.toml.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from common.codebooks import default_codebook
from shore.union.cli import PASSPHRASE_FILE_ENV
from shore.union.inbox import UnionInbox
from shore.union.keys import SETTINGS, init_union, load_union
from shore.union.vault import WrongPassphrase
from vessel_relay.cli import app
from vessel_relay.demo.setup import prepare_union, union_passphrase_path

runner = CliRunner()
PASSPHRASE = "harbour lamp kettle north"
#: a relay address nothing listens on: a fetch that passes the store check fails there
NOWHERE = "http://127.0.0.1:9"


def _init(directory: Path, *extra: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(
        app,
        ["union", "init", "--dir", str(directory), "--id", "7", "--relay", NOWHERE, *extra],
        input=stdin,
    )
    return result.exit_code, result.stdout, result.stderr


def _secret_file(path: Path, text: str) -> Path:
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def _opens_with(directory: Path, passphrase: str) -> bool:
    """Whether the union's store is encrypted and opens with ``passphrase``."""
    inbox = UnionInbox(load_union(directory), default_codebook())
    try:
        if not inbox.encrypted:
            return False
        try:
            inbox.unlock(passphrase)
        except WrongPassphrase:
            return False
        return True
    finally:
        inbox.close()


def test_init_makes_an_encrypted_store_from_a_passphrase_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A union set up with --passphrase-file has union.db encrypted before any report: the
    passphrase opens it and another does not; --passphrase-file wins over the variable."""
    monkeypatch.setenv(PASSPHRASE_FILE_ENV, str(_secret_file(tmp_path / "env", "x" * 20)))
    named = _secret_file(tmp_path / "pass", PASSPHRASE)
    code, out, err = _init(tmp_path / "union", "--passphrase-file", str(named))
    assert code == 0, err
    assert "is encrypted at rest" in out
    assert _opens_with(tmp_path / "union", PASSPHRASE)
    assert not _opens_with(tmp_path / "union", "x" * 20)


def test_init_reads_the_passphrase_from_the_variable_or_asks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service sets VESSEL_RELAY_UNION_PASSPHRASE_FILE; a person types the passphrase
    (here on stdin): both give an encrypted store."""
    monkeypatch.setenv(PASSPHRASE_FILE_ENV, str(_secret_file(tmp_path / "env", PASSPHRASE)))
    code, _, err = _init(tmp_path / "service")
    assert code == 0, err
    assert _opens_with(tmp_path / "service", PASSPHRASE)
    monkeypatch.delenv(PASSPHRASE_FILE_ENV)
    code, _, err = _init(tmp_path / "person", stdin=PASSPHRASE + "\n")
    assert code == 0, err
    assert _opens_with(tmp_path / "person", PASSPHRASE)


@pytest.mark.parametrize("given", ["", "short words"], ids=["none", "eleven characters"])
def test_init_refuses_a_short_passphrase_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    """No passphrase, or one under 12 characters, is refused with a sentence before any key
    is made, so the union can simply run 'union init' again."""
    monkeypatch.delenv(PASSPHRASE_FILE_ENV, raising=False)
    code, _, err = _init(tmp_path / "union", stdin=given + "\n")
    assert code == 1
    assert "at least 12 characters" in err
    assert not (tmp_path / "union").exists()
    code, _, err = _init(tmp_path / "union", stdin=PASSPHRASE + "\n")
    assert code == 0, err


def test_a_missing_passphrase_file_is_named(tmp_path: Path) -> None:
    """--passphrase-file naming a file that is not there says so, and makes no keys."""
    code, _, err = _init(tmp_path / "union", "--passphrase-file", str(tmp_path / "nope"))
    assert code == 1
    assert f"--passphrase-file names {tmp_path / 'nope'}" in err
    assert not (tmp_path / "union").exists()


def test_fetch_and_web_refuse_a_store_in_clear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store left in clear by an older version: 'union fetch' and 'union web' exit 78 and
    name 'union encrypt'; reading what is there ('union list') still works; after 'union
    encrypt', fetch gets past the check (and here finds no relay)."""
    monkeypatch.delenv(PASSPHRASE_FILE_ENV, raising=False)
    union = init_union(tmp_path / "union", 7, "Fishers' Union", NOWHERE)
    where = ["--dir", str(union.directory)]
    added = runner.invoke(app, ["union", "user", "add", "thida", *where], input="tide table 1983\n")
    assert added.exit_code == 0, added.output
    for command in ("fetch", "web"):
        refused = runner.invoke(app, ["union", command, *where])
        assert refused.exit_code == 78, refused.output
        assert "is not encrypted at rest" in refused.stderr
        assert f"vessel-relay union encrypt --dir {union.directory}" in refused.stderr
    listed = runner.invoke(app, ["union", "list", *where])
    assert listed.exit_code == 0, listed.output
    encrypted = runner.invoke(app, ["union", "encrypt", *where], input=PASSPHRASE + "\n")
    assert encrypted.exit_code == 0, encrypted.output
    fetched = runner.invoke(app, ["union", "fetch", *where], input=PASSPHRASE + "\n")
    assert fetched.exit_code == 1
    assert "not encrypted" not in fetched.stderr
    assert "relay" in fetched.stderr


def test_a_union_may_accept_a_store_in_clear_explicitly(tmp_path: Path) -> None:
    """--allow-plaintext, or allow_plaintext_store = true in union.toml, lets fetch run on a
    store in clear (it then fails only on the missing relay); a value that is not true or
    false in union.toml is a configuration error (78)."""
    union = init_union(tmp_path / "union", 7, "Fishers' Union", NOWHERE)
    where = ["--dir", str(union.directory)]
    flagged = runner.invoke(app, ["union", "fetch", *where, "--allow-plaintext"])
    assert flagged.exit_code == 1
    assert "not encrypted at rest" not in flagged.stderr
    settings = union.directory / SETTINGS
    plain = settings.read_text(encoding="utf-8")
    settings.write_text(plain + "allow_plaintext_store = true\n", encoding="utf-8")
    assert load_union(union.directory).allow_plaintext_store
    configured = runner.invoke(app, ["union", "fetch", *where])
    assert configured.exit_code == 1
    assert "not encrypted at rest" not in configured.stderr
    settings.write_text(plain + 'allow_plaintext_store = "yes"\n', encoding="utf-8")
    wrong = runner.invoke(app, ["union", "fetch", *where])
    assert wrong.exit_code == 78
    assert "allow_plaintext_store (if there) as true or false" in wrong.stderr


def test_the_demo_union_is_encrypted_with_a_passphrase_file_in_its_work_directory(
    tmp_path: Path,
) -> None:
    """The demo runs unattended: its union's store is encrypted under a random passphrase
    kept 0600 in the work directory, the same on a second run; a demo union from an older
    run, still in clear, is encrypted on the next."""
    prepare_union(tmp_path / "union")
    path = union_passphrase_path(tmp_path / "union")
    assert path.parent == tmp_path
    assert os.stat(path).st_mode & 0o777 == 0o600
    passphrase = path.read_text(encoding="utf-8").strip()
    assert len(passphrase) >= 12
    assert _opens_with(tmp_path / "union", passphrase)
    prepare_union(tmp_path / "union")
    assert path.read_text(encoding="utf-8").strip() == passphrase
    assert _opens_with(tmp_path / "union", passphrase)

    older = tmp_path / "older"
    init_union(older / "union", 1, "Demo Union", NOWHERE)
    prepare_union(older / "union")
    assert _opens_with(older / "union", union_passphrase_path(older / "union").read_text().strip())
