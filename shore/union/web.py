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
    GET  /cases/{case}/export     the same file as ``union export`` (a download)
    GET  /alerts                  "crew member silent" and "vessel silent" alerts

Caseworkers log in with scrypt hashes kept in ``caseworkers.txt`` in the union's directory
(0600; ``vessel-relay union user add NAME``; the format of :mod:`shore.dashboard.auth`).
Every response carries ``Cache-Control: no-store``; every form a CSRF token. Logs name
case numbers and actions, never report text, replies or reporters' names.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from jinja2 import Environment, FileSystemLoader
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocol.cases import STAGE_WORDS, TRANSITIONS, format_receipt_code, parse_stage
from protocol.envelopes import CaseStatus
from protocol.errors import ProtocolError
from protocol.evidence import EntryKind, fingerprint
from protocol.languages import Language
from protocol.sealing import GrievanceCategory
from shore.dashboard.auth import OperatorFileError, add_operator, read_operators, verify_password
from shore.union.client import RelayUnreachable
from shore.union.inbox import InboxError, UnionInbox

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
CASEWORKERS = "caseworkers.txt"
Handler = Callable[[Request], Awaitable[Response]]
_T = TypeVar("_T")
#: What a caseworker can fix by reading the message (shown on the page, not a crash).
_USER_ERRORS = (InboxError, RelayUnreachable, ProtocolError)

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
    """Add (or reset) a caseworker's login (scrypt hash, file rewritten atomically, 0600)."""
    try:
        add_operator(caseworkers_path(directory), name, password)
    except OperatorFileError as exc:
        raise CaseworkerError(str(exc).replace("operator", "caseworker")) from exc


def read_caseworkers(directory: Path) -> dict[str, str]:
    """Caseworker name -> stored hash; explains how to add the first one."""
    path = caseworkers_path(directory)
    if not path.exists():
        raise CaseworkerError(
            f"{path} does not exist; add a caseworker first: "
            f"vessel-relay union user add NAME --dir {directory}"
        )
    try:
        found = read_operators(path)
    except OperatorFileError as exc:
        raise CaseworkerError(str(exc)) from exc
    if not found:
        raise CaseworkerError(f"{path} lists no caseworker; run: vessel-relay union user add NAME")
    return found


@dataclass(frozen=True, slots=True)
class UnionWebSettings:
    """Who may log in and how sessions are signed."""

    caseworkers: dict[str, str]  # name -> stored hash (shore.dashboard.auth)
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    session_max_age_s: int = 8 * 3600
    https_only: bool = False


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


def _float_or_none(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _int_or_none(text: str | None) -> int | None:
    if text is None or not text.strip():
        return None
    try:
        return int(text)
    except ValueError:
        return None


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

    async def call(function: Callable[..., _T], *args: Any) -> _T:
        async with lock:
            return await asyncio.to_thread(function, *args)

    def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        context.update(
            caseworker=request.session.get("caseworker"),
            csrf=request.session.get("csrf", ""),
            flash=request.session.pop("flash", None),
            problem=request.session.pop("problem", None),
            union=inbox.identity,
        )
        response: Response = templates.TemplateResponse(request, name, context, status_code=status)
        return response

    def login_required(handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            if request.session.get("caseworker") not in settings.caseworkers:
                return RedirectResponse("/login", status_code=303)
            return await handler(request)

        return guarded

    async def form_with_token(request: Request) -> dict[str, str] | None:
        form = await request.form()
        sent = form.get("csrf")
        expected = request.session.get("csrf")
        if not (isinstance(sent, str) and isinstance(expected, str) and expected):
            return None
        if not secrets.compare_digest(sent, expected):
            return None
        return {key: value for key, value in form.items() if isinstance(value, str)}

    def forged() -> Response:
        return Response("the form expired; reload the page and try again", status_code=403)

    async def login_page(request: Request) -> Response:
        return render(request, "login.html", error=None)

    async def login(request: Request) -> Response:
        form = await request.form()
        name, password = str(form.get("caseworker", "")), str(form.get("password", ""))
        stored = settings.caseworkers.get(name)
        if stored is None or not await asyncio.to_thread(verify_password, password, stored):
            log.warning("union web: failed login")
            return render(request, "login.html", status=401, error="Wrong caseworker or password.")
        request.session.clear()
        request.session.update(caseworker=name, csrf=secrets.token_urlsafe(24))
        log.info("union web: caseworker logged in")
        return RedirectResponse("/", status_code=303)

    async def logout(request: Request) -> Response:
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    async def case_list(request: Request) -> Response:
        query = request.query_params
        vessel = _int_or_none(query.get("vessel"))
        category = query.get("category") or None
        if category not in categories:
            category = None
        stage_word = query.get("stage") or ""
        stage = parse_stage(stage_word) if stage_word in STAGE_WORDS.values() else None
        newer = _float_or_none(query.get("newer_than"))
        older = _float_or_none(query.get("older_than"))
        rows = await call(
            lambda: inbox.cases(
                vessel=vessel,
                category=category,
                older_than_days=older,
                newer_than_days=newer,
                status=stage,
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
        number = request.path_params["case"]
        try:
            view = await call(inbox.show, number)
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
        )

    def case_action(kind: str) -> Handler:
        async def act(request: Request) -> Response:
            form = await form_with_token(request)
            if form is None:
                return forged()
            number = request.path_params["case"]
            try:
                if kind == "reply":
                    code = form.get("lang") or ""
                    language = Language.from_code(code) if code else None
                    entry = await call(inbox.reply, number, form.get("text", ""), language)
                    done = f"Reply recorded (entry {entry.index})"
                else:
                    stage = parse_stage(form.get("stage", ""))
                    reason = form.get("reason") or None
                    entry = await call(inbox.set_status, number, stage, reason)
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

    async def export(request: Request) -> Response:
        number = request.path_params["case"]

        def write() -> tuple[str, bytes]:
            found = inbox.find(number)
            with tempfile.TemporaryDirectory(dir=inbox.identity.directory) as folder:
                path = Path(folder) / "export.json"
                inbox.export(found, path)
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
        Route("/", login_required(case_list)),
        Route("/fetch", login_required(fetch_now), methods=["POST"]),
        Route("/alerts", login_required(alerts)),
        Route("/cases/{case}", login_required(case_page)),
        Route("/cases/{case}/export", login_required(export)),
        Route("/cases/{case}/reply", login_required(case_action("reply")), methods=["POST"]),
        Route("/cases/{case}/status", login_required(case_action("status")), methods=["POST"]),
    ]
    middleware = [
        Middleware(NoStore),
        Middleware(
            SessionMiddleware,
            secret_key=settings.secret_key,
            session_cookie="vr_union",
            max_age=settings.session_max_age_s,
            same_site="strict",
            https_only=settings.https_only,
        ),
    ]
    return Starlette(routes=routes, middleware=middleware)


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
