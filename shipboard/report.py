"""Report: the vessel agent's own figures for a month, signed with the vessel key.

:func:`build_statement` counts, from the outbox alone, per crew member: the text bytes
offered (accepted on board), sent (in batches the shore acknowledged; each message once, so
retransmissions count zero), delivered and failed, and the quota granted; the link bytes
the vessel pushed (retransmissions included: they cost money) and the link sessions the
agent recorded (:mod:`shipboard.sessions_log`), billed and priced under the vessel's link
profile. Grievance reports and SOS are not counted per person; padding and cover bytes are
not text.

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
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from protocol.compliance import AgentCrew, AgentStatement, LinkFigures
from protocol.months import LOG_ZONE, Month
from protocol.signing import SigningKey
from shipboard.outbox import Outbox
from shipboard.profiles import LinkProfile
from shipboard.sessions_log import price_month, sessions_in

logger = logging.getLogger(__name__)


def link_figures(outbox: Outbox, month: int, profile: LinkProfile) -> LinkFigures:
    """The month's link use: uplink batch bytes (each send counted) and the recorded sessions.

    Sessions come from the outbox's sessions log (:mod:`shipboard.sessions_log`), each
    billed separately under ``profile``. With no session recorded in the month (an agent
    whose link never ran, or data from before sessions were recorded), sessions, billed
    bytes and cost are None ("not recorded") and the link bytes are the batch bytes.
    """
    with outbox.reading() as db:
        rows = db.execute("SELECT link_bytes, send_count, made_at FROM batches").fetchall()
    start, end = Month.from_key(month).bounds_s(LOG_ZONE)
    pushed = sum(int(b) * int(n) for b, n, at in rows if start <= float(at) < end)
    sessions = sessions_in(outbox, month)
    if not sessions:
        return LinkFigures(profile.name, None, pushed, None, None, batch_bytes=pushed)
    priced = price_month(sessions, profile)
    return LinkFigures(
        profile.name,
        priced.sessions,
        priced.link_bytes,
        priced.billed_bytes,
        priced.cost_micro_usd,
        batch_bytes=pushed,
        failed_sessions=priced.failed_sessions,
    )


def days_active(outbox: Outbox, month: int) -> int:
    """Days of ``month`` (UTC) on which the agent recorded activity on board: a link
    session (done or failed) or a crew member's message or SOS accepted.

    This is what the statement reports as "days at sea". It is honest about what it
    measures: the agent cannot tell sea from port (it runs in port too), and a day at sea
    with no session and no message does not count. Grievance reports and their cover
    slots are left out (slots are made ahead, whether anyone is on board or not).
    """
    start, end = Month.from_key(month).bounds_s(LOG_ZONE)
    with outbox.reading() as db:
        rows = db.execute(
            "SELECT CAST(started_at / 86400 AS INTEGER) FROM link_sessions "
            "WHERE started_at >= ? AND started_at < ? "
            "UNION SELECT CAST(accepted_at / 86400 AS INTEGER) FROM messages "
            "WHERE kind IN ('message', 'sos') AND accepted_at >= ? AND accepted_at < ?",
            (start, end, start, end),
        ).fetchall()
    return len(rows)


def build_statement(
    outbox: Outbox,
    month: int,
    *,
    quota_bytes: int | Mapping[int, int],
    profile: LinkProfile,
    vessel_key: SigningKey,
    now: float,
    days_at_sea: int | None = None,
    grievance_lane_daily: bool | None = None,
) -> AgentStatement:
    """The agent's signed statement for ``month`` (YYYYMM, UTC).

    ``quota_bytes`` is the monthly text quota the crew were granted: one figure for all,
    or one per crew member (an owner who throttled some crew members shows here).
    ``days_at_sea`` defaults to :func:`days_active` (days with activity on board).
    """
    if days_at_sea is None:
        days_at_sea = days_active(outbox, month)
    start, end = Month.from_key(month).bounds_s(LOG_ZONE)
    with outbox.reading() as db:
        crew_rows = db.execute(
            "SELECT crew, name, document, nationality FROM crew WHERE signed_off_at IS NULL "
            "OR crew IN (SELECT crew FROM messages WHERE accepted_at >= ? AND accepted_at < ? "
            "AND kind = 'message') ORDER BY crew",
            (start, end),
        ).fetchall()
        figures = db.execute(
            "SELECT crew, SUM(text_bytes), "
            "SUM(CASE WHEN state IN ('acknowledged', 'delivered') OR (state = 'failed' AND "
            "acknowledged_at IS NOT NULL) THEN text_bytes ELSE 0 END), "
            "SUM(CASE WHEN state = 'delivered' THEN text_bytes ELSE 0 END), "
            "SUM(CASE WHEN state = 'failed' THEN text_bytes ELSE 0 END) "
            "FROM messages WHERE accepted_at >= ? AND accepted_at < ? AND kind = 'message' "
            "GROUP BY crew",
            (start, end),
        ).fetchall()
        batch_rows = db.execute(
            "SELECT DISTINCT b.batch_seq, b.data FROM batches b "
            "JOIN batch_messages bm ON bm.batch_seq = b.batch_seq "
            "JOIN messages m ON m.message_seq = bm.message_seq "
            "WHERE b.state = 'acked' AND m.kind = 'message' AND m.accepted_at >= ? "
            "AND m.accepted_at < ? ORDER BY b.batch_seq",
            (start, end),
        ).fetchall()
    by_crew = {int(r[0]): tuple(int(v) for v in r[1:]) for r in figures}
    crew: list[AgentCrew] = []
    for number, name, document, nationality in crew_rows:
        offered, sent, delivered, failed = by_crew.get(int(number), (0, 0, 0, 0))
        quota = quota_bytes if isinstance(quota_bytes, int) else quota_bytes.get(int(number), 0)
        crew.append(
            AgentCrew(
                int(number),
                str(name),
                str(document),
                str(nationality),
                offered,
                sent,
                delivered,
                failed,
                quota,
            )
        )
    statement = AgentStatement(
        vessel_id=outbox.vessel_id,
        month=month,
        made_minutes=int(now // 60),
        crew=tuple(crew),
        link=link_figures(outbox, month, profile),
        days_at_sea=days_at_sea,
        grievance_lane_daily=grievance_lane_daily,
        batches=tuple((int(seq), hashlib.sha256(bytes(data)).digest()) for seq, data in batch_rows),
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
