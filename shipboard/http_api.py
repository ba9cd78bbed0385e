"""HTTP API for the crew web page (Starlette, served by uvicorn on the vessel LAN).

Endpoints (JSON; sign in first, then send ``Authorization: Bearer TOKEN``):

* ``POST /api/login`` ``{"crew": 3, "pin": "12345678"}`` -> an API token
* ``GET /api/contacts``, ``POST /api/contacts`` -> the crew member's family contacts
* ``POST /api/messages`` ``{"contact": 1, "text": "..."}`` (or ``"quick": 4``) -> 201, saved
* ``POST /api/voice-notes?contact=1`` with the recording as the body (what the phone's
  MediaRecorder made: WebM/Opus, MP4/AAC ...; at most :data:`shipboard.voice.
  MAX_RECORDING_BYTES`) -> 201, saved as a voice message in Codec2 (``voice_bytes``
  counted against the quota like text); a recording that is too long, silent, not sound
  or unreadable gets 413, 422 or 415 with a sentence in the crew member's language
* ``GET /api/messages/{seq}`` -> the stages of one of their messages, with times
* ``GET /api/unions`` -> unions that receive grievance reports
* ``POST /api/grievances`` ``{"union": 1, "category": "withholding_of_wages", "text": ...,
  "lang": "mya", "anonymous": false}`` (optional ``"consent_to_escalate": true``: an
  unanswered report may go to the union's second organisation) -> 201 with a case
  number, a receipt code and
  ``leaves_by``: by when the report is expected to have left the vessel (seconds since
  1970; usually within a day and a half, much later after restarts in quick succession
  or for a long report)
* ``POST /api/sos`` ``{"note": "...", "position": [1350000, 10050000]}`` -> 201; without a
  (valid) token it goes without a PIN, for the ``"crew"`` number in the body (flagged as
  unauthenticated ashore; repeats coalesced, see :mod:`shipboard.sos_limit`)
* ``GET /api/inbox`` -> receipts, replies, case updates and quota notices, and ``cases``:
  the numbers of the reporter's cases
* ``GET /api/cases/{seq}`` -> one of the reporter's cases (``seq``: the number after the
  dash of its case number): stage and the union's notes, found with the reply key derived
  from their case key (404 for anyone else's case); for a report of the grievance lane
  also when it was filed, its union, its receipt code (mode B) and, for a report filed
  since the agent started, how far it has got on board (``state``)

A report's ``message_seq`` (``POST /api/grievances``) is its report number, the part of
its case number after the dash; a report that cannot be taken now is refused with 503 and
a sentence in the crew member's language saying when to send it again.
* ``GET /api/quota`` -> this month's text quota and balance

A 201 is sent only after the outbox committed. Errors are RFC 9457 problem details
(``application/problem+json``) whose ``detail`` is a sentence for the crew member. Wrong
PINs count per crew member with the crew page's and SMTP AUTH's (one
:class:`common.signins.SignInGuard` per process); a paused crew number gets 429 with
``Retry-After``. Every request body is bounded per route before it is read
(:class:`common.http.BodyLimit`, :data:`ROUTE_BODY_BYTES`), JSON is parsed within bounds
(:func:`common.http.parse_json`), numbers and texts are checked before use. Every
response carries ``Cache-Control: no-store`` (a shared phone must keep nothing). API tokens
live in memory only: after a restart the crew member signs in again. Grievance text is
held in memory only until it is sealed; it is never logged or stored in clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.http import (
    BodyLimit,
    MalformedRequest,
    RequestRefused,
    bounded_int,
    check_text,
    parse_json,
)
from common.signins import SignInGuard
from protocol.cases import STAGE_WORDS
from protocol.languages import Language
from protocol.phrases import PHRASE_CODES
from protocol.sealing import GrievanceCategory
from shipboard.case_view import Reader, my_cases, show_case, slot_notes
from shipboard.crew import MAX_CREW_NUMBER, ContactChannel, SignedIn
from shipboard.errors import (
    CrewRegisterError,
    IntakeRefused,
    MessageTooLong,
    NotSignedIn,
    OutboxUnavailable,
    QuotaExceeded,
    SignInPaused,
    VoiceNoteRefused,
)
from shipboard.intake import Intake, sos_position
from shipboard.message_limit import MAX_MESSAGE_BYTES
from shipboard.signin import CrewSignIn
from shipboard.states import MessageKind, MessageState
from shipboard.voice import MAX_RECORDING_BYTES
from shipboard.web import pages
from shipboard.web.i18n import Translations, page_language
from shipboard.web.phones import SignedInPhones

logger = logging.getLogger(__name__)

#: How long an API token stays valid after sign-in.
TOKEN_SECONDS = 12 * 3600
#: Largest message, contact, union and case numbers the doors take (SQLite and the
#: envelopes hold them; more is refused with a sentence before any lookup).
MAX_ID = 2**53 - 1
#: Body limits, by path prefix (the longest prefix wins): a form or JSON carrying the
#: largest thing the route takes, with room for URL or JSON escaping (a Burmese letter
#: is 3 bytes of UTF-8 and 9 once URL-encoded). Everything else: DEFAULT_BODY_BYTES.
DEFAULT_BODY_BYTES = 8 * 1024
ROUTE_BODY_BYTES: dict[str, int] = {
    "/api/login": 4 * 1024,
    "/login": 4 * 1024,
    "/api/messages": 16 * 1024,  # 4 KiB of text (intake.MAX_MESSAGE_BYTES), JSON-escaped
    # the same, URL-encoded (9 bytes a Burmese letter): room to say "shorten it by N
    # characters" of a text up to about 2.5 times the limit
    "/write": 96 * 1024,
    "/api/sos": 16 * 1024,
    "/sos": 16 * 1024,
    "/api/grievances": 64 * 1024,  # 16 KiB of report (intake.MAX_GRIEVANCE_BYTES)
    "/report": 96 * 1024,
    "/report/phone/sealed": pages.MAX_SEALED_BYTES,  # the largest sealed report
    "/api/voice-notes": MAX_RECORDING_BYTES,  # a recording, as the phone's browser made it
    "/write/voice": MAX_RECORDING_BYTES,  # the same, from the write page's recorder
    "/report/voice": MAX_RECORDING_BYTES,  # a spoken report, from the report page's
}


class Problem(Exception):
    """An HTTP problem detail (RFC 9457) with a sentence for the crew member."""

    def __init__(self, status: int, code: str, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.extra = extra
        self.headers: dict[str, str] = {}

    def response(self) -> JSONResponse:
        body = {
            "type": f"urn:vessel-relay:problem:{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }
        return JSONResponse(
            body,
            status_code=self.status,
            media_type="application/problem+json",
            headers=self.headers or None,
        )


def _refused(error: IntakeRefused) -> Problem:
    extra: dict[str, Any] = {}
    if isinstance(error, QuotaExceeded):
        extra = {"remaining_bytes": error.remaining_bytes, "needed_bytes": error.needed_bytes}
    if isinstance(error, MessageTooLong):
        extra = {"over_characters": error.over, "max_bytes": MAX_MESSAGE_BYTES}
    title = error.code.replace("-", " ")
    return Problem(error.http_status, error.code, title, error.sentence, **extra)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _request_refused(error: RequestRefused) -> Problem:
    return Problem(error.status, error.code, error.code.replace("-", " "), error.sentence)


@dataclass
class _Token:
    signed_in: SignedIn
    expires_at: float


@dataclass
class ApiTokens:
    """The API's bearer tokens and who signed in for each, in memory (wrong PINs: the
    process's sign-in guard)."""

    clock: Callable[[], float] = time.monotonic
    tokens: dict[str, _Token] = field(default_factory=dict)

    def open(self, signed_in: SignedIn) -> str:
        """A new token for a crew member who signed in."""
        now = self.clock()
        for token in [t for t, held in self.tokens.items() if held.expires_at < now]:
            del self.tokens[token]
        token = secrets.token_urlsafe(32)
        self.tokens[token] = _Token(signed_in, now + TOKEN_SECONDS)
        return token

    def get(self, token: str) -> SignedIn:
        """Who signed in for ``token``; :class:`NotSignedIn` if unknown or expired."""
        held = self.tokens.get(token)
        if held is None or held.expires_at < self.clock():
            self.tokens.pop(token, None)
            raise NotSignedIn("Please sign in again with your crew number and PIN.")
        return held.signed_in


