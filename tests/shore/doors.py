"""The shore's HTTP doors built for tests: union API, SMS webhook, dashboard, union web app.

Each door is the real app over a real (temporary) store, with what a test needs to reach
past its first gate: the union's signing key, an operator's or caseworker's password.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pyotp
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.codebooks import default_codebook
from common.passwords import hash_password
from common.signins import SignInGuard
from protocol.signing import SigningKey
from protocol.union_requests import request_to_sign
from shore.dashboard import DashboardSettings
from shore.dashboard import create_app as create_dashboard
from shore.mail import ReplyRoute
from shore.replies import ContactInfo, SmsWebhook, SmsWebhookConfig
from shore.store import SqliteStore
from shore.union.inbox import UnionInbox
from shore.union.keys import init_union, load_union
from shore.union.totp import SecondFactorBook
from shore.union.web import UnionWebSettings
from shore.union.web import create_app as create_union_web
from shore.union_api import UnionAccount, make_union_api

UNION_KEY = SigningKey.from_seed(bytes(range(7, 39)))
PASSWORD = "tide table 1983"
WEBHOOK_TOKEN = "webhook-token"
WEBHOOK_PATH = "/sms/inbound"


class Meter:
    """ASGI middleware outside everything: counts the body bytes the door pulled from the
    server (so a test can say how much of a request was read)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.pulled: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        index = len(self.pulled)
        self.pulled.append(0)

        async def counted() -> Message:
            message = await receive()
            self.pulled[index] += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


@dataclass
class Door:
    """One HTTP door of the shore and how to talk to it."""

    name: str
    app: ASGIApp
    #: Body limit per path prefix ("" = any other path).
    limits: Mapping[str, int]
    #: Routes anyone can send a body to: (method, path).
    open_routes: list[tuple[str, str]]
    #: For web apps: the login form's name field, the login name, and the guard.
    login_field: str = ""
    login_name: str = ""
    name_guard: SignInGuard | None = None
    extra: dict[str, object] = field(default_factory=dict)
    #: For a door with a second factor: a fresh, unused TOTP code for a login name.
    next_code: Callable[[str], str] | None = None

    def login_form(self, name: str, password: str, csrf: str | None) -> dict[str, str]:
        """The login form's fields (with a fresh code where the door asks for one)."""
        form = {self.login_field: name, "password": password}
        if csrf is not None:
            form["csrf"] = csrf
        if self.next_code is not None:
            form["code"] = self.next_code(name)
        return form

    def limit_for(self, path: str) -> int:
        best = ""
        for prefix in self.limits:
            if path.startswith(prefix) and len(prefix) >= len(best):
                best = prefix
        return self.limits[best]


def signed_headers(method: str, path: str, body: bytes, union: int = 7) -> dict[str, str]:
    """The headers of a union's signed request to the union API."""
    at = int(time.time())
    nonce = secrets.token_hex(16)
    signature = UNION_KEY.sign(request_to_sign(method, path, at, body, nonce))
    return {
        "X-Union": str(union),
        "X-Time": str(at),
        "X-Nonce": nonce,
        "X-Signature": signature.hex(),
        "Content-Type": "application/json",
    }


@asynccontextmanager
async def union_api_door(tmp_path: Path) -> AsyncIterator[Door]:
    from protocol.lane import LaneShape
    from protocol.union_requests import DEFAULT_LANE_QUEUE_BLOCKS, lane_notes_request_bytes
    from shore.union_api import MAX_BODY_BYTES, OTHER_BODY_BYTES

    store = await SqliteStore.open(tmp_path / "relay.db")
    try:
        app = make_union_api(store, [UnionAccount(7, UNION_KEY.verify_key)])
        lane_notes = lane_notes_request_bytes(
            LaneShape().down_block_bytes, DEFAULT_LANE_QUEUE_BLOCKS
        )
        yield Door(
            "union API",
            app,
            {
                "": OTHER_BODY_BYTES,
                "/union/v1/cases/": MAX_BODY_BYTES,
                "/union/v1/lane/notes": lane_notes,
            },
            [
                ("GET", "/union/v1/reports"),
                ("POST", "/union/v1/cases/1/1/notes"),
                ("GET", "/union/v1/alerts"),
                ("GET", "/union/v1/lane"),
                ("POST", "/union/v1/lane/notes"),
                ("GET", "/union/v1/lane/shape"),
            ],
            extra={"store": store},
        )
    finally:
        await store.close()


