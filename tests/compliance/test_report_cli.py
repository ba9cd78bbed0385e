"""``vessel-relay report verify``: an inspector checks a report file with public keys only."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from typer.testing import CliRunner

from tests.compliance.month import Month
from tests.shore.store_fixtures import SHORE_KEY, VESSEL_KEY
from vessel_relay.cli import app


def test_verify_ok_and_fail(month: Month, tmp_path: Path) -> None:
    """The honest file prints OK; a file with a changed figure prints FAIL and exits 1."""
    good = tmp_path / "report.json"
    good.write_bytes(month.report.to_json())
    runner = CliRunner()
    shore = SHORE_KEY.verify_key.hex()
    result = runner.invoke(
        app,
        [
            "report",
            "verify",
            str(good),
            "--shore-key",
            shore,
            "--vessel-key",
            VESSEL_KEY.verify_key.hex(),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "OK: the report verifies" in result.output
    assert "rule met" in result.output
    crew = month.report.shore_crew[0]
    bad = tmp_path / "bad.json"
    altered = replace(
        month.report, shore_crew=(replace(crew, failed_bytes=0), *month.report.shore_crew[1:])
    )
    bad.write_bytes(altered.to_json())
    result = runner.invoke(app, ["report", "verify", str(bad), "--shore-key", shore])
    assert result.exit_code == 1
    assert (
        "FAIL: the shore's signature over the report does not match its contents" in result.output
    )


def test_verify_unreadable_file(tmp_path: Path) -> None:
    """A file that is not a report gets one sentence, not a traceback."""
    junk = tmp_path / "junk.json"
    junk.write_text("{}")
    result = CliRunner().invoke(app, ["report", "verify", str(junk), "--shore-key", "00" * 32])
    assert result.exit_code == 1
    assert "is not a readable compliance report" in result.output
