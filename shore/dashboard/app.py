"""Operator dashboard: fleet, vessel, failing deliveries and silent vessels; login required.

Server-rendered (Starlette + Jinja2, no script): every page is a plain GET, every POST (log
in, log out, each action) a form with the CSRF token of :mod:`common.csrf`. Sign-ins follow
:mod:`common.logins` (wrong passwords paused per operator name and per address; Argon2id
checked off the event loop). Every request body is bounded (:data:`BODY_BYTES`, refused
before it is read) and every refusal is a page with a sentence, never a 500. Pages::

    GET  /login, POST /login, POST /logout
    GET  /[?after=ID]            fleet: vessel, last heard, link bytes this month, queue,
                                 failures, quarantined; a page of vessels by id after ID
                                 (``fleet_page_size`` a page, links to the next and first)
    GET  /vessels/{id}           uplink batches per day (inline SVG), delivery outcomes,
                                 quarantined batches with reasons, failing deliveries
    GET  /deliveries             failing deliveries (failed, or retrying) with actions
    POST /deliveries/{v}/{m}/retry     try again now (a failed one is reopened)
    POST /deliveries/{v}/{m}/give-up   fail it for good; the vessel gets the receipt
    GET  /silent                 vessels not heard from within the threshold

What is shown: ids, vessel names (the registry's), sizes, times, states and reasons;
never message text, grievance content, crew names or family addresses.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Scope

from common.csrf import csrf_ok, csrf_token, new_session_token
from common.http import BodyLimit, MalformedRequest, RequestRefused, bounded_int, read_form
from common.logins import ADDRESS_POLICY, Logins, SignInThrottled
from common.passwords import PasswordBook
from common.signins import SignInGuard
from shore.dashboard.chart import activity_svg
from shore.store.errors import DeliveryNotFound
from shore.store.ops import (
    DEFAULT_SILENT_AFTER_S,
    FLEET_PAGE_SIZE,
    DayActivity,
    FailingDelivery,
    FleetPage,
    FleetRow,
    OperatorQueries,
    QuarantineRow,
)
from shore.store.registry import VesselRecord
from shore.store.relay_store import RelayStore

log = logging.getLogger(__name__)


class DashboardQueries(Protocol):
    """What the dashboard's pages read and do (``shore.store.ops.OperatorQueries`` has it)."""

    async def fleet(self, now: float) -> list[FleetRow]:
        """Every vessel, with its figures."""

    async def fleet_page(self, now: float, after: int | None = None, size: int = ...) -> FleetPage:
        """A page of vessels by id after ``after``, with their figures."""

    async def silent_vessels(self, now: float) -> list[FleetRow]:
        """Vessels not heard from for too long, longest silent first."""

    async def vessel(self, vessel_id: int) -> VesselRecord | None:
        """A registered vessel, or None."""

    async def activity(self, vessel_id: int, now: float, days: int = 30) -> list[DayActivity]:
        """The vessel's sessions and uplink per UTC day."""

    async def delivery_outcomes(self, vessel_id: int) -> dict[str, int]:
        """Counts of a vessel's deliveries by outcome."""

    async def quarantined(self, vessel_id: int, limit: int = 50) -> list[QuarantineRow]:
        """The vessel's quarantined payloads, newest first."""

    async def failing_deliveries(
        self, vessel_id: int | None = None, limit: int = 200
    ) -> list[FailingDelivery]:
        """Deliveries failed for good, and those still retrying."""

    async def retry_delivery(self, vessel_id: int, message_seq: int, now: float) -> None:
        """Try a delivery again now (DeliveryNotFound if there is none to retry)."""

    async def give_up_delivery(self, vessel_id: int, message_seq: int, now: float) -> None:
        """Stop retrying; the vessel is told (DeliveryNotFound if none is open)."""


TEMPLATES = Path(__file__).parent / "templates"
Handler = Callable[[Request], Awaitable[Response]]
#: Largest request body: every form of the dashboard is a few short fields.
BODY_BYTES = 8 * 1024
_MAX_ID = 2**62


