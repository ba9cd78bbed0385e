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

    GET  /union/v1/reports                      reports sealed to this union (slots, old)
    POST /union/v1/cases/{vessel}/{seq}/notes   {"status": 2, "sealed_note": "<base64>"}
    GET  /union/v1/lane?after=<id>&limit=<n>    uplink grievance lane blocks, by id
    POST /union/v1/lane/notes                   {"vessel": V, "blocks": ["<base64>", ...]}
    GET  /union/v1/lane/shape                   the downlink lane's block size and period
    POST /union/v1/escalations                  {"to": 8, "case": "42-7", "package": "<b64>"}:
                                                a case passed to the union's second
                                                organisation (sealed to it; kept once)
    GET  /union/v1/escalations?after=<id>       escalations handed to this union, by id
    GET  /union/v1/alerts                       "lane silent" / "vessel silent" (and
                                                "crew member silent" for slot vessels)
    POST /union/v1/statistics                   the union's signed grievance statistics:
                                                logged in the transparency log (once);
                                                answers the leaf index and leaf
    GET  /union/v1/statistics/{index}           the receipt: leaf, latest signed checkpoint
                                                and inclusion proof (202 until a
                                                checkpoint covers the leaf)

**Statistics** (:mod:`protocol.statistics_log`). The relay logs only an aggregate signed by
the union's own registered key, naming that union, whose every published count passes the
suppression threshold it states (:func:`protocol.grievance_stats.verify_statistics`); it
keeps the SHA-256 of the document, not the numbers. A receipt lets anyone holding the
document and the shore's public key check offline that it is the one the relay logged
(``vessel-relay report verify-stats --receipt``).

A note is a :class:`protocol.cases.CaseNote` the union sealed to the reporter's reply key;
the relay cannot read it. If the report came in a daily slot, the note waits for the
reporter's next downlink slot (``shore.downlink``: one fixed-size item per crew member per
slot period, note or cover); otherwise (or if it is too long for a slot) it goes down on its
own as a ``CaseStatusUpdate`` with the stage in the clear.

**The grievance lane** (:mod:`protocol.lane`). The relay cannot tell which union an uplink
lane block is for, or whether it is for anyone: ``GET /union/v1/lane`` hands a union every
block of the vessels it serves (the registry's vessel <-> union mapping; every vessel if no
vessel names the union), ``{"blocks": [{"id", "vessel", "period", "index", "block",
"received_at"}], "next": id}``, and the union trial-decrypts them. Ids only grow, and a
block is never committed after a larger id was read, so ``after=next`` misses nothing. A
union answers with ``POST /union/v1/lane/notes``: the downlink blocks of one case note, each
exactly the downlink block size (``GET /union/v1/lane/shape``), queued on the vessel's
downlink lane in order, all or none (``shore.downlink`` sends them one period's blocks at a
time, cover when nothing waits). The same block posted again is queued once. A union may
have at most ``lane_queue_blocks`` blocks waiting per vessel: more is answered 429 with a
sentence, and nothing of that request is queued.
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
from protocol.cases import case_number, parse_case_number
from protocol.compliance import SignedTreeHead
from protocol.envelopes import CaseStatus
from protocol.errors import ProtocolError, SignatureInvalid
from protocol.grievance_stats import StatisticsInvalid, statistics_digest, verify_statistics
from protocol.lane import MAX_NOTE_BYTES, LaneShape, fragments_needed
from protocol.signing import SIGNATURE_BYTES, VerifyKey
from protocol.slots import (
    DOWNLINK_NOTE_BYTES,
    SHORT_NOTE_BYTES,
    silence_alerts,
    slot_header,
)
from protocol.statistics_log import StatisticsReceipt
from protocol.union_requests import (
    DEFAULT_LANE_QUEUE_BLOCKS,
    MAX_LANE_FETCH,
    MAX_NONCE_CHARS,
    MAX_NOTE_REQUEST_BYTES,
    MAX_SEALED_NOTE_BYTES,
    MAX_SKEW_S,
    MAX_STATISTICS_DEPTH,
    MAX_STATISTICS_REQUEST_BYTES,
    lane_notes_request_bytes,
    request_to_sign,
)
from shore.config import UnionApiSection
from shore.store.errors import LaneQueueFull, RegistryError, StoreError
from shore.store.lane import LaneUpBlock
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

    async def lane_blocks(
        self, after: int, limit: int, vessels: Sequence[int] | None
    ) -> Sequence[LaneUpBlock]:
        """Up to ``limit`` uplink lane blocks with ids above ``after`` (of ``vessels``)."""

    async def queue_lane_notes(
        self, vessel_id: int, union: int, blocks: Sequence[bytes], now: float, cap: int
    ) -> int:
        """Queue a union's blocks on the vessel's downlink lane (all or none); how many
        were new. Raises ``LaneQueueFull`` over ``cap``."""

    async def lane_last_received(self) -> dict[int, float]:
        """When each vessel's latest uplink lane block arrived."""

    async def escalate(
        self, from_union: int, to_union: int, case_number: str, package: bytes, now: float
    ) -> None:
        """Keep a union's escalation for its second organisation (once per case)."""

    async def escalations_for(
        self, to_union: int, after: int, limit: int
    ) -> Sequence[tuple[int, int, str, bytes, float]]:
        """Escalations handed to ``to_union`` with ids above ``after``, by id."""

    async def log_statistics(
        self, union: int, document_sha256: bytes, now: float
    ) -> tuple[int, bytes, bool]:
        """Log a union's signed aggregate (once): (leaf index, leaf bytes, whether new)."""

    async def statistics_receipt(
        self, union: int, index: int
    ) -> tuple[bytes, SignedTreeHead, list[bytes]] | None:
        """(leaf, latest signed head, inclusion proof) of ``union``'s statistics leaf
        ``index``, or None until a signed head covers it; ``RegistryError`` if the leaf is
        not that union's statistics."""


