"""Intake: what SMTP and HTTP share: check, normalise, seal and commit what a crew member sends.

Every method here is synchronous and ends in one transaction of the vessel database; the
async servers call them through ``asyncio.to_thread``. Intake writes through
:class:`IntakeOutbox` (the outbox's accepting side), looks crew members and contacts up in
the crew register, and files reports into the grievance lane (:class:`GrievanceLane`,
:class:`shipboard.lane.VesselLane`) together with the reporter's casebook
(:mod:`shipboard.casebook`). A method that returns has committed; one that raises an
:class:`~shipboard.errors.IntakeRefused` stored nothing and carries the sentence for the
crew member; :class:`~shipboard.errors.OutboxUnavailable` means the disk failed (SMTP 451,
HTTP 503).

A report gets a case number ``<vessel>-<12 random digits>`` (:meth:`Intake.
new_case_number`), sealed inside the report (mode B here; mode A on the phone, with a
number the page drew here), then the sealed report goes into the lane: no message number,
no union, no crew on disk. Only tests switch the lane off (``QuotaConfig.daily_slots``):
reports then travel on their own, visibly, as before the lane.

Grievance text lives only in memory here: it is sealed to the union's key before the
vessel database sees it, and it is never logged.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import secrets
import threading
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from protocol.cases import (
    REPORT_NUMBER_CHOICES,
    lane_report_number,
    make_receipt_code,
    parse_case_number,
    reporter_reply_keys,
)
from protocol.cases import case_number as make_case_number
from protocol.codebook import Codebook
from protocol.envelopes import MAX_SUBJECT_CHARS
from protocol.errors import InvalidEnvelope, InvalidText, LimitExceeded
from protocol.lane import LaneShape
from protocol.languages import Language
from protocol.sealing import (
    PADDING_BUCKETS,
    SEAL_OVERHEAD,
    GrievanceCategory,
    GrievancePlaintext,
    SpokenReport,
    seal_grievance,
    seal_grievance_unpadded,
)
from protocol.text import normalise_text
from protocol.voice import VoiceMode
from shipboard.casebook import Casebook, CaseEntry
from shipboard.config import ShipConfig, UnionConfig
from shipboard.crew import CrewRegister, SignedIn
from shipboard.crew_view import CrewView, VesselCrewView
from shipboard.database import Transaction
from shipboard.errors import (
    BadText,
    EmptyText,
    LaneBusy,
    MessageTooLarge,
    MessageTooLong,
    ReportTextTooLong,
    ReportTooLongForLane,
    UnknownContact,
    UnknownUnion,
)
from shipboard.lane import FiledInLane, LaneOnDemand, LaneProgress
from shipboard.lane_plan import LaneFull, ReportTooLong
from shipboard.message_limit import (
    MAX_GRIEVANCE_BYTES,
    MAX_MESSAGE_BYTES,
    characters_over,
    too_long_to_read,
    usual_characters,
)
from shipboard.outbox import AcceptedMessage, Outbox, QuotaStatus
from shipboard.sos_limit import SosLimitPolicy, SosWithoutPinLimit
from shipboard.states import MessageKind
from shipboard.voice import code_recording

logger = logging.getLogger(__name__)

#: Largest SOS note.
MAX_SOS_BYTES = 1024

Clock = Callable[[], float]


class IntakeOutbox(Protocol):
    """The outbox's accepting side (:class:`shipboard.outbox.Outbox`): each call commits."""

    def use_time_zone(self, time_zone: ZoneInfo) -> None:
        """Count quota months in the vessel's ``time_zone``."""
        ...

    def quota_status(self, crew: int, quota_bytes: int, now: float) -> QuotaStatus:
        """The crew member's quota this month."""
        ...

    def accept_messages(
        self,
        *,
        crew: int,
        contacts: Sequence[int],
        lang: Language,
        now: float,
        quota_bytes: int,
        body: str | None = None,
        quick: int | None = None,
        subject: str | None = None,
    ) -> list[AcceptedMessage]:
        """Commit one message to several contacts, within the quota (all or nothing)."""
        ...

    def accept_voice_note(
        self,
        *,
        crew: int,
        contact: int,
        mode: VoiceMode,
        duration_ms: int,
        frames: bytes,
        now: float,
        quota_bytes: int,
    ) -> AcceptedMessage:
        """Commit a voice note to one contact, within the quota (its Codec2 bytes count)."""
        ...

    def accept_grievance(
        self, *, union_id: int, sealed: bytes, case_key: bytes, now: float
    ) -> AcceptedMessage:
        """Commit a sealed grievance report on its own (outside every quota)."""
        ...

    def accept_sos(
        self,
        *,
        crew: int,
        now: float,
        lang: Language | None = None,
        note: str | None = None,
        position: tuple[int, int] | None = None,
        signed_in: bool = True,
    ) -> AcceptedMessage:
        """Commit an SOS (outside every quota; sent at once)."""
        ...


