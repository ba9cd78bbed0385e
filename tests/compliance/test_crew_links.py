"""Bytes per crew member and link on the compliance report (issue 25): the agent keeps which
link carried each send of a batch, and the statement gives each crew member, per link, the
text the shore acknowledged over it and their share of the link's batch and billed bytes.
SOS, grievance reports and lane blocks are attributed to nobody."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from common.codebooks import default_codebook
from protocol.compliance import AgentStatement, ComplianceReport, CrewLink, verify_report
from protocol.errors import ProtocolError
from protocol.languages import Language
from protocol.quota import RULE_MONTHLY_TEXT_BYTES
from shipboard.crew import CrewRegister
from shipboard.outbox import Outbox
from shipboard.profiles import IRIDIUM_CERTUS
from shipboard.report import build_statement
from shipboard.sessions_log import LinkSession, SessionOutcome
from shore.report_render import render_csv, render_html
from shore.reports import build_report
from shore.store import SqliteStore, VesselInfo
from shore.transparency import sign_daily_head
from tests.shore.store_fixtures import (
    SHORE_KEY,
    VESSEL_KEY,
    decoded_downlink,
    decoded_uplink,
    shore_encoder,
)

VESSEL = 4545
OCTOBER = 202610
OCT_5 = datetime(2026, 10, 5, 6, tzinfo=UTC).timestamp()
A1 = "Hello mother, the catch was good this week and I am well."
B1 = "Brother, send news."
A2 = "In port tomorrow, will call."


@dataclass
class Month:
    statement: AgentStatement
    older: AgentStatement
    report: ComplianceReport
    batch_bytes: dict[str, int]  # by link: the bytes of the batch(es) sent over it
    sent: dict[int, int]  # crew -> sent bytes (the statement's crew figures)
    crew_a: int
    crew_b: int


def _session(profile: str, at: float, up: int, down: int, overhead: int) -> LinkSession:
    return LinkSession(
        started_at=at,
        ended_at=at + 30,
        outcome=SessionOutcome.DONE,
        uplink_payload_bytes=up,
        downlink_payload_bytes=down,
        overhead_bytes=overhead,
        profile=profile,
    )


async def _month(tmp: Path) -> Month:
    codebook = default_codebook()
    outbox = Outbox.open(tmp / "outbox.db", VESSEL)
    store = await SqliteStore.open(tmp / "shore.db")
    try:
        await store.add_vessel(
            VesselInfo("Sea Star 9", "TH", "TH-4545", "Owner Co."),
            VESSEL_KEY.verify_key.key,
            OCT_5 - 86_400,
            vessel_id=VESSEL,
        )
        register = CrewRegister(outbox)
        crew: list[int] = []
        contacts: list[int] = []
        for name, document in (("Aung Min", "SB-1"), ("Sok Dara", "SB-2")):
            member, _ = register.add(
                name=name, document=document, nationality="MMR", language=Language.ENG, now=OCT_5
            )
            contact = register.add_contact(
                member.crew,
                channel="email",
                address=f"{document}@example.org",
                name=None,
                language=None,
                now=OCT_5,
            )
            crew.append(member.crew)
            contacts.append(contact.contact)
        a, b = crew

        def write(who: int, body: str, at: float) -> int:
            return outbox.accept_message(
                crew=who,
                contact=contacts[crew.index(who)],
                lang=Language.ENG,
                now=at,
                quota_bytes=RULE_MONTHLY_TEXT_BYTES,
                body=body,
            ).message_seq

        async def ingest(data: bytes, at: float) -> None:
            await store.ingest_batch(decoded_uplink(data), data, at)

        now = OCT_5 + 600
        # A and B over the main link; the first send is lost, the second arrives
        main_batch, main_data = outbox.make_batch(
            [write(a, A1, OCT_5), write(b, B1, OCT_5)], codebook, VESSEL_KEY, now
        )
        outbox.mark_sent(main_batch, now, link="iridium-certus")
        outbox.mark_sent(main_batch, now + 60, link="iridium-certus")
        await ingest(main_data, now + 60)
        # A's second message over the harbour's 4G
        port_batch, port_data = outbox.make_batch(
            [write(a, A2, now)], codebook, VESSEL_KEY, now + 3600
        )
        outbox.mark_sent(port_batch, now + 3600, link="port-4g")
        await ingest(port_data, now + 3600)
        # A's SOS and a grievance report over SBD: nobody's bytes
        sos = outbox.accept_sos(crew=a, now=now + 7200, position=(1_300_000, 10_050_000))
        report_seq = outbox.accept_grievance(
            union_id=1, sealed=bytes(range(256)) * 2, case_key=b"k" * 32, now=now + 7200
        )
        sbd_batch, sbd_data = outbox.make_batch(
            [sos.message_seq, report_seq.message_seq], codebook, VESSEL_KEY, now + 7200
        )
        outbox.mark_sent(sbd_batch, now + 7200, link="iridium-sbd")
        await ingest(sbd_data, now + 7200)
        made = await store.make_downlink_batch(VESSEL, now + 7300, shore_encoder(VESSEL), 50)
        assert made is not None
        result = outbox.apply_downlink(decoded_downlink(made.data), now + 7300)
        assert set(result.acknowledged_batches) == {main_batch, port_batch, sbd_batch}
        outbox.record_link_session(
            _session("iridium-certus", now, len(main_data), 0, 2600)  # the lost send
        )
        outbox.record_link_session(_session("iridium-certus", now + 60, len(main_data), 300, 2600))
        outbox.record_link_session(_session("port-4g", now + 3600, len(port_data), 200, 2600))
        outbox.record_link_session(_session("iridium-sbd", now + 7200, len(sbd_data), 90, 0))
        await sign_daily_head(store, SHORE_KEY, now + 7400)
        made_at = OCT_5 + 30 * 86_400
        statement = build_statement(
            outbox,
            OCTOBER,
            quota_bytes=RULE_MONTHLY_TEXT_BYTES,
            profile=IRIDIUM_CERTUS,
            vessel_key=VESSEL_KEY,
            now=made_at,
        )
        older = build_statement(
            outbox,
            OCTOBER,
            quota_bytes=RULE_MONTHLY_TEXT_BYTES,
            profile=IRIDIUM_CERTUS,
            vessel_key=VESSEL_KEY,
            now=made_at,
            per_crew_link=False,
        )
        report = await build_report(store, VESSEL, OCTOBER, SHORE_KEY, made_at, statement=statement)
    finally:
        await store.close()
        outbox.close()
    return Month(
        statement,
        older,
        report,
        {
            "iridium-certus": 2 * len(main_data),
            "port-4g": len(port_data),
            "iridium-sbd": len(sbd_data),
        },
        {c.crew: c.sent_bytes for c in statement.crew},
        a,
        b,
    )


def test_each_crew_member_gets_their_bytes_per_link_and_reserved_traffic_nobody(
    tmp_path: Path,
) -> None:
    """Aung's messages went over the Certus terminal (once lost and resent) and the
    harbour's 4G, Sok's over the Certus terminal only; Aung's SOS and a grievance report
    went over SBD. The statement gives Aung a Certus and a 4G line and Sok a Certus line,
    exact to the byte; nobody has an SBD line; the Certus batch's bytes (both sends) are
    split between them by their text bytes; the 4G batch is all Aung's."""
    month = asyncio.run(_month(tmp_path))
    statement = month.statement
    assert statement.crew_links is not None
    a, b = month.crew_a, month.crew_b
    links = {link.profile: link for link in statement.links or ()}
    certus, port = links["iridium-certus"], links["port-4g"]
    assert certus.billed_bytes is not None
    assert port.billed_bytes is not None
    ta, tb, ta2 = len(A1.encode()), len(B1.encode()), len(A2.encode())
    main_bytes = month.batch_bytes["iridium-certus"]
    port_bytes = month.batch_bytes["port-4g"]
    assert statement.crew_links == (
        CrewLink(
            a,
            "iridium-certus",
            ta,
            main_bytes * ta // (ta + tb),
            certus.billed_bytes * ta // (ta + tb),
        ),
        CrewLink(a, "port-4g", ta2, port_bytes, port.billed_bytes),
        CrewLink(
            b,
            "iridium-certus",
            tb,
            main_bytes * tb // (ta + tb),
            certus.billed_bytes * tb // (ta + tb),
        ),
    )
    assert all(entry.profile != "iridium-sbd" for entry in statement.crew_links)
    # text per link adds up to what each crew member sent
    for member in (a, b):
        assert sum(e.text_bytes for e in statement.links_of(member)) == month.sent[member]
    # the shares add up to the link's totals, up to a byte per crew member
    on_main = [e for e in statement.crew_links if e.profile == "iridium-certus"]
    assert main_bytes - len(on_main) < sum(e.wire_bytes for e in on_main) <= main_bytes
    billed = sum(e.billed_bytes or 0 for e in on_main)
    assert certus.billed_bytes - len(on_main) < billed <= certus.billed_bytes


