"""Crew register: crew members, their PINs and their family contacts (a vessel database repository).

It owns the tables ``crew``, ``contacts`` and ``crew_pins`` (migration set
``crew_register``, :mod:`shipboard.schema`); nobody else writes them. The outbox announces
new contacts to the shore through :meth:`CrewRegister.unannounced_contacts` and its two
siblings, inside the outbox's own transaction.

A crew member is known on board by a **crew number** (their index on the link) and signs
in to the web page and the SMTP intake with that number and a PIN that is printed once,
when they are added (or when a new one is made). Only a scrypt hash of the PIN is kept.

From the same PIN, with a second salt, sign-in derives a **case key** that never touches
the disk: it opens the crew member's casebook (:mod:`shipboard.casebook`, made here at
registration) and finds the reports tagged before the lane (see
:func:`shipboard.outbox.reporter_tag`), so that only they find their cases on board. A
new PIN therefore also hides the old cases from the page; the union still has them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from protocol.languages import Language
from protocol.months import week_of
from shipboard.casebook import Casebook
from shipboard.database import OnDatabase, Transaction
from shipboard.errors import CrewRegisterError, NotSignedIn

logger = logging.getLogger(__name__)

PIN_DIGITS = 8
#: Crew numbers the doors take (the register numbers from 1; SQLite holds far more).
MAX_CREW_NUMBER = 2**31 - 1
#: Longest PIN that is hashed at all: longer input cannot be a PIN (they have 6-12 digits).
MAX_PIN_CHARS = 64
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")

ContactChannel = Literal["email", "sms"]

#: What a door says to a wrong crew number or PIN (it never says which of the two).
WRONG_PIN = "The crew number or the PIN is wrong."
#: What a door says to a signed-off crew member with their right PIN.
SIGNED_OFF = "You are signed off this vessel; messages can no longer be sent."


@dataclass(frozen=True, slots=True)
class CrewMember:
    """One crew member as registered (the PIN hash stays in the database)."""

    crew: int
    name: str
    document: str  # Seabook or work-permit number
    nationality: str
    language: Language
    signed_off: bool


@dataclass(frozen=True, slots=True)
class Contact:
    """A family contact of a crew member."""

    contact: int
    crew: int
    channel: ContactChannel
    address: str
    name: str | None
    language: Language | None


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A crew member who proved their PIN, with the case key derived from it.

    ``duress``: they typed their duress PIN. The doors then behave as for the PIN (nothing
    tells the two apart) but show no history, and ``case_key`` is a throwaway key."""

    member: CrewMember
    case_key: bytes
    duress: bool = False


class PinOutcome(Enum):
    """What one PIN turned out to be for one crew number."""

    RIGHT = "right"
    DURESS = "duress"
    WRONG = "wrong"


@dataclass(frozen=True, slots=True)
class PinCheck:
    """The outcome of :meth:`CrewRegister.check_pin`; ``signed_in`` unless WRONG."""

    outcome: PinOutcome
    signed_in: SignedIn | None = None


def new_pin() -> str:
    """A fresh random PIN of :data:`PIN_DIGITS` digits."""
    return "".join(secrets.choice("0123456789") for _ in range(PIN_DIGITS))


def _hash(pin: str, salt: bytes) -> bytes:
    return hashlib.scrypt(pin.encode("utf-8"), salt=salt, **_SCRYPT)


def normalise_address(channel: ContactChannel, address: str) -> str:
    """Check and normalise a contact address (e-mail, or phone number in +E.164 form)."""
    text = _unicode(address.strip(), "address")
    if channel == "email":
        if not _EMAIL.match(text) or len(text) > 254:
            raise CrewRegisterError(f"{text!r} is not an e-mail address (name@example.org)")
        local, _, domain = text.rpartition("@")
        return f"{local}@{domain.lower()}"
    digits = re.sub(r"[\s\-().]", "", text)
    if not _PHONE.match(digits):
        raise CrewRegisterError(
            f"{text!r} is not a phone number in international form (+ country code, e.g. "
            "+959123456789)"
        )
    return digits


@dataclass(frozen=True, slots=True)
class ContactChange:
    """A contact the shore has not heard of yet (a batch announces it)."""

    contact: int
    crew: int
    channel: ContactChannel
    address: str
    name: str | None
    language: Language | None
    crew_name: str


