"""Operator commands (dashboard, operator accounts, log options) and the log formatter."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from common.logs import (
    JsonFormatter,
    LogSetupError,
    batch_scope,
    configure_logging,
    message_scope,
)
from shore.dashboard.auth import OperatorFileError, read_operators, verify_password
from vessel_relay.cli import app

runner = CliRunner()


def shore(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, ["shore", *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def relay(tmp_path: Path) -> Path:
    code, _out, err = shore("init", "--data", str(tmp_path / "relay"))
    assert code == 0, err
    return tmp_path / "relay" / "relay.toml"


def test_new_commands_have_help_with_an_example() -> None:
    """``shore dashboard`` and ``shore operator add`` explain themselves with an Example;
    ``shore run`` and ``ship run`` list the log and metrics options."""
    for command in (("dashboard",), ("operator", "add")):
        code, out, _ = shore(*command, "--help")
        assert code == 0, command
        assert "Example" in out, command
    for side in ("shore", "ship"):
        result = runner.invoke(app, [side, "run", "--help"])
        assert result.exit_code == 0
        for option in ("--log-format", "--log-level", "--metrics-port"):
            assert option in result.stdout, (side, option)


def test_operator_add_stores_a_hash_readable_only_by_the_relay(relay: Path) -> None:
    """The password is read from stdin, stored as an Argon2id hash in a 0600 file, and never
    echoed; a short password is refused with a one-line reason."""
    code, out, err = shore(
        "operator", "add", "amara", "-c", str(relay), stdin="a long passphrase\n"
    )
    assert code == 0, err
    path = relay.parent / "operators.txt"
    assert path.stat().st_mode & 0o777 == 0o600
    assert "a long passphrase" not in path.read_text() + out
    stored = read_operators(path)["amara"]
    assert stored.startswith("$argon2id$")
    assert verify_password("a long passphrase", stored)
    assert not verify_password("a long passphras", stored)
    code, _out, err = shore("operator", "add", "bo", "-c", str(relay), stdin="short\n")
    assert code == 1
    assert err.strip() == "error: the password must have at least 10 characters"


def test_operators_file_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(OperatorFileError, match="shore operator add"):
        read_operators(tmp_path / "missing.txt")
    bad = tmp_path / "operators.txt"
    bad.write_text("amara plain-password\n")
    with pytest.raises(OperatorFileError, match="line 1: expected NAME:scrypt"):
        read_operators(bad)


def test_unknown_log_format_is_refused(relay: Path) -> None:
    code, _out, err = shore("run", "-c", str(relay), "--log-format", "xml")
    assert code == 2  # a usage error: --log-format is a choice (typer refuses it)
    assert "'xml' is not one of 'text', 'json'" in err
    with pytest.raises(LogSetupError):
        configure_logging("json", "loud")


async def test_correlation_ids_follow_each_task_and_nest() -> None:
    """Two tasks working on different batches log their own ids; a message scope inside
    a batch scope keeps the batch; outside every scope no id is written."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    configure_logging("json", "info", stream=stream)
    log = logging.getLogger("test.ops")
    try:

        async def work(vessel_id: int, batch_seq: int) -> None:
            with batch_scope(vessel_id, batch_seq):
                await asyncio.sleep(0)
                log.info("batch")
                with message_scope(vessel_id, batch_seq * 10):
                    await asyncio.sleep(0)
                    log.info("message")

        await asyncio.gather(work(7, 1), work(8, 2))
        log.info("outside")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)
        root.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    seen = {(line["message"], line.get("correlation_id"), line.get("batch_seq")) for line in lines}
    assert seen == {
        ("batch", "b7.1", 1),
        ("batch", "b8.2", 2),
        ("message", "m7.10", 1),
        ("message", "m8.20", 2),
        ("outside", None, None),
    }


def test_json_formatter_writes_no_extra_fields() -> None:
    """``extra=`` fields (where a careless caller might put text) are not written."""
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "sent %d", (3,), None)
    record.text = "SECRET words"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "sent 3"
    assert "SECRET" not in json.dumps(line)


def test_metrics_port_in_use_is_a_one_line_error(relay: Path) -> None:
    """Two workers given the same --metrics-port: the second says so and exits."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _out, err = shore("run", "-c", str(relay), "--metrics-port", str(port))
    assert code == 1
    assert f"error: cannot serve /metrics on 127.0.0.1:{port}" in err


def test_logs_follow_stderr_when_it_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set up on one stderr, which is then closed and replaced (a test runner's capture,
    a daemon's redirect): the next line goes to the live stderr, not into a closed file."""
    first = io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    configure_logging("text", "info")
    first.close()
    second = io.StringIO()
    monkeypatch.setattr("sys.stderr", second)
    logging.getLogger("test.ops").info("after the swap")
    assert "after the swap" in second.getvalue()