#: Largest escalation package (a sealed report with its history), and its request body.
MAX_ESCALATION_PACKAGE_BYTES = 64 * 1024
ESCALATION_BODY_BYTES = MAX_ESCALATION_PACKAGE_BYTES * 4 // 3 + 4096
#: Escalations one ``GET /union/v1/escalations`` answers with.
ESCALATION_PAGE = 100

#: Largest request body: a case note with the largest sealed note (``/union/v1/cases/...``).
MAX_BODY_BYTES = MAX_NOTE_REQUEST_BYTES
#: Largest body of any other route (they take none; a few bytes of slack for clients that
#: send ``{}``).
OTHER_BODY_BYTES = 1024
#: Uplink lane blocks one ``GET /union/v1/lane`` answers with unless ``limit`` says fewer.
DEFAULT_LANE_FETCH = 256
#: "lane silent" when a vessel syncs this long after its latest lane block arrived: the
#: grievance latency target (a day) plus one uplink lane period (6 h), with margin.
DEFAULT_LANE_SILENT_AFTER_S = 36 * 3600.0
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
        404: "no such route in the union API; see /union/v1/reports, /union/v1/alerts, "
        "/union/v1/cases/{vessel}/{seq}/notes, /union/v1/lane, /union/v1/lane/notes, "
        "/union/v1/lane/shape, /union/v1/escalations and /union/v1/statistics",
        405: f"{request.method} is not allowed on {request.url.path}",
    }.get(exc.status_code, str(exc.detail))
    return JSONResponse({"error": sentence, "code": "bad-route"}, status_code=exc.status_code)


def lane_queue_cap(shape: LaneShape, wanted: int = DEFAULT_LANE_QUEUE_BLOCKS) -> int:
    """The blocks a union may have waiting per vessel: ``wanted``, but never fewer than the
    largest case note takes (a note that could never be queued would be lost)."""
    return max(wanted, fragments_needed(MAX_NOTE_BYTES, shape.down_block_bytes))


