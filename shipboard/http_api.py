"""HTTP API for the crew web page (Starlette, served by uvicorn on the vessel LAN).

Endpoints (JSON; sign in first, then send ``Authorization: Bearer TOKEN``):

* ``POST /api/login`` ``{"crew": 3, "pin": "12345678"}`` -> a session token
* ``GET /api/contacts``, ``POST /api/contacts`` -> the crew member's family contacts
* ``POST /api/messages`` ``{"contact": 1, "text": "..."}`` (or ``"quick": 4``) -> 201, saved
* ``GET /api/messages/{seq}`` -> the stages of one of their messages, with times
* ``GET /api/unions`` -> unions that receive grievance reports
* ``POST /api/grievances`` ``{"union": 1, "category": "withholding_of_wages", "text": ...,
  "lang": "mya", "anonymous": false}`` -> 201 with a case number and a receipt code
* ``POST /api/sos`` ``{"note": "...", "position": [1350000, 10050000]}`` -> 201
* ``GET /api/inbox`` -> receipts, replies, case updates and quota notices
* ``GET /api/cases/{seq}`` -> one of the reporter's cases: stage and the union's notes,
  opened with the reply key derived from their case key (404 for anyone else's case)
* ``GET /api/quota`` -> this month's text quota and balance

A 201 is sent only after the outbox committed. Errors are RFC 9457 problem details
(``application/problem+json``) whose ``detail`` is a sentence for the crew member. Every
response carries ``Cache-Control: no-store`` (a shared phone must keep nothing). Sessions
live in memory only: after a restart the crew member signs in again. Grievance text is
held in memory only until it is sealed; it is never logged or stored in clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocol.cases import (
    STAGE_WORDS,
    CaseNote,
    case_number,
    open_case_note,
    reporter_reply_keys,
)
from protocol.envelopes import CaseStatus
from protocol.errors import SealedBoxInvalid
from protocol.languages import Language
from protocol.sealing import GrievanceCategory
from protocol.slots import downlink_slot_notes
from shipboard.crew import SignedIn
from shipboard.errors import (
    CrewRegisterError,
    IntakeRefused,
    NotSignedIn,
    OutboxUnavailable,
    QuotaExceeded,
)
from shipboard.intake import Intake
from shipboard.web import web_routes

logger = logging.getLogger(__name__)

SESSION_SECONDS = 12 * 3600
#: Wrong PINs allowed per crew number before sign-in pauses for LOCKOUT_SECONDS.
MAX_FAILURES = 5
LOCKOUT_SECONDS = 300


class Problem(Exception):
    """An HTTP problem detail (RFC 9457) with a sentence for the crew member."""

    def __init__(self, status: int, code: str, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.extra = extra

    def response(self) -> JSONResponse:
        body = {
            "type": f"urn:vessel-relay:problem:{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }
        return JSONResponse(body, status_code=self.status, media_type="application/problem+json")


def _refused(error: IntakeRefused) -> Problem:
    extra: dict[str, Any] = {}
    if isinstance(error, QuotaExceeded):
        extra = {"remaining_bytes": error.remaining_bytes, "needed_bytes": error.needed_bytes}
    title = error.code.replace("-", " ")
    return Problem(error.http_status, error.code, title, error.sentence, **extra)


@dataclass
class _Session:
    signed_in: SignedIn
    expires_at: float


@dataclass
class SessionStore:
    """Sign-in sessions, in memory; and a pause after repeated wrong PINs."""

    clock: Callable[[], float] = time.monotonic
    sessions: dict[str, _Session] = field(default_factory=dict)
    failures: dict[int, tuple[int, float]] = field(default_factory=dict)

    def open(self, signed_in: SignedIn) -> str:
        token = secrets.token_urlsafe(32)
        self.sessions[token] = _Session(signed_in, self.clock() + SESSION_SECONDS)
        self.failures.pop(signed_in.member.crew, None)
        return token

    def get(self, token: str) -> SignedIn:
        session = self.sessions.get(token)
        if session is None or session.expires_at < self.clock():
            self.sessions.pop(token, None)
            raise NotSignedIn("Please sign in again with your crew number and PIN.")
        return session.signed_in

    def check_not_locked(self, crew: int) -> None:
        count, since = self.failures.get(crew, (0, 0.0))
        if count >= MAX_FAILURES and self.clock() - since < LOCKOUT_SECONDS:
            raise Problem(
                429,
                "sign-in-paused",
                "sign-in paused",
                "Too many wrong PINs. Wait five minutes, or ask the captain for a new PIN.",
            )

    def failed(self, crew: int) -> None:
        count, since = self.failures.get(crew, (0, 0.0))
        if self.clock() - since >= LOCKOUT_SECONDS:
            count = 0
        self.failures[crew] = (count + 1, self.clock())


class NoStore:
    """ASGI middleware: ``Cache-Control: no-store`` on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith("/static/"):
            await self.app(scope, receive, send)  # fonts, icons, CSS: cached (shipboard.web)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"
                ]
                headers.append((b"cache-control", b"no-store"))
                headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_no_store)