class CrewRegister:
    """Adds, changes and signs off crew members and their contacts (see the module doc)."""

    def __init__(self, on: OnDatabase) -> None:
        self.database = on.database

    def add(
        self, *, name: str, document: str, nationality: str, language: Language, now: float
    ) -> tuple[CrewMember, str]:
        """Register a crew member; returns them and their PIN (show it once, keep no copy)."""
        name, document, nationality = (
            _clean(name, "name"),
            _clean(document, "document"),
            (_clean(nationality, "nationality")),
        )
        pin = new_pin()
        pin_salt, case_salt = secrets.token_bytes(16), secrets.token_bytes(16)
        try:
            with self.database.transaction("add the crew member") as db:
                cursor = db.execute(
                    "INSERT INTO crew (name, document, nationality, language, pin_salt, "
                    "pin_hash, case_salt, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        document,
                        nationality,
                        language.code,
                        pin_salt,
                        _hash(pin, pin_salt),
                        case_salt,
                        now,
                    ),
                )
                crew = cursor.lastrowid
                assert crew is not None
                # their casebook exists from now on, whether they ever file or not
                Casebook.blank(db, crew)
        except sqlite3.IntegrityError:
            raise CrewRegisterError(
                "a crew member with this document number is already on board; use "
                "'crew update' to change them, or 'crew sign-off' first"
            ) from None
        assert crew is not None
        logger.info("crew member %d added", crew)
        return CrewMember(crew, name, document, nationality, language, False), pin

    def update(
        self,
        crew: int,
        *,
        name: str | None = None,
        document: str | None = None,
        nationality: str | None = None,
        language: Language | None = None,
        reset_pin: bool = False,
    ) -> tuple[CrewMember, str | None]:
        """Change a crew member's details; with ``reset_pin`` make and return a new PIN."""
        changes: dict[str, object] = {}
        if name is not None:
            changes["name"] = _clean(name, "name")
        if document is not None:
            changes["document"] = _clean(document, "document")
        if nationality is not None:
            changes["nationality"] = _clean(nationality, "nationality")
        if language is not None:
            changes["language"] = language.code
        pin = None
        if reset_pin:
            pin = new_pin()
            pin_salt = secrets.token_bytes(16)
            changes.update(
                pin_salt=pin_salt, pin_hash=_hash(pin, pin_salt), case_salt=secrets.token_bytes(16)
            )
        self.get(crew)
        if changes:
            assignments = ", ".join(f"{column} = ?" for column in changes)
            try:
                with self.database.transaction("update the crew member") as db:
                    db.execute(
                        f"UPDATE crew SET {assignments} WHERE crew = ?", (*changes.values(), crew)
                    )
            except sqlite3.IntegrityError:
                raise CrewRegisterError(
                    "another crew member on board has this document number"
                ) from None
        logger.info("crew member %d updated", crew)
        return self.get(crew), pin

    def choose_language(self, crew: int, language: Language) -> CrewMember:
        """Make ``language`` the crew member's own (the page picks it at their next sign-in,
        and it is their register entry's language); nothing is written if it already is."""
        member = self.get(crew)
        if member.language is language:
            return member
        with self.database.transaction("keep the crew member's language") as db:
            db.execute("UPDATE crew SET language = ? WHERE crew = ?", (language.code, crew))
        logger.info("crew member %d chose language %s", crew, language.code)
        return self.get(crew)

    def sign_off(self, crew: int, now: float) -> CrewMember:
        """Mark a crew member as signed off (their messages already accepted still go)."""
        member = self.get(crew)
        if member.signed_off:
            raise CrewRegisterError(f"crew member {crew} is already signed off")
        with self.database.transaction("sign off the crew member") as db:
            db.execute("UPDATE crew SET signed_off_at = ? WHERE crew = ?", (now, crew))
        logger.info("crew member %d signed off", crew)
        return self.get(crew)

    def get(self, crew: int) -> CrewMember:
        """The crew member with this number (signed off or not)."""
        with self.database.reading() as db:
            row = db.execute(
                "SELECT crew, name, document, nationality, language, signed_off_at "
                "FROM crew WHERE crew = ?",
                (crew,),
            ).fetchone()
        if row is None:
            raise CrewRegisterError(f"there is no crew member number {crew}; see 'crew list'")
        return _member(row)

    def members(self, *, include_signed_off: bool = False) -> list[CrewMember]:
        """Crew members, by number."""
        where = "" if include_signed_off else "WHERE signed_off_at IS NULL"
        with self.database.reading() as db:
            rows = db.execute(
                "SELECT crew, name, document, nationality, language, signed_off_at "
                f"FROM crew {where} ORDER BY crew"
            ).fetchall()
        return [_member(row) for row in rows]

    def sign_in(self, crew: int, pin: str) -> SignedIn:
        """Check a crew number and PIN; raise :class:`NotSignedIn` with a sentence if wrong.

        The duress PIN is wrong here; the doors use :meth:`check_pin` through
        :class:`shipboard.signin.CrewSignIn`, which counts wrong PINs across doors."""
        checked = self.check_pin(crew, pin)
        if checked.outcome is not PinOutcome.RIGHT or checked.signed_in is None:
            raise NotSignedIn(WRONG_PIN)
        if checked.signed_in.member.signed_off:
            raise NotSignedIn(SIGNED_OFF)
        return checked.signed_in

    def check_pin(self, crew: int, pin: str) -> PinCheck:
        """Evaluate one PIN for one crew number: their PIN, their duress PIN, or wrong.

        Two scrypt hashes whatever the answer (unknown crew number, no duress PIN set,
        either PIN right), so the time taken tells nothing. Text that cannot be a PIN
        (not ASCII digits, or over :data:`MAX_PIN_CHARS`) is wrong without hashing. A
        signed-off crew member's right PIN is RIGHT: the caller refuses them."""
        if not isinstance(pin, str) or not _pin_shaped(pin):
            return PinCheck(PinOutcome.WRONG)
        row = duress = None
        if 0 < crew <= MAX_CREW_NUMBER:
            with self.database.reading() as db:  # only reads: sign-in works on a full disk
                row = db.execute(
                    "SELECT crew, name, document, nationality, language, signed_off_at, "
                    "pin_salt, pin_hash, case_salt FROM crew WHERE crew = ?",
                    (crew,),
                ).fetchone()
                duress = db.execute(
                    "SELECT duress_salt, duress_hash FROM crew_pins WHERE crew = ? "
                    "AND duress_salt IS NOT NULL",
                    (crew,),
                ).fetchone()
        pin_salt, pin_hash = (bytes(row[6]), bytes(row[7])) if row else (b"0" * 16, b"")
        duress_salt, duress_hash = (
            (bytes(duress[0]), bytes(duress[1])) if duress else (b"1" * 16, b"")
        )
        right = hmac.compare_digest(_hash(pin, pin_salt), pin_hash) and row is not None
        under_duress = hmac.compare_digest(_hash(pin, duress_salt), duress_hash)
        under_duress = under_duress and duress is not None
        if row is None or not (right or under_duress):
            return PinCheck(PinOutcome.WRONG)
        member = _member(row[:6])
        if right:
            return PinCheck(PinOutcome.RIGHT, SignedIn(member, _hash(pin, bytes(row[8]))))
        # a throwaway case key (hashed as the real one is, to take the same time): the
        # duress sign-in finds no case and files under no one's
        throwaway = _hash(pin, secrets.token_bytes(16))
        return PinCheck(PinOutcome.DURESS, SignedIn(member, throwaway, duress=True))

    # weeks signed in (the statement's weekly access) ----------------------------------------

    def note_signed_in(self, crew: int, now: float) -> bool:
        """Record that ``crew`` signed in during the ISO week of ``now`` (UTC); whether the
        week was new. Only the week is kept, never the time; a week already recorded costs
        a read, not a write."""
        week = week_of(now)
        with self.database.reading() as db:
            known = db.execute(
                "SELECT 1 FROM crew_signed_in_weeks WHERE crew = ? AND week = ?", (crew, week)
            ).fetchone()
        if known is not None:
            return False
        with self.database.transaction("record the week of a sign-in") as db:
            db.execute(
                "INSERT OR IGNORE INTO crew_signed_in_weeks (crew, week) VALUES (?, ?)",
                (crew, week),
            )
        return True

    def signed_in_weeks(self, weeks: Sequence[int]) -> dict[int, tuple[int, ...]]:
        """crew -> the weeks of ``weeks`` in which they signed in (those who did)."""
        if not weeks:
            return {}
        with self.database.reading() as db:
            rows = db.execute(
                "SELECT crew, week FROM crew_signed_in_weeks WHERE week >= ? AND week <= ? "
                "ORDER BY crew, week",
                (min(weeks), max(weeks)),
            ).fetchall()
        wanted = set(weeks)
        found: dict[int, list[int]] = {}
        for crew, week in rows:
            if int(week) in wanted:
                found.setdefault(int(crew), []).append(int(week))
        return {crew: tuple(found_weeks) for crew, found_weeks in found.items()}

    # PINs chosen on the web page -----------------------------------------------------------
    # A side table: the PIN hash the crew member chose (so a PIN reset by the captain shows
    # as "not chosen yet") and an optional duress PIN, which opens an empty inbox.

    def pin_chosen(self, crew: int) -> bool:
        """Whether the crew member chose their current PIN (False after a captain's reset)."""
        with self.database.reading() as db:  # only reads: sign-in works on a full disk
            row = db.execute(
                "SELECT p.chosen_hash, c.pin_hash FROM crew_pins p JOIN crew c USING (crew) "
                "WHERE crew = ?",
                (crew,),
            ).fetchone()
        return row is not None and hmac.compare_digest(bytes(row[0]), bytes(row[1]))

    def choose_pin(self, crew: int, pin: str, duress_pin: str | None, now: float) -> SignedIn:
        """Set the crew member's own PIN (and optional duress PIN); returns the new sign-in."""
        for value, what in ((pin, "PIN"), (duress_pin, "duress PIN")):
            if value is not None and (not value.isascii() or not value.isdigit()):
                raise CrewRegisterError(f"the {what} must be digits only")
            if value is not None and not 6 <= len(value) <= 12:
                raise CrewRegisterError(f"the {what} must have 6 to 12 digits")
        if duress_pin is not None and duress_pin == pin:
            raise CrewRegisterError("the duress PIN must differ from the PIN")
        pin_salt, case_salt = secrets.token_bytes(16), secrets.token_bytes(16)
        pin_hash = _hash(pin, pin_salt)
        duress_salt = secrets.token_bytes(16) if duress_pin else None
        duress_hash = _hash(duress_pin, duress_salt) if duress_pin and duress_salt else None
        self.get(crew)
        with self.database.transaction("set the crew member's PIN") as db:
            db.execute(
                "UPDATE crew SET pin_salt = ?, pin_hash = ?, case_salt = ? WHERE crew = ?",
                (pin_salt, pin_hash, case_salt, crew),
            )
            db.execute(
                "INSERT OR REPLACE INTO crew_pins (crew, chosen_hash, duress_salt, duress_hash, "
                "chosen_at) VALUES (?, ?, ?, ?, ?)",
                (crew, pin_hash, duress_salt, duress_hash, now),
            )
        logger.info("crew member %d chose a PIN", crew)  # never log whether a duress PIN exists
        return self.sign_in(crew, pin)

    # contacts ----------------------------------------------------------------------------

    def add_contact(
        self,
        crew: int,
        *,
        channel: ContactChannel,
        address: str,
        name: str | None,
        language: Language | None,
        now: float,
    ) -> Contact:
        """Add a family contact (announced to the shore in the next batch)."""
        if channel not in ("email", "sms"):
            raise CrewRegisterError(f"channel must be 'email' or 'sms', not {channel!r}")
        member = self.get(crew)
        if member.signed_off:
            raise CrewRegisterError(f"crew member {crew} is signed off")
        clean = normalise_address(channel, address)
        contact_name = _clean(name, "contact name") if name else None
        try:
            with self.database.transaction("add the contact") as db:
                cursor = db.execute(
                    "INSERT INTO contacts (crew, channel, address, name, language, added_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (crew, channel, clean, contact_name, language.code if language else None, now),
                )
                contact = cursor.lastrowid
        except sqlite3.IntegrityError:
            raise CrewRegisterError("this contact is already in the crew member's list") from None
        assert contact is not None
        logger.info("contact %d added for crew member %d", contact, crew)
        return Contact(contact, crew, channel, clean, contact_name, language)

    def contacts(self, crew: int) -> list[Contact]:
        """The crew member's family contacts."""
        with self.database.reading() as db:
            rows = db.execute(
                "SELECT contact, crew, channel, address, name, language FROM contacts "
                "WHERE crew = ? ORDER BY contact",
                (crew,),
            ).fetchall()
        return [_contact(row) for row in rows]

    def find_contact(self, crew: int, channel: ContactChannel, address: str) -> Contact | None:
        """The crew member's contact with this address, if there is one."""
        try:
            clean = normalise_address(channel, address)
        except CrewRegisterError:
            return None
        for contact in self.contacts(crew):
            if contact.channel == channel and contact.address.lower() == clean.lower():
                return contact
        return None

    def contact(self, crew: int, contact: int) -> Contact | None:
        """The crew member's contact with this number, if it is theirs."""
        for item in self.contacts(crew):
            if item.contact == contact:
                return item
        return None

    # inside another repository's transaction (``tx``) ------------------------------------

    @staticmethod
    def is_registered(tx: Transaction, crew: int) -> bool:
        """Whether crew number ``crew`` is (or was) on the register."""
        return tx.execute("SELECT 1 FROM crew WHERE crew = ?", (crew,)).fetchone() is not None

    @staticmethod
    def unannounced_contacts(tx: Transaction) -> list[ContactChange]:
        """Contacts no batch has announced to the shore yet (or must announce again)."""
        rows = tx.execute(
            "SELECT contacts.contact, contacts.crew, channel, address, contacts.name, "
            "contacts.language, crew.name FROM contacts JOIN crew USING (crew) "
            "WHERE announced_in_batch IS NULL ORDER BY contacts.contact"
        ).fetchall()
        return [_contact_change(row) for row in rows]

    @staticmethod
    def mark_announced(tx: Transaction, contacts: Sequence[int], batch_seq: int) -> None:
        """Batch ``batch_seq`` announces these contacts."""
        tx.executemany(
            "UPDATE contacts SET announced_in_batch = ? WHERE contact = ?",
            [(batch_seq, contact) for contact in contacts],
        )

    @staticmethod
    def announce_again(
        tx: Transaction, *, batch_seq: int | None = None, contact: int | None = None
    ) -> None:
        """Announce again what batch ``batch_seq`` announced (the shore refused it), or
        contact ``contact`` (the shore says it does not know it)."""
        if batch_seq is not None:
            tx.execute(
                "UPDATE contacts SET announced_in_batch = NULL WHERE announced_in_batch = ?",
                (batch_seq,),
            )
        if contact is not None:
            tx.execute(
                "UPDATE contacts SET announced_in_batch = NULL WHERE contact = ?", (contact,)
            )