class GrievanceLane(Protocol):
    """Where sealed reports go unseen (:class:`shipboard.lane.VesselLane`)."""

    @property
    def shape(self) -> LaneShape: ...

    def file(
        self,
        sealed_report: bytes,
        union_public_key: bytes,
        *,
        report_number: int,
        now: float,
        also: Callable[[Transaction], None] | None = None,
    ) -> FiledInLane:
        """Commit a sealed report (and ``also``, in the same transaction)."""
        ...

    def release_due(self, now: float) -> int:
        """Release the periods that ended by ``now``; how many."""
        ...

    def next_release_at(self) -> float:
        """When the next period ends."""
        ...

    def most_report_bytes(self) -> int:
        """The longest sealed report the lane ever carries."""
        ...

    def progress(self, report_number: int) -> LaneProgress | None:
        """How far a report of this run has got (None: not filed in this run)."""
        ...


@dataclass(frozen=True, slots=True)
class Reading:
    """A crew member's text as intake keeps it (protocol.text.normalise_text decides).

    ``text`` is what is sent. When the Zawgyi detector was unsure, ``original`` (the text as
    typed) and ``alternative`` (the other reading) are kept, so the page can show the crew
    member both readings and let them send the other one."""

    text: str
    original: str | None = None
    alternative: str | None = None
    zawgyi_probability: float = 0.0
    unsure: bool = False


def read_text(text: str, lang: Language | None = None) -> Reading:
    """Normalise crew text (NFC, line ends, Zawgyi converted to Unicode when detected).

    Raises :class:`BadText` with a sentence for the crew member when the text cannot be
    read. An empty or blank text gives an empty reading (the caller says what to do).
    """
    if not text.strip():
        return Reading("")
    try:
        result = normalise_text(text, language=lang)
    except (InvalidText, InvalidEnvelope, ValueError) as exc:
        raise BadText(
            f"The message cannot be read ({exc}). Please type it again, in Unicode."
        ) from exc
    unsure = result.needs_confirmation
    # Nothing is logged here: reports are read with this too, and the journal must not
    # show that a text was written without a family message following it.
    return Reading(
        text=result.text,
        original=result.original if unsure else None,
        alternative=result.alternative if unsure else None,
        zawgyi_probability=result.zawgyi_probability,
        unsure=unsure,
    )


def normalise(text: str, lang: Language | None = None) -> str:
    """The normalised text alone (see :func:`read_text`)."""
    return read_text(text, lang).text


def message_subject(subject: str | None, lang: Language | None) -> str | None:
    """A mail's Subject line as a crew message's subject, or None: normalised like the
    text (NFC, Zawgyi converted), on one line (controls and runs of white space become
    one space), cut to :data:`~protocol.envelopes.MAX_SUBJECT_CHARS` characters (never
    inside a letter's marks). A Subject that cannot be read is left out: the text goes
    on its own, as it did before subjects travelled. Never refuses a message."""
    if not subject or not subject.strip():
        return None
    raw = subject[: 4 * MAX_SUBJECT_CHARS]  # more is cut anyway; keep normalising cheap
    spaced = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in raw)
    try:
        one_line = " ".join(normalise(spaced, lang).split())
    except BadText:
        return None
    end = min(len(one_line), MAX_SUBJECT_CHARS)
    while 0 < end < len(one_line) and unicodedata.category(one_line[end]).startswith("M"):
        end -= 1
    return one_line[:end].rstrip() or None


