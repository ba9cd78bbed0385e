"""Union API: the relay's authenticated HTTP API through which unions fetch and answer cases.

The relay never holds a union's private keys and never opens a report. A union is
registered at the relay with its id and its Ed25519 public key (``[[union_api.unions]]``
in the relay's config); every request is signed as :mod:`protocol.union_requests` says
(``X-Union``, ``X-Time``, ``X-Nonce``, ``X-Signature``), so a request proves the union's
key, binds method, path, query and body, and cannot be replayed (a signature is accepted
once; older than the skew window, refused). A union sees only reports sealed to it and may
only answer its own cases.

Each request passes three gates in this order, and costs little until it passes them:
its size (:class:`common.http.BodyLimit`: a body over the route's limit is refused before
it is read; a note's limit is the largest sealed note), its signature (before any JSON is
parsed), then its JSON (:func:`common.http.parse_json`: bounded depth, numbers and text).
Every refusal is JSON ``{"error": "<sentence>", "code": "<reason>"}`` with a 4xx status;
only a store that fails answers 503.

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
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Scope

from common.http import (
    BodyLimit,
    MalformedRequest,
    RequestRefused,
    bounded_int,
    parse_json,
)
from common.serving import AsgiServer
from protocol.cases import case_number
from protocol.envelopes import CaseStatus
from protocol.errors import SignatureInvalid
from protocol.signing import SIGNATURE_BYTES, VerifyKey
from protocol.slots import (
    DOWNLINK_NOTE_BYTES,
    SHORT_NOTE_BYTES,
    silence_alerts,
    slot_header,
)
from protocol.union_requests import (
    MAX_NONCE_CHARS,
    MAX_NOTE_REQUEST_BYTES,
    MAX_SEALED_NOTE_BYTES,
    MAX_SKEW_S,
    request_to_sign,
)
from shore.config import UnionApiSection
from shore.store.errors import StoreError
from shore.store.registry import VesselRecord

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_SKEW_S",
    "UnionAccount",
    "make_union_api",
    "queue_case_note",
    "request_to_sign",
    "serve_union_api",
    "silence_alert_source",
    "union_accounts",
]

logger = logging.getLogger(__name__)


class UnionApiStore(Protocol):
    """What the union API needs of the store (``shore.store.RelayStore`` has it)."""

    async def union_reports(self, union: int) -> Sequence[tuple[int, int, bytes, float]]:
        """(vessel, message_seq, sealed, accepted_at) of every report sealed to ``union``."""

    async def queue_slot_note(
        self, vessel_id: int, report_seq: int, sealed_note: bytes, now: float
    ) -> int | None:
        """Keep a case note for the reporter's next downlink slot (None: no slot)."""

    async def queue_case_update(
        self,
        vessel_id: int,
        report_seq: int,
        status: CaseStatus,
        sealed_note: bytes | None,
        now: float,
    ) -> None:
        """Queue a case's new status down to the vessel, on its own."""

    async def list_vessels(self) -> Sequence[VesselRecord]:
        """Every registered vessel (its unions, when it was last heard)."""


#: Largest request body: a case note with the largest sealed note (``/union/v1/cases/...``).
MAX_BODY_BYTES = MAX_NOTE_REQUEST_BYTES
#: Largest body of any other route (they take none; a few bytes of slack for clients that
#: send ``{}``).
OTHER_BODY_BYTES = 1024
#: Union ids and request times the headers may name.
_MAX_UNION_ID = 2**31 - 1
_MAX_TIME_S = 2**40

Clock = Callable[[], float]
#: Alerts for a union: ``alerts(union, now) -> [{"kind": ..., ...}]``.
AlertSource = Callable[[int, float], Awaitable[Sequence[Mapping[str, object]]]]


@dataclass(frozen=True, slots=True)
class UnionAccount:
    """A union registered at the relay: its id and its Ed25519 public key."""

    union_id: int
    verify_key: VerifyKey
    name: str = ""


class _Refused(RequestRefused):
    """A refusal of the union API with its own status (401, 404)."""

    def __init__(self, status: int, sentence: str, code: str = "refused") -> None:
        super().__init__(sentence, status=status, code=code)


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


def _json_refusal(error: RequestRefused) -> JSONResponse:
    return JSONResponse({"error": error.sentence, "code": error.code}, status_code=error.status)


def _refuse(scope: Scope, error: RequestRefused) -> ASGIApp:
    """How :class:`BodyLimit` answers for the union API: JSON like every other refusal."""
    logger.warning(
        "union API refused %s %s: %s", scope.get("method"), scope.get("path"), error.code
    )
    return _json_refusal(error)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    sentence = {
        404: "no such route in the union API; see /union/v1/reports, /union/v1/alerts "
        "and /union/v1/cases/{vessel}/{seq}/notes",
        405: f"{request.method} is not allowed on {request.url.path}",
    }.get(exc.status_code, str(exc.detail))
    return JSONResponse({"error": sentence, "code": "bad-route"}, status_code=exc.status_code)


