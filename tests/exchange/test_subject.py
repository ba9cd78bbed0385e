"""A mail's Subject line from the vessel's mail door to the family's inbox, end to end.

The shipped parts on the fake link and one fake clock (:mod:`tests.kit.voyage`): the SMTP
door's reading of a mail (:func:`shipboard.smtp_intake.mail_text`), the intake's commit,
the real session shell, the relay's ingest and SQLite store, and its delivery worker
mailing an aiosmtpd smarthost sink.
"""

from __future__ import annotations

import dataclasses
import random
from email.message import EmailMessage
from pathlib import Path

from protocol.batch import Direction, decode_batch
from shipboard.config import ShipConfig
from shipboard.crew import CrewRegister
from shipboard.intake import Intake
from shipboard.smtp_intake import mail_text
from shore.delivery import DeliveryConfig, DeliveryWorker
from shore.mail import MailIdentity, ReplyAddressBook
from shore.retry import RetryPolicy
from tests.kit.fakelink import UP
from tests.kit.voyage import CODEBOOK, VESSEL, KitShore, KitVessel, voyage
from tests.shore.store_fixtures import VESSEL_KEY
from tests.shore.test_mail import SmtpSink
from vessel_relay.demo.defaults import demo_ship_config

IDENTITY = MailIdentity("relay.example.org", "relay@relay.example.org")
BOOK = ReplyAddressBook([b"s" * 32], "reply.example.org")
SUBJECT = "အမေ့မွေးနေ့ 🎂"  # "Mother's birthday"
TEXT = "မွေးနေ့မင်္ဂလာပါ အမေ။ ကျန်းမာပါစေ။"


def _mail(subject: str, text: str) -> bytes:
    """A crew member's mail home as their phone's mail app sends it (raw UTF-8 headers)."""
    mail = EmailMessage()
    mail["From"] = "crew1@vessel"
    mail["To"] = "family@example.org"
    mail["Subject"] = subject
    mail.set_content(text)
    return mail.as_bytes()


def _mail_home(vessel: KitVessel, config: ShipConfig, data: bytes) -> int:
    """What the SMTP door does with a mail at DATA: read it, then commit it; its number."""
    mail = mail_text(data)
    intake = Intake(
        config, vessel.outbox, CODEBOOK, clock=vessel.clock, register=CrewRegister(vessel.outbox)
    )
    (accepted,) = intake.send_messages(
        vessel.crew, [vessel.contact], mail.text, subject=mail.subject or None
    )
    return accepted.message_seq


async def _deliver(shore: KitShore, sink: SmtpSink) -> list[EmailMessage]:
    """The relay's delivery worker sends what is due to the smarthost sink."""
    assert shore.store is not None
    worker = DeliveryWorker(
        shore.store,
        sink.sender(),
        IDENTITY,
        BOOK,
        None,
        policy=RetryPolicy(initial_delay_s=60, max_delay_s=600, deadline_s=3600),
        config=DeliveryConfig(worker="relay-subject", batch_size=10),
        rng=random.Random(7),
        clock=shore.clock,
    )
    await worker.deliver_due()
    return sink.handler.messages()


async def test_the_subject_a_crew_member_mailed_is_the_subject_the_family_reads(
    tmp_path: Path,
) -> None:
    """A fisher mails his mother from his phone with the Subject "Mother's birthday" in
    Burmese. It crosses the satellite beside the text, is stored ashore, and his mother's
    mail carries it as its Subject (RFC 2047 encoded words on the wire), with his words
    below; her copy is delivered once and the vessel hears that it was."""
    config = demo_ship_config(tmp_path / "ship")
    assert config.shore.relay_reads_subjects
    async with voyage(tmp_path) as (vessel, shore, link, clock), SmtpSink() as sink:
        seq = _mail_home(vessel, config, _mail(SUBJECT, TEXT))
        report = await vessel.session()
        assert report.acknowledged == (1,)
        (uplink,) = link.sent_payloads(UP)
        (message,) = [
            e
            for e in decode_batch(
                uplink,
                codebook=CODEBOOK,
                verify_key=VESSEL_KEY.verify_key,
                direction=Direction.UPLINK,
            ).envelopes
            if getattr(e, "message_seq", None) == seq
        ]
        assert (message.text, getattr(message, "subject", None)) == (TEXT, SUBJECT)
        (mail,) = await _deliver(shore, sink)
        raw_subject = next(
            line
            for line in sink.handler.received[0][2].split(b"\r\n")
            if line.lower().startswith(b"subject:")
        )
        assert raw_subject.isascii()
        assert b"=?utf-8?" in raw_subject.lower()
        assert mail["Subject"] == SUBJECT
        assert mail["Message-ID"] == f"<{VESSEL}.{seq}@relay.example.org>"
        body = mail.get_body(preferencelist=("plain",))
        assert body is not None
        assert body.get_content().startswith(TEXT)
        await vessel.session()  # owes only an acknowledgement: the receipt follows it
        await link.pump()
        clock.advance(6 * 3600.0)
        await vessel.session()
        assert vessel.states([seq]) == ["delivered"]


async def test_a_vessel_whose_relay_does_not_read_subjects_sends_none(tmp_path: Path) -> None:
    """Until its operator says the relay reads subjects, a vessel leaves the Subject out
    (an older relay would refuse the whole batch): the message crosses as before, its
    quota counts the text alone, and the family mail has the relay's own Subject."""
    demo = demo_ship_config(tmp_path / "ship")
    config = dataclasses.replace(
        demo, shore=dataclasses.replace(demo.shore, relay_reads_subjects=False)
    )
    async with voyage(tmp_path) as (vessel, shore, link, _clock), SmtpSink() as sink:
        seq = _mail_home(vessel, config, _mail(SUBJECT, TEXT))
        (pending,) = vessel.outbox.pending_messages(vessel.clock())
        assert pending.text_bytes == len(TEXT.encode("utf-8"))
        await vessel.session()
        (uplink,) = link.sent_payloads(UP)
        envelopes = decode_batch(
            uplink, codebook=CODEBOOK, verify_key=VESSEL_KEY.verify_key, direction=Direction.UPLINK
        ).envelopes
        assert [getattr(e, "subject", None) for e in envelopes if e.text == TEXT] == [None]
        (mail,) = await _deliver(shore, sink)
        assert mail["Subject"] == "Ko Ko ထံမှ စာ"
        assert mail["Message-ID"] == f"<{VESSEL}.{seq}@relay.example.org>"