@asynccontextmanager
async def webhook_door(tmp_path: Path) -> AsyncIterator[Door]:
    from shore.replies import WEBHOOK_BODY_BYTES

    stored: list[tuple[object, ...]] = []

    async def lookup(family: str, relay: str) -> tuple[ReplyRoute, ContactInfo] | None:
        if family == "+959250000001":
            return ReplyRoute(42, 3, 1), ContactInfo(None)
        return None

    async def on_reply(*reply: object) -> None:
        stored.append(reply)

    hook = SmsWebhook(
        SmsWebhookConfig(
            public_url=f"http://testserver{WEBHOOK_PATH}", auth_token=WEBHOOK_TOKEN, port=0
        ),
        lookup,
        on_reply,
    )
    yield Door(
        "SMS webhook",
        hook.app,
        {"": WEBHOOK_BODY_BYTES},
        [("POST", WEBHOOK_PATH), ("POST", "/elsewhere")],
        extra={"hook": hook, "stored": stored},
    )


@asynccontextmanager
async def dashboard_door(
    tmp_path: Path, operators: Mapping[str, str] | None = None, guard: SignInGuard | None = None
) -> AsyncIterator[Door]:
    from shore.dashboard.app import BODY_BYTES

    store = await SqliteStore.open(tmp_path / "relay.db")
    guard = guard or SignInGuard()
    book = operators if operators is not None else {"amara": hash_password(PASSWORD)}
    try:
        app = create_dashboard(store, DashboardSettings(operators=book, name_guard=guard))
        yield Door(
            "dashboard",
            app,
            {"": BODY_BYTES},
            [
                ("POST", "/login"),
                ("POST", "/logout"),
                ("POST", "/deliveries/1/1/retry"),
                ("POST", "/deliveries/1/1/give-up"),
                ("GET", "/"),
            ],
            login_field="operator",
            login_name="amara",
            name_guard=guard,
            extra={"store": store},
        )
    finally:
        await store.close()


@asynccontextmanager
async def union_web_door(
    tmp_path: Path, caseworkers: Mapping[str, str] | None = None, guard: SignInGuard | None = None
) -> AsyncIterator[Door]:
    from shore.union.web import BODY_BYTES, REPLY_BODY_BYTES

    union = init_union(tmp_path / "union", 7, "Fishers' Union", "http://127.0.0.1:9")
    inbox = UnionInbox(load_union(union.directory), default_codebook())
    guard = guard or SignInGuard()
    book = caseworkers if caseworkers is not None else {"thida": hash_password(PASSWORD)}
    # every caseworker enrolled; each code asked for is of the next 30-second step, so a
    # test's sign-ins never reuse a code (a used code is refused)
    secret = pyotp.random_base32(32)
    now = [time.time()]
    second = SecondFactorBook(dict.fromkeys(book, secret), clock=lambda: now[0])

    def next_code(name: str) -> str:
        now[0] += 30
        return pyotp.TOTP(secret).at(now[0])

    try:
        app = create_union_web(
            inbox, UnionWebSettings(book, name_guard=guard, second_factor=second)
        )
        yield Door(
            "union web app",
            app,
            {"": BODY_BYTES, "/cases/": REPLY_BODY_BYTES},
            [
                ("POST", "/login"),
                ("POST", "/logout"),
                ("POST", "/fetch"),
                ("POST", "/cases/1-1/reply"),
                ("POST", "/cases/1-1/status"),
                ("GET", "/"),
            ],
            login_field="caseworker",
            login_name="thida",
            name_guard=guard,
            extra={"inbox": inbox},
            next_code=next_code,
        )
    finally:
        inbox.close()


DOORS = {
    "union API": union_api_door,
    "SMS webhook": webhook_door,
    "dashboard": dashboard_door,
    "union web app": union_web_door,
}


def client_for(app: ASGIApp, address: str = "127.0.0.1") -> httpx.AsyncClient:
    """An HTTP client that calls ``app`` in this process (exceptions are raised, not 500s)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(address, 40000)),
        base_url="http://testserver",
    )


async def form_token(client: httpx.AsyncClient) -> str:
    """The CSRF token of the login page (a session is made for it)."""
    page = await client.get("/login")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None, page.text
    return found[1]


async def log_in(client: httpx.AsyncClient, door: Door, password: str = PASSWORD) -> str:
    """Sign in to a web app; returns the session's new CSRF token."""
    token = await form_token(client)
    answer = await client.post("/login", data=door.login_form(door.login_name, password, token))
    assert answer.status_code == 303, answer.text
    page = await client.get("/")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found[1]
