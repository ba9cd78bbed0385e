"""SOS alerting ashore: an SOS that reaches the relay alerts rescue and union contacts at once.

::

    ingest commits the SOS (messages.state = 'alert') and rings the doorbell
    SosAlerter.run
      claim_sos_alerts(now, contacts)   one row per (SOS, contact), made in the same
                                        transaction as the claim: never forgotten on a crash
      send each: e-mail (smarthost) or SMS (provider), Message-ID sos-{vessel}-{seq}-{n}
      delivered  -> finish_sos_alert: the first one marks the SOS delivered and queues a
                    DELIVERED receipt to the vessel (the crew member knows someone was told)
      transient  -> retry_sos_alert with capped backoff (seconds, not the family's hours)
      permanent, or past the deadline -> failed; when every contact failed, the vessel
                    gets a DeliveryFailure

An SOS carries no family contact: the relay operator configures who is alerted
(``[alerts]`` in the relay's TOML: ``emails`` and ``sms``). Alerts name the vessel, its
flag and registration, the crew member, the time written and the position, so a rescue
centre can act on the alert alone. A repeat after a crash mid-send keeps its Message-ID,
so a duplicate is recognisable; for an SOS, twice is better than never.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Protocol

from protocol.envelopes import FailureReason
from shore.mail import MAIL_POLICY, MailIdentity, MailSender, clean_header_text
from shore.retry import AttemptResult, Outcome
from shore.sms import SmsProvider
from shore.store.errors import StoreError
from shore.store.sos import SosAlertDue

log = logging.getLogger(__name__)


class SosStore(Protocol):
    """What the alerter needs of the store (``shore.store.RelayStore`` has it)."""

    async def claim_sos_alerts(
        self, now: float, contacts: Sequence[str], limit: int, lease_s: float = 60.0
    ) -> Sequence[SosAlertDue]:
        """Alerts due, one per (SOS, contact), claimed for ``lease_s``."""

    async def retry_sos_alert(
        self, vessel_id: int, message_seq: int, contact: str, due_at: float, detail: str
    ) -> None:
        """An attempt failed for now: try again at ``due_at``."""

    async def finish_sos_alert(
        self,
        vessel_id: int,
        message_seq: int,
        contact: str,
        delivered: bool,
        detail: str,
        now: float,
    ) -> None:
        """An alert's final outcome; the vessel is told when the SOS's alerts end."""


class AlertConfigError(ValueError):
    """An alert contact that cannot be used (the message says which and how to write it)."""


@dataclass(frozen=True, slots=True)
class AlertConfig:
    """Who is alerted and how hard the alerter tries."""

    emails: tuple[str, ...] = ()
    sms: tuple[str, ...] = ()
    #: First retry after this long; doubling up to ``retry_max_s``.
    retry_first_s: float = 5.0
    retry_max_s: float = 300.0
    #: After this long since the SOS reached the relay, a contact counts as failed.
    deadline_s: float = 24 * 3600.0
    #: The longest the alerter sleeps when nothing is due (the doorbell wakes it sooner).
    tick_s: float = 5.0
    batch_size: int = 20

    def __post_init__(self) -> None:
        for address in self.emails:
            if "@" not in address or any(c in address for c in "\r\n<> "):
                raise AlertConfigError(f"alert e-mail {address!r} is not an address like a@b.org")
        for number in self.sms:
            if not (number.startswith("+") and number[1:].isdigit()):
                raise AlertConfigError(f"alert SMS number {number!r} is not E.164 like +6621234567")

    @property
    def contacts(self) -> tuple[str, ...]:
        """Contact keys as stored: ``email:ADDRESS`` and ``sms:NUMBER``."""
        return tuple(f"email:{a}" for a in self.emails) + tuple(f"sms:{n}" for n in self.sms)


@dataclass(frozen=True, slots=True)
class AlertStatistics:
    """Counters for the status page."""

    attempts: int
    delivered: int
    failed: int
    retries: int


def _position_text(position: tuple[int, int] | None) -> str:
    if position is None:
        return "not given"
    lat, lon = position[0] / 1e5, position[1] / 1e5
    return (
        f"{abs(lat):.5f}°{'N' if lat >= 0 else 'S'} {abs(lon):.5f}°{'E' if lon >= 0 else 'W'}"
        f" (decimal {lat:.5f}, {lon:.5f})"
    )


def _sender(alert: SosAlertDue, name_chars: int) -> str:
    """Who the SOS is from; for one sent without a PIN, only the crew number typed."""
    name = clean_header_text(alert.crew_name or "", name_chars)
    if not alert.unauthenticated:
        return name or f"crew member {alert.crew}"
    if not alert.crew:
        return "someone on board (sent without a PIN, no crew number typed)"
    typed = f"crew number {alert.crew}" + (f", registered as {name}" if name else "")
    return f"someone on board (sent without a PIN; typed {typed}: not verified)"


def alert_text(alert: SosAlertDue) -> str:
    """The alert's words (English: the working language of rescue centres)."""
    written = datetime.fromtimestamp(alert.written_minutes * 60, UTC)
    received = datetime.fromtimestamp(alert.accepted_at, UTC)
    crew = _sender(alert, 60)
    vessel = clean_header_text(alert.vessel_name, 60)
    lines = [
        f"SOS from {crew} on vessel {vessel} "
        f"(flag {clean_header_text(alert.flag, 8)}, registration "
        f"{clean_header_text(alert.registration, 40)}).",
        f"Sent on board: {written:%Y-%m-%d %H:%M} UTC. Received ashore: "
        f"{received:%Y-%m-%d %H:%M:%S} UTC.",
        f"Position: {_position_text(alert.position)}.",
    ]
    if alert.note:
        lines.append(f"Note from the crew member: {alert.note}")
    lines.append(f"Reference: vessel {alert.vessel_id} message {alert.message_seq}.")
    return "\n".join(lines)


