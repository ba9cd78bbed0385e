"""A family message's subject on board: what the intake keeps of a mail's Subject line,
when it travels, and what it costs (the rules of ``Intake.send_messages``)."""

from __future__ import annotations

import dataclasses

import pytest

from protocol.batch import Direction, decode_batch
from protocol.codebook import Codebook
from protocol.envelopes import MAX_SUBJECT_CHARS, CrewMessage
from protocol.languages import Language
from protocol.signing import SigningKey
from shipboard.config import ShipConfig
from shipboard.intake import Intake, message_subject
from shipboard.outbox import Outbox

from .conftest import NOW, Crew


def _stored(outbox: Outbox) -> list[tuple[int, str | None, str | None, int]]:
    with outbox.reading() as db:
        rows = db.execute(
            "SELECT message_seq, body, subject, text_bytes FROM messages ORDER BY message_seq"
        ).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def _sent(
    outbox: Outbox, codebook: Codebook, vessel_key: SigningKey, seqs: list[int]
) -> list[CrewMessage]:
    _, data = outbox.make_batch(seqs, codebook, vessel_key, NOW + 60)
    batch = decode_batch(
        data, codebook=codebook, verify_key=vessel_key.verify_key, direction=Direction.UPLINK
    )
    return [e for e in batch.envelopes if isinstance(e, CrewMessage)]


def test_a_mails_subject_travels_with_its_text_and_counts_with_it(
    outbox: Outbox,
    ship_config: ShipConfig,
    codebook: Codebook,
    vessel_key: SigningKey,
    crew: Crew,
) -> None:
    """A crew member mails his mother and brother with the Subject "Money sent": the
    mother's message carries it (counted against his quota with the text) and the
    batch holds it; the brother's SMS has no Subject line, so his copy goes without."""
    intake = Intake(ship_config, outbox, codebook, clock=lambda: NOW)
    text = "ငွေ ၂၀၀ ပို့ပြီ"
    (mother,) = intake.send_messages(
        crew.member.crew, [crew.mother.contact], text, subject="Money sent"
    )
    (brother,) = intake.send_messages(
        crew.member.crew, [crew.brother.contact], text, subject="Money sent"
    )
    size = len(text.encode())
    assert _stored(outbox) == [
        (mother.message_seq, text, "Money sent", size + len("Money sent")),
        (brother.message_seq, text, None, size),
    ]
    sent = _sent(outbox, codebook, vessel_key, [mother.message_seq, brother.message_seq])
    assert [(m.body, m.subject) for m in sent] == [(text, "Money sent"), (text, None)]


def test_no_subject_travels_to_a_relay_that_does_not_read_them(
    outbox: Outbox,
    ship_config: ShipConfig,
    codebook: Codebook,
    vessel_key: SigningKey,
    crew: Crew,
) -> None:
    """On a vessel whose relay is older than subjects (the config does not say it reads
    them), the Subject is left out: the batch is what that relay can read, and the crew
    member pays for the text alone."""
    config = dataclasses.replace(
        ship_config, shore=dataclasses.replace(ship_config.shore, relay_reads_subjects=False)
    )
    intake = Intake(config, outbox, codebook, clock=lambda: NOW)
    (accepted,) = intake.send_messages(
        crew.member.crew, [crew.mother.contact], "all well", subject="news"
    )
    assert _stored(outbox) == [(accepted.message_seq, "all well", None, len("all well"))]
    (sent,) = _sent(outbox, codebook, vessel_key, [accepted.message_seq])
    assert sent.subject is None


def test_a_quick_message_or_a_mail_that_is_only_a_subject_has_no_subject(
    outbox: Outbox, ship_config: ShipConfig, codebook: Codebook, crew: Crew
) -> None:
    """A quick message has no Subject; a mail with an empty text is sent as its Subject
    (the SMTP door's rule), once, not twice."""
    intake = Intake(ship_config, outbox, codebook, clock=lambda: NOW)
    (quick,) = intake.send_messages(crew.member.crew, [crew.mother.contact], None, quick=1)
    (only,) = intake.send_messages(
        crew.member.crew, [crew.mother.contact], "Call me", subject="Call me"
    )
    rows = {seq: subject for seq, _, subject, _ in _stored(outbox)}
    assert rows == {quick.message_seq: None, only.message_seq: None}


@pytest.mark.parametrize(
    ("subject", "kept"),
    [
        (None, None),
        ("", None),
        ("  \t ", None),
        ("Re:  Message\r\n from\tKo Aung", "Re: Message from Ko Aung"),
        ("bell\x07 and\u2028separator", "bell and separator"),
        ("e\u0301te\u0301", "\u00e9t\u00e9"),  # NFC, as the text
        ("a\udc80b", None),  # bytes no charset could read: left out, the text still goes
        ("x" * 300, "x" * MAX_SUBJECT_CHARS),
        # cut never strands a vowel sign: "မ" + "ာ" (a letter and its mark) stay together
        ("a" * (MAX_SUBJECT_CHARS - 1) + "မာ", "a" * (MAX_SUBJECT_CHARS - 1)),
    ],
)
def test_a_subject_is_one_clean_line_that_fits(subject: str | None, kept: str | None) -> None:
    """Whatever a mail app puts in the Subject, what travels is one line of at most 200
    characters, normalised like the text; a blank or unreadable one is none."""
    assert message_subject(subject, Language.ENG) == kept
