"""Sessions log: every satellite link session the agent ran, kept for the monthly report.

A repository of the vessel database (:mod:`shipboard.database`): it owns the table
``link_sessions`` (migration set ``sessions_log``, :mod:`shipboard.schema`).

The link loop (:func:`shipboard.link.run_link`) records one row per session it tried: when
it started and ended, the payload bytes it pushed up and read down (as the link counted
them: batch bytes published, downlink bytes received) and the fixed overhead it assumes
for a session (MQTT connect, subscribe, acks, TLS; ``SchedulerSettings.
session_overhead_bytes``). A session that broke off is recorded as ``failed`` with no
bytes: the link cannot tell how far it got, so its cost is unknown and is not guessed.

The monthly compliance statement (:mod:`shipboard.report`) prices each of the month's
sessions under the profile of the link it ran on, the name each row carries
(:meth:`shipboard.profiles.LinkProfile.billed_bytes`, per session: the provider bills
each session separately, with its minimum; :func:`price_by_link`). Months are UTC
calendar months (:data:`protocol.months.BILLING_ZONE`), the provider's billing months.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from protocol.months import BILLING_ZONE, Month
from shipboard.database import OnDatabase
from shipboard.profiles import LinkProfile

logger = logging.getLogger(__name__)


class SessionOutcome(StrEnum):
    """How a link session ended; the value is what the log stores."""

    DONE = "done"  # it ran to its end (its bytes are counted and billed)
    FAILED = "failed"  # it broke off (its cost is unknown and not guessed)


@dataclass(frozen=True, slots=True)
class LinkSession:
    """One link session as the agent counted it (sizes only, no content)."""

    started_at: float
    ended_at: float
    outcome: SessionOutcome
    uplink_payload_bytes: int
    downlink_payload_bytes: int
    overhead_bytes: int
    profile: str
    #: What the session charged to the owner's monthly budget, in the main link's billed
    #: bytes (None: its billed bytes under the main profile, or nothing for an SBD
    #: session: the reserved lane is outside the budget). Set for an SBD session that
    #: carried family messages (``[sbd] family_after_minutes``).
    budget_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.ended_at < self.started_at:
            raise ValueError("a link session cannot end before it starts")
        if (
            min(self.uplink_payload_bytes, self.downlink_payload_bytes, self.overhead_bytes) < 0
            or (self.budget_bytes or 0) < 0
        ):
            raise ValueError("a link session cannot carry a negative number of bytes")
        try:
            outcome = SessionOutcome(self.outcome)
        except ValueError:
            raise ValueError(f"a link session is done or failed, not {self.outcome!r}") from None
        object.__setattr__(self, "outcome", outcome)

    @property
    def link_bytes(self) -> int:
        """Bytes on the link: payloads both ways plus the assumed session overhead."""
        return self.uplink_payload_bytes + self.downlink_payload_bytes + self.overhead_bytes

    @property
    def month(self) -> int:
        """The UTC month (``YYYYMM``) the session started in."""
        return Month.of(self.started_at, BILLING_ZONE).key


@dataclass(frozen=True, slots=True)
class MonthSessions:
    """A month of link sessions, priced under the vessel's link profile."""

    profile: str
    sessions: int  # completed sessions
    failed_sessions: int
    link_bytes: int  # completed sessions, payloads both ways plus overhead
    billed_bytes: int
    cost_micro_usd: int


class SessionsLog:
    """The link sessions the agent ran (see the module docstring)."""

    def __init__(self, on: OnDatabase) -> None:
        self.database = on.database

    def record(self, session: LinkSession) -> int:
        """Keep one session (its own transaction); returns its number."""
        with self.database.transaction("record a link session") as db:
            cursor = db.execute(
                "INSERT INTO link_sessions (started_at, ended_at, outcome, "
                "uplink_payload_bytes, downlink_payload_bytes, overhead_bytes, profile, month, "
                "budget_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session.started_at,
                    session.ended_at,
                    session.outcome,
                    session.uplink_payload_bytes,
                    session.downlink_payload_bytes,
                    session.overhead_bytes,
                    session.profile,
                    session.month,
                    session.budget_bytes,
                ),
            )
            number = int(cursor.lastrowid or 0)
        logger.info(
            "link session %d recorded: %s, %d B up, %d B down, %d B overhead",
            number,
            session.outcome,
            session.uplink_payload_bytes,
            session.downlink_payload_bytes,
            session.overhead_bytes,
        )
        return number

    def sessions_in(self, month: int) -> list[LinkSession]:
        """The sessions that started in ``month`` (YYYYMM, UTC), oldest first."""
        with self.database.reading() as db:
            rows = db.execute(
                "SELECT started_at, ended_at, outcome, uplink_payload_bytes, "
                "downlink_payload_bytes, overhead_bytes, profile, budget_bytes FROM link_sessions "
                "WHERE month = ? ORDER BY started_at, session",
                (month,),
            ).fetchall()
        return [
            LinkSession(
                started_at=float(r[0]),
                ended_at=float(r[1]),
                outcome=SessionOutcome(r[2]),
                uplink_payload_bytes=int(r[3]),
                downlink_payload_bytes=int(r[4]),
                overhead_bytes=int(r[5]),
                profile=str(r[6]),
                budget_bytes=None if r[7] is None else int(r[7]),
            )
            for r in rows
        ]


def record_session(on: OnDatabase, session: LinkSession) -> int:
    """Keep one session in the sessions log of ``on``'s database; returns its number."""
    return SessionsLog(on).record(session)


def sessions_in(on: OnDatabase, month: int) -> list[LinkSession]:
    """The sessions of ``on``'s database that started in ``month`` (YYYYMM, UTC)."""
    return SessionsLog(on).sessions_in(month)


def price_by_link(
    sessions: list[LinkSession], profile_of: Callable[[str], LinkProfile]
) -> list[MonthSessions]:
    """The month's sessions grouped by the link they ran on (the profile name each session
    was recorded under: the main link's, ``iridium-sbd``, the port link's), each group
    billed under its own profile (``profile_of``), in order of name."""
    by_name: dict[str, list[LinkSession]] = {}
    for session in sessions:
        by_name.setdefault(session.profile, []).append(session)
    return [
        replace(price_month(group, profile_of(name)), profile=name)
        for name, group in sorted(by_name.items())
    ]


def price_month(sessions: list[LinkSession], profile: LinkProfile) -> MonthSessions:
    """The month's completed sessions, billed one by one under ``profile``."""
    done = [s for s in sessions if s.outcome is SessionOutcome.DONE]
    billed = sum(profile.billed_bytes(s.link_bytes) for s in done)
    return MonthSessions(
        profile=profile.name,
        sessions=len(done),
        failed_sessions=len(sessions) - len(done),
        link_bytes=sum(s.link_bytes for s in done),
        billed_bytes=billed,
        cost_micro_usd=round(profile.cost_usd(billed) * 1_000_000),
    )
