"""SOS alerts repository: one alert per (SOS, rescue or union contact), sent until it ends.

Table ``sos_alerts`` (migration set ``sos_alerts``): for every SOS still in state ``alert``
each configured contact (``"email:ADDR"`` or ``"sms:NUMBER"``) gets a row, with its
attempts, when it is next due (a claim moves that forward by a lease), and its outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protocol.languages import Language
from shore.store.database import Dialect, Tx
from shore.store.migrations import Migration, MigrationSet
from shore.vocabulary import DeliveryOutcome

MIGRATIONS = MigrationSet(
    "sos_alerts",
    (
        Migration(
            "0001_sos_alerts",
            """
        CREATE TABLE sos_alerts (
            vessel_id {int} NOT NULL,
            message_seq {int} NOT NULL,
            contact TEXT NOT NULL,
            attempts {int} NOT NULL DEFAULT 0,
            due_at {real} NOT NULL,
            outcome TEXT CHECK (outcome IN ('delivered', 'failed')),
            detail TEXT,
            finished_at {real},
            PRIMARY KEY (vessel_id, message_seq, contact),
            FOREIGN KEY (vessel_id, message_seq) REFERENCES messages (vessel_id, message_seq)
        );
        CREATE INDEX sos_alerts_due ON sos_alerts (due_at) WHERE outcome IS NULL;
        """,
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class SosAlertDue:
    """One SOS alert to send to one rescue or union contact (``contact``: "email:ADDR" or
    "sms:NUMBER"), with what the alert says."""

    vessel_id: int
    message_seq: int
    contact: str
    attempts: int
    vessel_name: str
    flag: str
    registration: str
    crew: int | None
    crew_name: str | None
    note: str | None
    lang: Language | None
    position: tuple[int, int] | None
    written_minutes: int
    accepted_at: float
    #: Sent without a PIN: ``crew`` is only the number typed (0: none), nobody proved it.
    unauthenticated: bool = False


@dataclass(frozen=True, slots=True)
class SosAlertRecord:
    """An SOS alert's state, for the operator and tests."""

    vessel_id: int
    message_seq: int
    contact: str
    attempts: int
    outcome: DeliveryOutcome | None
    detail: str | None


@dataclass(frozen=True, slots=True)
class AlertClaim:
    """A claimed alert (what it says comes from the SOS and the registry)."""

    vessel_id: int
    message_seq: int
    contact: str
    attempts: int


class SosAlerts:
    """The SOS alerts' SQL; every method runs in the transaction it is given."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect

    async def start(
        self, tx: Tx, sos: Sequence[tuple[int, int, float]], contacts: Sequence[str]
    ) -> None:
        """Give each SOS of ``sos`` (vessel, message_seq, accepted_at) that has no alerts yet
        one alert per contact, due when it was accepted."""
        fresh = [
            (vessel_id, message_seq, accepted_at)
            for vessel_id, message_seq, accepted_at in sos
            if await tx.fetchrow(
                "SELECT 1 FROM sos_alerts WHERE vessel_id = $1 AND message_seq = $2",
                vessel_id,
                message_seq,
            )
            is None
        ]
        await tx.executemany(
            "INSERT INTO sos_alerts (vessel_id, message_seq, contact, due_at) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            [(v, seq, contact, float(at)) for v, seq, at in fresh for contact in contacts],
        )

    async def claim(self, tx: Tx, now: float, limit: int, lease_s: float) -> list[AlertClaim]:
        """Up to ``limit`` due alerts (oldest due first), not due again for ``lease_s``."""
        rows = await tx.fetch(
            "SELECT vessel_id, message_seq, contact, attempts FROM sos_alerts "
            "WHERE outcome IS NULL AND due_at <= $1 "
            f"ORDER BY due_at, vessel_id, message_seq LIMIT $2{self.dialect.skip_locked}",
            float(now),
            limit,
        )
        await tx.executemany(
            "UPDATE sos_alerts SET due_at = $4 "
            "WHERE vessel_id = $1 AND message_seq = $2 AND contact = $3",
            [(r[0], r[1], r[2], float(now) + lease_s) for r in rows],
        )
        return [AlertClaim(int(r[0]), int(r[1]), str(r[2]), int(r[3])) for r in rows]

    async def retry(
        self, tx: Tx, vessel_id: int, message_seq: int, contact: str, due_at: float, detail: str
    ) -> None:
        """An attempt failed for now: count it and try again at ``due_at``."""
        await tx.execute(
            "UPDATE sos_alerts SET attempts = attempts + 1, due_at = $4, detail = $5 "
            "WHERE vessel_id = $1 AND message_seq = $2 AND contact = $3 AND outcome IS NULL",
            vessel_id,
            message_seq,
            contact,
            float(due_at),
            detail[:500],
        )

    async def finish(
        self,
        tx: Tx,
        vessel_id: int,
        message_seq: int,
        contact: str,
        outcome: DeliveryOutcome,
        detail: str,
        now: float,
    ) -> bool:
        """Record an alert's final outcome; False when it had one already."""
        done = await tx.fetchrow(
            "UPDATE sos_alerts SET attempts = attempts + 1, outcome = $4, detail = $5, "
            "finished_at = $6 WHERE vessel_id = $1 AND message_seq = $2 AND contact = $3 "
            "AND outcome IS NULL RETURNING message_seq",
            vessel_id,
            message_seq,
            contact,
            outcome.value,
            detail[:500],
            float(now),
        )
        return done is not None

    async def standing(self, tx: Tx, vessel_id: int, message_seq: int) -> tuple[int, int]:
        """(alerts delivered, alerts still open) of one SOS."""
        row = await tx.fetchrow(
            "SELECT SUM(CASE WHEN outcome = $3 THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN outcome IS NULL THEN 1 ELSE 0 END) FROM sos_alerts "
            "WHERE vessel_id = $1 AND message_seq = $2",
            vessel_id,
            message_seq,
            DeliveryOutcome.DELIVERED.value,
        )
        assert row is not None
        return int(row[0] or 0), int(row[1] or 0)

    async def records(self, tx: Tx, vessel_id: int) -> list[SosAlertRecord]:
        """A vessel's SOS alerts, by sequence number and contact."""
        rows = await tx.fetch(
            "SELECT vessel_id, message_seq, contact, attempts, outcome, detail "
            "FROM sos_alerts WHERE vessel_id = $1 ORDER BY message_seq, contact",
            vessel_id,
        )
        return [
            SosAlertRecord(
                int(r[0]),
                int(r[1]),
                str(r[2]),
                int(r[3]),
                None if r[4] is None else DeliveryOutcome(r[4]),
                r[5],
            )
            for r in rows
        ]