def _pin_shaped(pin: str) -> bool:
    return 0 < len(pin) <= MAX_PIN_CHARS and pin.isascii() and pin.isdigit()


def _unicode(text: str, what: str) -> str:
    """``text``, or :class:`CrewRegisterError` when it holds lone surrogates (``"\\ud800"``),
    which neither SQLite nor mail can store."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise CrewRegisterError(f"the {what} is not valid Unicode text") from None
    return text


def _clean(value: str, what: str) -> str:
    text = _unicode(" ".join(value.split()), what)
    if not text:
        raise CrewRegisterError(f"the {what} is empty")
    if len(text) > 200:
        raise CrewRegisterError(f"the {what} is longer than 200 characters")
    return text


def _member(row: tuple[object, ...] | sqlite3.Row) -> CrewMember:
    crew, name, document, nationality, language, signed_off_at = tuple(row)
    return CrewMember(
        crew=int(str(crew)),
        name=str(name),
        document=str(document),
        nationality=str(nationality),
        language=Language.from_code(str(language)),
        signed_off=signed_off_at is not None,
    )


def _contact_change(row: tuple[object, ...]) -> ContactChange:
    found = _contact(row[:6])
    return ContactChange(
        found.contact,
        found.crew,
        found.channel,
        found.address,
        found.name,
        found.language,
        str(row[6]),
    )


def _contact(row: tuple[object, ...]) -> Contact:
    contact, crew, channel, address, name, language = row
    return Contact(
        contact=int(str(contact)),
        crew=int(str(crew)),
        channel="email" if channel == "email" else "sms",
        address=str(address),
        name=str(name) if name is not None else None,
        language=Language.from_code(str(language)) if language else None,
    )