@dataclass(frozen=True, slots=True)
class DashboardSettings:
    """Who may log in, how sessions are signed, and when a vessel counts as silent."""

    #: name -> stored hash (:mod:`common.passwords`); a :class:`PasswordBook` read from the
    #: operators file (:func:`shore.dashboard.auth.read_operators`) writes upgrades back.
    operators: Mapping[str, str]
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    silent_after_s: float = DEFAULT_SILENT_AFTER_S
    session_max_age_s: int = 8 * 3600
    https_only: bool = False
    #: Wrong passwords per operator name, and per client address (:mod:`common.logins`).
    name_guard: SignInGuard = field(default_factory=SignInGuard)
    address_guard: SignInGuard = field(default_factory=lambda: SignInGuard(ADDRESS_POLICY))
    #: Vessels on one page of the fleet view.
    fleet_page_size: int = FLEET_PAGE_SIZE


def _when(value: float | None, now: float) -> str:
    if value is None:
        return "never"
    ago = abs(now - value)
    if ago < 120:
        rel = f"{ago:.0f} s"
    elif ago < 7200:
        rel = f"{ago / 60:.0f} min"
    elif ago < 172800:
        rel = f"{ago / 3600:.0f} h"
    else:
        rel = f"{ago / 86400:.0f} days"
    rel = f"in {rel}" if value > now + 1 else f"{rel} ago"
    stamp = datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{stamp} ({rel})"


def _bytes(value: int) -> str:
    if value < 10_000:
        return f"{value:,} B"
    if value < 10_000_000:
        return f"{value / 1000:,.1f} kB"
    return f"{value / 1_000_000:,.1f} MB"


