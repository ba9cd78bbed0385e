"""Fake SMS provider: a local server speaking the same Twilio-shaped HTTP API as the real one.

For tests and the demo. It answers ``POST /2010-04-01/Accounts/{sid}/Messages.json`` like
the provider (``201`` with ``sid``, ``status``, ``num_segments``; error JSON with ``code``,
``message``, ``more_info``, ``status``), checks HTTP basic auth, and appends every message
it accepts to a JSON-lines log that tests and the demo read (this log *is* the families'
phones, so it holds numbers and texts; it is not a log of the relay's).

Errors can be injected: numbers that are always invalid (``400``, code 21211), and scripted
replies for the next requests (``429`` with ``Retry-After``, ``500``, anything).
:func:`send_inbound` plays the provider's inbound webhook: a family's SMS reply posted to
the relay, form-encoded and signed the way the provider signs it.

Run standalone: ``python -m shore.fake_sms --port 8030 --log sms.jsonl``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import urllib.parse
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from common.http import ANY_METHOD, BodyLimit
from common.serving import AsgiServer
from shore.sms import is_e164, plan_sms, text_units, webhook_signature

DEFAULT_ACCOUNT_SID = "AC" + "0" * 31 + "1"
DEFAULT_AUTH_TOKEN = "fake-auth-token"
MAX_BODY_UNITS = 1600
#: Largest request the fake takes (a 1,600-unit text, percent-encoded, fits with room).
MAX_REQUEST_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ScriptedReply:
    """An error reply the fake gives to the next request instead of accepting it."""

    status: int
    code: int | None = None
    message: str = "injected error"
    retry_after_s: int | None = None

    def response(self) -> Response:
        """The HTTP response the provider would give."""
        headers: list[tuple[str, str]] = []
        if self.retry_after_s is not None:
            headers.append(("Retry-After", str(self.retry_after_s)))
        return _error(self.status, self.code, self.message, headers)


def _error(
    status: int, code: int | None, message: str, headers: list[tuple[str, str]] | None = None
) -> Response:
    body: dict[str, Any] = {"code": code, "message": message, "status": status}
    if code is not None:
        body["more_info"] = f"https://www.twilio.com/docs/errors/{code}"
    return JSONResponse(body, status_code=status, headers=dict(headers or []))


class FakeSmsProvider:
    """The fake provider: ``async with FakeSmsProvider(log_path) as fake: fake.base_url``."""

    def __init__(
        self,
        log_path: Path,
        *,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.log_path = log_path
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.host = host
        self.port = port
        #: Numbers the provider calls invalid (400, code 21211) on every request.
        self.invalid_numbers: set[str] = set()
        self._script: deque[ScriptedReply] = deque()
        self._server: AsgiServer | None = None
        self._count = 0
        #: Every request the fake answered, as (HTTP status, provider code or None).
        self.answers: list[tuple[int, int | None]] = []

    async def __aenter__(self) -> FakeSmsProvider:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen (on a free port when ``port`` is 0)."""
        app = BodyLimit(
            Starlette(routes=[Route("/{path:path}", self._handle, methods=ANY_METHOD)]),
            limit_bytes=MAX_REQUEST_BYTES,
        )
        server = AsgiServer(app, self.host, self.port, name="fake SMS provider")
        await server.start()
        self._server = server
        self.port = server.port

    async def stop(self) -> None:
        """Stop listening and wait for open connections to finish."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop()

    @property
    def base_url(self) -> str:
        """The URL to configure as the adapter's ``base_url``."""
        return f"http://{self.host}:{self.port}"

    def fail_next(
        self,
        status: int,
        code: int | None = None,
        *,
        message: str = "injected error",
        retry_after_s: int | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` message requests with this error."""
        for _ in range(times):
            self._script.append(ScriptedReply(status, code, message, retry_after_s))

    def messages(self) -> list[dict[str, Any]]:
        """Every message accepted so far, read back from the log file."""
        if not self.log_path.exists():
            return []
        with self.log_path.open(encoding="utf-8") as lines:
            return [json.loads(line) for line in lines if line.strip()]

    async def _handle(self, request: Request) -> Response:
        body = await request.body()  # bounded by BodyLimit
        form = dict(
            urllib.parse.parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        )
        response = self._answer(request, form)
        code = None
        if response.status_code >= 400:
            try:
                code = json.loads(bytes(response.body)).get("code")
            except ValueError:
                code = None
        self.answers.append((response.status_code, code))
        return response

    def _answer(self, request: Request, form: dict[str, str]) -> Response:
        expected_path = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        if request.url.path != expected_path:
            return _error(404, 20404, "The requested resource was not found")
        if request.method != "POST":
            return _error(405, 20004, "Method not allowed")
        if not self._authorised(request.headers.get("authorization")):
            return _error(401, 20003, "Authenticate")
        if self._script:
            return self._script.popleft().response()
        to, sender, body = form.get("To", ""), form.get("From", ""), form.get("Body")
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not is_e164(to) or to in self.invalid_numbers:
            return _error(400, 21211, "The 'To' number is not a valid phone number.")
        if not sender:
            return _error(400, 21603, "A 'From' phone number is required.")
        if not body:
            return _error(400, 21602, "Message body is required.")
        if text_units(body, "UCS-2") > MAX_BODY_UNITS:
            return _error(400, 21617, "The concatenated message body exceeds 1600 characters.")
        self._count += 1
        plan = plan_sms(body)
        sid = f"SM{self._count:032x}"
        record = {
            "sid": sid,
            "account_sid": self.account_sid,
            "to": to,
            "from": sender,
            "body": body,
            "status": "queued",
            "num_segments": str(plan.segment_count),
            "encoding": plan.encoding,
            "segments": list(plan.segments),
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
            "error_code": None,
            "error_message": None,
        }
        with self.log_path.open("a", encoding="utf-8") as log_file:
            log_file.write(json.dumps(record, ensure_ascii=False) + "\n")
        reply = {k: v for k, v in record.items() if k not in ("encoding", "segments")}
        return JSONResponse(reply, status_code=201)

    def _authorised(self, header: str | None) -> bool:
        if not header or not header.lower().startswith("basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = f"{self.account_sid}:{self.auth_token}"
        return hmac.compare_digest(decoded.encode(), expected.encode())


async def send_inbound(
    webhook_url: str,
    *,
    from_number: str,
    to_number: str,
    body: str,
    auth_token: str = DEFAULT_AUTH_TOKEN,
    account_sid: str = DEFAULT_ACCOUNT_SID,
    num_media: int = 0,
    message_sid: str = "SM" + "f" * 32,
    signature: str | None = None,
) -> httpx.Response:
    """Post a family's SMS reply to the relay's webhook the way the provider does.

    Form fields ``MessageSid``, ``SmsSid``, ``AccountSid``, ``From``, ``To``, ``Body``,
    ``NumMedia``, ``NumSegments``; signed with ``X-Twilio-Signature`` (pass ``signature``
    to send a forged one).
    """
    form = {
        "MessageSid": message_sid,
        "SmsSid": message_sid,
        "AccountSid": account_sid,
        "From": from_number,
        "To": to_number,
        "Body": body,
        "NumMedia": str(num_media),
        "NumSegments": str(plan_sms(body).segment_count),
    }
    for index in range(num_media):
        form[f"MediaUrl{index}"] = f"https://media.invalid/{message_sid}/{index}"
        form[f"MediaContentType{index}"] = "image/jpeg"
    if signature is None:
        signature = webhook_signature(webhook_url, form, auth_token)
    async with httpx.AsyncClient(timeout=10.0) as client:
        return await client.post(
            webhook_url,
            content=urllib.parse.urlencode(form).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": signature,
            },
        )


async def _main(port: int, log_path: Path, host: str) -> None:
    fake = FakeSmsProvider(log_path, host=host, port=port)
    await fake.start()
    print(f"fake SMS provider on {fake.base_url}, account {fake.account_sid}, log {log_path}")
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def main() -> None:
    """Run the fake provider until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else "")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8030)
    parser.add_argument("--log", type=Path, default=Path("fake-sms.jsonl"))
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.port, args.log, args.host))


if __name__ == "__main__":
    main()
