"""Golden agent statements: fixed signed statements of each shape the agent has written
(before the optional fields, with weekly access and figures per link, with bytes per crew
member and link), stored as JSON in ``tests/compliance/golden/statements.json``.

The test checks both ways: every stored statement still reads and still verifies under the
vessel key (an old agent's statement must keep verifying at every relay after it), and the
statements built here from the same figures are byte-identical to the stored ones (Ed25519
signatures are deterministic), so a change to the signed form shows up as a failing test
rather than as statements that silently stop verifying. Regenerate only for a deliberate
new shape (never to make an old one pass)::

    .venv/bin/python -m tests.compliance.test_statement_golden --regenerate
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from protocol.compliance import AgentCrew, AgentStatement, CrewLink, LinkFigures
from protocol.errors import ProtocolError
from tests.shore.store_fixtures import VESSEL_KEY

GOLDEN_FILE = Path(__file__).with_name("golden") / "statements.json"

_CREW = (
    AgentCrew(1, "Aung Min", "SB-1", "MMR", 4_000, 3_500, 3_400, 100, 1_048_576),
    AgentCrew(2, "Sok Dara", "SB-2", "KHM", 900, 900, 900, 0, 1_048_576),
)
_LINK = LinkFigures("iridium-certus", 6, 30_100, 40_960, 409_600, batch_bytes=9_000)
_LINKS = (
    LinkFigures("iridium-certus", 4, 20_000, 30_720, 307_200, failed_sessions=1),
    LinkFigures("iridium-sbd", 1, 600, 600, 1_920_000),
    LinkFigures("port-4g", 1, 9_500, 9_500, 4_750),
)
_BASE = AgentStatement(
    vessel_id=4242,
    month=202610,
    made_minutes=29_853_000,
    crew=_CREW,
    link=_LINK,
    days_at_sea=27,
    grievance_lane_daily=True,
    batches=((1, bytes(range(32))), (2, bytes(range(1, 33)))),
)


def built() -> dict[str, AgentStatement]:
    """The golden statements, built and signed here."""
    weekly = replace(_BASE, signed_in_weeks=((1, (202640, 202641)), (2, ())), links=_LINKS)
    crew_links = replace(
        weekly,
        crew_links=(
            CrewLink(1, "iridium-certus", 2_500, 4_100, 13_994),
            CrewLink(1, "port-4g", 1_000, 1_700, 1_700),
            CrewLink(2, "iridium-certus", 900, 1_300, 4_437),
        ),
    )
    return {
        "before-optional-fields": _BASE.signed(VESSEL_KEY),
        "weekly-access-and-links": weekly.signed(VESSEL_KEY),
        "bytes-per-crew-and-link": crew_links.signed(VESSEL_KEY),
    }


def read_golden() -> dict[str, object]:
    stored: dict[str, object] = json.loads(GOLDEN_FILE.read_text(encoding="utf-8"))
    return stored


def write_golden() -> None:
    GOLDEN_FILE.parent.mkdir(exist_ok=True)
    data = {name: statement.to_obj() for name, statement in built().items()}
    GOLDEN_FILE.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")


@pytest.mark.parametrize("name", sorted(built()))
def test_a_stored_statement_still_reads_and_verifies(name: str) -> None:
    """An agent statement written by any release, as stored, reads back into the same
    figures and its vessel signature verifies (relays keep accepting old agents)."""
    obj = read_golden()[name]
    statement = AgentStatement.from_obj(obj)
    VESSEL_KEY.verify_key.verify(statement.signed_bytes(), statement.signature, what="statement")
    assert statement.to_obj() == obj


@pytest.mark.parametrize("name", sorted(built()))
def test_the_signed_form_has_not_changed(name: str) -> None:
    """The statement built today from the golden figures is the stored one, byte for byte
    (a change to the signed form would make every older statement fail to verify)."""
    assert built()[name].to_obj() == read_golden()[name]


def test_a_stored_statement_with_a_changed_count_fails() -> None:
    """A crew member's bytes on a link raised by one in a stored statement: the vessel
    signature no longer verifies."""
    obj = read_golden()["bytes-per-crew-and-link"]
    assert isinstance(obj, dict)
    obj["crew_links"][0]["text_bytes"] += 1
    statement = AgentStatement.from_obj(obj)
    with pytest.raises(ProtocolError):
        VESSEL_KEY.verify_key.verify(statement.signed_bytes(), statement.signature, what="x")


if __name__ == "__main__":
    if sys.argv[1:] == ["--regenerate"]:
        write_golden()
        print(f"wrote {GOLDEN_FILE}")
    else:
        print(__doc__)
