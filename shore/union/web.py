"""The union's web app: caseworkers read, answer and export cases in a browser; login required.

``vessel-relay union web --dir DIR`` serves it (Starlette + Jinja2, no script, like the
operator dashboard in :mod:`shore.dashboard`). It works on the union's own inbox
(:class:`shore.union.inbox.UnionInbox`) through the same calls as the CLI, so a reply or a
status change goes to the relay exactly as ``union reply`` / ``union status`` send it.
Pages::

    GET  /login, POST /login, POST /logout
    GET  /                        cases, filtered by vessel, category, age and stage
    POST /fetch                   fetch now: new reports from the relay, notes not yet posted
    GET  /cases/{case}            the report as received (original kept, its language),
                                  mode A/B signer, timeline, evidence status
    POST /cases/{case}/reply      write to the reporter
    POST /cases/{case}/status     move the case on (closing needs a reason)
    POST /cases/{case}/assign     assign the case to a caseworker (or to nobody)
    POST /cases/{case}/notes      an internal note (caseworkers only, never to the reporter)
    GET  /cases/{case}/export     the same file as ``union export`` (a download)
    GET  /cases/{case}/access.csv, .json   the case's access log (a download)
    GET  /access.csv, /access.json         the whole access log (a download)
    GET  /unlock, POST /unlock    the store's passphrase, while the store is locked
    GET  /escalations             cases other unions escalated to this one (history; the
                                  report if its reporter agreed), and this union's routes
    GET  /statistics?from=YYYY-MM&to=YYYY-MM   grievance statistics (UNGP 31), anonymous
    GET  /statistics.json, /statistics.csv     the same, signed JSON or CSV (a download)
    GET  /alerts                  "lane silent" and "vessel silent" alerts ("crew member
                                  silent" for vessels still on daily slots)

Caseworkers log in with the Argon2id hashes kept in ``caseworkers.txt`` in the union's
directory (0600; ``vessel-relay union user add NAME``; the format of
:mod:`common.passwords`; scrypt lines from before 2026-12 sign in and are upgraded then).
Sign-ins need the password *and* the caseworker's TOTP code (:mod:`shore.union.totp`;
a caseworker who is not enrolled cannot sign in) and follow :mod:`common.logins` (wrong
passwords or codes paused per caseworker name and per address; the answer never says
whether a name exists, nor which secret was wrong). While the union's store is encrypted and
locked (:mod:`shore.union.vault`), every page but ``/unlock`` sends the signed-in caseworker
there: no report is shown until the passphrase is entered (wrong passphrases are paused by
the same :class:`~common.signins.SignInGuard` rule). Every open, export, reply, stage change,
assignment and note is in the access log (:mod:`shore.union.access_log`) under the
caseworker's name, shown on the case page. Every response carries
``Cache-Control: no-store``; every form, the login form included, the CSRF token of
:mod:`common.csrf`. Every request body is bounded (a reply's form at most
:data:`REPLY_BODY_BYTES`, any other :data:`BODY_BYTES`, refused before it is read), and every
refusal is a page with a sentence. Logs name case numbers and actions, never report text,
replies or reporters' names.

The app shares no code with the relay it talks to but ``protocol`` (the signed request
format of the union API is :mod:`protocol.union_requests`) and ``common``.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from jinja2 import Environment, FileSystemLoader
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.csrf import csrf_ok, csrf_token, new_session_token
from common.http import BodyLimit, RequestRefused, read_form
from common.logins import ADDRESS_POLICY, Logins
from common.passwords import PasswordBook, PasswordFileError, PasswordRefused, set_password
from common.signins import SignInGuard, SignInThrottled
from common.speech import CodedSpeech, decode_codec2, encode_ogg_opus
from protocol.cases import STAGE_WORDS, TRANSITIONS, format_receipt_code, parse_stage
from protocol.envelopes import CaseStatus
from protocol.errors import ProtocolError
from protocol.evidence import EntryKind, fingerprint
from protocol.languages import Language
from protocol.limits import DEFAULT_LIMITS
from protocol.sealing import GrievanceCategory
from protocol.voice import VoiceMode
from shore.union.access_log import AccessAction, to_csv, to_json
from shore.union.client import RelayUnreachable
from shore.union.inbox import NOTE_MAX_CHARS, InboxError, UnionInbox
from shore.union.statistics import make_statistics, statistics_files, year_to_date
from shore.union.totp import SecondFactorBook
from shore.union.vault import VaultError, WrongPassphrase

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
CASEWORKERS = "caseworkers.txt"
Handler = Callable[[Request], Awaitable[Response]]
_T = TypeVar("_T")
#: What a caseworker can fix by reading the message (shown on the page, not a crash).
_USER_ERRORS = (InboxError, RelayUnreachable, ProtocolError, VaultError)
#: Longest reply to a reporter, in characters (the protocol's bound on one text).
REPLY_MAX_CHARS = DEFAULT_LIMITS.max_text_chars
#: Largest reply form: the longest reply, each character percent-encoded (up to 12 bytes).
REPLY_BODY_BYTES = 12 * REPLY_MAX_CHARS + 4096
#: Largest body of any other request (the other forms are a few short fields).
BODY_BYTES = 8 * 1024
#: Longest reason for a stage change, and longest case number or receipt in a path.
REASON_MAX_CHARS = 2000
_ADD_HINT = "add a caseworker with 'vessel-relay union user add NAME'"

#: HTML ``lang`` tags (BCP 47) and English names of the crew's languages.
_HTML_LANG = {"eng": "en", "mya": "my", "tha": "th", "khm": "km", "lao": "lo", "vie": "vi"}
_HTML_LANG |= {"ind": "id", "tgl": "tl", "shn": "shn", "und": "und"}
_LANGUAGE_NAMES = {
    "eng": "English",
    "mya": "Burmese",
    "tha": "Thai",
    "khm": "Khmer",
    "lao": "Lao",
    "vie": "Vietnamese",
    "ind": "Indonesian",
    "tgl": "Tagalog",
    "shn": "Shan",
    "und": "undetermined",
}


class CaseworkerError(Exception):
    """The caseworkers file is missing or malformed; the message says what to do."""


def caseworkers_path(directory: Path) -> Path:
    """Where the caseworkers' logins live (the union's directory, 0600)."""
    return directory / CASEWORKERS


def add_caseworker(directory: Path, name: str, password: str) -> None:
    """Add (or reset) a caseworker's login (Argon2id, file rewritten atomically, 0600)."""
    try:
        set_password(caseworkers_path(directory), name, password, add_hint=_ADD_HINT)
    except (PasswordFileError, PasswordRefused) as exc:
        raise CaseworkerError(str(exc)) from exc


