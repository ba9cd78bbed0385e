"""Report: the vessel agent's own figures for a month, signed with the vessel key.

:func:`build_statement` counts, from the vessel database's repositories (the outbox, the
crew register and the sessions log, each through a small port below), per crew member: the
text bytes offered (accepted on board), sent (in batches the shore acknowledged; each
message once, so retransmissions count zero), delivered and failed, the quota granted, and
the ISO weeks of the month in which they signed in on board (``signed_in_weeks``: only
the vessel knows them; the shore's report puts them in its weekly access, issue 23);
the link bytes the vessel pushed (retransmissions included: they cost money) and the link
sessions the agent recorded (:mod:`shipboard.sessions_log`), each billed and priced under
the profile of the link it ran on (the main link, the Iridium SBD fallback, the port
link), in total (``link``) and per link (``links``); and per crew member and link
(``crew_links``, :func:`crew_links_figures`) the text the shore acknowledged over each
link and their share of its batch and billed bytes, from the link the outbox kept with
each send. Grievance reports, lane blocks and SOS are not counted per person (nor
attributed to anyone on a link); padding and cover bytes are not text.

The statement goes to the shore with ``vessel-relay ship report``; the shore's report
(:mod:`shore.reports`) puts it next to its own figures and lists every disagreement.
Months are UTC calendar months (``YYYYMM``), counted from each message's acceptance time,
because the shore's log counts them so (it does not know the vessel's time zone). An outbox
that charges quotas in the vessel's time zone (``Outbox.use_time_zone``) therefore counts a
message written in the first or last hours of a local month in the neighbouring report
month; the quota granted per month is the same either way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Protocol, runtime_checkable

import typer

from protocol.compliance import AgentCrew, AgentStatement, CrewLink, LinkFigures
from protocol.months import LOG_ZONE, Month
from protocol.signing import SigningKey
from shipboard.crew import CrewMember, CrewRegister
from shipboard.database import OnDatabase
from shipboard.outbox import CrewLinkFigures, MonthFigures, Outbox
from shipboard.profiles import LinkProfile
from shipboard.sessions_log import LinkSession, MonthSessions, SessionsLog, price_by_link

logger = logging.getLogger(__name__)


class MonthRecords(Protocol):
    """The outbox, as the statement reads it."""

    @property
    def vessel_id(self) -> int: ...

    def month_figures(self, start: float, end: float) -> MonthFigures:
        """The month's figures, by acceptance time (``Outbox.month_figures``)."""
        ...


@runtime_checkable
class LinkRecords(Protocol):
    """The outbox, as the bytes per crew member and link read it."""

    def crew_link_figures(self, start: float, end: float) -> CrewLinkFigures:
        """``Outbox.crew_link_figures``."""
        ...


class CrewRoll(Protocol):
    """The crew register, as the statement reads it."""

    def members(self, *, include_signed_off: bool = False) -> list[CrewMember]:
        """Crew members, by number."""
        ...

    def signed_in_weeks(self, weeks: Sequence[int]) -> dict[int, tuple[int, ...]]:
        """crew -> the weeks of ``weeks`` in which they signed in on board."""
        ...


class SessionHistory(Protocol):
    """The sessions log, as the statement reads it."""

    def sessions_in(self, month: int) -> Sequence[LinkSession]:
        """The link sessions that started in ``month`` (YYYYMM, UTC), oldest first."""
        ...


def _sessions_of(outbox: MonthRecords, sessions: SessionHistory | None) -> SessionHistory:
    if sessions is not None:
        return sessions
    if isinstance(outbox, OnDatabase):
        return SessionsLog(outbox)
    raise TypeError("give the sessions log, or an outbox on the vessel database")


def _figures(outbox: MonthRecords, month: int) -> MonthFigures:
    start, end = Month.from_key(month).bounds_s(LOG_ZONE)
    return outbox.month_figures(start, end)


