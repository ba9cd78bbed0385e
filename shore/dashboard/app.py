"""Operator dashboard: fleet, vessel, failing deliveries and silent vessels; login required.

Server-rendered (Starlette + Jinja2, no script): every page is a plain GET, every action a
POST form with a CSRF token kept in the signed session cookie. Pages::

    GET  /login, POST /login, POST /logout
    GET  /                       fleet: vessel, last heard, link bytes this month, queue,
                                 failures, quarantined; the silent vessels first
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
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from shore.dashboard.auth import verify_password
from shore.dashboard.chart import activity_svg
from shore.store_ops import DEFAULT_SILENT_AFTER_S, DeliveryNotFound, OperatorQueries
from shore.store_sql import SqlStore

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class DashboardSettings:
    """Who may log in, how sessions are signed, and when a vessel counts as silent."""

    operators: dict[str, str]  # name -> stored hash (shore.dashboard.auth)
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    silent_after_s: float = DEFAULT_SILENT_AFTER_S
    session_max_age_s: int = 8 * 3600
    https_only: bool = False


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
    store: SqlStore, settings: DashboardSettings, clock: Callable[[], float] = time.time
) -> Starlette:
    """The dashboard over an open store (the caller closes the store)."""
    queries = OperatorQueries(store, settings.silent_after_s)
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True)
    templates = Jinja2Templates(env=env)
    templates.env.filters["bytes"] = _bytes

    def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        now = clock()
        context.update(
            operator=request.session.get("operator"),
            csrf=request.session.get("csrf", ""),
            flash=request.session.pop("flash", None),
            when=lambda value: _when(value, now),
            now=now,
        )
        response: Response = templates.TemplateResponse(request, name, context, status_code=status)
        return response

    def login_required(handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            if request.session.get("operator") not in settings.operators:
                return RedirectResponse("/login", status_code=303)
            return await handler(request)

        return guarded

    async def csrf_ok(request: Request) -> bool:
        form = await request.form()
        sent = form.get("csrf")
        expected = request.session.get("csrf")
        if not (isinstance(sent, str) and isinstance(expected, str) and expected):
            return False
        return secrets.compare_digest(sent, expected)

    async def login_page(request: Request) -> Response:
        return render(request, "login.html", error=None)

    async def login(request: Request) -> Response:
        form = await request.form()
        name, password = str(form.get("operator", "")), str(form.get("password", ""))
        stored = settings.operators.get(name)
        if stored is None or not verify_password(password, stored):
            log.warning("dashboard: failed login")
            return render(request, "login.html", status=401, error="Wrong operator or password.")
        request.session.clear()
        request.session.update(operator=name, csrf=secrets.token_urlsafe(24))
        log.info("dashboard: operator logged in")
        return RedirectResponse("/", status_code=303)

    async def logout(request: Request) -> Response:
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    async def fleet(request: Request) -> Response:
        rows = await queries.fleet(clock())
        silent = [row for row in rows if row.silent]
        return render(request, "fleet.html", rows=rows, silent=silent)

    async def vessel(request: Request) -> Response:
        vessel_id = int(request.path_params["vessel_id"])
        record = await store.get_vessel(vessel_id)
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
            if not await csrf_ok(request):
                return Response("the form expired; reload the page", status_code=403)
            vessel_id = int(request.path_params["vessel_id"])
            message_seq = int(request.path_params["message_seq"])
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
            back = request.headers.get("referer") or "/deliveries"
            return RedirectResponse(back, status_code=303)

        return act

    routes = [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", login_required(fleet)),
        Route("/vessels/{vessel_id:int}", login_required(vessel)),
        Route("/deliveries", login_required(deliveries)),
        Route("/silent", login_required(silent)),
        Route(
            "/deliveries/{vessel_id:int}/{message_seq:int}/retry",
            login_required(action("retry")),
            methods=["POST"],
        ),
        Route(
            "/deliveries/{vessel_id:int}/{message_seq:int}/give-up",
            login_required(action("give-up")),
            methods=["POST"],
        ),
    ]
    middleware = [
        Middleware(
            SessionMiddleware,
            secret_key=settings.secret_key,
            session_cookie="vr_operator",
            max_age=settings.session_max_age_s,
            same_site="strict",
            https_only=settings.https_only,
        )
    ]
    return Starlette(routes=routes, middleware=middleware)