def make_union_api(
    store: UnionApiStore,
    unions: Sequence[UnionAccount],
    *,
    clock: Clock = time.time,
    alerts: AlertSource | None = None,
    lane: LaneShape | None = None,
    lane_queue_blocks: int = DEFAULT_LANE_QUEUE_BLOCKS,
) -> Starlette:
    """The Starlette app of the union API (mount it, or serve it with :func:`serve_union_api`).

    ``lane`` is the relay's lane shape (its downlink block size and period); a union may
    have ``lane_queue_blocks`` blocks waiting per vessel (at least what the largest note
    takes). Its body limits are inside it: whoever serves it gets them."""
    accounts = {account.union_id: account for account in unions}
    seen = _SeenSignatures()
    shape = lane or LaneShape()
    cap = lane_queue_cap(shape, lane_queue_blocks)
    lane_notes_bytes = lane_notes_request_bytes(shape.down_block_bytes, cap)

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

    async def served(union: int) -> tuple[set[int], bool]:
        """(registered vessels, whether ``union`` is named by any of them)."""
        records = await store.list_vessels()
        registered = {record.vessel_id for record in records}
        mine = {record.vessel_id for record in records if union in record.info.unions}
        return (mine, True) if mine else (registered, False)

    async def lane_blocks(request: Request, account: UnionAccount, body: bytes) -> Response:
        query = request.query_params
        after = bounded_int(query.get("after", "0"), "after", 0, 2**62)
        limit = bounded_int(query.get("limit", str(DEFAULT_LANE_FETCH)), "limit", 1, MAX_LANE_FETCH)
        vessels, named = await served(account.union_id)
        rows = await store.lane_blocks(after, limit, sorted(vessels) if named else None)
        logger.info("union %d fetched %d lane blocks after %d", account.union_id, len(rows), after)
        return JSONResponse(
            {
                "blocks": [
                    {
                        "id": row.block_id,
                        "vessel": row.vessel_id,
                        "period": row.period,
                        "index": row.index,
                        "block": base64.b64encode(row.block).decode("ascii"),
                        "received_at": row.received_at,
                    }
                    for row in rows
                ],
                "next": rows[-1].block_id if rows else after,
            }
        )

    async def lane_notes(request: Request, account: UnionAccount, body: bytes) -> Response:
        vessel, blocks = _lane_note(parse_json(body), shape.down_block_bytes, cap)
        vessels, _ = await served(account.union_id)
        if vessel not in vessels:
            raise _Refused(
                404,
                f"vessel {vessel} is not one of union {account.union_id}'s vessels at this "
                "relay; ask the relay operator to register it for your union",
                "not-yours",
            )
        try:
            new = await store.queue_lane_notes(vessel, account.union_id, blocks, clock(), cap)
        except LaneQueueFull as full:
            raise _Refused(429, str(full), "lane-full") from full
        except RegistryError as exc:
            raise _Refused(404, str(exc), "not-yours") from exc
        logger.info(
            "union %d: %d lane blocks queued for vessel %d's downlink lane (%d new)",
            account.union_id,
            len(blocks),
            vessel,
            new,
        )
        return JSONResponse({"queued": len(blocks), "new": new}, status_code=202)

    async def lane_shape(request: Request, account: UnionAccount, body: bytes) -> Response:
        return JSONResponse(
            {
                "down_block_bytes": shape.down_block_bytes,
                "down_period_s": shape.down_period_s,
                "down_blocks_per_period": shape.down_blocks_per_period,
                "up_block_bytes": shape.block_bytes,
                "max_queued_blocks": cap,
            }
        )

    async def escalate(request: Request, account: UnionAccount, body: bytes) -> Response:
        to_union, number, package = _escalation(parse_json(body))
        if to_union not in accounts or to_union == account.union_id:
            raise _Refused(
                404,
                f"union {to_union} is not another union registered at this relay; ask the "
                "relay operator to register your second organisation",
                "unknown",
            )
        await store.escalate(account.union_id, to_union, number, package, clock())
        logger.info(
            "union %d escalated case %s to union %d (%d sealed bytes)",
            account.union_id,
            number,
            to_union,
            len(package),
        )
        return JSONResponse({"queued": True}, status_code=202)

    async def escalations(request: Request, account: UnionAccount, body: bytes) -> Response:
        after = bounded_int(request.query_params.get("after", "0"), "after", 0, 2**62)
        rows = await store.escalations_for(account.union_id, after, ESCALATION_PAGE)
        logger.info("union %d fetched %d escalations after %d", account.union_id, len(rows), after)
        return JSONResponse(
            {
                "escalations": [
                    {
                        "id": row_id,
                        "from": from_union,
                        "case": number,
                        "package": base64.b64encode(package).decode("ascii"),
                        "received_at": received_at,
                    }
                    for row_id, from_union, number, package, received_at in rows
                ],
                "next": rows[-1][0] if rows else after,
            }
        )

    async def publish_statistics(request: Request, account: UnionAccount, body: bytes) -> Response:
        document = parse_json(body, max_depth=MAX_STATISTICS_DEPTH)
        if not isinstance(document, dict):
            raise _Refused(400, "the body must be a signed grievance statistics file", "malformed")
        try:
            stats = verify_statistics(document, expected_key=account.verify_key.key)
        except StatisticsInvalid as exc:
            raise _Refused(400, f"the statistics do not verify: {exc}", "statistics") from exc
        named = stats.get("union")
        if not isinstance(named, dict) or named.get("id") != account.union_id:
            raise _Refused(
                400, f"the statistics name another union than {account.union_id}", "statistics"
            )
        index, leaf, new = await store.log_statistics(
            account.union_id, statistics_digest(document), clock()
        )
        logger.info(
            "union %d statistics (%d bytes) %s leaf %d",
            account.union_id,
            len(body),
            "logged as" if new else "already logged as",
            index,
        )
        return JSONResponse(
            {"leaf_index": index, "leaf": leaf.hex(), "new": new},
            status_code=201 if new else 200,
        )

    async def statistics_receipt(request: Request, account: UnionAccount, body: bytes) -> Response:
        index = bounded_int(request.path_params["index"], "The leaf index in the path", 0, 2**62)
        try:
            found = await store.statistics_receipt(account.union_id, index)
        except RegistryError as exc:
            raise _Refused(404, str(exc), "not-yours") from exc
        if found is None:
            return JSONResponse(
                {
                    "pending": True,
                    "error": f"no signed checkpoint covers leaf {index} yet; the relay signs "
                    "one a day: ask again after its next one",
                },
                status_code=202,
            )
        leaf, head, proof = found
        return JSONResponse(StatisticsReceipt(index, leaf, head, tuple(proof)).to_obj())

    async def alert_list(request: Request, account: UnionAccount, body: bytes) -> Response:
        found = [] if alerts is None else list(await alerts(account.union_id, clock()))
        return JSONResponse({"alerts": found})

    return Starlette(
        routes=[
            Route("/union/v1/reports", endpoint(reports), methods=["GET"]),
            Route("/union/v1/cases/{vessel}/{seq}/notes", endpoint(notes), methods=["POST"]),
            Route("/union/v1/alerts", endpoint(alert_list), methods=["GET"]),
            Route("/union/v1/lane", endpoint(lane_blocks), methods=["GET"]),
            Route("/union/v1/lane/notes", endpoint(lane_notes), methods=["POST"]),
            Route("/union/v1/lane/shape", endpoint(lane_shape), methods=["GET"]),
            Route("/union/v1/escalations", endpoint(escalate), methods=["POST"]),
            Route("/union/v1/escalations", endpoint(escalations), methods=["GET"]),
            Route("/union/v1/statistics", endpoint(publish_statistics), methods=["POST"]),
            Route("/union/v1/statistics/{index}", endpoint(statistics_receipt), methods=["GET"]),
        ],
        middleware=[
            Middleware(
                BodyLimit,
                limit_bytes=OTHER_BODY_BYTES,
                routes={
                    "/union/v1/cases/": MAX_BODY_BYTES,
                    "/union/v1/lane/notes": lane_notes_bytes,
                    "/union/v1/escalations": ESCALATION_BODY_BYTES,
                    "/union/v1/statistics": MAX_STATISTICS_REQUEST_BYTES,
                },
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


_LANE_NOTE_SHAPE = 'a lane note is {"vessel": V, "blocks": ["<base64>", ...]}'


_ESCALATION_SHAPE = 'an escalation is {"to": 8, "case": "42-7", "package": "<base64>"}'


def _escalation(data: object) -> tuple[int, str, bytes]:
    """An escalation's second organisation, case number and package, or
    :class:`MalformedRequest` saying why."""
    if not isinstance(data, dict):
        raise MalformedRequest(f"{_ESCALATION_SHAPE}, not a JSON {type(data).__name__}")
    missing = sorted({"to", "case", "package"} - set(data))
    if missing:
        raise MalformedRequest(f"{_ESCALATION_SHAPE}; missing: {', '.join(missing)}")
    to_union = bounded_int(data["to"], "to", 1, _MAX_UNION_ID)
    number = data["case"]
    if not isinstance(number, str) or len(number) > 40:
        raise MalformedRequest(f"case must be a case number; {_ESCALATION_SHAPE}")
    try:
        parse_case_number(number)
    except ProtocolError:
        raise MalformedRequest(f"{number!r} is not a case number (vessel-report)") from None
    encoded = data["package"]
    if not isinstance(encoded, str):
        raise MalformedRequest(f"package must be base64 text; {_ESCALATION_SHAPE}")
    try:
        package = base64.b64decode(encoded.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise MalformedRequest("package is not valid base64") from None
    if not 0 < len(package) <= MAX_ESCALATION_PACKAGE_BYTES:
        raise MalformedRequest(
            f"package is {len(package)} bytes; an escalation holds 1 to "
            f"{MAX_ESCALATION_PACKAGE_BYTES} bytes"
        )
    return to_union, number, package


def _lane_note(data: object, block_bytes: int, most: int) -> tuple[int, list[bytes]]:
    """A lane note request's vessel and blocks, or :class:`MalformedRequest` saying why."""
    if not isinstance(data, dict):
        raise MalformedRequest(f"{_LANE_NOTE_SHAPE}, not a JSON {type(data).__name__}")
    missing = sorted({"vessel", "blocks"} - set(data))
    if missing:
        raise MalformedRequest(f"{_LANE_NOTE_SHAPE}; missing: {', '.join(missing)}")
    vessel = bounded_int(data["vessel"], "vessel", 0, 2**31)
    listed = data["blocks"]
    if not isinstance(listed, list) or not listed:
        raise MalformedRequest(f"blocks must be a list of one or more; {_LANE_NOTE_SHAPE}")
    if len(listed) > most:
        raise MalformedRequest(
            f"{len(listed)} blocks are more than a union may have waiting for a vessel ({most})"
        )
    blocks: list[bytes] = []
    for number, encoded in enumerate(listed, 1):
        if not isinstance(encoded, str):
            raise MalformedRequest(f"block {number} must be base64 text; {_LANE_NOTE_SHAPE}")
        try:
            block = base64.b64decode(encoded.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error):
            raise MalformedRequest(f"block {number} is not valid base64") from None
        if len(block) != block_bytes:
            raise MalformedRequest(
                f"block {number} is {len(block)} bytes; this relay's downlink lane blocks are "
                f"{block_bytes} bytes (see /union/v1/lane/shape)"
            )
        blocks.append(block)
    return vessel, blocks


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


def silence_alert_source(
    store: UnionApiStore,
    vessel_silent_after_s: float,
    lane_silent_after_s: float = DEFAULT_LANE_SILENT_AFTER_S,
) -> AlertSource:
    """Alerts from what the relay holds (:func:`protocol.slots.silence_alerts`): each of
    the union's vessels' last sync; for vessels on the grievance lane, when their latest
    lane block arrived ("lane silent" after ``lane_silent_after_s`` of syncs without one);
    for vessels still on daily slots, the last slot (``protocol.slots``) of each crew
    member that ever sent one.

    A vessel that never sent a lane block is not known to be on the lane, and a crew member
    who never sent a slot is not known to the relay (it has no crew list): a vessel that
    holds its lane back from the first day is noticed by the union only from what it knows
    of the vessel itself."""

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
        lanes = {
            vessel: at
            for vessel, at in (await store.lane_last_received()).items()
            if vessel in vessels
        }
        found = silence_alerts(
            vessel_last_sync=vessels,
            last_slot_day=last_day,
            now=now,
            expected_gap_s=dict.fromkeys(vessels, vessel_silent_after_s),
            last_lane_block=lanes,
            lane_gap_s=lane_silent_after_s,
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