def new_receipt_code() -> str:
    """A 16-digit receipt code (looks like a phone number, GlobaLeaks-style; Luhn-checked)."""
    return make_receipt_code("".join(secrets.choice("0123456789") for _ in range(15)))


def sos_note(note: str | None, lang: Language | None) -> str | None:
    """An SOS note as it can travel, or None: normalised when it can be read, else cleaned
    (broken characters replaced, control characters dropped), cut to :data:`MAX_SOS_BYTES`.

    An SOS is never refused for its note."""
    if not note or not note.strip():
        return None
    raw = note[: 4 * MAX_SOS_BYTES]  # more is cut anyway; keep normalising cheap
    try:
        clean = normalise(raw, lang)
    except BadText:
        readable = raw.encode("utf-8", "replace").decode("utf-8")
        readable = "".join(
            c for c in readable if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cs")
        )
        try:
            clean = normalise(readable, lang)
        except BadText:
            logger.warning("an SOS note could not be read; the SOS goes without it")
            return None
    if len(clean.encode("utf-8")) > MAX_SOS_BYTES:
        clean = clean.encode("utf-8")[:MAX_SOS_BYTES].decode("utf-8", "ignore")
    return clean or None


def sos_position(position: tuple[int, int] | None) -> tuple[int, int] | None:
    """The position (1e-5 degrees) if it is one on Earth, else None (the SOS goes without)."""
    if position is None:
        return None
    lat, lon = position
    if -9_000_000 <= lat <= 9_000_000 and -18_000_000 <= lon <= 18_000_000:
        return (lat, lon)
    logger.warning("an SOS position off the Earth was left out")
    return None


@dataclass(frozen=True, slots=True)
class SosQueued:
    """An SOS without a PIN: the message it went out as (``coalesced``: an earlier one)."""

    message_seq: int
    coalesced: bool


#: How long a short report usually takes to leave the vessel (a lane period of six hours,
#: then the grievance latency of a day, with room): what the crew page says by default.
USUAL_DEPARTURE_S = 36 * 3600


@dataclass(frozen=True, slots=True)
class FiledReport:
    """What the reporter is shown once: the case number, the receipt code, and by when
    the report is expected to have left the vessel (``leaves_by``, seconds since 1970:
    its last block's release plus the grievance latency; see
    :class:`shipboard.lane.FiledInLane` for what it does not count)."""

    message_seq: int
    case_number: str
    receipt_code: str
    accepted_at: float
    leaves_by: int

    @property
    def leaves_late(self) -> bool:
        """Whether it leaves later than the usual day and a half (the page then says when)."""
        return self.leaves_by - self.accepted_at > USUAL_DEPARTURE_S