class NoStore:
    """ASGI middleware: ``Cache-Control: no-store`` on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or pages.is_static(scope):
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


def create_app(
    intake: Intake,
    api_tokens: ApiTokens | None = None,
    *,
    guard: SignInGuard | None = None,
    phones: SignedInPhones | None = None,
    in_port: Callable[[], bool] | None = None,
) -> ASGIApp:
    """The crew API and the crew page as one ASGI app, every request body bounded.

    ``guard`` is the process's one sign-in guard, shared with SMTP AUTH (the agent's
    supervisor makes it); without one, the app makes its own for the API and the page.
    ``in_port``: whether the vessel is in reach of its port link (the crew page says so).
    """
    store = api_tokens or ApiTokens()
    guard = guard or SignInGuard()
    signins = CrewSignIn(intake.register, guard, intake.clock)
    translations = Translations()
    page_phones = phones if phones is not None else SignedInPhones()

    def endpoint(function: Callable[[Request], Awaitable[Response]]) -> Handler:
        async def wrapped(request: Request) -> Response:
            try:
                return await function(request)
            except Problem as problem:
                return problem.response()
            except IntakeRefused as refused:
                return _refused(refused).response()
            except RequestRefused as refused:
                return _request_refused(refused).response()
            except CrewRegisterError as error:
                return Problem(422, "invalid", "not accepted", str(error)).response()
            except OutboxUnavailable as error:
                return Problem(503, "storage-failed", "not saved", error.sentence).response()

        return wrapped

    def token_of(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return token.strip()

    def signed_in(request: Request) -> SignedIn:
        token = token_of(request)
        if token is None:
            raise NotSignedIn("Please sign in with your crew number and PIN.")
        return store.get(token)

    async def body(request: Request) -> dict[str, Any]:
        data = parse_json(await request.body())  # MalformedJson: 400 with a sentence
        if not isinstance(data, dict):
            raise Problem(400, "bad-request", "bad request", "The page sent a broken request.")
        return data

    def optional_text(data: dict[str, Any], name: str) -> str | None:
        value = data.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise Problem(400, "bad-request", "bad request", f"'{name}' must be text.")
        return check_text(value, f"'{name}'")

    def text_of(data: dict[str, Any], name: str) -> str:
        value = optional_text(data, name)
        if value is None:
            raise Problem(400, "bad-request", "bad request", f"'{name}' is missing or wrong.")
        return value

    def optional_int(
        data: dict[str, Any], name: str, low: int = 0, high: int = MAX_ID
    ) -> int | None:
        value = data.get(name)
        if value is None:
            return None
        if isinstance(value, str):  # JSON numbers only (the crew page's forms send digits)
            raise Problem(400, "bad-request", "bad request", f"'{name}' must be a number.")
        return bounded_int(value, f"'{name}'", low, high)

    def int_of(data: dict[str, Any], name: str, low: int = 0, high: int = MAX_ID) -> int:
        value = optional_int(data, name, low, high)
        if value is None:
            raise Problem(400, "bad-request", "bad request", f"'{name}' must be a number.")
        return value

    def flag_of(data: dict[str, Any], name: str) -> bool:
        value = data.get(name, False)
        if not isinstance(value, bool):
            raise Problem(400, "bad-request", "bad request", f"'{name}' must be true or false.")
        return value

    def language(data: dict[str, Any], default: Language) -> Language:
        code = data.get("lang")
        if code is None:
            return default
        if not isinstance(code, str):
            raise Problem(400, "bad-request", "bad request", "Unknown language.")
        try:
            return Language.from_code(code)
        except ValueError:
            raise Problem(400, "bad-request", "bad request", "Unknown language.") from None

    def say(request: Request, data: dict[str, Any], msgid: str, **fields: object) -> str:
        """A sign-in sentence in the visitor's language (``lang``, else their browser's)."""
        lang = pages.visitor_language(request)
        code = data.get("lang")
        if isinstance(code, str):
            lang = page_language(code, lang)
        text = translations.gettext(lang, msgid)
        return text.format(**fields) if fields else text

    async def login(request: Request) -> Response:
        data = await body(request)
        crew = int_of(data, "crew", 1, MAX_CREW_NUMBER)
        pin = text_of(data, "pin")
        try:
            who = await asyncio.to_thread(signins.sign_in, crew, pin)
        except SignInPaused as paused:
            minutes = paused.retry_after_minutes
            problem = Problem(
                429,
                paused.code,
                "sign-in paused",
                say(request, data, pages.SIGN_IN_PAUSED, minutes=minutes),
                retry_after_s=math.ceil(paused.retry_after_s),
                sos="POST /api/sos with your crew number works without a PIN",
            )
            problem.headers["retry-after"] = str(math.ceil(paused.retry_after_s))
            raise problem from None
        except NotSignedIn as wrong:
            msgid = pages.SIGNED_OFF if wrong.sentence == pages.SIGNED_OFF else pages.WRONG_PIN
            raise Problem(401, wrong.code, "not signed in", say(request, data, msgid)) from None
        token = store.open(who)
        member = who.member
        return JSONResponse(
            {
                "token": token,
                "crew": member.crew,
                "name": member.name,
                "language": member.language.code,
                "expires_in": TOKEN_SECONDS,
            }
        )

    async def contacts(request: Request) -> Response:
        who = signed_in(request)
        crew = who.member.crew
        if request.method == "POST":
            data = await body(request)
            raw_channel = text_of(data, "channel")
            if raw_channel not in ("email", "sms"):
                raise Problem(400, "bad-request", "bad request", "Choose e-mail or SMS.")
            channel: ContactChannel = "email" if raw_channel == "email" else "sms"
            contact_lang = language(data, who.member.language)
            address = text_of(data, "address")
            added = await asyncio.to_thread(
                intake.register.add_contact,
                crew,
                channel=channel,
                address=address,
                name=optional_text(data, "name"),
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

    async def send_voice_note(request: Request) -> Response:
        who = signed_in(request)
        raw_contact = request.query_params.get("contact", "")
        if not raw_contact.isdigit() or len(raw_contact) > 16:
            raise Problem(400, "bad-request", "bad request", "'contact' must be a number.")
        contact = bounded_int(int(raw_contact), "'contact'", 0, MAX_ID)
        recording = await request.body()  # bounded by BodyLimit before it is read
        try:
            accepted = await asyncio.to_thread(
                intake.send_voice_note, who.member.crew, contact, recording
            )
        except VoiceNoteRefused as refused:
            # said in the crew member's own language (the catalogue has every msgid)
            lang = page_language(None, who.member.language)
            msgid = refused.msgid or refused.sentence
            problem = _refused(refused)
            problem.detail = translations.gettext(lang, msgid).format(**refused.fields)
            raise problem from None
        finally:
            del recording
        quota = await asyncio.to_thread(intake.quota, who.member.crew)
        return JSONResponse(
            {
                "message_seq": accepted.message_seq,
                "state": MessageState.ACCEPTED,
                "voice_bytes": accepted.text_bytes,
                "mode": intake.config.voice.mode.label,
                "remaining_bytes": quota.remaining_bytes,
            },
            status_code=201,
        )

    async def send_message(request: Request) -> Response:
        who = signed_in(request)
        data = await body(request)
        contact = int_of(data, "contact")
        quick = optional_int(data, "quick")
        if quick is not None and quick not in PHRASE_CODES:
            raise Problem(400, "bad-request", "bad request", "Choose a quick message.")
        text = None if quick is not None else text_of(data, "text")
        lang = language(data, who.member.language)
        try:
            accepted = await asyncio.to_thread(
                intake.send_message, who.member.crew, contact, text, lang, quick
            )
        except MessageTooLong as refused:
            # "shorten it by N characters", in the crew member's own language
            problem = _refused(refused)
            problem.detail = translations.gettext(
                page_language(None, who.member.language), refused.msgid
            ).format(**refused.fields)
            raise problem from None
        quota = await asyncio.to_thread(intake.quota, who.member.crew)
        return JSONResponse(
            {
                "message_seq": accepted.message_seq,
                "state": MessageState.ACCEPTED,
                "text_bytes": accepted.text_bytes,
                "remaining_bytes": quota.remaining_bytes,
            },
            status_code=201,
        )

    def seq_of(request: Request, what: str) -> int:
        try:
            return bounded_int(request.path_params["seq"], "seq", 1, MAX_ID)
        except MalformedRequest:
            raise Problem(404, "not-found", "not found", f"There is no such {what}.") from None

    async def message_stages(request: Request) -> Response:
        who = signed_in(request)
        seq = seq_of(request, "message")
        stages = None if who.duress else await asyncio.to_thread(intake.view.message_stages, seq)
        mine = stages is not None and stages["crew"] == who.member.crew
        if stages is not None and stages["kind"] == MessageKind.GRIEVANCE:
            mine = seq in await asyncio.to_thread(intake.view.my_cases, who.case_key)
        if stages is None or not mine:
            raise Problem(404, "not-found", "not found", "There is no such message of yours.")
        for private in ("reporter_tag", "crew", "failure_detail", "typed_crew"):
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
            elif isinstance(raw_category, str):
                category = GrievanceCategory[raw_category.upper()]
            else:
                raise KeyError(raw_category)
        except (KeyError, ValueError):
            raise Problem(
                400, "bad-request", "bad request", "Choose what the problem is about."
            ) from None
        union = int_of(data, "union")
        text = text_of(data, "text")
        try:
            report = await asyncio.to_thread(
                intake.file_grievance,
                who,
                union_id=union,
                category=category,
                text=text,
                lang=language(data, who.member.language),
                anonymous=flag_of(data, "anonymous"),
                consent_to_escalate=flag_of(data, "consent_to_escalate"),
            )
        except IntakeRefused as refused:
            if refused.msgid is None:
                raise
            # a sentence with figures: said in the crew member's own language
            lang = page_language(None, who.member.language)
            sentence = translations.gettext(lang, refused.msgid).format(**refused.fields)
            problem = _refused(refused)
            problem.detail = sentence
            raise problem from None
        del data, text
        return JSONResponse(
            {
                "message_seq": report.message_seq,
                "case_number": report.case_number,
                "receipt_code": report.receipt_code,
                "state": MessageState.ACCEPTED,
                "leaves_by": report.leaves_by,
            },
            status_code=201,
        )

    async def sos(request: Request) -> Response:
        """An SOS: the signed-in crew member's, or without a PIN (``crew`` in the body)
        when there is no valid token: an expired token must never stop an SOS.

        Once the body is JSON at all, nothing in it refuses an SOS: a field that cannot
        be used (a position off the Earth or not two numbers, a note that is not text, an
        unknown language, a crew number that is not one: 0, none) is left out and named
        in ``ignored``."""
        data = await body(request)
        ignored: list[str] = []
        raw = data.get("position")
        position = None
        if isinstance(raw, list) and len(raw) == 2 and all(_is_int(v) for v in raw):
            position = sos_position((int(raw[0]), int(raw[1])))
        if raw is not None and position is None:
            ignored.append("position")
        note = data.get("note")
        if note is not None and not isinstance(note, str):
            note = None
            ignored.append("note")
        code = data.get("lang")
        lang = None
        if isinstance(code, str):
            with contextlib.suppress(ValueError):
                lang = Language.from_code(code)
        if code is not None and lang is None:
            ignored.append("lang")
        token = token_of(request)
        who = None
        if token is not None:
            with contextlib.suppress(NotSignedIn):
                who = store.get(token)
        if who is not None:
            accepted = await asyncio.to_thread(
                intake.sos,
                who.member.crew,
                note=note,
                lang=lang or who.member.language,
                position=position,
            )
            return JSONResponse(
                {
                    "message_seq": accepted.message_seq,
                    "state": MessageState.ACCEPTED,
                    "signed_in": True,
                    "ignored": ignored,
                },
                status_code=201,
            )
        raw_crew = data.get("crew")
        crew = 0  # none typed, or none that can be read: the SOS still goes
        if _is_int(raw_crew) and 0 <= raw_crew <= MAX_CREW_NUMBER:
            crew = raw_crew
        elif raw_crew is not None:
            ignored.append("crew")
        queued = await asyncio.to_thread(
            intake.sos_without_pin,
            crew,
            note=note,
            lang=lang or pages.visitor_language(request),
            position=position,
        )
        logger.warning("SOS %d from the API without a PIN", queued.message_seq)
        return JSONResponse(
            {
                "message_seq": queued.message_seq,
                "state": MessageState.ACCEPTED,
                "signed_in": False,
                "coalesced": queued.coalesced,
                "ignored": ignored,
            },
            status_code=201,
        )

    async def inbox(request: Request) -> Response:
        who = signed_in(request)
        if who.duress:
            return JSONResponse({"entries": [], "cases": [], "messages": []})
        reader = Reader(intake.view, who)
        cases = await asyncio.to_thread(my_cases, reader)
        old = await asyncio.to_thread(reader.old_cases)
        entries = await asyncio.to_thread(intake.view.inbox, who.member.crew, old)
        # the crew member's own messages with their text, newest first (added beside the
        # entries: an app draws the conversations as the crew page does)
        kept = await asyncio.to_thread(intake.view.kept_messages, who.member.crew)
        messages = [
            {
                "message_seq": m.message_seq,
                "contact": m.contact,
                "text": m.body,
                "quick": m.quick,
                "lang": m.lang,
                "state": m.state.value,
                "accepted_at": m.accepted_at,
                "sent_at": m.sent_at,
                "acknowledged_at": m.acknowledged_at,
                "delivered_at": m.delivered_at,
                "failed_at": m.failed_at,
                "failure_reason": m.failure_reason,
            }
            for m in kept
        ]
        return JSONResponse({"entries": entries, "cases": cases, "messages": messages})

    async def case(request: Request) -> Response:
        who = signed_in(request)
        seq = seq_of(request, "case")
        reader = Reader(intake.view, who, intake.case_progress)
        shown = None if who.duress else await asyncio.to_thread(show_case, reader, seq)
        if shown is None:
            raise Problem(404, "not-found", "not found", "There is no such case of yours.")
        notes: list[dict[str, object]] = []
        for note in shown.notes:
            item: dict[str, object] = {"stage": STAGE_WORDS[note.stage], "at": note.at}
            if note.unreadable:
                item["unreadable"] = True
            elif note.written_minutes is not None:
                item.update(
                    text=note.text,
                    lang=note.lang,
                    reason=note.reason,
                    written_minutes=note.written_minutes,
                )
            notes.append(item)
        answer: dict[str, object] = {
            "case_number": shown.case_number,
            "stage": STAGE_WORDS[shown.stage],
            "notes": notes,
        }
        if shown.lane:
            answer.update(
                filed_at=shown.filed_at,
                union=shown.union_id,
                receipt_code=shown.receipt_code,
                state=None if shown.progress is None else shown.progress.value,
            )
        return JSONResponse(answer)

    async def quota(request: Request) -> Response:
        who = signed_in(request)
        status = await asyncio.to_thread(intake.quota, who.member.crew)
        used = 0 if who.duress else status.used_bytes  # the page's duress view says the same
        return JSONResponse(
            {
                "month": status.month,
                "used_bytes": used,
                "quota_bytes": status.quota_bytes,
                "remaining_bytes": max(0, status.quota_bytes - used),
            }
        )

    routes = [
        Route("/api/login", endpoint(login), methods=["POST"]),
        Route("/api/contacts", endpoint(contacts), methods=["GET", "POST"]),
        Route("/api/messages", endpoint(send_message), methods=["POST"]),
        Route("/api/voice-notes", endpoint(send_voice_note), methods=["POST"]),
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

    async def server_error(request: Request, exc: Exception) -> Response:
        """A bug: Starlette re-raises it after this answer and uvicorn logs the traceback
        once. The answer names nothing of the inside (the cause is to be fixed, not hidden)."""
        del exc
        if request.url.path.startswith("/api/"):
            return Problem(
                500, "internal", "internal error", "Something went wrong on board. Try again."
            ).response()
        return Response("Something went wrong on board. Try again.\n", 500)

    def refuse(scope: Scope, error: RequestRefused) -> ASGIApp:
        if str(scope.get("path", "")).startswith("/api/"):
            return _request_refused(error).response()
        return pages.refusal_page(translations, page_phones, scope, error)

    crew_pages = pages.web_routes(
        intake, page_phones, guard=guard, translations=translations, in_port=in_port
    )  # the crew web page (server-rendered, shipboard.web)
    app = Starlette(
        routes=[*routes, *crew_pages],
        exception_handlers={404: not_found, 405: not_allowed, 500: server_error},
    )
    limited = BodyLimit(app, DEFAULT_BODY_BYTES, routes=ROUTE_BODY_BYTES, refuse=refuse)
    return NoStore(limited)


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


#: The old name (tests of the downlink slots of the release before the lane use it).
_slot_notes = slot_notes
