"""Errors: the one hierarchy of the shipboard agent, drawn here.

Crew-facing refusals carry a sentence a crew member understands (``.sentence``) and are
turned into an SMTP reply or an HTTP problem detail at the boundary; operator-facing
errors name the file, the key or the state and say what to do.

::

    ShipboardError                    (base; never raised itself)
    ├── ConfigError                   a setting is missing, malformed or not allowed
    ├── OutboxUnavailable             the vessel database cannot commit (disk full, read-only,
    │                                 broken, or written by a newer release)
    ├── IllegalTransition             a message state change the state table forbids (a bug)
    ├── NothingToSend                 make_batch() was asked for an empty batch
    ├── CrewRegisterError             a crew or contact change the register refuses
    └── IntakeRefused                 a crew member's message is refused (they are told why)
        ├── NotSignedIn               unknown crew number, wrong PIN, signed off, expired
        ├── SignInPaused              too many wrong PINs for this crew number: wait N minutes
        ├── UnknownContact            a recipient that is not in the crew member's contacts
        ├── MessageTooLarge           over the size limit for one message
        │   ├── MessageTooLong        a family message over it by N characters
        │   └── ReportTextTooLong     a report's text over its limit by N characters
        ├── BadText                   text that cannot be read (encoding, control characters)
        │   └── EmptyText             nothing written (said apart from "cannot be read")
        ├── QuotaExceeded             not enough of this month's text quota left
        ├── UnknownUnion              a grievance to a union this vessel does not know
        ├── LaneBusy                  the grievance lane has no room now: try again at a time
        ├── ReportTooLongForLane      a report longer than the grievance lane ever carries
        └── VoiceNoteRefused          a recording that cannot become a voice note
            ├── VoiceNoteTooLong      more speech than [voice] max_seconds
            ├── VoiceNoteSilent       nothing in it loud enough to be speech
            ├── VoiceNoteNotAudio     a file that holds no sound (a photo, a silent video)
            ├── VoiceNoteUnreadable   a container the vessel cannot read, or cut short
            └── VoiceNoteToSms        (no longer raised: SMS contacts get a link)

Refusals whose sentence has figures in it (a time, a limit) also carry it as a catalogue
``msgid`` with ``fields``, so each door says it in the crew member's language.
"""

from __future__ import annotations

import math

from common.exits import EX_CONFIG


class ShipboardError(Exception):
    """Base of every error the shipboard agent raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(ShipboardError):
    """A configuration setting is missing, malformed or refused; the message says the fix."""

    #: A command ending in this error exits 78 (common.exits).
    exit_code = EX_CONFIG


class OutboxUnavailable(ShipboardError):
    """The vessel database (outbox, crew register, inbox ...) cannot store anything now
    (disk full, read-only, corrupt): nothing was saved."""

    sentence = (
        "The message was NOT saved: the storage on board is full or broken. "
        "Please try again later and tell the captain or the union."
    )


class IllegalTransition(ShipboardError):
    """A message state change that the state table does not allow."""

    def __init__(self, event: str, state: str, message_seq: int | None = None) -> None:
        where = f"message {message_seq}" if message_seq is not None else "a message"
        super().__init__(f"event {event!r} is not allowed for {where} in state {state!r}")
        self.event = event
        self.state = state
        self.message_seq = message_seq


class NothingToSend(ShipboardError):
    """make_batch() found no message, contact change or acknowledgement to put in a batch."""


class CrewRegisterError(ShipboardError):
    """A crew or contact change that the register refuses (unknown crew, duplicate, ...)."""


class IntakeRefused(ShipboardError):
    """A crew member's message or report is refused; ``sentence`` is what they are told."""

    #: Short machine name, used as the problem type and in logs.
    code = "refused"
    #: HTTP status and SMTP reply code for this refusal.
    http_status = 400
    smtp_code = 550

    #: The sentence as a catalogue msgid with ``{fields}`` (None: ``sentence`` is a msgid
    #: itself, or not in the catalogue).
    msgid: str | None = None

    def __init__(self, sentence: str) -> None:
        super().__init__(sentence)
        self.sentence = sentence
        #: What fills the msgid's ``{fields}``.
        self.fields: dict[str, object] = {}


class NotSignedIn(IntakeRefused):
    """Unknown crew number, wrong PIN, signed-off crew member or expired sign-in."""

    code = "not-signed-in"
    http_status = 401
    smtp_code = 535


class SignInPaused(IntakeRefused):
    """Too many wrong PINs for this crew number lately, on any door: wait, then try again.

    Raised before the PIN is looked at (``common.signins.SignInGuard``). It is a pause that
    ends by itself, never a lock that someone on board must lift; SOS needs no PIN."""

    code = "sign-in-paused"
    http_status = 429
    smtp_code = 454

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = max(1.0, retry_after_s)
        self.retry_after_minutes = max(1, math.ceil(self.retry_after_s / 60))
        super().__init__(
            f"Too many wrong PINs for this crew number. Wait {self.retry_after_minutes} "
            "minute(s), then try again. SOS works without a PIN."
        )


class UnknownContact(IntakeRefused):
    """The recipient is not in the crew member's family contacts."""

    code = "unknown-contact"
    http_status = 404
    smtp_code = 550


class MessageTooLarge(IntakeRefused):
    """The message is over the size limit for one message."""

    code = "too-large"
    http_status = 413
    smtp_code = 552


