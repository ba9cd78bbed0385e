"""``report verify`` needs a trust anchor: an inspector who forgets the shore's key is told
how to get it instead of being told a forgery verifies (regression: issue 18, part 3)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from typer.testing import CliRunner

from protocol.compliance import ComplianceReport, verify_report
from protocol.evidence import fingerprint
from protocol.signing import SigningKey
from tests.compliance.month import Month
from tests.shore.store_fixtures import SHORE_KEY
from vessel_relay.cli import app

runner = CliRunner()
SHORE = SHORE_KEY.verify_key.key
STRANGER = SigningKey.from_seed(bytes(range(100, 132)))


def _verify(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["report", "verify", *args])
    return result.exit_code, result.stdout, result.stderr


def _write(path: Path, report: ComplianceReport) -> str:
    path.write_bytes(report.to_json())
    return str(path)


def test_without_a_shore_key_nothing_is_called_verified(month: Month, tmp_path: Path) -> None:
    """An honest report, one re-signed by a stranger and one with a changed figure: without
    --shore-key or --shore-key-file each is a usage error (exit 2) that says where to get the
    shore's key, and none prints OK."""
    crew = month.report.shore_crew[0]
    altered = replace(
        month.report, shore_crew=(replace(crew, sent_bytes=1), *month.report.shore_crew[1:])
    )
    reports = {
        "honest": month.report,
        "re-signed": altered.signed(STRANGER),
        "altered": altered,
    }
    for name, report in reports.items():
        code, out, err = _verify(_write(tmp_path / f"{name}.json", report))
        assert code == 2, name
        assert "OK" not in out
        assert "give --shore-key HEX or --shore-key-file FILE" in err
        assert "'vessel-relay shore init' prints it" in err


def test_a_report_signed_by_another_key_fails_naming_both_fingerprints(
    month: Month, tmp_path: Path
) -> None:
    """A report re-signed with a stranger's key fails against the shore's key; the output
    names the signer's fingerprint and the expected one. Against the stranger's key it fails
    too (the head is still the shore's), so no key makes a forgery pass."""
    forged = _write(tmp_path / "forged.json", month.report.signed(STRANGER))
    code, out, _ = _verify(forged, "--shore-key", SHORE.hex())
    assert code == 1
    signer, expected = fingerprint(STRANGER.verify_key.key), fingerprint(SHORE)
    assert (
        f"FAIL: the report is signed by the key with fingerprint {signer}, not by the shore "
        f"key you trust (fingerprint {expected})"
    ) in out
    assert f"signer:  the report names shore key fingerprint {signer}" in out
    assert "OK" not in out
    code, out, _ = _verify(forged, "--shore-key", STRANGER.verify_key.hex())
    assert code == 1
    assert "the shore's signature is invalid" in out


def test_the_right_key_passes_and_the_signer_is_shown(month: Month, tmp_path: Path) -> None:
    """With the shore's key (as hex, or pinned in a file) the honest report verifies, and
    both the signer's and the trusted key's fingerprints are printed; giving both options,
    or a key file that cannot be read, is refused."""
    good = _write(tmp_path / "report.json", month.report)
    code, out, _ = _verify(good, "--shore-key", SHORE.hex())
    assert code == 0, out
    assert f"OK: the report verifies, signed by the shore key {fingerprint(SHORE)}" in out
    assert f"signer:  the report names shore key fingerprint {fingerprint(SHORE)}" in out
    pinned = tmp_path / "shore.pub"
    pinned.write_text(SHORE.hex() + "\n", encoding="ascii")
    code, out, _ = _verify(good, "--shore-key-file", str(pinned))
    assert code == 0, out
    code, _, err = _verify(good, "--shore-key", SHORE.hex(), "--shore-key-file", str(pinned))
    assert code == 2
    assert "not both" in err
    code, _, err = _verify(good, "--shore-key-file", str(tmp_path / "missing.pub"))
    assert code == 78
    assert "cannot read the key file" in err
    pinned.write_text("not a key", encoding="ascii")
    code, _, err = _verify(good, "--shore-key-file", str(pinned))
    assert code == 2
    assert "64 hex digits" in err


def test_a_report_made_before_reports_named_their_signer_still_verifies(month: Month) -> None:
    """Reports signed before the signer's key was part of the report keep verifying with the
    right key and keep failing with a wrong one."""
    unnamed = replace(month.report, shore_public_key=None)
    old = replace(unnamed, shore_signature=SHORE_KEY.sign(unnamed.signed_bytes()))
    again = ComplianceReport.from_json(old.to_json())
    assert again.shore_public_key is None
    assert b"shore_public_key" not in old.to_json()
    assert verify_report(again, shore_key=SHORE) == []
    assert verify_report(again, shore_key=STRANGER.verify_key.key) != []
