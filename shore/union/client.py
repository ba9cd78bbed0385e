"""Relay client: the union's signed requests to the relay's union API (see shore.union_api)."""

from __future__ import annotations

import base64
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


@dataclass(frozen=True, slots=True)
class SealedReport:
    """A report as the relay holds it: sealed to this union."""

    vessel: int
    message_seq: int
    sealed: bytes
    accepted_at: float


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
            raise RelayUnreachable(
                f"the relay refused {method} {path} ({response.status_code}): {detail}"
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

    def alerts(self) -> list[dict[str, object]]:
        """ "Crew member silent" and "vessel silent" alerts for this union's vessels."""
        data = self._request("GET", "/union/v1/alerts")
        if not isinstance(data, dict) or not isinstance(data.get("alerts"), list):
            raise RelayUnreachable("the relay's answer to /union/v1/alerts is malformed")
        return [dict(item) for item in data["alerts"] if isinstance(item, dict)]