Handler = Callable[[Request], Awaitable[Response]]


def create_app(intake: Intake, sessions: SessionStore | None = None) -> ASGIApp:
    """The crew API as an ASGI app."""
    store = sessions or SessionStore()

    def endpoint(function: Callable[[Request], Awaitable[Response]]) -> Handler:
        async def wrapped(request: Request) -> Response:
            try:
                return await function(request)
            except Problem as problem:
                return problem.response()
            except IntakeRefused as refused:
                return _refused(refused).response()
            except CrewRegisterError as error:
                return Problem(422, "invalid", "not accepted", str(error)).response()
            except OutboxUnavailable as error:
                return Problem(503, "storage-failed", "not saved", error.sentence).response()

        return wrapped

    def signed_in(request: Request) -> SignedIn:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise NotSignedIn("Please sign in with your crew number and PIN.")
        return store.get(token.strip())

    async def body(request: Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise Problem(400, "bad-request", "bad request", "The page sent a broken request.")
        return data

    def field_of(data: dict[str, Any], name: str, kind: type, required: bool = True) -> Any:
        value = data.get(name)
        if value is None and not required:
            return None
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise Problem(400, "bad-request", "bad request", f"'{name}' must be a number.")
        if kind is not int and not isinstance(value, kind):
            raise Problem(400, "bad-request", "bad request", f"'{name}' is missing or wrong.")
        return value

    def language(data: dict[str, Any], default: Language) -> Language:
        code = data.get("lang")
        if code is None:
            return default
        try:
            return Language.from_code(str(code))
        except ValueError:
            raise Problem(400, "bad-request", "bad request", "Unknown language.") from None

    async def login(request: Request) -> Response:
        data = await body(request)
        crew = field_of(data, "crew", int)
        pin = field_of(data, "pin", str)
        store.check_not_locked(crew)
        try:
            who = await asyncio.to_thread(intake.register.sign_in, crew, pin)
        except NotSignedIn:
            store.failed(crew)
            raise
        token = store.open(who)
        member = who.member
        return JSONResponse(
            {
                "token": token,
                "crew": member.crew,
                "name": member.name,
                "language": member.language.code,
                "expires_in": SESSION_SECONDS,
            }
        )

    async def contacts(request: Request) -> Response:
        who = signed_in(request)
        crew = who.member.crew
        if request.method == "POST":
            data = await body(request)
            channel = field_of(data, "channel", str)
            if channel not in ("email", "sms"):
                raise Problem(400, "bad-request", "bad request", "Choose e-mail or SMS.")
            contact_lang = language(data, who.member.language)
            added = await asyncio.to_thread(
                intake.register.add_contact,
                crew,
                channel=channel,
                address=field_of(data, "address", str),
                name=field_of(data, "name", str, required=False),
                language=contact_lang,
                now=intake.clock(),
            )
            return JSONResponse({"contact": added.contact}, status_code=201)
        found = await asyncio.to_thread(intake.register.contacts, crew)
        return JSONResponse(
            {
                "contacts": [
                    {
                        "contact": c.contact,
                        "channel": c.channel,
                        "address": c.address,
                        "name": c.name,
                        "language": c.language.code if c.language else None,
                    }
                    for c in found
                ]
            }
        )

    async def send_message(request: Request) -> Response:
        who = signed_in(request)
        data = await body(request)
        contact = field_of(data, "contact", int)
        quick = field_of(data, "quick", int, required=False)
        text = None if quick is not None else field_of(data, "text", str)
        lang = language(data, who.member.language)
        accepted = await asyncio.to_thread(
            intake.send_message, who.member.crew, contact, text, lang, quick
        )
        quota = await asyncio.to_thread(intake.quota, who.member.crew)
        return JSONResponse(
            {
                "message_seq": accepted.message_seq,
                "state": "accepted",
                "text_bytes": accepted.text_bytes,
                "remaining_bytes": quota.remaining_bytes,
            },
            status_code=201,
        )

    async def message_stages(request: Request) -> Response:
        who = signed_in(request)
        try:
            seq = int(request.path_params["seq"])
        except ValueError:
            raise Problem(404, "not-found", "not found", "There is no such message.") from None
        stages = await asyncio.to_thread(intake.outbox.message_stages, seq)
        mine = stages is not None and stages["crew"] == who.member.crew
        if stages is not None and stages["kind"] == "grievance":
            mine = seq in await asyncio.to_thread(intake.outbox.my_cases, who.case_key)
        if stages is None or not mine:
            raise Problem(404, "not-found", "not found", "There is no such message of yours.")
        for private in ("reporter_tag", "crew", "failure_detail"):
            stages.pop(private, None)
        return JSONResponse(stages)

    async def unions(request: Request) -> Response:
        signed_in(request)
        return JSONResponse(
            {
                "unions": [
                    {
                        "union": union.union_id,
                        "name": union.name,
                        "languages": [lang.code for lang in union.languages],
                    }
                    for union in intake.config.unions
                ],
                "categories": [category.name.lower() for category in GrievanceCategory],
            }
        )

    async def grievance(request: Request) -> Response:
        who = signed_in(request)
        data = await body(request)
        raw_category = data.get("category")
        try:
            if isinstance(raw_category, int) and not isinstance(raw_category, bool):
                category = GrievanceCategory(raw_category)
            else:
                category = GrievanceCategory[str(raw_category).upper()]
        except (KeyError, ValueError):
            raise Problem(
                400, "bad-request", "bad request", "Choose what the problem is about."
            ) from None
        report = await asyncio.to_thread(
            intake.file_grievance,
            who,
            union_id=field_of(data, "union", int),
            category=category,
            text=field_of(data, "text", str),
            lang=language(data, who.member.language),
            anonymous=bool(data.get("anonymous", False)),
        )
        del data
        return JSONResponse(
            {
                "message_seq": report.message_seq,
                "case_number": report.case_number,
                "receipt_code": report.receipt_code,
                "state": "accepted",
            },
            status_code=201,
        )

    async def sos(request: Request) -> Response:
        who = signed_in(request)
        data = await body(request)
        raw = data.get("position")
        position = None
        if isinstance(raw, list) and len(raw) == 2 and all(isinstance(v, int) for v in raw):
            position = (int(raw[0]), int(raw[1]))
        accepted = await asyncio.to_thread(
            intake.sos,
            who.member.crew,
            note=field_of(data, "note", str, required=False),
            lang=language(data, who.member.language),
            position=position,
        )
        return JSONResponse(
            {"message_seq": accepted.message_seq, "state": "accepted"}, status_code=201
        )

    async def inbox(request: Request) -> Response:
        who = signed_in(request)
        cases = await asyncio.to_thread(intake.outbox.my_cases, who.case_key)
        entries = await asyncio.to_thread(intake.outbox.inbox, who.member.crew, cases)
        return JSONResponse({"entries": entries, "cases": cases})

    async def case(request: Request) -> Response:
        who = signed_in(request)
        try:
            seq = int(request.path_params["seq"])
        except ValueError:
            raise Problem(404, "not-found", "not found", "There is no such case.") from None
        if seq not in await asyncio.to_thread(intake.outbox.my_cases, who.case_key):
            raise Problem(404, "not-found", "not found", "There is no such case of yours.")
        keys = reporter_reply_keys(who.case_key)
        notes: list[dict[str, object]] = []
        stage = CaseStatus.RECEIVED
        for code, sealed, at in await asyncio.to_thread(intake.outbox.case_notes, seq):
            with contextlib.suppress(ValueError):
                stage = CaseStatus(code)
            note: dict[str, object] = {"stage": STAGE_WORDS.get(stage, str(code)), "at": at}
            if sealed:
                try:
                    opened = open_case_note(sealed, keys.private_key)
                except SealedBoxInvalid:
                    logger.warning("case %d: a note did not open with the reporter's key", seq)
                    note["unreadable"] = True
                else:
                    note.update(
                        stage=STAGE_WORDS[opened.status],
                        text=opened.text,
                        lang=None if opened.lang is None else opened.lang.code,
                        reason=opened.reason,
                        written_minutes=opened.written_minutes,
                    )
            notes.append(note)
        # the union's notes that came in the reporter's downlink slots (cover never opens)
        slotted = await asyncio.to_thread(
            _slot_notes,
            await asyncio.to_thread(intake.outbox.slot_items, who.member.crew),
            keys.private_key,
            case_number(intake.outbox.vessel_id, seq),
        )
        for opened, at in slotted:
            stage = opened.status
            notes.append(
                {
                    "stage": STAGE_WORDS[opened.status],
                    "at": at,
                    "text": opened.text,
                    "lang": None if opened.lang is None else opened.lang.code,
                    "reason": opened.reason,
                    "written_minutes": opened.written_minutes,
                }
            )
        return JSONResponse(
            {
                "case_number": case_number(intake.outbox.vessel_id, seq),
                "stage": STAGE_WORDS.get(stage, str(int(stage))),
                "notes": notes,
            }
        )

    async def quota(request: Request) -> Response:
        who = signed_in(request)
        status = await asyncio.to_thread(intake.quota, who.member.crew)
        return JSONResponse(
            {
                "month": status.month,
                "used_bytes": status.used_bytes,
                "quota_bytes": status.quota_bytes,
                "remaining_bytes": status.remaining_bytes,
            }
        )

    routes = [
        Route("/api/login", endpoint(login), methods=["POST"]),
        Route("/api/contacts", endpoint(contacts), methods=["GET", "POST"]),
        Route("/api/messages", endpoint(send_message), methods=["POST"]),
        Route("/api/messages/{seq}", endpoint(message_stages), methods=["GET"]),
        Route("/api/unions", endpoint(unions), methods=["GET"]),
        Route("/api/grievances", endpoint(grievance), methods=["POST"]),
        Route("/api/sos", endpoint(sos), methods=["POST"]),
        Route("/api/inbox", endpoint(inbox), methods=["GET"]),
        Route("/api/cases/{seq}", endpoint(case), methods=["GET"]),
        Route("/api/quota", endpoint(quota), methods=["GET"]),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        del request, exc
        return Problem(404, "not-found", "not found", "This page does not exist.").response()

    async def not_allowed(request: Request, exc: Exception) -> Response:
        del request, exc
        return Problem(
            405, "not-allowed", "not allowed", "The page sent a wrong request."
        ).response()

    pages = web_routes(intake)  # the crew web page (server-rendered, shipboard.web)
    app = Starlette(routes=[*routes, *pages], exception_handlers={404: not_found, 405: not_allowed})
    return NoStore(app)


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the agent's supervisor owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_http(
    app: ASGIApp,
    host: str,
    port: int,
    stopping: asyncio.Event,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve the API until ``stopping`` is set, then finish open requests and return."""
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="off"
    )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                await task  # raises why it could not start (port in use ...)
                return
            await asyncio.sleep(0.02)
        logger.info("HTTP API listening on %s:%d", host, port)
        if ready is not None:
            ready.set()
        await stopping.wait()
    finally:
        server.should_exit = True
        await task
        logger.info("HTTP API stopped")


def _slot_notes(
    items: Sequence[tuple[bytes, float]], reply_private_key: bytes, case: str
) -> list[tuple[CaseNote, float]]:
    """The case notes for ``case`` among a crew member's downlink slot items: each item's
    short and long note are tried with the reply key; cover and other cases' notes are left
    out (and nothing says which was which)."""
    found: list[tuple[CaseNote, float]] = []
    for item, at in items:
        candidates = downlink_slot_notes(item)
        if candidates is None:
            continue
        for sealed in candidates[1]:
            try:
                opened = open_case_note(sealed, reply_private_key)
            except SealedBoxInvalid:
                continue
            if opened.case == case:
                found.append((opened, at))
            break
    return found
