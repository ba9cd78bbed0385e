"""Relay client: the union's signed requests to the relay's union API (see shore.union_api).

An answer that is not what the API promises (a missing key, a number that is not one, bad
base64) is :class:`RelayUnreachable` naming the route, never a ``KeyError`` or a crash.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from protocol.envelopes import CaseStatus
from protocol.union_requests import request_to_sign
from shore.union.keys import UnionIdentity


class RelayUnreachable(Exception):
    """The relay could not be reached or refused the request; the message says why."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        #: the HTTP status and the API's reason code of a refusal (None: no answer)
        self.status = status
        self.code = code


class RouteMissing(RelayUnreachable):
    """The relay has no such route: it is older than this app (upgrade the relay)."""


@dataclass(frozen=True, slots=True)
class SealedReport:
    """A report as the relay holds it: sealed to this union."""

    vessel: int
    message_seq: int
    sealed: bytes
    accepted_at: float


@dataclass(frozen=True, slots=True)
class ReceivedEscalation:
    """A case another union passed to this one (``GET /union/v1/escalations``), sealed."""

    escalation_id: int
    from_union: int
    case_number: str
    package: bytes
    received_at: float


@dataclass(frozen=True, slots=True)
class LaneUpBlock:
    """One uplink grievance lane block as the relay serves it (sealed, nothing in clear)."""

    block_id: int
    vessel: int
    period: int
    index: int
    block: bytes
    received_at: float


@dataclass(frozen=True, slots=True)
class LanePage:
    """One answer of ``GET /union/v1/lane``: blocks by id, and where to go on from."""

    blocks: tuple[LaneUpBlock, ...]
    next: int


@dataclass(frozen=True, slots=True)
class RelayLaneShape:
    """The relay's grievance lane, as ``GET /union/v1/lane/shape`` states it."""

    down_block_bytes: int
    down_period_s: int
    down_blocks_per_period: int
    up_block_bytes: int
    max_queued_blocks: int


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise RelayUnreachable(f"the relay's answer holds {what} that is not base64 text")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise RelayUnreachable(f"the relay's answer holds {what} that is not base64") from exc


def _whole(item: dict[str, object], key: str, route: str) -> int:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RelayUnreachable(f"the relay's answer to {route} has no whole number {key!r}")
    return value


def _seconds(item: dict[str, object], key: str, route: str) -> float:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RelayUnreachable(f"the relay's answer to {route} has no time {key!r}")
    return float(value)