def make_union_api(
    store: UnionApiStore,
    unions: Sequence[UnionAccount],
    *,
    clock: Clock = time.time,
    alerts: AlertSource | None = None,
) -> Starlette:
    """The Starlette app of the union API (mount it, or serve it with :func:`serve_union_api`).

    Its body limits are inside it: whoever serves it gets them."""
    accounts = {account.union_id: account for account in unions}
    seen = _SeenSignatures()

    def signer(request: Request) -> tuple[UnionAccount, int, bytes, str]:
        headers = request.headers
        if not all(name in headers for name in ("x-union", "x-time", "x-signature")):
            raise _Refused(
                401,
                "sign the request: X-Union, X-Time and X-Signature headers are required",
                "unsigned",
            )
        try:
            union_id = bounded_int(headers["x-union"], "X-Union", 0, _MAX_UNION_ID)
            at_s = bounded_int(headers["x-time"], "X-Time", 0, _MAX_TIME_S)
            signature = bytes.fromhex(headers["x-signature"])
        except MalformedRequest as exc:
            raise _Refused(401, exc.sentence, "unsigned") from exc
        except ValueError as exc:
            raise _Refused(401, "X-Signature must be hex digits", "unsigned") from exc
        if len(signature) != SIGNATURE_BYTES:
            raise _Refused(401, f"X-Signature must be {SIGNATURE_BYTES * 2} hex digits", "unsigned")
        nonce = headers.get("x-nonce", "")
        if nonce and (len(nonce) > MAX_NONCE_CHARS or not nonce.isascii() or not nonce.isalnum()):
            raise _Refused(
                401, f"X-Nonce is at most {MAX_NONCE_CHARS} letters and digits", "unsigned"
            )
        account = accounts.get(union_id)
        if account is None:
            raise _Refused(401, f"union {union_id} is not registered at this relay", "unknown")
        return account, at_s, signature, nonce

    async def authenticate(request: Request) -> tuple[UnionAccount, bytes]:
        account, at_s, signature, nonce = signer(request)  # headers first: no body needed
        now = clock()
        if abs(now - at_s) > MAX_SKEW_S:
            raise _Refused(
                401,
                f"X-Time is {int(at_s - now)} s from the relay's clock; set the clock right",
                "clock",
            )
        body = await request.body()  # already bounded by BodyLimit
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        try:
            account.verify_key.verify(
                request_to_sign(request.method, target, at_s, body, nonce),
                signature,
                what=f"union {account.union_id}'s request",
            )
        except SignatureInvalid as exc:
            raise _Refused(401, str(exc), "forged") from exc
        if not seen.add(signature, now):
            raise _Refused(401, "this signed request was already used; sign a new one", "replay")
        return account, body

    def endpoint(
        handler: Callable[[Request, UnionAccount, bytes], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                account, body = await authenticate(request)
                return await handler(request, account, body)
            except RequestRefused as refused:
                logger.warning(
                    "union API refused %s %s: %s", request.method, request.url.path, refused.code
                )
                return _json_refusal(refused)
            except StoreError as exc:
                logger.error("union API: store failed: %s", exc)
                return JSONResponse(
                    {"error": "the relay's store is unavailable; try again later", "code": "store"},
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
        vessel = bounded_int(request.path_params["vessel"], "The vessel in the path", 0, 2**31)
        seq = bounded_int(request.path_params["seq"], "The report in the path", 0, 2**62)
        status, sealed_note = _note(parse_json(body))
        owned = {(v, s) for v, s, _, _ in await store.union_reports(account.union_id)}
        if (vessel, seq) not in owned:
            raise _Refused(
                404,
                f"case {case_number(vessel, seq)} is not one of union {account.union_id}'s",
                "not-yours",
            )
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
            Route("/union/v1/cases/{vessel}/{seq}/notes", endpoint(notes), methods=["POST"]),
            Route("/union/v1/alerts", endpoint(alert_list), methods=["GET"]),
        ],
        middleware=[
            Middleware(
                BodyLimit,
                limit_bytes=OTHER_BODY_BYTES,
                routes={"/union/v1/cases/": MAX_BODY_BYTES},
                refuse=_refuse,
            )
        ],
        exception_handlers={HTTPException: _http_error},
    )


_NOTE_SHAPE = 'a note is {"status": 1-6, "sealed_note": "<base64>"}'


def _note(data: object) -> tuple[CaseStatus, bytes]:
    """A note request's stage and sealed note, or :class:`MalformedRequest` saying why."""
    if not isinstance(data, dict):
        raise MalformedRequest(f"{_NOTE_SHAPE}, not a JSON {type(data).__name__}")
    if "status" not in data or "sealed_note" not in data:
        missing = sorted({"status", "sealed_note"} - set(data))
        raise MalformedRequest(f"{_NOTE_SHAPE}; missing: {', '.join(missing)}")
    stages = [int(stage) for stage in CaseStatus]
    value = bounded_int(data["status"], "status", min(stages), max(stages))
    if value not in stages:
        raise MalformedRequest(f"status {value} is not a case stage; {_NOTE_SHAPE}")
    encoded = data["sealed_note"]
    if not isinstance(encoded, str):
        raise MalformedRequest(f"sealed_note must be base64 text; {_NOTE_SHAPE}")
    try:
        sealed = base64.b64decode(encoded.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise MalformedRequest(f"sealed_note is not valid base64; {_NOTE_SHAPE}") from None
    if len(sealed) > MAX_SEALED_NOTE_BYTES:
        raise MalformedRequest(
            f"sealed_note is {len(sealed)} bytes, over the largest sealed note "
            f"({MAX_SEALED_NOTE_BYTES})"
        )
    return CaseStatus(value), sealed


async def queue_case_note(
    store: UnionApiStore,
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


def silence_alert_source(store: UnionApiStore, vessel_silent_after_s: float) -> AlertSource:
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


async def serve_union_api(app: Starlette, host: str, port: int, stopping: asyncio.Event) -> None:
    """Serve the union API until ``stopping`` is set, then finish open requests and return.

    A port in use is an :class:`OSError` naming the union API (change ``[union_api] port``).
    """
    await AsgiServer(app, host, port, name="union API").serve_until(stopping)