def read_caseworkers(directory: Path) -> PasswordBook:
    """Caseworker name -> stored hash, backed by the file (upgraded hashes are written
    back); explains how to add the first one."""
    path = caseworkers_path(directory)
    if not path.exists():
        raise CaseworkerError(
            f"{path} does not exist; add a caseworker first: "
            f"vessel-relay union user add NAME --dir {directory}"
        )
    try:
        found = PasswordBook.load(path, add_hint=_ADD_HINT)
    except PasswordFileError as exc:
        raise CaseworkerError(str(exc)) from exc
    if not found:
        raise CaseworkerError(f"{path} lists no caseworker; run: vessel-relay union user add NAME")
    return found


@dataclass(frozen=True, slots=True)
class UnionWebSettings:
    """Who may log in and how sessions are signed."""

    #: name -> stored hash (:mod:`common.passwords`); the :class:`PasswordBook` of
    #: :func:`read_caseworkers` writes upgraded hashes back to the file.
    caseworkers: Mapping[str, str]
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    session_max_age_s: int = 8 * 3600
    https_only: bool = False
    #: Wrong passwords per caseworker name, and per client address (:mod:`common.logins`).
    name_guard: SignInGuard = field(default_factory=SignInGuard)
    address_guard: SignInGuard = field(default_factory=lambda: SignInGuard(ADDRESS_POLICY))
    #: The caseworkers' TOTP secrets (:mod:`shore.union.totp`); nobody enrolled: no sign-in.
    second_factor: SecondFactorBook = field(default_factory=lambda: SecondFactorBook({}))
    #: Wrong passphrases at ``/unlock`` (one count for the whole store).
    unlock_guard: SignInGuard = field(default_factory=SignInGuard)


