"""The SMTP door with real mail clients from Debian: swaks (a tester that shows every
reply) and msmtp (the sendmail of small devices, which reports the server's refusal as
it got it). Each runs as its own process against the intake over STARTTLS with the crew
number and PIN, as a crew member's phone would; scripts/install-system-deps installs
both, and a test is skipped only where its tool is absent.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from protocol.languages import Language
from tests.kit.lane import blocks_on_board, union_reads
from tests.kit.voyage import CODEBOOK
from tests.shipboard.test_lane import UNION, Board
from tests.shipboard.test_smtp_intake import SmtpServer, _start

needs_swaks = pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")
needs_msmtp = pytest.mark.skipif(shutil.which("msmtp") is None, reason="msmtp not installed")
MOTHER = "mother@example.org"


@dataclass
class Door:
    board: Board
    server: SmtpServer
    crew: int
    pin: str
    tmp: Path

    def swaks(self, to: str, *args: str) -> subprocess.CompletedProcess[str]:
        """swaks sending to ``to`` over STARTTLS with AUTH PLAIN (it does not check the
        certificate); its transcript on stdout."""
        return subprocess.run(
            ["swaks", "--server", "127.0.0.1", "--port", str(self.server.port), "--tls",
             "--auth", "PLAIN", "--auth-user", str(self.crew), "--auth-password", self.pin,
             "--from", "crew@vessel", "--to", to, *args],
            capture_output=True, text=True, errors="replace", timeout=60, check=False,
        )  # fmt: skip

    def msmtp(self, to: str, mail: bytes) -> subprocess.CompletedProcess[bytes]:
        """msmtp sending ``mail`` to ``to`` with a config as a phone's would be (STARTTLS,
        the vessel's certificate trusted, AUTH PLAIN)."""
        config = self.tmp / "msmtprc"
        config.write_text(
            f"account crew\nhost 127.0.0.1\nport {self.server.port}\ntls on\n"
            f"tls_starttls on\ntls_trust_file {self.tmp / 'cert.pem'}\nauth plain\n"
            f"user {self.crew}\npassword {self.pin}\nfrom crew@vessel\n"
        )
        config.chmod(0o600)
        return subprocess.run(
            ["msmtp", "-C", str(config), "-a", "crew", to],
            input=mail, capture_output=True, timeout=60, check=False,
        )  # fmt: skip


@pytest.fixture
async def door(tmp_path: Path) -> AsyncIterator[Door]:
    board = Board(tmp_path)
    server, stopping, task = await _start(board.intake, tmp_path)  # type: ignore[arg-type]
    crew, pin = board.signed[1].member.crew, board.pins[1]  # Burmese
    board.intake.register.add_contact(
        crew, channel="email", address=MOTHER, name="Mother", language=Language.MYA,
        now=board.clock(),
    )  # fmt: skip
    yield Door(board, server, crew, pin, tmp_path)
    stopping.set()
    await task
    board.close()


def _pending(door: Door) -> int:
    return len(door.board.outbox.pending_messages(door.board.clock()))


@needs_swaks
async def test_swaks_a_photo_over_the_limit_gets_534_in_plain_words(door: Door) -> None:
    """swaks attaches a 300 KB photo (it does not say SIZE=): the mail is sent whole and
    refused at the end with 552 5.3.4 and what to do, not "Too much mail data"."""
    photo = door.tmp / "photo.jpg"
    photo.write_bytes(os.urandom(300_000))
    done = await asyncio.to_thread(door.swaks, MOTHER, "--attach", f"@{photo}")
    assert done.returncode != 0
    assert "552 5.3.4 This mail is bigger than the vessel takes (at most 256 KB)" in done.stdout
    assert "Too much mail data" not in done.stdout
    assert _pending(door) == 0