def sms_alert_text(alert: SosAlertDue) -> str:
    """A short alert for SMS (fits in two segments unless the note is long)."""
    crew = clean_header_text(alert.crew_name or "", 24) or f"crew {alert.crew}"
    if alert.unauthenticated:
        crew = f"NO PIN, typed crew {alert.crew}" if alert.crew else "NO PIN, no crew number"
    text = (
        f"SOS {clean_header_text(alert.vessel_name, 30)} "
        f"({clean_header_text(alert.flag, 8)} {clean_header_text(alert.registration, 20)}) "
        f"{crew}; pos {_position_text(alert.position).split(' (')[0]}; "
        f"ref {alert.vessel_id}/{alert.message_seq}"
    )
    if alert.note:
        text += f"; {alert.note[:120]}"
    return text


def compose_alert_mail(
    alert: SosAlertDue, to_address: str, identity: MailIdentity, index: int, now: float
) -> EmailMessage:
    """The alert e-mail; its Message-ID is the same on every attempt."""
    message = EmailMessage(policy=MAIL_POLICY)
    message["From"] = Address(display_name="vessel-relay SOS", addr_spec=identity.from_address)
    message["To"] = Address(addr_spec=to_address)
    vessel = clean_header_text(alert.vessel_name, 60)
    message["Subject"] = clean_header_text(
        f"SOS: vessel {vessel} ({alert.flag} {alert.registration})", 200
    )
    message["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    message["Message-ID"] = (
        f"<sos-{alert.vessel_id}-{alert.message_seq}-{index}@{identity.relay_domain}>"
    )
    message["Importance"] = "high"
    message["X-Priority"] = "1"
    message.set_content(alert_text(alert) + "\n", charset="utf-8")
    return message