def profile_for(name: str, main: LinkProfile) -> LinkProfile:
    """The link profile a session recorded under ``name`` is billed under: the main link's
    own, the SBD fallback's and the port link's tariffs, the built-in profiles; a name
    none of them has (a profile renamed since) is billed under ``main`` and logged."""
    from shipboard.links import IRIDIUM_SBD, PORT_4G
    from shipboard.profiles import profile_named

    if name == main.name:
        return main
    for known in (IRIDIUM_SBD, PORT_4G):
        if name == known.name:
            return known
    try:
        return profile_named(name)
    except KeyError:
        logger.warning("sessions of unknown link profile %r priced under %r", name, main.name)
        return main


def _link_figures(priced: MonthSessions, batch_bytes: int | None) -> LinkFigures:
    return LinkFigures(
        priced.profile,
        priced.sessions,
        priced.link_bytes,
        priced.billed_bytes,
        priced.cost_micro_usd,
        batch_bytes=batch_bytes,
        failed_sessions=priced.failed_sessions,
    )


def links_figures(
    outbox: MonthRecords,
    month: int,
    profile: LinkProfile,
    *,
    sessions: SessionHistory | None = None,
) -> tuple[LinkFigures, ...]:
    """The month's link use per link: one entry per profile name the sessions log holds
    for the month (the main link, ``iridium-sbd``, the port link), each billed under its
    own tariff (:func:`profile_for`; ``profile`` is the main link's). ``batch_bytes`` is
    None in each: batches sent before the outbox kept the link of each send have none, so
    a per-link batch total would be short; the crew members' shares per link are in
    :func:`crew_links_figures`."""
    recorded = _sessions_of(outbox, sessions).sessions_in(month)
    return tuple(
        _link_figures(priced, None)
        for priced in price_by_link(list(recorded), lambda name: profile_for(name, profile))
    )


def link_figures(
    outbox: MonthRecords,
    month: int,
    profile: LinkProfile,
    *,
    sessions: SessionHistory | None = None,
    figures: MonthFigures | None = None,
) -> LinkFigures:
    """The month's link use: uplink batch bytes (each send counted) and the recorded sessions.

    Sessions come from the sessions log (:mod:`shipboard.sessions_log`; by default the
    one of the outbox's database), each billed separately under the profile of the link
    it ran on (:func:`links_figures`; the main link's is ``profile``), and summed over
    every link: the figures carry the main profile's name. With no session recorded in
    the month (an agent whose link never ran, or data from before sessions were
    recorded), sessions, billed bytes and cost are None ("not recorded") and the link
    bytes are the batch bytes.
    """
    pushed = (figures if figures is not None else _figures(outbox, month)).pushed_bytes
    per_link = links_figures(outbox, month, profile, sessions=sessions)
    if not per_link:
        return LinkFigures(profile.name, None, pushed, None, None, batch_bytes=pushed)
    return LinkFigures(
        profile.name,
        sum(link.sessions or 0 for link in per_link),
        sum(link.link_bytes for link in per_link),
        sum(link.billed_bytes or 0 for link in per_link),
        sum(link.cost_micro_usd or 0 for link in per_link),
        batch_bytes=pushed,
        failed_sessions=sum(link.failed_sessions or 0 for link in per_link),
    )


