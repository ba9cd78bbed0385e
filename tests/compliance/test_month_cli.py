"""The report commands on a real month: the owner's 'ship report', the relay operator's
'shore report' and 'shore fleet-report', then the inspector's 'report verify' on the files."""

from __future__ import annotations

import csv
import json
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path

import nacl.public
import pytest
from typer.testing import CliRunner

from common.keyfiles import write_secret
from protocol.compliance import AgentStatement, ComplianceReport
from protocol.quota import RULE_MONTHLY_TEXT_BYTES
from tests.compliance.month import CREW, OTHER_VESSEL, VESSEL, Month
from tests.shore.store_fixtures import SHORE_KEY, VESSEL_KEY
from vessel_relay.cli import app

runner = CliRunner()
VESSEL_SEED = bytes(range(32))  # VESSEL_KEY
SHORE_SEED = bytes(range(2, 34))  # SHORE_KEY


@dataclass(frozen=True)
class Installed:
    ship_config: Path
    relay_config: Path


def _copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of a closed SQLite database (WAL folded in)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


def _invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def installed(month: Month, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """A vessel and a relay set up with 'init', holding the simulated month's data and keys."""
    base = tmp_path_factory.mktemp("cli")
    union_key = bytes(nacl.public.PrivateKey.generate().public_key).hex()
    code, _, err = _invoke(
        "ship", "init", "--data", str(base / "ship"), "--vessel-id", str(VESSEL),
        "--broker", "mqtt://127.0.0.1:1883", "--shore-key", SHORE_KEY.verify_key.hex(),
        "--union", "Fishers' Union", "--union-key", union_key,
    )  # fmt: skip
    assert code == 0, err
    (base / "ship" / "vessel.key").unlink()
    write_secret(base / "ship" / "vessel.key", VESSEL_SEED)
    _copy_sqlite(month.outbox_path, base / "ship" / "outbox.sqlite3")
    code, _, err = _invoke("shore", "init", "--data", str(base / "relay"))
    assert code == 0, err
    (base / "relay" / "shore.key").unlink()
    write_secret(base / "relay" / "shore.key", SHORE_SEED)
    assert month.store_path is not None
    _copy_sqlite(month.store_path, base / "relay" / "relay.db")
    return Installed(base / "ship" / "ship.toml", base / "relay" / "relay.toml")


def test_owner_inspector_round_trip(installed: Installed, month: Month, tmp_path: Path) -> None:
    """The owner writes the vessel's signed statement for October; the relay operator builds
    the report from it in four formats; the inspector verifies the JSON with public keys
    only, and the figures are the same as those of the report built in the library."""
    code, out, err = _invoke(
        "ship", "report", "--month", "2026-10", "--config", str(installed.ship_config),
        "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    assert f"({CREW} crew members)" in out
    statement_path = tmp_path / f"agent-statement-{VESSEL}-2026-10.json"
    statement = AgentStatement.from_obj(json.loads(statement_path.read_text(encoding="utf-8")))
    VESSEL_KEY.verify_key.verify(statement.signed_bytes(), statement.signature, what="statement")
    assert [c.to_obj() for c in statement.crew] == [c.to_obj() for c in month.statement.crew]
    assert statement.batches == month.statement.batches
    assert all(c.quota_bytes == RULE_MONTHLY_TEXT_BYTES for c in statement.crew)

    code, out, err = _invoke(
        "shore", "report", "--vessel", str(VESSEL), "--month", "2026-10",
        "--statement", str(statement_path), "--config", str(installed.relay_config),
        "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    assert "rule met; 0 disagreements listed" in out
    stem = tmp_path / f"compliance-{VESSEL}-2026-10"
    for suffix in (".json", ".csv", ".html", ".pdf"):
        assert f"written: {stem}{suffix}" in out
    report = ComplianceReport.from_json(Path(f"{stem}.json").read_bytes())
    assert report.shore_crew == month.report.shore_crew
    assert report.rule == month.report.rule
    assert [p.leaf for p in report.leaves] == [p.leaf for p in month.report.leaves]
    assert Path(f"{stem}.pdf").read_bytes().startswith(b"%PDF-")
    html = Path(f"{stem}.html").read_text(encoding="utf-8")
    digest = report.head.head.digest().hex()
    assert "Crew 1" in html
    assert digest[:32] in html
    assert digest[32:] in html
    with open(f"{stem}.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == CREW
    shore = {c.crew: c for c in month.report.shore_crew}
    for row in rows:
        assert int(row["sent_bytes_ashore"]) == shore[int(row["crew"])].sent_bytes
        assert row["sent_bytes_on_board"] == row["sent_bytes_ashore"]

    code, out, err = _invoke(
        "report", "verify", f"{stem}.json",
        "--shore-key", SHORE_KEY.verify_key.hex(), "--vessel-key", VESSEL_KEY.verify_key.hex(),
    )  # fmt: skip
    assert code == 0, out + err
    assert "OK: the report verifies" in out
    assert f"{len(month.report.leaves)} logged batches" in out

    # the statement of another vessel's key does not pass as this vessel's
    code, out, _ = _invoke(
        "report", "verify", f"{stem}.json",
        "--shore-key", SHORE_KEY.verify_key.hex(), "--vessel-key", SHORE_KEY.verify_key.hex(),
    )  # fmt: skip
    assert code == 1
    assert "FAIL: the vessel's signature over the agent's statement is invalid" in out


def test_report_without_statement_and_fleet(installed: Installed, tmp_path: Path) -> None:
    """Without the vessel's statement the shore's report says the rule cannot be met and
    still verifies; the fleet summary has one line per vessel with its logged batches."""
    code, out, err = _invoke(
        "shore", "report", "--vessel", str(OTHER_VESSEL), "--month", "2026-10",
        "--config", str(installed.relay_config), "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    assert "rule NOT met" in out
    path = tmp_path / f"compliance-{OTHER_VESSEL}-2026-10.json"
    report = ComplianceReport.from_json(path.read_bytes())
    assert len(report.leaves) == 2
    assert any("no agent statement" in note for note in report.notes)
    code, out, _ = _invoke("report", "verify", str(path), "--shore-key", SHORE_KEY.verify_key.hex())
    assert code == 0, out
    code, out, err = _invoke(
        "shore", "fleet-report", "--month", "2026-10", "--config", str(installed.relay_config)
    )
    assert code == 0, err
    lines = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert lines[str(OTHER_VESSEL)][-4:] == ["2", "1", "24", lines[str(OTHER_VESSEL)][-1]]
    assert int(lines[str(VESSEL)][-4]) > 0


def test_report_commands_explain_mistakes(installed: Installed, tmp_path: Path) -> None:
    """An unknown vessel: one line, exit 1; a bad month is a usage error: one line, exit 2."""
    code, _, err = _invoke(
        "shore", "report", "--vessel", "999", "--month", "2026-10",
        "--config", str(installed.relay_config), "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 1
    assert "vessel 999 is not registered" in err
    code, _, err = _invoke(
        "shore", "report", "--vessel", str(VESSEL), "--month", "October",
        "--config", str(installed.relay_config),
    )  # fmt: skip
    assert code == 2
    assert err.startswith("error:")
    code, _, err = _invoke(
        "ship", "report", "--month", "2026-13", "--config", str(installed.ship_config)
    )
    assert code == 2
    assert err.startswith("error:")
    code, _, err = _invoke(
        "shore", "fleet-report", "--month", "2026-10", "--config", str(tmp_path / "none.toml")
    )
    assert code == 78
    assert err.startswith("error:")


WITNESS_SEED = bytes(range(100, 132))


def test_witness_cosigns_a_head_and_the_report_carries_it(
    installed: Installed, month: Month, tmp_path: Path
) -> None:
    """The relay operator lists the signed heads for a labour office; the office checks
    the shore's signature and co-signs the latest; the relay keeps the co-signature; the
    next report's head carries it, and the inspector can demand that witness."""
    from protocol.signing import SigningKey

    relay = str(installed.relay_config)
    heads_json = tmp_path / "heads.json"
    code, out, err = _invoke("shore", "log", "heads", "--config", relay, "--json", str(heads_json))
    assert code == 0, err
    listed = json.loads(heads_json.read_text())
    assert len(listed) >= 30  # a head a day, and the reports' own
    assert listed[-1]["digest"] in out
    write_secret(tmp_path / "ilo.key", WITNESS_SEED)
    witness_public = SigningKey.from_seed(WITNESS_SEED).verify_key.hex()
    shore_public = SHORE_KEY.verify_key.hex()

    code, out, err = _invoke(
        "report", "cosign", str(heads_json), "--key", str(tmp_path / "ilo.key"),
        "--witness", "ILO", "--shore-key", shore_public, "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    [cosignature] = tmp_path.glob("cosignature-*.json")
    code, out, err = _invoke("shore", "log", "add-cosignature", str(cosignature), "--config", relay)
    assert code == 0, err
    code, out, _ = _invoke("shore", "log", "heads", "--config", relay)
    assert out.splitlines()[-1].endswith("  ILO")

    statement = tmp_path / "statement.json"
    statement.write_text(json.dumps(month.statement.to_obj()))
    code, out, err = _invoke(
        "shore", "report", "--vessel", str(VESSEL), "--month", "2026-10",
        "--statement", str(statement), "--config", relay, "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    report_path = str(tmp_path / f"compliance-{VESSEL}-2026-10.json")
    code, out, _ = _invoke(
        "report", "verify", report_path, "--shore-key", shore_public,
        "--witness", f"ILO={witness_public}",
    )  # fmt: skip
    assert code == 0, out
    code, out, _ = _invoke(
        "report", "verify", report_path, "--shore-key", shore_public,
        "--witness", f"ILO={witness_public}", "--witness", f"UNION={shore_public}",
    )  # fmt: skip
    assert code == 1
    assert "FAIL: the tree head is not co-signed by witness 'UNION'" in out


def test_witness_refuses_a_forged_or_split_head(installed: Installed, tmp_path: Path) -> None:
    """A head whose root was changed is not signed by the shore key, and a file with two
    heads of one size and different roots shows a split view: the witness refuses both,
    and the relay refuses a co-signature of a head it never signed."""
    from protocol.compliance import SignedTreeHead, TreeHead, cosign
    from protocol.signing import SigningKey
    from shore.reports import cosignature_file

    relay = str(installed.relay_config)
    heads_json = tmp_path / "heads.json"
    assert _invoke("shore", "log", "heads", "--config", relay, "--json", str(heads_json))[0] == 0
    listed = json.loads(heads_json.read_text())
    write_secret(tmp_path / "w.key", WITNESS_SEED)
    real = SignedTreeHead.from_obj(listed[-1])
    # a forged root, its checkpoint text rewritten to match (else it is refused as altered)
    forged = replace(real, head=replace(real.head, root=bytes(32))).to_obj()
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    args = ["--key", str(tmp_path / "w.key"), "--witness", "ILO"]
    shore_public = SHORE_KEY.verify_key.hex()
    code, _, err = _invoke(
        "report", "cosign", str(tmp_path / "forged.json"), *args, "--shore-key", shore_public
    )
    assert code == 1
    assert "REFUSED: the head of size" in err
    (tmp_path / "split.json").write_text(json.dumps([*listed, forged]))
    code, _, err = _invoke(
        "report", "cosign", str(tmp_path / "split.json"), *args, "--shore-key", shore_public
    )
    assert code == 1
    assert "two heads of size" in err
    head = SignedTreeHead.from_obj(forged)
    bogus = cosign(head, "ILO", SigningKey.from_seed(WITNESS_SEED))
    (tmp_path / "bogus.json").write_bytes(cosignature_file(head, bogus))
    code, _, err = _invoke(
        "shore", "log", "add-cosignature", str(tmp_path / "bogus.json"), "--config", relay
    )
    assert code == 1
    assert "the shore never signed a head" in err
    assert isinstance(head.head, TreeHead)


def test_witness_software_cosigns_the_checkpoint_note(installed: Installed, tmp_path: Path) -> None:
    """Witness software that speaks only the C2SP formats gets the latest head as a
    checkpoint signed note, appends its tlog-cosignature line (made here from the spec,
    not with vessel-relay's code), and the relay keeps it; the next checkpoint carries it.
    A note with no line of the named witness is refused, saying which witness to name."""
    import base64
    import hashlib

    from protocol.signing import SigningKey

    relay = str(installed.relay_config)
    note_path = tmp_path / "checkpoint.txt"
    code, out, err = _invoke(
        "shore", "log", "checkpoint", "--config", relay, "--out", str(note_path)
    )
    assert code == 0, err
    note = note_path.read_bytes()
    body = note.split(b"\n\n")[0] + b"\n"
    assert body.split(b"\n")[0].decode().startswith("vessel-relay.log/")
    name, witness = "witness.example.org/w1", SigningKey.from_seed(bytes(range(60, 92)))
    public = witness.verify_key.key
    stamp = 1_800_000_000
    signature = witness.sign(b"cosignature/v1\ntime %d\n" % stamp + body)
    key_id = hashlib.sha256(name.encode() + b"\n\x04" + public).digest()[:4]
    blob = base64.b64encode(key_id + stamp.to_bytes(8, "big") + signature).decode()
    cosigned = tmp_path / "cosigned.txt"
    cosigned.write_bytes(note + f"\u2014 {name} {blob}\n".encode())

    code, _, err = _invoke("shore", "log", "add-cosignature", str(cosigned), "--config", relay)
    assert code == 1
    assert "give --witness NAME=KEY" in err
    code, out, err = _invoke(
        "shore", "log", "add-cosignature", str(cosigned), "--config", relay,
        "--witness", f"{name}={public.hex()}",
    )  # fmt: skip
    assert code == 0, err
    assert f"co-signature of {name!r} kept" in out
    code, out, err = _invoke("shore", "log", "checkpoint", "--config", relay)
    assert code == 0, err
    assert f"\u2014 {name} {blob}\n" in out


def test_the_owner_can_leave_sign_in_weeks_out_for_an_older_relay(
    installed: Installed, tmp_path: Path
) -> None:
    """The owner's statement carries the weeks each crew member signed in on board; for a
    relay of the release before (which would not know the field and so find the vessel's
    signature wrong) '--no-weekly-access' writes the statement without them, signed as
    that relay expects."""
    for flag, folder in (("--weekly-access", "with"), ("--no-weekly-access", "without")):
        code, _, err = _invoke(
            "ship", "report", "--month", "2026-10", "--config", str(installed.ship_config),
            "--out", str(tmp_path / folder), flag,
        )  # fmt: skip
        assert code == 0, err
    name = f"agent-statement-{VESSEL}-2026-10.json"
    with_weeks = json.loads((tmp_path / "with" / name).read_text(encoding="utf-8"))
    without = json.loads((tmp_path / "without" / name).read_text(encoding="utf-8"))
    assert "signed_in_weeks" in with_weeks
    assert "signed_in_weeks" not in without
    older = AgentStatement.from_obj(without)
    assert older.signed_in() is None
    VESSEL_KEY.verify_key.verify(older.signed_bytes(), older.signature, what="statement")


def test_the_owner_can_leave_bytes_per_crew_and_link_out_for_an_older_relay(
    installed: Installed, tmp_path: Path
) -> None:
    """The owner's statement carries each crew member's bytes per link; for a relay of the
    release before (which would not know the field and so find the vessel's signature
    wrong) '--no-per-crew-link' writes the statement without them, signed as that relay
    expects."""
    for flag, folder in (("--per-crew-link", "with"), ("--no-per-crew-link", "without")):
        code, _, err = _invoke(
            "ship", "report", "--month", "2026-10", "--config", str(installed.ship_config),
            "--out", str(tmp_path / folder), flag,
        )  # fmt: skip
        assert code == 0, err
    name = f"agent-statement-{VESSEL}-2026-10.json"
    with_links = json.loads((tmp_path / "with" / name).read_text(encoding="utf-8"))
    without = json.loads((tmp_path / "without" / name).read_text(encoding="utf-8"))
    assert isinstance(with_links.get("crew_links"), list)
    assert "crew_links" not in without
    older = AgentStatement.from_obj(without)
    assert older.crew_links is None
    VESSEL_KEY.verify_key.verify(older.signed_bytes(), older.signature, what="statement")
    newer = AgentStatement.from_obj(with_links)
    VESSEL_KEY.verify_key.verify(newer.signed_bytes(), newer.signature, what="statement")