class RelayClient:
    """Signs each request with the union's Ed25519 key (X-Union, X-Time, X-Signature)."""

    def __init__(
        self,
        identity: UnionIdentity,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 30.0,
    ) -> None:
        self.identity = identity
        self.clock = clock
        self._http = httpx.Client(
            base_url=identity.relay_url, transport=transport, timeout=timeout_s
        )

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, body: bytes = b"") -> object:
        at_s = int(self.clock())
        target = urlsplit(str(self._http.base_url.join(path)))
        signed_path = target.path + (f"?{target.query}" if target.query else "")
        nonce = secrets.token_hex(16)
        signature = self.identity.signing_key.sign(
            request_to_sign(method, signed_path, at_s, body, nonce)
        )
        headers = {
            "X-Union": str(self.identity.union_id),
            "X-Time": str(at_s),
            "X-Nonce": nonce,
            "X-Signature": signature.hex(),
            "Content-Type": "application/json",
        }
        try:
            response = self._http.request(method, path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise RelayUnreachable(
                f"cannot reach the relay at {self.identity.relay_url}: {exc}; check the "
                "address in union.toml and the network, then try again"
            ) from exc
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code >= 400:
            detail = data.get("error") if isinstance(data, dict) else None
            code = data.get("code") if isinstance(data, dict) else None
            refusal = RouteMissing if code == "bad-route" else RelayUnreachable
            raise refusal(
                f"the relay refused {method} {path} ({response.status_code}): {detail}",
                status=response.status_code,
                code=code if isinstance(code, str) else None,
            )
        return data

    def reports(self) -> list[SealedReport]:
        """Every report sealed to this union that the relay holds."""
        data = self._request("GET", "/union/v1/reports")
        if not isinstance(data, dict) or not isinstance(data.get("reports"), list):
            raise RelayUnreachable("the relay's answer to /union/v1/reports is malformed")
        return [
            SealedReport(
                int(item["vessel"]),
                int(item["message_seq"]),
                base64.b64decode(item["sealed"]),
                float(item["accepted_at"]),
            )
            for item in data["reports"]
        ]

    def post_note(self, vessel: int, message_seq: int, status: CaseStatus, note: bytes) -> None:
        """Queue a sealed case note down to the reporter's vessel."""
        body = json.dumps(
            {"status": int(status), "sealed_note": base64.b64encode(note).decode("ascii")}
        ).encode()
        self._request("POST", f"/union/v1/cases/{vessel}/{message_seq}/notes", body)

    def lane_blocks(self, after: int, limit: int) -> LanePage:
        """Up to ``limit`` uplink lane blocks of this union's vessels with ids above
        ``after`` (every block, sealed: this union trial-decrypts them)."""
        route = "/union/v1/lane"
        data = self._request("GET", f"{route}?after={int(after)}&limit={int(limit)}")
        if not isinstance(data, dict) or not isinstance(data.get("blocks"), list):
            raise RelayUnreachable(f"the relay's answer to {route} is malformed")
        blocks: list[LaneUpBlock] = []
        for item in data["blocks"]:
            if not isinstance(item, dict):
                raise RelayUnreachable(f"the relay's answer to {route} is malformed")
            blocks.append(
                LaneUpBlock(
                    _whole(item, "id", route),
                    _whole(item, "vessel", route),
                    _whole(item, "period", route),
                    _whole(item, "index", route),
                    _b64(item.get("block"), "a lane block"),
                    _seconds(item, "received_at", route),
                )
            )
        ids = [block.block_id for block in blocks]
        following = _whole(data, "next", route)
        if ids != sorted(set(ids)) or (ids and (ids[0] <= after or following != ids[-1])):
            raise RelayUnreachable(f"the relay's answer to {route} is out of order")
        return LanePage(tuple(blocks), max(following, after))

    def lane_shape(self) -> RelayLaneShape:
        """The relay's downlink lane: block size, period, and the queue cap per vessel."""
        route = "/union/v1/lane/shape"
        data = self._request("GET", route)
        if not isinstance(data, dict):
            raise RelayUnreachable(f"the relay's answer to {route} is malformed")
        return RelayLaneShape(
            _whole(data, "down_block_bytes", route),
            _whole(data, "down_period_s", route),
            _whole(data, "down_blocks_per_period", route),
            _whole(data, "up_block_bytes", route),
            _whole(data, "max_queued_blocks", route),
        )

    def post_lane_notes(self, vessel: int, blocks: list[bytes]) -> None:
        """Queue one case note's downlink blocks on the vessel's downlink lane (all or
        none; the same blocks posted again are queued once)."""
        body = json.dumps(
            {
                "vessel": int(vessel),
                "blocks": [base64.b64encode(block).decode("ascii") for block in blocks],
            }
        ).encode()
        self._request("POST", "/union/v1/lane/notes", body)

    def escalate(self, to_union: int, case: str, package: bytes) -> None:
        """Hand a case's sealed escalation package to the second organisation (kept once)."""
        body = json.dumps(
            {"to": int(to_union), "case": case, "package": base64.b64encode(package).decode()}
        ).encode()
        self._request("POST", "/union/v1/escalations", body)

    def escalations(self, after: int) -> tuple[list[ReceivedEscalation], int]:
        """Escalations other unions handed to this one, with ids above ``after``; and the
        id to go on from."""
        route = "/union/v1/escalations"
        data = self._request("GET", f"{route}?after={int(after)}")
        if not isinstance(data, dict) or not isinstance(data.get("escalations"), list):
            raise RelayUnreachable(f"the relay's answer to {route} is malformed")
        found: list[ReceivedEscalation] = []
        for item in data["escalations"]:
            if not isinstance(item, dict) or not isinstance(item.get("case"), str):
                raise RelayUnreachable(f"the relay's answer to {route} is malformed")
            found.append(
                ReceivedEscalation(
                    _whole(item, "id", route),
                    _whole(item, "from", route),
                    str(item["case"]),
                    _b64(item.get("package"), "an escalation package"),
                    _seconds(item, "received_at", route),
                )
            )
        return found, max(_whole(data, "next", route), after)

    def publish_statistics(self, document: bytes) -> tuple[int, bool]:
        """Post a signed grievance statistics file (its JSON bytes) for the relay to log in
        its transparency log; (leaf index, whether newly logged)."""
        route = "/union/v1/statistics"
        data = self._request("POST", route, document)
        if not isinstance(data, dict) or not isinstance(data.get("new"), bool):
            raise RelayUnreachable(f"the relay's answer to {route} is malformed")
        return _whole(data, "leaf_index", route), bool(data["new"])

    def statistics_receipt(self, index: int) -> dict[str, object] | None:
        """The relay's receipt for statistics leaf ``index`` (checkpoint and inclusion
        proof), or None while no signed checkpoint covers it yet."""
        route = f"/union/v1/statistics/{int(index)}"
        data = self._request("GET", route)
        if not isinstance(data, dict):
            raise RelayUnreachable(f"the relay's answer to {route} is malformed")
        return None if data.get("pending") is True else dict(data)

    def alerts(self) -> list[dict[str, object]]:
        """ "Lane silent", "vessel silent" (and, for vessels still on daily slots, "crew
        member silent") alerts for this union's vessels."""
        data = self._request("GET", "/union/v1/alerts")
        if not isinstance(data, dict) or not isinstance(data.get("alerts"), list):
            raise RelayUnreachable("the relay's answer to /union/v1/alerts is malformed")
        return [dict(item) for item in data["alerts"] if isinstance(item, dict)]
