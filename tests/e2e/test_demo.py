"""`vessel-relay demo` as a newcomer runs it: the real command, in its own process."""

from __future__ import annotations

import email
import email.policy
import json
import mailbox
import os
import re
import signal
import smtplib
import ssl
import subprocess
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.kit.wait import eventually_blocking

ROOT = Path(__file__).resolve().parents[2]
CLI = [str(ROOT / ".venv" / "bin" / "vessel-relay")]


def _run_demo(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "demo", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _check_scripted_day(output: str, info: Path, broker: str) -> None:
    """What ``demo --script`` with ``--info`` must have done: a right summary, and each of
    the day's family messages once in the Maildir."""
    assert "RESULT: right" in output
    # the 15 family messages; the report went through the grievance lane, every block of
    # it acknowledged by the relay (it has no "delivered" stage on board)
    assert "delivered:  15" in output
    assert re.search(r"#\d{12} acknowledged", output)
    written = json.loads(info.read_text())
    assert written["mqtt_broker"]["kind"].startswith(broker)
    box = mailbox.Maildir(written["maildir"], create=False)
    ids = [message["Message-ID"] for message in box]
    assert len(ids) == 15
    assert len(set(ids)) == 15


# The run on Mosquitto is the first day of test_the_demo_restarts_on_its_own_work_directory.
@pytest.mark.slow
def test_scripted_day_is_delivered_once_and_the_summary_is_right_on_amqtt(tmp_path: Path) -> None:
    """`demo --script --link fast --broker amqtt`: a day of messages in five languages, a
    grievance report and an SOS go through the whole system; every family message lands
    once in the Maildir, and the command exits 0 with a summary that says so."""
    info = tmp_path / "info.json"
    process = _run_demo(
        "--script",
        "--link",
        "fast",
        "--broker",
        "amqtt",
        "--info",
        str(info),
        "--workdir",
        str(tmp_path / "demo"),
    )
    output, _ = process.communicate(timeout=240)
    print(output)
    assert process.returncode == 0, output
    _check_scripted_day(output, info, "amqtt")


def test_info_file_lets_a_mail_app_write_home_and_ctrl_c_stops_cleanly(tmp_path: Path) -> None:
    """A running demo (no --script) writes --info; a crew member's mail app uses the
    SMTP intake login it lists (STARTTLS, crew number and PIN), the message reaches the
    family's Maildir under the Subject the crew member wrote, and Ctrl-C (SIGINT) stops
    every part with exit status 0."""
    info = tmp_path / "info.json"
    process = _run_demo("--link", "fast", "--info", str(info), "--workdir", str(tmp_path / "d"))
    try:

        def info_written() -> bool:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            return info.exists()

        eventually_blocking(info_written, 60, 0.2, what="the demo to write --info")
        written = json.loads(info.read_text())
        intake = written["smtp_intake"]
        login = intake["logins"][1]
        message = EmailMessage()
        message["From"] = f"{login['username']}@vessel.demo"
        message["To"] = login["family_contact"]
        message["Subject"] = "home"
        message.set_content("สวัสดีจ้ะ ส่งจากโทรศัพท์")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the demo intake's self-signed certificate
        with smtplib.SMTP(intake["host"], intake["port"], timeout=30) as smtp:
            smtp.starttls(context=context)
            smtp.login(login["username"], login["password"])
            smtp.send_message(message)
        maildir = Path(written["maildir"])
        eventually_blocking(
            lambda: any((maildir / "new").iterdir()), 60, 0.3, what="the family mail"
        )
        (delivered,) = (maildir / "new").iterdir()
        family_mail = email.message_from_bytes(delivered.read_bytes(), policy=email.policy.default)
        assert family_mail["Subject"] == "home"  # the crew member's own Subject line
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    print(output)
    assert process.returncode == 0, output
    assert "stopping" in output
    assert "Traceback" not in output


def test_the_demo_restarts_on_its_own_work_directory(tmp_path: Path) -> None:
    """`demo --script --link fast` on Mosquitto: a day of messages in five languages, a
    grievance report and an SOS go through the whole system; every family message lands
    once in the Maildir, and the command exits 0 with a summary that says so. Run again
    with the same --workdir (issue 18), it starts on the first run's keys, relay store and
    outbox (crew members get new PINs), plays the day again and exits 0 with a right
    summary; the family mail of both days is in the Maildir, each message once."""
    work = tmp_path / "demo"
    info = tmp_path / "info.json"
    args = ("--script", "--link", "fast", "--broker", "mosquitto", "--workdir", str(work))
    outputs = []
    for day in range(2):
        process = _run_demo(*args, *(("--info", str(info)) if day == 0 else ()))
        output, _ = process.communicate(timeout=240)
        print(output)
        assert process.returncode == 0, output
        assert "RESULT: right" in output
        if day == 0:
            _check_scripted_day(output, info, "mosquitto")
        outputs.append(output)
    assert "restarted on the last run's keys" not in outputs[0]
    assert "restarted on the last run's keys" in outputs[1]
    ids = [message["Message-ID"] for message in mailbox.Maildir(work / "maildir", create=False)]
    assert len(ids) == 30
    assert len(set(ids)) == 30
