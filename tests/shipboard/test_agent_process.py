"""The agent as a real process: SIGTERM stops it cleanly; SIGKILL at random moments never
loses a message that got a 250; a grievance's words are nowhere in the database files."""

from __future__ import annotations

import os
import random
import signal
import smtplib
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import httpx
import nacl.public
import pytest

from common.codebooks import default_codebook
from common.keyfiles import new_signing_key
from protocol.languages import Language
from shipboard.config import load_config, to_toml
from shipboard.crew import CrewRegister
from shipboard.lane import VesselLane
from shipboard.outbox import Outbox
from tests.kit.lane import blocks_on_board, union_reads
from tests.kit.ports import accepts_connections, free_port
from tests.kit.powercut import PowerCut, build_shim
from tests.kit.ship_config import own_keys_document
from tests.kit.wait import eventually_blocking

#: The union reports are sealed to (its private key is this test's).
UNION = nacl.public.PrivateKey(bytes(range(40, 72)))


@dataclass
class Vessel:
    config: Path
    data: Path
    smtp_port: int
    http_port: int
    crew: int
    pin: str


@pytest.fixture
def vessel(tmp_path: Path) -> Vessel:
    data = tmp_path / "vessel"
    document = own_keys_document(data)
    document["unions"][0]["public_key"] = bytes(UNION.public_key).hex()
    smtp_port, http_port = free_port(), free_port()
    document["intake"].update(smtp_port=smtp_port, http_port=http_port)
    data.mkdir()
    config_path = data / "ship.toml"
    config_path.write_text(to_toml(document), encoding="utf-8")
    config = load_config(config_path)
    new_signing_key(config.vessel.signing_key_path)
    outbox = Outbox.open(config.database_path, config.vessel.vessel_id)
    try:
        register = CrewRegister(outbox)
        member, pin = register.add(
            name="Sok Dara",
            document="WP-778899",
            nationality="KH",
            language=Language.KHM,
            now=time.time(),
        )
        register.add_contact(
            member.crew,
            channel="email",
            address="home@example.org",
            name="Home",
            language=None,
            now=time.time(),
        )
    finally:
        outbox.close()
    return Vessel(config_path, data, smtp_port, http_port, member.crew, pin)


def _start(vessel: Vessel, environment: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from vessel_relay.cli import main; main()",
            "ship",
            "run",
            "--no-link",
            "--config",
            str(vessel.config),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=vessel.data,
        env={**os.environ, **(environment or {})},
    )

    def stopped_and_told() -> str:
        process.kill()  # nothing if it exited
        _, err = process.communicate()
        return f"agent did not start: {err.decode(errors='replace')[-2000:]}"

    def listening() -> bool:
        if process.poll() is not None:
            raise AssertionError(stopped_and_told())  # it exited: it never will
        return accepts_connections("127.0.0.1", vessel.smtp_port) and accepts_connections(
            "127.0.0.1", vessel.http_port
        )

    eventually_blocking(listening, 30, what="the agent's doors", explain=stopped_and_told)
    return process


def _tls(vessel: Vessel) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(vessel.data / "intake-cert.pem"))


def _sender(vessel: Vessel, prefix: str, confirmed: list[str], stop: threading.Event) -> None:
    """Send mails one by one until the agent dies; record the ones that got a 250."""
    try:
        with smtplib.SMTP("127.0.0.1", vessel.smtp_port, timeout=10) as client:
            client.starttls(context=_tls(vessel))
            client.login(str(vessel.crew), vessel.pin)
            for number in range(10_000):
                if stop.is_set():
                    return
                text = f"{prefix}-{number}"
                message = EmailMessage()
                message["To"] = "home@example.org"
                message["Subject"] = "x"
                message.set_content(text)
                client.send_message(message, from_addr="crew@vessel", to_addrs=["home@example.org"])
                confirmed.append(text)  # appended only after the 250 arrived
    except (smtplib.SMTPException, OSError):
        return


def _bodies(vessel: Vessel) -> set[str]:
    config = load_config(vessel.config)
    outbox = Outbox.open(config.database_path, config.vessel.vessel_id)
    try:
        with outbox.reading() as db:
            return {row[0] for row in db.execute("SELECT body FROM messages WHERE kind='message'")}
    finally:
        outbox.close()


