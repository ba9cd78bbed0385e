"""Union API: the relay's authenticated HTTP API through which unions fetch and answer cases.

The relay never holds a union's private keys and never opens a report. A union is
registered at the relay with its id and its Ed25519 public key (``[[union_api.unions]]``
in the relay's config); every request carries three headers::

    X-Union: 7
    X-Time: 1764000000              # seconds since 1970, within MAX_SKEW_S of the relay's
    X-Nonce: <16 random bytes, hex>  # optional, but a client that may send the same
                                     # request twice in a second must send one
    X-Signature: <hex Ed25519 signature of request_to_sign(...)>

so a request proves the union's key, binds method, path, query and body, and cannot be
replayed (a signature is accepted once; older than the skew window, refused). A union sees
only reports sealed to it and may only answer its own cases.

Routes (JSON)::

    GET  /union/v1/reports                      reports sealed to this union
    POST /union/v1/cases/{vessel}/{seq}/notes   {"status": 2, "sealed_note": "<base64>"}
    GET  /union/v1/alerts                       "crew member silent" / "vessel silent"

A note is a :class:`protocol.cases.CaseNote` the union sealed to the reporter's reply key;
the relay cannot read it. If the report came in a daily slot, the note waits for the
reporter's next downlink slot (``shore.downlink``: one fixed-size item per crew member per
slot period, note or cover); otherwise (or if it is too long for a slot) it goes down on its
own as a ``CaseStatusUpdate`` with the stage in the clear.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from protocol.envelopes import CaseStatus
from protocol.errors import SignatureInvalid
from protocol.signing import VerifyKey
from protocol.slots import (
    DOWNLINK_NOTE_BYTES,
    SHORT_NOTE_BYTES,
    silence_alerts,
    slot_header,
)
from shore.config import UnionApiSection
from shore.store import Store, StoreError

logger = logging.getLogger(__name__)

#: How far a request's X-Time may be from the relay's clock.
MAX_SKEW_S = 300
_DOMAIN = b"vessel-relay union api v1\x00"
#: Largest request body (a sealed note is at most 64 KiB; base64 and JSON add a third).
MAX_BODY_BYTES = 96 * 1024

Clock = Callable[[], float]
#: Alerts for a union: ``alerts(union, now) -> [{"kind": ..., ...}]``.
AlertSource = Callable[[int, float], Awaitable[Sequence[Mapping[str, object]]]]


def request_to_sign(
    method: str, path_and_query: str, at_s: int, body: bytes, nonce: str = ""
) -> bytes:
    """The bytes a union signs for one request (see the module docstring).

    Ed25519 signatures are deterministic: without a nonce, the same request in the same
    second signs the same, and the relay refuses the second as a replay."""
    parts = [
        _DOMAIN,
        method.upper().encode("ascii"),
        path_and_query.encode("utf-8"),
        str(at_s).encode("ascii"),
        hashlib.sha256(body).digest(),
    ]
    if nonce:
        parts.append(nonce.encode("ascii"))
    return b"\x00".join(parts)


@dataclass(frozen=True, slots=True)
class UnionAccount:
    """A union registered at the relay: its id and its Ed25519 public key."""

    union_id: int
    verify_key: VerifyKey
    name: str = ""


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _SeenSignatures:
    """Signatures accepted within the skew window (a replayed request is refused)."""

    def __init__(self, limit: int = 10_000) -> None:
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._limit = limit

    def add(self, signature: bytes, now: float) -> bool:
        while self._seen and (
            len(self._seen) >= self._limit or next(iter(self._seen.values())) < now - 2 * MAX_SKEW_S
        ):
            self._seen.popitem(last=False)
        if signature in self._seen:
            return False
        self._seen[signature] = now
        return True


def make_union_api(
    store: Store,
    unions: Sequence[UnionAccount],
    *,
    clock: Clock = time.time,
    alerts: AlertSource | None = None,
) -> Starlette:
    """The Starlette app of the union API (mount it, or serve it with uvicorn)."""
    accounts = {account.union_id: account for account in unions}
    seen = _SeenSignatures()

    async def authenticate(request: Request, body: bytes) -> UnionAccount:
        try:
            union_id = int(request.headers["x-union"])
            at_s = int(request.headers["x-time"])
            signature = bytes.fromhex(request.headers["x-signature"])
            nonce = request.headers.get("x-nonce", "")
            if nonce and (len(nonce) > 64 or not nonce.isascii() or not nonce.isalnum()):
                raise ValueError("X-Nonce is at most 64 letters and digits")
        except (KeyError, ValueError) as exc:
            raise _Refused(
                401, "sign the request: X-Union, X-Time and X-Signature headers are required"
            ) from exc
        account = accounts.get(union_id)
        if account is None:
            raise _Refused(401, f"union {union_id} is not registered at this relay")
        now = clock()
        if abs(now - at_s) > MAX_SKEW_S:
            raise _Refused(
                401, f"X-Time is {int(at_s - now)} s from the relay's clock; set the clock right"
            )
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        try:
            account.verify_key.verify(
                request_to_sign(request.method, target, at_s, body, nonce),
                signature,
                what=f"union {union_id}'s request",
            )
        except SignatureInvalid as exc:
            raise _Refused(401, str(exc)) from exc
        if not seen.add(signature, now):
            raise _Refused(401, "this signed request was already used; sign a new one")
        return account

    def endpoint(
        handler: Callable[[Request, UnionAccount, bytes], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            body = await request.body()
            try:
                if len(body) > MAX_BODY_BYTES:
                    raise _Refused(413, f"request body over {MAX_BODY_BYTES} bytes")
                account = await authenticate(request, body)
                return await handler(request, account, body)
            except _Refused as refused:
                logger.warning(
                    "union API refused %s %s: %s", request.method, request.url.path, refused.message
                )
                return JSONResponse({"error": refused.message}, status_code=refused.status)
            except StoreError as exc:
                logger.error("union API: store failed: %s", exc)
                return JSONResponse(
                    {"error": "the relay's store is unavailable; try again later"},
                    status_code=503,
                )

        return run

    async def reports(request: Request, account: UnionAccount, body: bytes) -> Response:
        rows = await store.union_reports(account.union_id)
        logger.info("union %d fetched %d reports", account.union_id, len(rows))
        return JSONResponse(
            {
                "reports": [
                    {
                        "vessel": vessel,
                        "message_seq": seq,
                        "sealed": base64.b64encode(sealed).decode("ascii"),
                        "accepted_at": accepted_at,
                    }
                    for vessel, seq, sealed, accepted_at in rows
                ]
            }
        )

    async def notes(request: Request, account: UnionAccount, body: bytes) -> Response:
        try:
            vessel = int(request.path_params["vessel"])
            seq = int(request.path_params["seq"])
            data = _json_object(body)
            status = CaseStatus(int(data["status"]))  # type: ignore[call-overload]
            sealed_note = base64.b64decode(str(data["sealed_note"]), validate=True)
        except (KeyError, ValueError, TypeError, binascii.Error) as exc:
            raise _Refused(
                400, f"a note is {{'status': 1-6, 'sealed_note': base64}} ({exc})"
            ) from exc
        owned = {(v, s) for v, s, _, _ in await store.union_reports(account.union_id)}
        if (vessel, seq) not in owned:
            raise _Refused(404, f"case {vessel}-{seq} is not one of union {account.union_id}'s")
        carried = await queue_case_note(store, vessel, seq, status, sealed_note, clock())
        logger.info(
            "union %d: case %d-%d note of %d sealed bytes queued down (%s)",
            account.union_id,
            vessel,
            seq,
            len(sealed_note),
            "in the reporter's next downlink slot"
            if carried == "slot"
            else f"on its own, stage {status.name.lower()} in the clear: the report came "
            "without a slot or the note does not fit one",
        )
        return JSONResponse({"queued": True, "carried": carried}, status_code=202)

    async def alert_list(request: Request, account: UnionAccount, body: bytes) -> Response:
        found = [] if alerts is None else list(await alerts(account.union_id, clock()))
        return JSONResponse({"alerts": found})

    return Starlette(
        routes=[
            Route("/union/v1/reports", endpoint(reports), methods=["GET"]),
            Route(
                "/union/v1/cases/{vessel:int}/{seq:int}/notes", endpoint(notes), methods=["POST"]
            ),
            Route("/union/v1/alerts", endpoint(alert_list), methods=["GET"]),
        ]
    )


async def queue_case_note(
    store: Store,
    vessel: int,
    report_seq: int,
    status: CaseStatus,
    sealed_note: bytes,
    now: float,
    *,
    slots: bool = True,
) -> str:
    """Queue a union's sealed case note down to the reporter; how it travels: ``"slot"``
    (kept for the reporter's next downlink slot: the report came in a slot and the note fits
    one) or ``"own"`` (a ``CaseStatusUpdate`` of its own, stage in the clear). ``slots=False``
    is the old behaviour, for tests that measure it."""
    fits = slots and len(sealed_note) in (SHORT_NOTE_BYTES, DOWNLINK_NOTE_BYTES)
    if fits and await store.queue_slot_note(vessel, report_seq, sealed_note, now) is not None:
        return "slot"
    await store.queue_case_update(vessel, report_seq, status, sealed_note or None, now)
    return "own"


def silence_alert_source(store: Store, vessel_silent_after_s: float) -> AlertSource:
    """Alerts from what the relay holds: each of the union's vessels' last sync, and the
    last daily slot (``protocol.slots``) of each crew member that ever sent one.

    A crew member who never sent a slot is not known to the relay (it has no crew list), so
    a vessel that drops someone's slots from the first day is noticed by the union only
    from the crew list it keeps itself."""

    async def alerts(union: int, now: float) -> Sequence[Mapping[str, object]]:
        vessels = {
            record.vessel_id: record.last_heard_at
            for record in await store.list_vessels()
            if union in record.info.unions
        }
        last_day: dict[tuple[int, int], int] = {}
        for vessel, _, sealed, _ in await store.union_reports(union):
            header = slot_header(sealed)
            if header is not None and vessel in vessels:
                key = (vessel, header.crew)
                last_day[key] = max(header.day, last_day.get(key, header.day))
        found = silence_alerts(
            vessel_last_sync=vessels,
            last_slot_day=last_day,
            now=now,
            expected_gap_s=dict.fromkeys(vessels, vessel_silent_after_s),
        )
        return [alert.as_json() for alert in found]

    return alerts


def union_accounts(section: UnionApiSection) -> list[UnionAccount]:
    """The unions of ``[[union_api.unions]]`` (keys were checked at config load)."""
    return [
        UnionAccount(union.union_id, VerifyKey(union.public_key), union.name)
        for union in section.unions
    ]


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the relay's supervisor owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_union_api(app: Starlette, host: str, port: int, stopping: asyncio.Event) -> None:
    """Serve the union API until ``stopping`` is set, then finish open requests and return."""
    server = _QuietServer(
        uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                await task  # raises why it could not start (port in use ...)
                raise OSError(
                    f"the union API could not listen on {host}:{port}; free the port or change "
                    "[union_api] port"
                )
            await asyncio.sleep(0.02)
        logger.info("union API listening on %s:%d", host, port)
        await stopping.wait()
    finally:
        server.should_exit = True
        await task
        logger.info("union API stopped")


def _json_object(body: bytes) -> dict[str, object]:
    import json

    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("the body is not a JSON object")
    return data
