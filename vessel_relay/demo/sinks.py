"""The families' side of the demo: an SMTP sink that writes each delivered e-mail to a Maildir.

It plays the relay's smarthost. Every message is kept once per delivery (so a duplicate
delivery shows up as two files), and :meth:`MaildirSink.message_ids` counts them by
``Message-ID``, which the relay sets from the vessel and message number.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from vessel_relay.demo.brokers import free_port


class _MaildirHandler:
    def __init__(self, maildir: Path) -> None:
        self.maildir = mailbox.Maildir(maildir, create=True)
        self.lock = threading.Lock()
        self.ids: Counter[str] = Counter()
        self.first_seen: dict[str, float] = {}

    async def handle_DATA(  # noqa: N802 - the name aiosmtpd calls
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        del server, session
        raw = envelope.original_content or b""
        with self.lock:
            self.maildir.add(raw)
            parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
            message_id = str(parsed.get("Message-ID", "")).strip()
            self.ids[message_id] += 1
            self.first_seen.setdefault(message_id, time.time())
        return "250 OK delivered to the family's mailbox"


class MaildirSink:
    """An SMTP server on loopback (its own thread) writing into a Maildir."""

    def __init__(self, maildir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.maildir = maildir
        self.host = host
        self.port = port or free_port(host)
        self._handler = _MaildirHandler(maildir)
        self._controller: Controller | None = None

    def start(self) -> None:
        """Listen."""
        self._controller = Controller(self._handler, hostname=self.host, port=self.port)
        self._controller.start()

    def stop(self) -> None:
        """Stop listening."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> MaildirSink:
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def message_ids(self) -> Counter[str]:
        """Deliveries per Message-ID since this sink started."""
        with self._handler.lock:
            return Counter(self._handler.ids)

    def first_seen(self) -> dict[str, float]:
        """When each Message-ID first arrived (seconds since 1970)."""
        with self._handler.lock:
            return dict(self._handler.first_seen)

    def messages(self) -> list[email.message.Message]:
        """Every message in the Maildir, parsed."""
        with self._handler.lock:
            box = mailbox.Maildir(self.maildir, create=False)
            return [
                email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
                for key in box.keys()  # noqa: SIM118 - Maildir iterates messages, not keys
            ]