def test_the_report_with_bytes_per_link_verifies_offline_and_shows_them(tmp_path: Path) -> None:
    """The shore's report carries the statement with its bytes per crew member and link:
    it verifies with the public keys alone after a round trip through its JSON, and the
    HTML shows one line per crew member and link, the CSV a column of them."""
    month = asyncio.run(_month(tmp_path))
    again = ComplianceReport.from_json(month.report.to_json())
    assert again.statement is not None
    assert again.statement.crew_links == month.statement.crew_links
    assert (
        verify_report(
            again, shore_key=SHORE_KEY.verify_key.key, vessel_key=VESSEL_KEY.verify_key.key
        )
        == []
    )
    assert '"crew_links"' in month.report.to_json().decode()
    html = render_html(again)
    assert "Bytes per crew member and link" in html
    for entry in month.statement.crew_links or ():
        assert f'<td class="l">{entry.profile}</td><td>{entry.text_bytes:,}</td>' in html
    csv_text = render_csv(again)
    assert "bytes_per_link" in csv_text.splitlines()[0]
    a_link = month.statement.links_of(month.crew_a)[1]
    assert f"{a_link.profile} {a_link.text_bytes} {a_link.wire_bytes}" in csv_text


def test_a_statement_without_bytes_per_crew_and_link_still_verifies(tmp_path: Path) -> None:
    """A statement of the release before (or made with --no-per-crew-link for an older
    relay) has no "crew_links": it keeps its signature, reads back as None ("not counted",
    not "no link"), and a tampered count in a new one breaks the vessel's signature."""
    month = asyncio.run(_month(tmp_path))
    older = month.older
    assert b"crew_links" not in older.signed_bytes()
    again = AgentStatement.from_obj(json.loads(json.dumps(older.to_obj())))
    assert again.crew_links is None
    assert again == older
    VESSEL_KEY.verify_key.verify(again.signed_bytes(), again.signature, what="statement")
    newer = AgentStatement.from_obj(json.loads(json.dumps(month.statement.to_obj())))
    assert newer == month.statement
    VESSEL_KEY.verify_key.verify(newer.signed_bytes(), newer.signature, what="statement")
    obj = month.statement.to_obj()
    entries = obj["crew_links"]
    assert isinstance(entries, list)
    entries[0]["wire_bytes"] += 1
    tampered = AgentStatement.from_obj(obj)
    with pytest.raises(ProtocolError):
        VESSEL_KEY.verify_key.verify(tampered.signed_bytes(), tampered.signature, what="statement")


def test_verify_lists_bytes_per_link_that_contradict_the_statement(tmp_path: Path) -> None:
    """A vessel that signs more text over its links than it says its crew member sent, or
    bytes for someone not on its list: ``report verify`` names both, though every
    signature is valid."""
    month = asyncio.run(_month(tmp_path))
    entries = month.statement.crew_links or ()
    inflated = (
        dataclasses.replace(entries[0], text_bytes=entries[0].text_bytes + 10_000),
        *entries[1:],
        CrewLink(999, "port-4g", 1, 1, 1),
    )
    statement = dataclasses.replace(month.statement, crew_links=inflated).signed(VESSEL_KEY)
    report = dataclasses.replace(month.report, statement=statement).signed(SHORE_KEY)
    problems = verify_report(
        report, shore_key=SHORE_KEY.verify_key.key, vessel_key=VESSEL_KEY.verify_key.key
    )
    assert any(f"crew member {month.crew_a}:" in p and "more than" in p for p in problems), problems
    assert any("crew member 999, whom it does not list" in p for p in problems), problems
    assert not any("signature" in p for p in problems)