@pytest.mark.slow
def test_sigkill_never_loses_a_confirmed_message(vessel: Vessel) -> None:
    """The power is cut (SIGKILL) at random moments while a crew member's phone sends mail;
    after each restart, every message that got a 250 is in the outbox."""
    rng = random.Random(4)
    confirmed: list[str] = []
    for round_number in range(4):
        process = _start(vessel)
        stop = threading.Event()
        sender = threading.Thread(
            target=_sender, args=(vessel, f"round{round_number}", confirmed, stop)
        )
        sender.start()
        time.sleep(rng.uniform(0.3, 1.5))
        process.send_signal(signal.SIGKILL)
        process.communicate()
        stop.set()
        sender.join(timeout=15)
        assert not sender.is_alive()
    stored = _bodies(vessel)
    assert len(confirmed) >= 20, "too few messages got through to test anything"
    missing = [text for text in confirmed if text not in stored]
    assert missing == []


def test_sigterm_stops_cleanly_and_grievance_words_stay_sealed(vessel: Vessel) -> None:
    """A crew member files a report through the page; the agent is stopped with SIGTERM and
    exits 0; the report's words appear in none of the database files (db, -wal, -shm)."""
    secret_words = "CAPTAIN-KEEPS-OUR-PASSPORTS-7731"
    process = _start(vessel)
    try:
        base = f"http://127.0.0.1:{vessel.http_port}"
        with httpx.Client(base_url=base, timeout=10) as client:
            login = client.post("/api/login", json={"crew": vessel.crew, "pin": vessel.pin})
            assert login.status_code == 200
            auth = {"authorization": f"Bearer {login.json()['token']}"}
            filed = client.post(
                "/api/grievances",
                json={
                    "union": 1,
                    "category": "retention_of_documents",
                    "text": secret_words,
                    "lang": "eng",
                },
                headers=auth,
            )
            assert filed.status_code == 201
            for path in vessel.data.glob("outbox.sqlite3*"):
                assert secret_words.encode() not in path.read_bytes(), path.name
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    assert secret_words.encode() not in err
    for path in vessel.data.glob("outbox.sqlite3*"):
        assert secret_words.encode() not in path.read_bytes(), path.name
    assert os.path.exists(vessel.data / "outbox.sqlite3")


def test_a_report_survives_a_power_cut_right_after_filed(vessel: Vessel, tmp_path: Path) -> None:
    """A crew member files a report and sees "filed" (201); the power goes at that very
    moment (SIGKILL, and only what was fsynced is left on the disk). The report is whole
    in the grievance lane (the union opens it from the blocks, under the case number the
    crew member was shown), and once the agent is back it leaves with the next periods."""
    power = PowerCut(vessel.data, tmp_path / "durable", build_shim(tmp_path / "shim"))
    power.snapshot()
    process = _start(vessel, power.environment())
    try:
        base = f"http://127.0.0.1:{vessel.http_port}"
        with httpx.Client(base_url=base, timeout=10) as client:
            login = client.post("/api/login", json={"crew": vessel.crew, "pin": vessel.pin})
            assert login.status_code == 200
            filed = client.post(
                "/api/grievances",
                json={
                    "union": 1,
                    "category": "retention_of_documents",
                    "text": "The captain keeps our passports. " * 20,
                    "lang": "eng",
                },
                headers={"authorization": f"Bearer {login.json()['token']}"},
            )
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    assert filed.status_code == 201
    case_number = filed.json()["case_number"]
    cut = power.cut()
    config = load_config(vessel.config)
    codebook = default_codebook()
    outbox = Outbox.open(config.database_path, config.vessel.vessel_id)
    try:
        (report,) = union_reads(blocks_on_board(outbox), bytes(UNION), codebook)
        assert report.case_number == case_number, f"after the cut ({cut})"
        assert report.text == ("The captain keeps our passports. " * 20).strip()
        # the agent is back: every row is of unknown content to it now, and still leaves
        shape = config.quota.lane_shape()
        now = time.time()
        lane = VesselLane.start(outbox, outbox, shape, now)
        lane.release_due(now + 12 * shape.period_s)
        with outbox.reading() as db:
            released = [
                bytes(block)
                for (block,) in db.execute(
                    "SELECT sealed FROM messages WHERE kind = 'lane' ORDER BY message_seq"
                )
            ]
        assert [r.case_number for r in union_reads(released, bytes(UNION), codebook)] == [
            case_number
        ]
    finally:
        outbox.close()