def create_app(
    store: RelayStore, settings: DashboardSettings, clock: Callable[[], float] = time.time
) -> Starlette:
    """The dashboard over an open store (the caller closes the store); its pages use only
    :class:`DashboardQueries`."""
    queries: DashboardQueries = OperatorQueries(store, settings.silent_after_s)
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True)
    templates = Jinja2Templates(env=env)
    templates.env.filters["bytes"] = _bytes
    operators = settings.operators
    book = operators if isinstance(operators, PasswordBook) else PasswordBook(operators)
    logins = Logins(book, settings.name_guard, settings.address_guard)

    def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        now = clock()
        context.update(
            operator=request.session.get("operator"),
            csrf=csrf_token(request.session),
            flash=request.session.pop("flash", None),
            when=lambda value: _when(value, now),
            now=now,
        )
        response: Response = templates.TemplateResponse(request, name, context, status_code=status)
        return response

    def refused_page(error: RequestRefused) -> Response:
        """A refusal that needs no session (BodyLimit answers before the session is read)."""
        html = env.get_template("refused.html").render(sentence=error.sentence)
        return HTMLResponse(html, status_code=error.status)

    def refuse(scope: Scope, error: RequestRefused) -> ASGIApp:
        log.warning("dashboard: request refused: %s", error.code)
        return refused_page(error)

    async def on_refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestRefused)
        log.warning("dashboard: request refused: %s", exc.code)
        return refused_page(exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        sentence = {
            404: "This page does not exist.",
            405: "This page cannot be used that way; go back and use its buttons.",
        }.get(exc.status_code, "This request cannot be answered.")
        return refused_page(RequestRefused(sentence, status=exc.status_code, code="bad-route"))

    def forged() -> Response:
        return refused_page(_expired())

    def login_required(handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            if request.session.get("operator") not in book:
                return RedirectResponse("/login", status_code=303)
            return await handler(request)

        return guarded

    async def login_page(request: Request) -> Response:
        return render(request, "login.html", error=None)

    async def login(request: Request) -> Response:
        form = await read_form(request)
        if not csrf_ok(request.session, form.get("csrf")):
            return render(
                request, "login.html", status=403, error="The form expired; please log in again."
            )
        name, password = form.get("operator", ""), form.get("password", "")
        address = request.client.host if request.client else "unknown"
        try:
            right = await logins.sign_in(name, password, address)
        except SignInThrottled as paused:
            log.warning("dashboard: sign-in paused after wrong passwords")
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
            log.warning("dashboard: failed login")
            return render(request, "login.html", status=401, error="Wrong operator or password.")
        request.session.clear()
        request.session["operator"] = name
        new_session_token(request.session)
        log.info("dashboard: operator logged in")
        return RedirectResponse("/", status_code=303)

    async def logout(request: Request) -> Response:
        form = await read_form(request)
        if request.session.get("operator") is not None and not csrf_ok(
            request.session, form.get("csrf")
        ):
            return forged()
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    async def fleet(request: Request) -> Response:
        after_text = request.query_params.get("after")
        after = None if after_text is None else bounded_int(after_text, "after", 0, _MAX_ID)
        page = await queries.fleet_page(clock(), after, settings.fleet_page_size)
        silent = [row for row in page.rows if row.silent]
        return render(request, "fleet.html", page=page, rows=page.rows, silent=silent)

    async def vessel(request: Request) -> Response:
        try:
            vessel_id = bounded_int(request.path_params["vessel_id"], "vessel", 0, _MAX_ID)
        except MalformedRequest:
            raise HTTPException(404) from None
        record = await queries.vessel(vessel_id)
        if record is None:
            return render(request, "missing.html", status=404, vessel_id=vessel_id)
        now = clock()
        days = await queries.activity(vessel_id, now)
        return render(
            request,
            "vessel.html",
            vessel=record,
            chart=Markup(activity_svg(days)),  # built from numbers and escaped labels
            days=days,
            outcomes=await queries.delivery_outcomes(vessel_id),
            quarantined=await queries.quarantined(vessel_id),
            failing=await queries.failing_deliveries(vessel_id),
            silent=(record.last_heard_at is None)
            or (now - record.last_heard_at > settings.silent_after_s),
        )

    async def deliveries(request: Request) -> Response:
        return render(request, "deliveries.html", failing=await queries.failing_deliveries())

    async def silent(request: Request) -> Response:
        return render(request, "silent.html", silent=await queries.silent_vessels(clock()))

    def action(kind: str) -> Handler:
        async def act(request: Request) -> Response:
            form = await read_form(request)
            if not csrf_ok(request.session, form.get("csrf")):
                return forged()
            vessel_id = bounded_int(request.path_params["vessel_id"], "The vessel", 0, _MAX_ID)
            message_seq = bounded_int(request.path_params["message_seq"], "The message", 0, _MAX_ID)
            try:
                if kind == "retry":
                    await queries.retry_delivery(vessel_id, message_seq, clock())
                    done = "will be tried again now"
                else:
                    await queries.give_up_delivery(vessel_id, message_seq, clock())
                    done = "was given up; the vessel is told"
                request.session["flash"] = f"Vessel {vessel_id} message {message_seq} {done}."
                log.info("dashboard: %s vessel %d message %d", kind, vessel_id, message_seq)
            except DeliveryNotFound as exc:
                request.session["flash"] = str(exc)
            return RedirectResponse(_back(request, "/deliveries"), status_code=303)

        return act

    routes = [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", login_required(fleet)),
        Route("/vessels/{vessel_id}", login_required(vessel)),
        Route("/deliveries", login_required(deliveries)),
        Route("/silent", login_required(silent)),
        Route(
            "/deliveries/{vessel_id}/{message_seq}/retry",
            login_required(action("retry")),
            methods=["POST"],
        ),
        Route(
            "/deliveries/{vessel_id}/{message_seq}/give-up",
            login_required(action("give-up")),
            methods=["POST"],
        ),
    ]
    middleware = [
        Middleware(BodyLimit, limit_bytes=BODY_BYTES, refuse=refuse),
        Middleware(
            SessionMiddleware,
            secret_key=settings.secret_key,
            session_cookie="vr_operator",
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


def _expired() -> RequestRefused:
    return RequestRefused(
        "The form expired; reload the page and try again.", status=403, code="csrf"
    )


def _back(request: Request, fallback: str) -> str:
    """Where to go after an action: the page it was taken on (a path of ours), else
    ``fallback``. Never another site: only the Referer's path is kept."""
    try:
        path = urlsplit(request.headers.get("referer", "")).path
    except ValueError:  # not a URL at all
        path = ""
    return path if path.startswith("/") and not path.startswith("//") else fallback