def crew_links_figures(
    outbox: LinkRecords,
    month: int,
    profile: LinkProfile,
    links: Sequence[LinkFigures],
    crew: Sequence[int],
) -> tuple[CrewLink, ...]:
    """Each crew member's bytes per link in ``month`` (family messages only), for the
    crew members ``crew`` of the statement, by crew then link name.

    Rules (:class:`protocol.compliance.CrewLink`, :class:`shipboard.outbox.
    CrewLinkFigures`): text bytes under the link of the acknowledged send; wire bytes are
    the crew member's share of each acknowledged batch sent over the link in the month,
    split by payload bytes, rounded down; billed bytes are the link's billed bytes
    (``links``, from the sessions log) times the crew member's exact wire share over all
    batch bytes sent on that link in the month, rounded down, so the crew members' sums
    reconcile with the link's totals up to a byte each, the rest (SOS, reports, lane
    blocks, contact changes, acknowledgements, batches not acknowledged) attributed to
    nobody. A send recorded without a link counts on the main link (``profile``).
    """
    start, end = Month.from_key(month).bounds_s(LOG_ZONE)
    found = outbox.crew_link_figures(start, end)

    def name(link: str | None) -> str:
        return profile.name if link is None else link

    text: dict[tuple[int, str], int] = {}
    for (member, link), value in found.text_bytes.items():
        text[(member, name(link))] = text.get((member, name(link)), 0) + value
    wire: dict[tuple[int, str], Fraction] = {}
    for (member, link), share in found.wire_bytes.items():
        wire[(member, name(link))] = wire.get((member, name(link)), Fraction(0)) + share
    sent: dict[str, int] = {}
    for link, value in found.sent_bytes.items():
        sent[name(link)] = sent.get(name(link), 0) + value
    billed_of = {figures.profile: figures.billed_bytes for figures in links}
    wanted = set(crew)
    entries: list[CrewLink] = []
    for member, link in sorted(set(text) | set(wire)):
        if member not in wanted:
            continue
        share = wire.get((member, link), Fraction(0))
        billed = billed_of.get(link)
        entries.append(
            CrewLink(
                member,
                link,
                text.get((member, link), 0),
                math.floor(share),
                None
                if billed is None or not sent.get(link)
                else math.floor(share * billed / sent[link]),
            )
        )
    return tuple(entries)