@needs_swaks
async def test_swaks_invalid_utf8_is_said_truthfully(door: Door) -> None:
    """A mail that says UTF-8 but carries Latin-1 bytes ("café" as 0xE9): 550 5.6.0 says
    the text is not the UTF-8 it claims to be."""
    mail = door.tmp / "latin1.eml"
    mail.write_bytes(
        b"Subject: hi\r\nContent-Type: text/plain; charset=utf-8\r\n\r\ncaf\xe9 at noon\r\n"
    )
    done = await asyncio.to_thread(door.swaks, MOTHER, "--data", f"@{mail}")
    assert done.returncode != 0
    assert "550 5.6.0 The mail's text cannot be read: it says it is written in UTF-8" in (
        done.stdout
    )
    assert "replacement" not in done.stdout
    assert _pending(door) == 0


@needs_swaks
async def test_swaks_a_report_gets_its_case_number_and_reaches_the_union_sealed(
    door: Door,
) -> None:
    """swaks mails a report to the Fishers' Union's report address: the 250 it shows
    carries the case number and receipt code, and the union's key opens exactly that
    report from the lane blocks on board."""
    done = await asyncio.to_thread(
        door.swaks, "report+fishers-union@vessel",
        "--header", "Subject: wages", "--body", "No wages for three months.",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout
    saved = [line for line in done.stdout.splitlines() if "Case number" in line]
    assert len(saved) == 1
    assert saved[0].startswith("<~  250-2.0.0 Your report is saved on board")
    (opened,) = union_reads(blocks_on_board(door.board.outbox), bytes(UNION), CODEBOOK)
    assert opened.text == "wages\n\nNo wages for three months."
    assert f"Case number {opened.case_number}, receipt code {opened.receipt_code}" in saved[0]


@needs_msmtp
@pytest.mark.parametrize(
    ("mail", "reply"),
    [
        pytest.param(
            b"Subject: \nContent-Type: text/plain; charset=utf-8\n\n\n",
            b"550 5.6.0 The mail has no text.",
            id="empty",
        ),
        pytest.param(
            b"Subject: \nContent-Type: image/png\nContent-Transfer-Encoding: base64\n\n"
            b"iVBORw0KGgo=\n",
            b"550 5.6.1 The mail has attachments but no text.",
            id="picture",
        ),
        pytest.param(
            b"Subject: x\nContent-Type: text/plain; charset=x-martian\n\n\xff\xfe hi\n",
            b"550 5.6.0 The mail's text is in an encoding the vessel cannot read (x-martian).",
            id="unknown-charset",
        ),
        pytest.param(
            b"Subject: x\n\n" + (b"A" * 76 + b"\n") * 4_000,
            b"552 5.3.4 This mail is bigger than the vessel takes (at most 256 KB).",
            id="oversize",
        ),
    ],
)
async def test_msmtp_reports_the_doors_own_refusal(door: Door, mail: bytes, reply: bytes) -> None:
    """msmtp (what a small device's mail setup uses) fails and prints the door's reply
    as it came: an empty mail, a picture alone, an unknown encoding and a mail over the
    limit each get their own code and sentence; nothing is stored."""
    done = await asyncio.to_thread(door.msmtp, MOTHER, mail)
    assert done.returncode != 0
    assert b"msmtp: server message: " + reply in done.stderr, done.stderr
    assert _pending(door) == 0


@needs_msmtp
async def test_msmtp_sends_a_burmese_mail(door: Door) -> None:
    """A Burmese mail with a raw UTF-8 Subject, 8-bit body: saved with its Subject, 250."""
    text = "မေမေ၊ နေကောင်းပါတယ်။"
    mail = f"Subject: နေကောင်း\nContent-Type: text/plain; charset=utf-8\n\n{text}\n"
    done = await asyncio.to_thread(door.msmtp, MOTHER, mail.encode("utf-8"))
    assert done.returncode == 0, done.stderr
    (pending,) = door.board.outbox.pending_messages(door.board.clock())
    assert pending.text_bytes == len(text.encode("utf-8")) + len("နေကောင်း".encode())
