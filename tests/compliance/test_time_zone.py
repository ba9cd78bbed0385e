"""Report months are UTC even when the vessel charges quotas in its own time zone, so the
agent's figures and the shore's log count every message in the same month."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from protocol.languages import Language
from protocol.quota import RULE_MONTHLY_TEXT_BYTES
from shipboard.crew import CrewRegister
from shipboard.outbox import Outbox
from shipboard.profiles import IRIDIUM_CERTUS
from shipboard.report import build_statement
from shore.store.transparency_log import month_of_minutes
from tests.shore.store_fixtures import VESSEL_KEY


def test_a_message_at_local_new_year_counts_in_the_utc_month(tmp_path: Path) -> None:
    """A vessel on Bangkok time: a message written at 03:00 on 1 November local time
    (20:00 on 31 October UTC) is charged to the November quota on board, but counted in
    October's report, the month the shore's log puts it in."""
    outbox = Outbox.open(tmp_path / "outbox.sqlite3", 4242)
    try:
        outbox.use_time_zone(ZoneInfo("Asia/Bangkok"))
        at = datetime(2026, 10, 31, 20, tzinfo=UTC).timestamp()
        register = CrewRegister(outbox)
        member, _ = register.add(
            name="Aung Min", document="SB-1", nationality="MM", language=Language.MYA, now=at
        )
        contact = register.add_contact(
            member.crew, channel="email", address="m@example.org", name=None, language=None, now=at
        )
        outbox.accept_message(
            crew=member.crew,
            contact=contact.contact,
            lang=Language.ENG,
            now=at,
            quota_bytes=RULE_MONTHLY_TEXT_BYTES,
            body="hello",
        )
        with outbox.reading() as db:
            [(quota_month,)] = db.execute("SELECT month FROM messages").fetchall()
        assert quota_month == 202611  # charged to November's quota on board

        def offered(month: int) -> int:
            statement = build_statement(
                outbox,
                month,
                quota_bytes=RULE_MONTHLY_TEXT_BYTES,
                profile=IRIDIUM_CERTUS,
                vessel_key=VESSEL_KEY,
                now=at,
            )
            return sum(c.offered_bytes for c in statement.crew)

        assert offered(202610) == 5
        assert offered(202611) == 0
        assert month_of_minutes(int(at // 60)) == 202610  # the shore's leaf month
    finally:
        outbox.close()