def days_active(
    outbox: MonthRecords,
    month: int,
    *,
    sessions: SessionHistory | None = None,
    figures: MonthFigures | None = None,
) -> int:
    """Days of ``month`` (UTC) on which the agent recorded activity on board: a link
    session (done or failed) or a crew member's message or SOS accepted.

    This is what the statement reports as "days at sea". It is honest about what it
    measures: the agent cannot tell sea from port (it runs in port too), and a day at sea
    with no session and no message does not count. The grievance lane is left out (its
    blocks leave every period, whether anyone is on board or not).
    """
    found = figures if figures is not None else _figures(outbox, month)
    session_days = {
        int(session.started_at // 86_400)
        for session in _sessions_of(outbox, sessions).sessions_in(month)
    }
    return len(found.active_days | session_days)


def build_statement(
    outbox: MonthRecords,
    month: int,
    *,
    quota_bytes: int | Mapping[int, int],
    profile: LinkProfile,
    vessel_key: SigningKey,
    now: float,
    days_at_sea: int | None = None,
    grievance_lane_daily: bool | None = None,
    register: CrewRoll | None = None,
    sessions: SessionHistory | None = None,
    sign_in_weeks: bool = True,
    per_link: bool = True,
    per_crew_link: bool = True,
) -> AgentStatement:
    """The agent's signed statement for ``month`` (YYYYMM, UTC).

    ``quota_bytes`` is the monthly text quota the crew were granted: one figure for all,
    or one per crew member (an owner who throttled some crew members shows here).
    ``days_at_sea`` defaults to :func:`days_active` (days with activity on board).
    ``register`` and ``sessions`` default to those of the outbox's database.
    ``sign_in_weeks=False`` leaves the weeks signed in out: a relay of the release before
    weekly access reads such a statement with its signature intact (it would find the
    signature of one that has them invalid, not knowing the field). ``per_link=False``
    leaves the figures per link (``links``) out, for the same reason: a relay of the
    release before them; ``per_crew_link=False`` the bytes per crew member and link
    (``crew_links``, :func:`crew_links_figures`) likewise. An outbox that does not
    record its sends per link (a fake) gives no ``crew_links``.
    """
    figures = _figures(outbox, month)
    log = _sessions_of(outbox, sessions)
    if days_at_sea is None:
        days_at_sea = days_active(outbox, month, sessions=log, figures=figures)
    if register is None:
        if not isinstance(outbox, OnDatabase):
            raise TypeError("give the crew register, or an outbox on the vessel database")
        register = CrewRegister(outbox)
    crew: list[AgentCrew] = []
    for member in register.members(include_signed_off=True):
        wrote = figures.text_bytes.get(member.crew)
        if member.signed_off and wrote is None:
            continue  # signed off, and nothing of theirs in this month
        quota = quota_bytes if isinstance(quota_bytes, int) else quota_bytes.get(member.crew, 0)
        crew.append(
            AgentCrew(
                member.crew,
                member.name,
                member.document,
                member.nationality,
                wrote.offered if wrote else 0,
                wrote.sent if wrote else 0,
                wrote.delivered if wrote else 0,
                wrote.failed if wrote else 0,
                quota,
            )
        )
    signed_in = register.signed_in_weeks(Month.from_key(month).weeks())
    per_link_figures = links_figures(outbox, month, profile, sessions=log)
    crew_links = (
        crew_links_figures(outbox, month, profile, per_link_figures, [c.crew for c in crew])
        if per_crew_link and isinstance(outbox, LinkRecords)
        else None
    )
    statement = AgentStatement(
        vessel_id=outbox.vessel_id,
        month=month,
        made_minutes=int(now // 60),
        crew=tuple(crew),
        link=link_figures(outbox, month, profile, sessions=log, figures=figures),
        days_at_sea=days_at_sea,
        grievance_lane_daily=grievance_lane_daily,
        batches=tuple(
            (seq, hashlib.sha256(data).digest()) for seq, data in figures.acknowledged_batches
        ),
        signed_in_weeks=(
            tuple((c.crew, signed_in.get(c.crew, ())) for c in crew) if sign_in_weeks else None
        ),
        links=per_link_figures if per_link else None,
        crew_links=crew_links,
    ).signed(vessel_key)
    logger.info(
        "agent statement for month %d: %d crew members, %d acknowledged batches",
        month,
        len(crew),
        len(statement.batches),
    )
    return statement


def report_command(
    month: Annotated[str, typer.Option(help="The month, YYYY-MM (UTC), e.g. 2026-10.")],
    config: Annotated[Path, typer.Option(help="The vessel's config file.")] = Path("ship.toml"),
    out: Annotated[Path, typer.Option(help="Where to write the statement.")] = Path("."),
    weekly_access: Annotated[
        bool,
        typer.Option(
            help="Include the weeks each crew member signed in on board (weekly access). "
            "--no-weekly-access for a relay older than weekly access, which cannot verify "
            "a statement that has them."
        ),
    ] = True,
    per_link: Annotated[
        bool,
        typer.Option(
            help="Include the link figures per link (main link, SBD, port). --no-per-link "
            "for a relay older than them, which cannot verify a statement that has them."
        ),
    ] = True,
    per_crew_link: Annotated[
        bool,
        typer.Option(
            help="Include each crew member's bytes per link. --no-per-crew-link for a "
            "relay older than them, which cannot verify a statement that has them."
        ),
    ] = True,
) -> None:
    """Write the agent's signed statement for a month (give it to the shore relay).

    Example: vessel-relay ship report --month 2026-10
    """
    from common.exits import UsageError, fail
    from common.keyfiles import KeyFileError, read_secret
    from shipboard.config import load_config
    from shipboard.errors import ShipboardError
    from shipboard.profiles import profile_named

    try:
        parsed = Month.parse(month)
    except ValueError as exc:
        raise fail(UsageError(str(exc))) from None
    try:
        loaded = load_config(config)
        key = SigningKey.from_seed(read_secret(loaded.vessel.signing_key_path))
        outbox = Outbox.open(loaded.database_path, loaded.vessel.vessel_id)
        outbox.use_time_zone(loaded.time_zone)
    except (ShipboardError, KeyFileError) as exc:
        raise fail(exc) from None
    try:
        statement = build_statement(
            outbox,
            parsed.key,
            quota_bytes=loaded.quota.crew_text_bytes,
            profile=profile_named(loaded.link.profile),
            vessel_key=key,
            now=time.time(),
            sign_in_weeks=weekly_access,
            per_link=per_link,
            per_crew_link=per_crew_link,
        )
    finally:
        outbox.close()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"agent-statement-{loaded.vessel.vessel_id}-{parsed}.json"
    data = json.dumps(statement.to_obj(), indent=1, ensure_ascii=False).encode() + b"\n"
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    typer.echo(f"agent statement: {path} ({len(statement.crew)} crew members)")
    typer.echo("Give it to the shore relay: vessel-relay shore report --statement FILE")