class SosAlerter:
    """Sends SOS alerts; ``await run(stopping, doorbell)`` inside the relay's task group.

    ``mail`` may be None when no e-mail contact is configured, ``sms`` when no SMS contact
    is; a contact whose channel is missing counts as a transient failure until the deadline.
    """

    def __init__(
        self,
        store: SosStore,
        config: AlertConfig,
        identity: MailIdentity,
        mail: MailSender | None,
        sms: SmsProvider | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config
        self.identity = identity
        self.mail = mail
        self.sms = sms
        self.clock = clock
        self._attempts = self._delivered = self._failed = self._retries = 0

    def statistics(self) -> AlertStatistics:
        """Counters since start."""
        return AlertStatistics(self._attempts, self._delivered, self._failed, self._retries)

    async def run(self, stopping: asyncio.Event, doorbell: asyncio.Event | None = None) -> None:
        """Alert until ``stopping`` is set; ``doorbell`` (rung by ingest) wakes it at once."""
        bell = doorbell or asyncio.Event()
        while not stopping.is_set():
            bell.clear()
            try:
                done = await self.alert_due()
            except Exception:
                log.exception("SOS alert pass failed; retrying in %.0f s", self.config.tick_s)
                done = 0
            if done >= self.config.batch_size:
                continue
            waiters = [asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(bell.wait())]
            try:
                await asyncio.wait(
                    waiters, timeout=self.config.tick_s, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiter in waiters:
                    waiter.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)

    async def alert_due(self) -> int:
        """One pass: claim and send the alerts that are due; how many were tried."""
        contacts = self.config.contacts
        due = await self.store.claim_sos_alerts(self.clock(), contacts, self.config.batch_size)
        if due:
            async with asyncio.TaskGroup() as group:
                for alert in due:
                    group.create_task(self._alert_one_isolated(alert, contacts))
        return len(due)

    async def _alert_one_isolated(self, alert: SosAlertDue, contacts: tuple[str, ...]) -> None:
        """One alert, so that its failing (a bug, or content no check caught) never cancels
        the other alerts of the pass: logged with its traceback; its claim lapses and it is
        tried again. A store failure still ends the pass (the whole store is down)."""
        try:
            await self._alert_one(alert, contacts)
        except StoreError:
            raise
        except Exception:
            log.exception(
                "SOS vessel %d message %d: the alert to %s failed unexpectedly; the other "
                "alerts go on, this one is tried again after its claim lapses",
                alert.vessel_id,
                alert.message_seq,
                alert.contact.split(":", 1)[0],
            )

    async def _alert_one(self, alert: SosAlertDue, contacts: tuple[str, ...]) -> None:
        where = f"SOS vessel {alert.vessel_id} message {alert.message_seq}"
        self._attempts += 1
        result = await self._send(alert, contacts)
        now = self.clock()
        channel = alert.contact.split(":", 1)[0]
        if result.outcome is Outcome.DELIVERED:
            self._delivered += 1
            await self.store.finish_sos_alert(
                alert.vessel_id, alert.message_seq, alert.contact, True, result.detail, now
            )
            log.warning("%s: alert delivered by %s (%s)", where, channel, result.detail)
            return
        attempt = alert.attempts + 1
        delay = min(self.config.retry_max_s, self.config.retry_first_s * 2 ** (attempt - 1))
        if result.retry_after_s is not None:
            delay = max(delay, result.retry_after_s)
        past_deadline = now + delay > alert.accepted_at + self.config.deadline_s
        if result.outcome is Outcome.PERMANENT or past_deadline:
            self._failed += 1
            await self.store.finish_sos_alert(
                alert.vessel_id, alert.message_seq, alert.contact, False, result.detail, now
            )
            log.error("%s: alert by %s failed for good (%s)", where, channel, result.detail)
            return
        self._retries += 1
        await self.store.retry_sos_alert(
            alert.vessel_id, alert.message_seq, alert.contact, now + delay, result.detail
        )
        log.warning(
            "%s: alert by %s attempt %d failed (%s); retry in %.0f s",
            where,
            channel,
            attempt,
            result.detail,
            delay,
        )

    async def _send(self, alert: SosAlertDue, contacts: tuple[str, ...]) -> AttemptResult:
        channel, _, address = alert.contact.partition(":")
        if channel == "email":
            if self.mail is None:
                return AttemptResult.transient(
                    FailureReason.PROVIDER_ERROR, "no smarthost configured"
                )
            index = contacts.index(alert.contact) if alert.contact in contacts else 0
            message = compose_alert_mail(alert, address, self.identity, index, self.clock())
            return await self.mail.send(message, address)
        if channel == "sms":
            if self.sms is None:
                return AttemptResult.transient(
                    FailureReason.PROVIDER_ERROR, "no SMS provider configured"
                )
            return await self.sms.send(address, sms_alert_text(alert))
        return AttemptResult.permanent(
            FailureReason.REJECTED_BY_RELAY, f"unknown alert channel {channel!r}"
        )