class NoStore:
    """ASGI middleware: ``Cache-Control: no-store`` on every response (cases are private)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"
                ]
                headers.append((b"cache-control", b"no-store"))
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"no-referrer"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_no_store)


def _when_minutes(minutes: int | None) -> str:
    if minutes is None:
        return "—"
    stamp = datetime.datetime.fromtimestamp(minutes * 60, datetime.UTC)
    return stamp.strftime("%Y-%m-%d %H:%M UTC")


def _days_or_none(text: str | None) -> float | None:
    """A filter's age in days (0 to 100 years), or None: a filter that is not one is ignored."""
    if text is None or not text.strip() or len(text) > 32:
        return None
    try:
        days = float(text)
    except ValueError:
        return None
    return days if 0 <= days <= 36_600 else None  # NaN fails both comparisons


def _id_or_none(text: str | None) -> int | None:
    """A filter's vessel id (digits, within SQLite's integers), or None (filter ignored)."""
    if text is None:
        return None
    text = text.strip()
    if not text or len(text) > 18 or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def create_app(
    inbox: UnionInbox, settings: UnionWebSettings, clock: Callable[[], float] = time.time
) -> Starlette:
    """The union's web app over an open inbox (the caller closes it)."""
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True)
    templates = Jinja2Templates(env=env)
    templates.env.filters["when"] = _when_minutes
    templates.env.filters["stage"] = lambda status: STAGE_WORDS[CaseStatus(status)]
    templates.env.filters["html_lang"] = lambda code: _HTML_LANG.get(code, "und")
    templates.env.filters["language"] = lambda code: _LANGUAGE_NAMES.get(code, code)
    templates.env.filters["words"] = lambda name: str(name).replace("_", " ")
    categories = [c.name.lower() for c in GrievanceCategory]
    # the inbox's SQLite connection and the relay client are synchronous: one call at a
    # time, off the event loop (the relay may be served by this very loop in tests)
    lock = asyncio.Lock()
    workers = settings.caseworkers
    book = workers if isinstance(workers, PasswordBook) else PasswordBook(workers)
    logins = Logins(
        book, settings.name_guard, settings.address_guard, second_factor=settings.second_factor
    )

    async def call(function: Callable[..., _T], *args: Any) -> _T:
        async with lock:
            return await asyncio.to_thread(function, *args)

    def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        context.update(
            caseworker=request.session.get("caseworker"),
            csrf=csrf_token(request.session),
            flash=request.session.pop("flash", None),
            problem=request.session.pop("problem", None),
            union=inbox.identity,
        )
        response: Response = templates.TemplateResponse(request, name, context, status_code=status)
        return response

    def refused_page(error: RequestRefused) -> Response:
        """A refusal that needs no session (BodyLimit answers before the session is read)."""
        html = env.get_template("refused.html").render(
            sentence=error.sentence, union=inbox.identity
        )
        return HTMLResponse(html, status_code=error.status)

    def refuse(scope: Scope, error: RequestRefused) -> ASGIApp:
        log.warning("union web: request refused: %s", error.code)
        return refused_page(error)

    async def on_refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestRefused)
        log.warning("union web: request refused: %s", exc.code)
        return refused_page(exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        sentence = {
            404: "This page does not exist.",
            405: "This page cannot be used that way; go back and use its buttons.",
        }.get(exc.status_code, "This request cannot be answered.")
        return refused_page(RequestRefused(sentence, status=exc.status_code, code="bad-route"))

    def login_required(handler: Handler, *, unlocked: bool = True) -> Handler:
        async def guarded(request: Request) -> Response:
            if request.session.get("caseworker") not in book:
                return RedirectResponse("/login", status_code=303)
            if unlocked and inbox.locked:
                return RedirectResponse("/unlock", status_code=303)
            return await handler(request)

        return guarded

    def who(request: Request) -> str:
        return str(request.session["caseworker"])

    async def form_with_token(request: Request) -> dict[str, str] | None:
        form = await read_form(request)
        return form if csrf_ok(request.session, form.get("csrf")) else None

    def forged() -> Response:
        return refused_page(
            RequestRefused(
                "The form expired; reload the page and try again.", status=403, code="csrf"
            )
        )

    async def login_page(request: Request) -> Response:
        return render(request, "login.html", error=None)

    async def login(request: Request) -> Response:
        form = await read_form(request)
        if not csrf_ok(request.session, form.get("csrf")):
            return render(
                request, "login.html", status=403, error="The form expired; please log in again."
            )
        name, password = form.get("caseworker", ""), form.get("password", "")
        code = form.get("code", "")[:16]
        address = request.client.host if request.client else "unknown"
        try:
            right = await logins.sign_in(name, password, address, code)
        except SignInThrottled as paused:
            log.warning("union web: sign-in paused after wrong passwords")
            response = render(
                request,
                "login.html",
                status=429,
                error=f"Too many wrong passwords. Try again in {paused.retry_after_minutes} "
                "minute(s).",
            )
            response.headers["Retry-After"] = str(math.ceil(paused.retry_after_s))
            return response
        if not right:
            log.warning("union web: failed login")
            return render(
                request,
                "login.html",
                status=401,
                error="Wrong caseworker, password or code. The code is the six digits your "
                "authenticator app shows now; a code signs in once.",
            )
        request.session.clear()
        request.session["caseworker"] = name
        new_session_token(request.session)
        log.info("union web: caseworker logged in")
        return RedirectResponse("/", status_code=303)

    async def logout(request: Request) -> Response:
        form = await read_form(request)
        if request.session.get("caseworker") is not None and not csrf_ok(
            request.session, form.get("csrf")
        ):
            return forged()
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    async def unlock_page(request: Request) -> Response:
        if not inbox.locked:
            return RedirectResponse("/", status_code=303)
        return render(request, "unlock.html", error=None)

    async def unlock(request: Request) -> Response:
        form = await form_with_token(request)
        if form is None:
            return forged()
        if not inbox.locked:
            return RedirectResponse("/", status_code=303)
        try:
            attempt = settings.unlock_guard.begin("store")
        except SignInThrottled as paused:
            response = render(
                request,
                "unlock.html",
                status=429,
                error=f"Too many wrong passphrases. Try again in {paused.retry_after_minutes} "
                "minute(s).",
            )
            response.headers["Retry-After"] = str(math.ceil(paused.retry_after_s))
            return response
        with attempt:
            try:
                await call(inbox.unlock, form.get("passphrase", "")[:1024])
            except WrongPassphrase:
                attempt.failed()
                log.warning("union web: wrong store passphrase")
                return render(
                    request, "unlock.html", status=401, error="That passphrase is not right."
                )
            attempt.succeeded()
        log.info("union web: store unlocked")
        return RedirectResponse("/", status_code=303)

    async def case_list(request: Request) -> Response:
        query = request.query_params
        vessel = _id_or_none(query.get("vessel"))
        category = query.get("category") or None
        if category not in categories:
            category = None
        stage_word = query.get("stage") or ""
        stage = parse_stage(stage_word) if stage_word in STAGE_WORDS.values() else None
        newer = _days_or_none(query.get("newer_than"))
        older = _days_or_none(query.get("older_than"))
        mine = query.get("mine") == "1"
        rows = await call(
            lambda: inbox.cases(
                vessel=vessel,
                category=category,
                older_than_days=older,
                newer_than_days=newer,
                status=stage,
                assignee=who(request) if mine else None,
            )
        )
        return render(
            request,
            "cases.html",
            rows=rows,
            categories=categories,
            stages=list(STAGE_WORDS.values()),
            chosen={
                "vessel": "" if vessel is None else str(vessel),
                "category": category or "",
                "stage": stage_word if stage else "",
                "newer_than": query.get("newer_than", ""),
                "older_than": query.get("older_than", ""),
                "mine": mine,
            },
            pending=await call(inbox.pending_notes),
        )

    async def fetch_now(request: Request) -> Response:
        if await form_with_token(request) is None:
            return forged()
        try:
            result = await call(inbox.fetch)
        except _USER_ERRORS as exc:
            request.session["problem"] = f"Fetch failed: {exc}"
        else:
            request.session["flash"] = (
                f"Fetched: {result.new_cases} new cases, {result.additions} additions, "
                f"{result.unreadable} unreadable, {result.notes_posted} notes posted."
            )
        return RedirectResponse("/", status_code=303)

    async def case_page(request: Request) -> Response:
        number = _case_in_path(request)
        try:
            view = await call(lambda: inbox.show(number, by=who(request)))
            notes = await call(inbox.notes, number)
            accesses = await call(inbox.access_log, number)
        except _USER_ERRORS as exc:
            return render(request, "missing.html", status=404, message=str(exc))
        current = view.summary.status
        return render(
            request,
            "case.html",
            view=view,
            summary=view.summary,
            receipt=format_receipt_code(view.receipt_code),
            signer=None if view.reporter_key is None else fingerprint(view.reporter_key),
            reports=[e for e in view.entries if e.kind in (EntryKind.REPORT, EntryKind.ADDITION)],
            next_stages=[STAGE_WORDS[s] for s in sorted(TRANSITIONS[current])],
            languages=[lang.code for lang in Language if lang is not Language.UND],
            pending=await call(inbox.pending_notes),
            notes=notes,
            accesses=accesses,
            caseworkers=sorted(book),
        )

    def case_action(kind: str) -> Handler:
        async def act(request: Request) -> Response:
            form = await form_with_token(request)
            if form is None:
                return forged()
            number = _case_in_path(request)
            try:
                if kind == "reply":
                    language = _language_or_refuse(form.get("lang") or "")
                    text = form.get("text", "")
                    if len(text) > REPLY_MAX_CHARS:
                        raise InboxError(
                            f"the reply has {len(text):,} characters; a reply may have at most "
                            f"{REPLY_MAX_CHARS:,}: shorten it or send it in parts"
                        )
                    entry = await call(lambda: inbox.reply(number, text, language, by=who(request)))
                    done = f"Reply recorded (entry {entry.index})"
                else:
                    stage = _stage_or_refuse(form.get("stage", ""))
                    reason = form.get("reason") or None
                    if reason is not None and len(reason) > REASON_MAX_CHARS:
                        raise InboxError(
                            f"the reason may have at most {REASON_MAX_CHARS:,} characters"
                        )
                    entry = await call(
                        lambda: inbox.set_status(number, stage, reason, by=who(request))
                    )
                    done = f"Case is now {STAGE_WORDS[stage]} (entry {entry.index})"
            except _USER_ERRORS as exc:
                request.session["problem"] = str(exc)
                log.info("union web: %s on case %s refused", kind, number)
            else:
                left = await call(inbox.pending_notes)
                request.session["flash"] = done + (
                    f"; {left} notes wait for the relay (fetch now to retry)."
                    if left
                    else "; sent to the relay."
                )
                log.info("union web: %s on case %s, entry %d", kind, number, entry.index)
            return RedirectResponse(f"/cases/{number}", status_code=303)

        return act

    def case_tool(kind: str) -> Handler:
        """Assignment and internal notes: caseworkers' own work, nothing to the reporter."""

        async def act(request: Request) -> Response:
            form = await form_with_token(request)
            if form is None:
                return forged()
            number = _case_in_path(request)
            try:
                if kind == "assign":
                    chosen = form.get("caseworker", "")
                    if chosen and chosen not in book:
                        raise InboxError("that caseworker does not exist; pick one from the list")
                    await call(lambda: inbox.assign(number, chosen or None, by=who(request)))
                    done = f"Assigned to {chosen}." if chosen else "Assigned to nobody."
                else:
                    text = form.get("text", "")
                    if len(text) > NOTE_MAX_CHARS:
                        raise InboxError(f"a note may have at most {NOTE_MAX_CHARS:,} characters")
                    await call(lambda: inbox.add_note(number, text, by=who(request)))
                    done = "Note kept (caseworkers only; the reporter never sees it)."
            except _USER_ERRORS as exc:
                request.session["problem"] = str(exc)
            else:
                request.session["flash"] = done
                log.info("union web: %s on case %s", kind, number)
            return RedirectResponse(f"/cases/{number}", status_code=303)

        return act

    def access_export(kind: str, *, whole: bool) -> Handler:
        async def download(request: Request) -> Response:
            try:
                number = None if whole else await call(inbox.find, _case_in_path(request))
                if number is not None:  # logged first: the download shows its own export
                    case = number
                    await call(
                        lambda: inbox.log_access(
                            case, AccessAction.EXPORT, by=who(request), detail="access log"
                        )
                    )
                rows = await call(inbox.access_log, number)
            except _USER_ERRORS as exc:
                return render(request, "missing.html", status=404, message=str(exc))
            body = to_csv(rows) if kind == "csv" else to_json(rows)
            name = "access-log" if number is None else f"access-{number}"
            return Response(
                body,
                media_type="text/csv; charset=utf-8" if kind == "csv" else "application/json",
                headers={"Content-Disposition": f'attachment; filename="{name}.{kind}"'},
            )

        return download

    async def escalations_page(request: Request) -> Response:
        received = await call(inbox.received_escalations)
        routes = await call(inbox.escalation_routes)
        return render(request, "escalations.html", received=received, routes=routes)

    def statistics_period(request: Request) -> tuple[str, str]:
        first, last = year_to_date(clock())
        chosen_first = request.query_params.get("from", "")[:7] or first
        chosen_last = request.query_params.get("to", "")[:7] or last
        return chosen_first, chosen_last

    async def statistics_page(request: Request) -> Response:
        first, last = statistics_period(request)
        try:
            document = await call(
                lambda: make_statistics(inbox, first_month=first, last_month=last)
            )
        except _USER_ERRORS as exc:
            request.session["problem"] = str(exc)
            first, last = year_to_date(clock())
            document = await call(
                lambda: make_statistics(inbox, first_month=first, last_month=last)
            )
        body = document["statistics"]
        return render(
            request,
            "statistics.html",
            body=body,
            first=first,
            last=last,
            signer=fingerprint(inbox.identity.signing_key.verify_key.key),
        )

    def statistics_download(kind: str) -> Handler:
        async def download(request: Request) -> Response:
            first, last = statistics_period(request)
            try:
                document = await call(
                    lambda: make_statistics(inbox, first_month=first, last_month=last)
                )
            except _USER_ERRORS as exc:
                return render(request, "missing.html", status=404, message=str(exc))
            as_json, as_csv = statistics_files(document)
            log.info("union web: statistics %s to %s downloaded as %s", first, last, kind)
            return Response(
                as_json if kind == "json" else as_csv,
                media_type="application/json" if kind == "json" else "text/csv; charset=utf-8",
                headers={
                    "Content-Disposition": f'attachment; filename="grievance-statistics-'
                    f'{first}-{last}.{kind}"'
                },
            )

        return download

    async def voice(request: Request) -> Response:
        """A spoken report's speech, decoded from its Codec2 frames in the evidence chain
        to Opus in Ogg for the caseworker's browser (never cached)."""
        number = _case_in_path(request)
        index = _id_or_none(request.path_params.get("index"))
        try:
            view = await call(lambda: inbox.show(number, by=who(request)))
        except _USER_ERRORS as exc:
            return render(request, "missing.html", status=404, message=str(exc))
        entry = next((e for e in view.entries if e.index == index), None)
        frames = None if entry is None else entry.fields.get("voice")
        mode = None if entry is None else entry.fields.get("voice_mode")
        duration = None if entry is None else entry.fields.get("voice_ms")
        if not (isinstance(frames, bytes) and isinstance(mode, int) and isinstance(duration, int)):
            return render(request, "missing.html", status=404, message="no recording here")
        try:
            speech = CodedSpeech(VoiceMode(mode), duration, frames)
            ogg = await asyncio.to_thread(lambda: encode_ogg_opus(decode_codec2(speech)))
        except ValueError as exc:
            log.warning(
                "union web: case %s entry %s: recording unreadable (%s)", number, index, exc
            )
            return render(request, "missing.html", status=404, message="recording unreadable")
        return Response(ogg, media_type="audio/ogg")

    async def export(request: Request) -> Response:
        number = _case_in_path(request)

        def write() -> tuple[str, bytes]:
            found = inbox.find(number)
            with tempfile.TemporaryDirectory(dir=inbox.identity.directory) as folder:
                path = Path(folder) / "export.json"
                inbox.export(found, path, by=who(request))
                return found, path.read_bytes()

        try:
            found, body = await call(write)
        except _USER_ERRORS as exc:
            return render(request, "missing.html", status=404, message=str(exc))
        log.info("union web: case %s exported", found)
        return Response(
            body,
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="case-{found}.json"'},
        )

    async def alerts(request: Request) -> Response:
        client = inbox.client
        problem: str | None = None
        found: list[dict[str, object]] = []
        if client is None:
            problem = "no relay client: this page needs the relay (relay_url in union.toml)"
        else:
            try:
                found = await call(client.alerts)
            except RelayUnreachable as exc:
                problem = str(exc)
        rows = [
            {
                "kind": str(alert.get("kind", "")),
                "vessel": alert.get("vessel"),
                "crew": alert.get("crew"),
                "since": _since(alert.get("since")),
            }
            for alert in found
        ]
        return render(request, "alerts.html", alerts=rows, alert_problem=problem)

    routes = [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/unlock", login_required(unlock_page, unlocked=False), methods=["GET"]),
        Route("/unlock", login_required(unlock, unlocked=False), methods=["POST"]),
        Route("/escalations", login_required(escalations_page)),
        Route("/statistics", login_required(statistics_page, unlocked=False)),
        Route("/statistics.json", login_required(statistics_download("json"), unlocked=False)),
        Route("/statistics.csv", login_required(statistics_download("csv"), unlocked=False)),
        Route("/access.csv", login_required(access_export("csv", whole=True))),
        Route("/access.json", login_required(access_export("json", whole=True))),
        Route("/", login_required(case_list)),
        Route("/fetch", login_required(fetch_now), methods=["POST"]),
        Route("/alerts", login_required(alerts)),
        Route("/cases/{case}", login_required(case_page)),
        Route("/cases/{case}/export", login_required(export)),
        Route("/cases/{case}/voice/{index}.ogg", login_required(voice)),
        Route("/cases/{case}/reply", login_required(case_action("reply")), methods=["POST"]),
        Route("/cases/{case}/status", login_required(case_action("status")), methods=["POST"]),
        Route("/cases/{case}/assign", login_required(case_tool("assign")), methods=["POST"]),
        Route("/cases/{case}/notes", login_required(case_tool("notes")), methods=["POST"]),
        Route("/cases/{case}/access.csv", login_required(access_export("csv", whole=False))),
        Route("/cases/{case}/access.json", login_required(access_export("json", whole=False))),
    ]
    middleware = [
        Middleware(NoStore),
        Middleware(
            BodyLimit,
            limit_bytes=BODY_BYTES,
            routes={"/cases/": REPLY_BODY_BYTES},
            refuse=refuse,
        ),
        Middleware(
            SessionMiddleware,
            secret_key=settings.secret_key,
            session_cookie="vr_union",
            max_age=settings.session_max_age_s,
            same_site="strict",
            https_only=settings.https_only,
        ),
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={RequestRefused: on_refused, HTTPException: on_http_error},
    )


def _case_in_path(request: Request) -> str:
    """The case number or receipt code in the path; a longer text than either is no case
    (404, and its text is never echoed into a page or the session cookie)."""
    number = str(request.path_params["case"])
    if len(number) > 40:
        raise HTTPException(404)
    return number


def _language_or_refuse(code: str) -> Language | None:
    """The reply's language from the form (None: the reporter's), or :class:`InboxError`."""
    if not code:
        return None
    try:
        if len(code) > 8:
            raise ValueError(code)
        return Language.from_code(code)
    except ValueError:
        known = ", ".join(lang.code for lang in Language)
        raise InboxError(f"that is not a language this app knows; use one of: {known}") from None


def _stage_or_refuse(word: str) -> CaseStatus:
    """The stage chosen in the form, or :class:`InboxError` (the message quotes no long input)."""
    if len(word) > 32:
        words = ", ".join(STAGE_WORDS.values())
        raise InboxError(f"that is not a case stage; use one of: {words}")
    return parse_stage(word)


def _since(value: object) -> str:
    if not isinstance(value, int | float) or value <= 0:
        return "never"
    return _when_minutes(int(value // 60))


def run_union_web(inbox: UnionInbox, settings: UnionWebSettings, host: str, port: int) -> None:
    """Serve the union's web app on ``host:port`` until interrupted (Ctrl-C, SIGTERM)."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(inbox, settings),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )
    log.info("union web app on http://%s:%d/", host, port)
    server.run()