class MessageTooLong(MessageTooLarge):
    """A family message over :data:`shipboard.message_limit.MAX_MESSAGE_BYTES`: it must be
    shortened by ``over`` characters (counted as the crew counts them); nothing was stored."""

    msgid = (
        "The message is too long by {n} characters. Shorten it by {n} characters, or send "
        "the rest in a second message. One message holds about {limit} characters."
    )

    def __init__(self, over: int, limit_characters: int) -> None:
        super().__init__(self.msgid.format(n=over, limit=limit_characters))
        self.fields = {"n": over, "limit": limit_characters}
        #: Characters to take off (code points of the normalised text).
        self.over = over


class ReportTextTooLong(MessageTooLarge):
    """A report whose text is over :data:`shipboard.message_limit.MAX_GRIEVANCE_BYTES`: it
    must be shortened by ``over`` characters, or split; nothing was stored."""

    msgid = (
        "The report is too long by {n} characters. Shorten it by {n} characters, or send "
        "the rest in a second report."
    )

    def __init__(self, over: int) -> None:
        super().__init__(self.msgid.format(n=over))
        self.fields = {"n": over}
        #: Characters to take off (code points of the normalised text).
        self.over = over


class BadText(IntakeRefused):
    """The text cannot be read (bad encoding, control characters, empty)."""

    code = "bad-text"
    http_status = 422
    smtp_code = 550


class EmptyText(BadText):
    """Nothing was written (a blank message or report): said as such, in the crew member's
    language (the sentence is its own catalogue ``msgid``), never as "cannot be read"."""

    MESSAGE = "The message is empty. Write something, then send it."
    REPORT = "The report is empty. Write what happened, then send it."

    def __init__(self, sentence: str) -> None:
        super().__init__(sentence)
        self.msgid = sentence


class QuotaExceeded(IntakeRefused):
    """Not enough of this month's text quota left for this message."""

    code = "quota-exceeded"
    http_status = 429
    smtp_code = 452

    def __init__(self, sentence: str, *, remaining_bytes: int, needed_bytes: int) -> None:
        super().__init__(sentence)
        self.remaining_bytes = remaining_bytes
        self.needed_bytes = needed_bytes


class UnknownUnion(IntakeRefused):
    """A grievance report addressed to a union that this vessel does not know."""

    code = "unknown-union"
    http_status = 404
    smtp_code = 550


class LaneBusy(IntakeRefused):
    """The grievance lane has no room for this report now (reports filed before it fill it,
    or the agent restarted lately): nothing was stored; the crew member keeps their text
    and sends it again after ``time`` (the vessel's local time, written out)."""

    code = "lane-full"
    http_status = 503
    smtp_code = 451
    msgid = (
        "The report was NOT saved: the reporting channel is full until {time}. Keep your "
        "text and send it again after {time}."
    )

    def __init__(self, time: str, retry_at: float) -> None:
        super().__init__(self.msgid.format(time=time))
        self.fields = {"time": time}
        #: When there is room (seconds since 1970).
        self.retry_at = retry_at


class ReportTooLongForLane(MessageTooLarge):
    """A report longer than the grievance lane can ever carry (``limit_kb`` sealed): it must
    be shortened or split; nothing was stored."""

    code = "too-large"
    msgid = (
        "The report is too long to send: the reporting channel takes at most {limit} KB. "
        "Please shorten it or send it in two reports."
    )

    def __init__(self, limit_kb: int) -> None:
        super().__init__(self.msgid.format(limit=limit_kb))
        self.fields = {"limit": limit_kb}


class VoiceNoteRefused(IntakeRefused):
    """A recording that cannot become a voice note: nothing was stored or charged. Each
    kind says so in the crew member's language (``msgid`` is in the crew page's catalogue,
    :data:`shipboard.web.voice_sentences.VOICE_REFUSALS`)."""

    code = "voice-refused"
    http_status = 422
    msgid: str | None = None

    def __init__(self, **fields: object) -> None:
        assert self.msgid is not None
        super().__init__(self.msgid.format(**fields))
        self.fields = dict(fields)


class VoiceNoteTooLong(VoiceNoteRefused):
    """More speech than the vessel's limit (``[voice] max_seconds``)."""

    code = "voice-too-long"
    http_status = 413
    msgid = "The voice message is too long: at most {limit} seconds. Record a shorter one."


class VoiceNoteSilent(VoiceNoteRefused):
    """Nothing in the recording is loud enough to be speech."""

    code = "voice-silent"
    msgid = (
        "Nothing could be heard in the recording. Hold the button, speak close to the "
        "phone, then send it again."
    )


class VoiceNoteNotAudio(VoiceNoteRefused):
    """The file holds no sound."""

    code = "voice-not-audio"
    http_status = 415
    msgid = "This file is not a sound recording. Record your voice on the page and send that."


class VoiceNoteUnreadable(VoiceNoteRefused):
    """The recording is in a container the vessel cannot read, or it was cut short."""

    code = "voice-unreadable"
    http_status = 415
    msgid = (
        "The vessel's computer cannot read this recording. Record it again, or write "
        "the message instead."
    )


class VoiceNoteToSms(VoiceNoteRefused):
    """No longer raised: the relay links SMS contacts to a page that plays the voice
    message (``shore.voice_links``). Kept, with its sentence, for clients that know its
    problem type."""

    code = "voice-to-sms"
    msgid = (
        "Voice messages can only go to contacts with an e-mail address for now. Write to "
        "this contact instead."
    )