class Intake:
    """Checks and commits what crew members send (see the module docstring).

    ``outbox`` takes what is accepted. ``register`` (crew members and contacts), ``lane``
    (the grievance lane: the database's one :class:`~shipboard.lane.VesselLane`, started
    here if it is not running yet) and ``view`` (what the doors read) default to those of
    the outbox's vessel database (``outbox`` must then be a
    :class:`~shipboard.outbox.Outbox`); there is no lane only when a test switches it off
    (``QuotaConfig.daily_slots``).
    """

    def __init__(
        self,
        config: ShipConfig,
        outbox: IntakeOutbox,
        codebook: Codebook,
        clock: Clock = time.time,
        on_accept: Callable[[str], None] | None = None,
        sos_limit: SosLimitPolicy | None = None,
        *,
        register: CrewRegister | None = None,
        lane: GrievanceLane | None = None,
        view: CrewView | None = None,
    ) -> None:
        self.config = config
        #: Called (from the intake thread) with the kind after each commit: the doorbell
        #: that tells the link an SOS or a message is waiting. Must be thread-safe.
        self.on_accept = on_accept
        self.outbox = outbox
        self.codebook = codebook
        self.clock = clock
        if register is None or view is None:
            if not isinstance(outbox, Outbox):
                raise TypeError("give the crew register and the crew view, or an Outbox")
            register = register if register is not None else CrewRegister(outbox)
            view = view if view is not None else VesselCrewView(outbox)
        self.register = register
        #: What the crew's doors read (their messages, cases and inbox).
        self.view = view
        if lane is None and config.quota.daily_slots and isinstance(outbox, Outbox):
            # started at first use (it writes): intake works on a disk that refuses writes
            casebooks = Casebook(outbox)
            lane = LaneOnDemand(
                outbox, config.quota.lane_shape(), clock, before_start=casebooks.ensure_all
            )
        self.lane: GrievanceLane | None = lane
        # Quotas renew on the first of the month in the vessel's time zone, not UTC's.
        outbox.use_time_zone(config.time_zone)
        self._sos_lock = threading.Lock()
        self._sos_limit = SosWithoutPinLimit(sos_limit or SosLimitPolicy())

    def start_lane(self) -> int:
        """Start the grievance lane now and release what is due (the agent does this before
        its doors open, so the lane's start is never tied to a crew member's first report);
        how many periods were released. Raises ``OutboxUnavailable`` if the disk refuses
        (the lane then starts at its first use)."""
        return self.release_lane(self.clock())

    def release_lane(self, now: float) -> int:
        """Release the grievance lane's periods that ended by ``now`` (the link loop does
        this in the agent); how many were released (0 without a lane)."""
        return 0 if self.lane is None else self.lane.release_due(now)

    def new_case_number(self) -> str:
        """A fresh case number for a lane-carried report: ``<vessel>-<12 random digits>``
        (mode A: the page asks for one and the phone seals it into the report)."""
        drawn = lane_report_number(secrets.randbelow(REPORT_NUMBER_CHOICES))
        return make_case_number(self.config.vessel.vessel_id, drawn)

    def case_progress(self, report_number: int) -> LaneProgress | None:
        """How far a report filed since the agent started has got (None: unknown)."""
        return None if self.lane is None else self.lane.progress(report_number)

    def quota(self, crew: int) -> QuotaStatus:
        """The crew member's quota this month."""
        return self.outbox.quota_status(crew, self.config.quota.crew_text_bytes, self.clock())

    def send_message(
        self,
        crew: int,
        contact: int,
        text: str | None,
        lang: Language | None = None,
        quick: int | None = None,
    ) -> AcceptedMessage:
        """Commit a message to one of the crew member's own contacts."""
        (accepted,) = self.send_messages(crew, [contact], text, lang, quick)
        return accepted

    def send_messages(
        self,
        crew: int,
        contacts: Sequence[int],
        text: str | None,
        lang: Language | None = None,
        quick: int | None = None,
        subject: str | None = None,
    ) -> list[AcceptedMessage]:
        """Commit one message to several of the crew member's contacts (all or none).

        ``subject``: the Subject line of a mail (SMTP door). It travels with a text only,
        to e-mail contacts (an SMS has no Subject) and only when the config says the relay
        reads it (``[shore] relay_reads_subjects``: an older relay refuses the batch);
        else it is left out, as before subjects travelled. It counts against the quota
        with the text."""
        found = [self.register.contact(crew, c) for c in contacts]
        if not contacts or any(contact is None for contact in found):
            raise UnknownContact(
                "This contact is not in your list. Add them first on the page, or ask the "
                "captain to add them."
            )
        language = lang or self.register.get(crew).language
        if (
            quick is not None
            or not self.config.shore.relay_reads_subjects
            or not any(contact is not None and contact.channel == "email" for contact in found)
        ):
            subject = None
        body = None
        reading = Reading("")
        if quick is None:
            if over := too_long_to_read(text or "", MAX_MESSAGE_BYTES):
                raise MessageTooLong(over, usual_characters(language, MAX_MESSAGE_BYTES))
            reading = read_text(text or "", language)
            body = reading.text
            if not body:
                raise EmptyText(EmptyText.MESSAGE)
            over = characters_over(body, MAX_MESSAGE_BYTES)
            if over:
                raise MessageTooLong(over, usual_characters(language, MAX_MESSAGE_BYTES))
            subject = message_subject(subject, language)
            if subject == body:
                subject = None  # a mail with only a Subject: it is the text already
        accepted = self.outbox.accept_messages(
            crew=crew,
            contacts=contacts,
            lang=language,
            now=self.clock(),
            quota_bytes=self.config.quota.crew_text_bytes,
            body=body,
            quick=quick,
            subject=subject,
        )
        self._ring(MessageKind.MESSAGE)
        if reading.unsure:
            # No text in logs: only that a choice is offered and how sure the detector was.
            logger.info(
                "Zawgyi detection unsure (p=%.2f, converted=%s): both readings kept",
                reading.zawgyi_probability,
                reading.text != reading.original,
            )
            accepted = [
                dataclasses.replace(a, original=reading.original, alternative=reading.alternative)
                for a in accepted
            ]
        return accepted

    def send_voice_note(self, crew: int, contact: int, recording: bytes) -> AcceptedMessage:
        """Commit a voice note, from what the phone's browser recorded, to one of the crew
        member's own contacts (:mod:`shipboard.voice`: decoded, trimmed, Codec2 in the
        vessel's mode, counted against the quota like text). An e-mail contact gets it
        attached, an SMS contact a link that plays it (the relay's ``shore.voice_links``).
        CPU-bound: call it in a thread.
        """
        found = self.register.contact(crew, contact)
        if found is None:
            raise UnknownContact(
                "This contact is not in your list. Add them first on the page, or ask the "
                "captain to add them."
            )
        voice = self.config.voice
        coded = code_recording(recording, limit_s=voice.max_seconds, mode=voice.mode)
        accepted = self.outbox.accept_voice_note(
            crew=crew,
            contact=contact,
            mode=coded.mode,
            duration_ms=coded.duration_ms,
            frames=coded.frames,
            now=self.clock(),
            quota_bytes=self.config.quota.crew_text_bytes,
        )
        self._ring(MessageKind.MESSAGE)
        return accepted

    def file_grievance(
        self,
        signed_in: SignedIn,
        *,
        union_id: int,
        category: GrievanceCategory,
        text: str,
        lang: Language,
        anonymous: bool,
        consent_to_escalate: bool = False,
    ) -> FiledReport:
        """Seal a grievance report to the union, with its case number inside, and commit
        only the sealed bytes into the grievance lane (with the reporter's casebook).
        ``consent_to_escalate``: the reporter agreed that an unanswered report may be passed
        to the union's second organisation (it travels inside the seal)."""
        union = self.config.union(union_id)
        if union is None:
            raise UnknownUnion("This union is not known on this vessel. Choose one from the list.")
        if over := too_long_to_read(text, MAX_GRIEVANCE_BYTES):
            raise ReportTextTooLong(over)
        body = normalise(text, lang)
        if not body:
            raise EmptyText(EmptyText.REPORT)
        over = characters_over(body, MAX_GRIEVANCE_BYTES)
        if over:
            raise ReportTextTooLong(over)
        del text
        return self._seal_and_file(
            signed_in, union, category, body, lang, anonymous, None, consent_to_escalate
        )

    def file_voice_grievance(
        self,
        signed_in: SignedIn,
        *,
        union_id: int,
        category: GrievanceCategory,
        recording: bytes,
        lang: Language,
        anonymous: bool,
        consent_to_escalate: bool = False,
    ) -> FiledReport:
        """A spoken grievance report: the recording decoded, trimmed and coded with Codec2
        in memory (:mod:`shipboard.voice`), sealed to the union with the case number
        inside exactly like a written report, and only the sealed bytes committed into the
        grievance lane. Neither the recording nor its speech is ever written to disk or
        logged (only sizes). CPU-bound: call it in a thread. Raises
        :class:`~shipboard.errors.VoiceNoteRefused` (nothing stored) like a voice message."""
        union = self.config.union(union_id)
        if union is None:
            raise UnknownUnion("This union is not known on this vessel. Choose one from the list.")
        voice = self.config.voice
        coded = code_recording(recording, limit_s=voice.max_seconds, mode=voice.mode, journal=False)
        spoken = SpokenReport(coded.mode, coded.duration_ms, coded.frames)
        del coded
        return self._seal_and_file(
            signed_in, union, category, "", lang, anonymous, spoken, consent_to_escalate
        )

    def _seal_and_file(
        self,
        signed_in: SignedIn,
        union: UnionConfig,
        category: GrievanceCategory,
        body: str,
        lang: Language,
        anonymous: bool,
        voice: SpokenReport | None,
        consent_to_escalate: bool,
    ) -> FiledReport:
        """Seal a report (written ``body``, or spoken ``voice``) with a new case number and
        receipt code, and commit it into the lane (or on its own, without a lane)."""
        now = self.clock()
        receipt_code = new_receipt_code()
        member = signed_in.member
        case = self.new_case_number() if self.lane is not None else None
        plaintext = GrievancePlaintext(
            category=category,
            text=body,
            lang=lang,
            receipt_code=receipt_code,
            written_minutes=int(now // 60),
            crew_name=None if anonymous else member.name,
            crew_document=None if anonymous else member.document,
            # the union's notes come back sealed to a key only the reporter's PIN unlocks
            reply_key=reporter_reply_keys(signed_in.case_key).public_key,
            case_number=case,
            consent_to_escalate=consent_to_escalate,
            voice=voice,
        )
        seal = seal_grievance if self.lane is None else seal_grievance_unpadded
        try:
            sealed = seal(plaintext, union.public_key, self.codebook)
        except LimitExceeded as exc:
            raise MessageTooLarge(
                "The report is too long to send. Please shorten it or send it in two reports."
            ) from exc
        del plaintext, body, voice
        if case is None:  # no lane (tests only): the report travels on its own
            return self._on_its_own(signed_in, union.union_id, sealed, receipt_code)
        entry = CaseEntry(case, union.union_id, int(now // 60), receipt_code, "B")
        filed = self._into_lane(signed_in, union, sealed, entry, now)
        return FiledReport(
            entry.report_number, case, receipt_code, now, self._leaves_by(filed.released_by)
        )

    def file_sealed_grievance(
        self,
        signed_in: SignedIn,
        *,
        union_id: int,
        sealed: bytes,
        case_number: str | None = None,
    ) -> FiledReport:
        """Commit a report sealed on the crew member's phone (intake mode A).

        The agent never sees the text: it checks only that the union is known, that the
        ciphertext is one of the padding buckets' sizes and that ``case_number`` is one of
        this vessel's (the page drew it with :meth:`new_case_number` and the phone sealed
        it into the report; a page from before the lane sends none, and one is drawn),
        then puts it into the lane exactly like a mode-B report. The receipt code stays on
        the phone (the returned one is empty)."""
        union = self.config.union(union_id)
        if union is None:
            raise UnknownUnion("This union is not known on this vessel. Choose one from the list.")
        if len(sealed) - SEAL_OVERHEAD not in PADDING_BUCKETS:
            raise BadText(
                f"The sealed report has {len(sealed)} bytes, which is no report size. "
                "Reload the page and send it again."
            )
        if self.lane is None:  # no lane (tests only): the report travels on its own
            return self._on_its_own(signed_in, union_id, sealed, "")
        if case_number is None:
            case_number = self.new_case_number()
        try:
            vessel, _ = parse_case_number(case_number)
        except InvalidEnvelope:
            vessel = -1
        if vessel != self.config.vessel.vessel_id:
            raise BadText("The page is too old. Reload it and send the report again.")
        now = self.clock()
        entry = CaseEntry(case_number, union.union_id, int(now // 60), None, "A")
        filed = self._into_lane(signed_in, union, sealed, entry, now)
        return FiledReport(
            entry.report_number, case_number, "", now, self._leaves_by(filed.released_by)
        )

    def _into_lane(
        self,
        signed_in: SignedIn,
        union: UnionConfig,
        sealed: bytes,
        entry: CaseEntry,
        now: float,
    ) -> FiledInLane:
        """Commit ``sealed`` into the lane with the reporter's casebook entry, in one
        transaction (a duress sign-in files too, and its casebook stays as it was)."""
        assert self.lane is not None
        crew, case_key = signed_in.member.crew, signed_in.case_key

        def casebook(tx: Transaction) -> None:
            Casebook.add_case(tx, crew, case_key, entry)

        try:
            return self.lane.file(
                sealed,
                union.public_key,
                report_number=entry.report_number,
                now=now,
                also=None if signed_in.duress else casebook,
            )
        except LaneFull as full:
            shape = self.lane.shape
            retry_at = full.try_again_at(shape, now)
            raise LaneBusy(self._local_time(retry_at), float(retry_at)) from None
        except ReportTooLong:
            raise ReportTooLongForLane(self.lane_limit_kb()) from None
        # No doorbell: the reservoir is nothing the link reads (its blocks reach the outbox
        # at the period's end, report or not), and a link woken by a report would plan,
        # and maybe log, at the moment someone reported.

    def _leaves_by(self, released_at: float) -> int:
        """By when an item released (or accepted) at ``released_at`` leaves: the grievance
        latency later at most (the scheduler opens a session for it by then)."""
        return math.ceil(released_at) + 60 * self.config.latency_minutes["grievance"]

    def lane_limit_kb(self) -> int:
        """The longest sealed report the lane ever carries, in KB (rounded down, at least
        one: what the crew member is told)."""
        if self.lane is None:
            return MAX_GRIEVANCE_BYTES // 1024
        return max(1, self.lane.most_report_bytes() // 1024)

    def _local_time(self, seconds: float) -> str:
        moment = datetime.fromtimestamp(seconds, UTC).astimezone(self.config.time_zone)
        return moment.strftime("%Y-%m-%d %H:%M")

    def _on_its_own(
        self, signed_in: SignedIn, union_id: int, sealed: bytes, receipt_code: str
    ) -> FiledReport:
        accepted = self.outbox.accept_grievance(
            union_id=union_id, sealed=sealed, case_key=signed_in.case_key, now=self.clock()
        )
        self._ring(MessageKind.GRIEVANCE)
        case_number = make_case_number(self.config.vessel.vessel_id, accepted.message_seq)
        return FiledReport(
            accepted.message_seq,
            case_number,
            receipt_code,
            accepted.accepted_at,
            self._leaves_by(accepted.accepted_at),
        )

    def sos(
        self,
        crew: int,
        *,
        note: str | None,
        lang: Language | None,
        position: tuple[int, int] | None,
    ) -> AcceptedMessage:
        """Commit a signed-in crew member's SOS; it goes at once and is never refused for
        quota, nor for a note that cannot be read (the note is then cleaned or left out)
        or a position that is not on Earth (left out)."""
        language = lang or self.register.get(crew).language
        accepted = self.outbox.accept_sos(
            crew=crew,
            now=self.clock(),
            lang=language,
            note=sos_note(note, language),
            position=sos_position(position),
        )
        self._ring(MessageKind.SOS)
        return accepted

    def sos_without_pin(
        self,
        crew: int,
        *,
        note: str | None,
        lang: Language,
        position: tuple[int, int] | None = None,
    ) -> SosQueued:
        """Commit an SOS sent without a PIN (from the sign-in page, or a locked-out crew
        member): attributed to the crew number typed, flagged as unauthenticated on the
        link and ashore. Never refused: a crew number nobody has (a typo) still goes, and
        repeats are coalesced into an SOS already queued (:mod:`shipboard.sos_limit`)."""
        clean = sos_note(note, lang)
        with self._sos_lock:
            now = self.clock()
            joined = self._sos_limit.joins(crew, clean, now)
            if joined is not None:
                logger.warning(
                    "SOS without a PIN joined SOS %d (%d coalesced so far)",
                    joined,
                    self._sos_limit.coalesced,
                )
                return SosQueued(joined, coalesced=True)
            accepted = self.outbox.accept_sos(
                crew=crew,
                now=now,
                lang=lang,
                note=clean,
                position=sos_position(position),
                signed_in=False,
            )
            self._sos_limit.queued(crew, clean, accepted.message_seq, now)
        logger.warning("SOS %d committed without a PIN", accepted.message_seq)
        self._ring(MessageKind.SOS)
        return SosQueued(accepted.message_seq, coalesced=False)

    def _ring(self, kind: MessageKind) -> None:
        if self.on_accept is not None:
            self.on_accept(kind)
