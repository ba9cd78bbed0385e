"""The demo's work directory: fresh keys (none published), reused on a second run, and a
directory the demo did not make is refused (regression: issue 18, part 4)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from common.keyfiles import PUBLISHED_DEMO_KEYS
from shipboard.config import load_config as load_ship_config
from shipboard.crew import CrewRegister
from shipboard.outbox import Outbox
from shore.config import load_config as load_relay_config
from shore.store import SqliteStore
from vessel_relay.cli import app
from vessel_relay.demo.setup import (
    DEMO_CREW,
    MARKER,
    DemoDirectoryRefused,
    Tuning,
    VesselSetup,
    claim_workdir,
    prepare_relay,
    prepare_union,
    prepare_vessel,
    register_vessels,
)


def _prepare(work: Path, port: int) -> VesselSetup:
    relay = prepare_relay(
        work / "relay",
        broker_url=f"mqtt://127.0.0.1:{port}",
        mqtt_version="5",
        smtp_host="127.0.0.1",
        smtp_port=port + 1,
        fast=True,
    )
    vessel = prepare_vessel(
        work / "vessel-1",
        vessel_id=1,
        broker_url=f"mqtt://127.0.0.1:{port}",
        mqtt_version="5",
        shore_public_key=relay.shore_public_key,
        union=prepare_union(work / "union"),
        crew=DEMO_CREW,
        http_port=port + 2,
        smtp_port=port + 3,
        tuning=Tuning(),
    )
    asyncio.run(register_vessels(relay, [vessel]))
    return vessel


def test_a_second_run_keeps_keys_stores_and_crew(tmp_path: Path) -> None:
    """Preparing the same work directory twice (new ports) keeps the shore, union and vessel
    keys, the registration and the crew numbers and contacts, gives new PINs, and writes no
    published demo key anywhere: 'ship run' and 'shore run' would accept these files."""
    work = tmp_path / "demo"
    assert claim_workdir(work) is False
    first = _prepare(work, 20000)
    keys = {p: p.read_bytes() for p in work.rglob("*.key")}
    assert claim_workdir(work) is True
    second = _prepare(work, 21000)
    assert {p: p.read_bytes() for p in work.rglob("*.key")} == keys
    assert second.public_key_hex == first.public_key_hex
    assert [(c.crew, c.contact) for c in second.crew] == [(c.crew, c.contact) for c in first.crew]
    assert [c.pin for c in second.crew] != [c.pin for c in first.crew]
    config = load_ship_config(second.config_path)
    assert config.intake.http_port == 21002
    outbox = Outbox.open(config.database_path, 1)
    try:
        assert len(CrewRegister(outbox).members()) == len(DEMO_CREW)
        login = second.crew[0]
        assert CrewRegister(outbox).sign_in(login.crew, login.pin).member.crew == login.crew
    finally:
        outbox.close()
    load_relay_config(work / "relay" / "relay.toml")

    async def registered() -> int:
        store = await SqliteStore.open(work / "relay" / "relay.db")
        try:
            return len(await store.list_vessels())
        finally:
            await store.close()

    assert asyncio.run(registered()) == 1
    for path in (p for p in work.rglob("*") if p.is_file()):
        data = path.read_bytes()
        assert not any(k in data or k.hex().encode() in data for k in PUBLISHED_DEMO_KEYS), path


def test_a_directory_the_demo_did_not_make_is_refused(tmp_path: Path) -> None:
    """A real relay's data directory (or any non-empty one without the demo's marker), a
    file, and a directory with a foreign marker are refused; 'vessel-relay demo' exits 2
    and leaves the directory as it was."""
    foreign = tmp_path / "relay-data"
    foreign.mkdir()
    (foreign / "relay.toml").write_text("[relay]\n", encoding="utf-8")
    with pytest.raises(DemoDirectoryRefused, match="not made by 'vessel-relay demo'"):
        claim_workdir(foreign)
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(DemoDirectoryRefused, match="not a directory"):
        claim_workdir(afile)
    marked = tmp_path / "marked"
    marked.mkdir()
    (marked / MARKER).write_text('{"kind": "other"}')
    with pytest.raises(DemoDirectoryRefused, match="not the demo's marker"):
        claim_workdir(marked)
    result = CliRunner().invoke(app, ["demo", "--link", "fast", "--workdir", str(foreign)])
    assert result.exit_code == 2
    assert "was not made by 'vessel-relay demo'" in result.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["relay.toml"]
