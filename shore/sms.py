"""SMS: a family's text message through an HTTP provider whose API is shaped like Twilio's.

Three parts, one idea (SMS over a provider's HTTP API):

- **Segments** (pure): :func:`plan_sms` says how a text travels: GSM-7 when every character
  is in the GSM 03.38 alphabet (160 septets in one SMS, 153 per part of a longer one; the
  extension characters ``^{}\\[~]|€`` and form feed take two), otherwise UCS-2 (70 UTF-16
  code units, 67 per part). Parts break between grapheme clusters, so a Burmese syllable
  with its vowel signs and a surrogate pair always stay whole.
- **The adapter**: :class:`SmsProvider` sends ``POST {base}/2010-04-01/Accounts/{sid}/
  Messages.json`` (form-encoded ``To``, ``From``, ``Body``; HTTP basic auth) with httpx and
  classifies the reply: ``201`` with a JSON ``sid`` and ``status``; an error JSON ``{"code",
  "message", "status"}``; ``429`` with ``Retry-After``. The provider concatenates the
  segments of one request; texts over ``max_body_units`` go in several requests that
  break between segments.
- **The webhook signature** that the fake provider (:mod:`shore.fake_sms`) makes and the
  relay's inbound webhook (:mod:`shore.replies`) checks (``X-Twilio-Signature``: HMAC-SHA1
  over the URL and the sorted form fields, base64). Both serve HTTP with Starlette and
  uvicorn.

Logs name sizes, segment counts and provider codes; never a number or a text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import httpx
import regex

from protocol.envelopes import FailureReason
from shore.retry import (
    AttemptResult,
    Outcome,
    classify_sms_reply,
    connection_failure,
    parse_retry_after,
)

log = logging.getLogger(__name__)

# --- segments ---------------------------------------------------------------------------

#: The GSM 03.38 default alphabet (one septet each); 0x1B (escape) is not a character.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: The GSM 03.38 extension table: escape plus one septet, so two septets each.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

Encoding = Literal["GSM-7", "UCS-2"]

#: (units in a single SMS, units per part of a concatenated SMS) for each encoding.
SEGMENT_UNITS: Mapping[Encoding, tuple[int, int]] = {"GSM-7": (160, 153), "UCS-2": (70, 67)}

_GRAPHEME = regex.compile(r"\X")


def is_gsm7(text: str) -> bool:
    """Whether every character of ``text`` is in the GSM 03.38 alphabet or its extension."""
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def text_units(text: str, encoding: Encoding) -> int:
    """Septets (GSM-7) or UTF-16 code units (UCS-2) that ``text`` takes."""
    if encoding == "GSM-7":
        return sum(2 if ch in GSM7_EXTENSION else 1 for ch in text)
    return len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True, slots=True)
class SmsPlan:
    """How a text travels as SMS: its encoding, total units and the parts the handset joins."""

    encoding: Encoding
    units: int
    segments: tuple[str, ...]

    @property
    def segment_count(self) -> int:
        """How many SMS the text costs."""
        return len(self.segments)


def plan_sms(text: str) -> SmsPlan:
    """Split ``text`` into SMS segments (see the module docstring for the arithmetic).

    ``"".join(plan.segments) == text`` always holds; an empty text is one empty segment.
    """
    encoding: Encoding = "GSM-7" if is_gsm7(text) else "UCS-2"
    single, per_part = SEGMENT_UNITS[encoding]
    units = text_units(text, encoding)
    if units <= single:
        return SmsPlan(encoding, units, (text,))
    return SmsPlan(encoding, units, tuple(_pack(text, encoding, per_part)))


def _pack(text: str, encoding: Encoding, limit: int) -> list[str]:
    """Greedily pack whole grapheme clusters into parts of at most ``limit`` units."""
    parts: list[str] = []
    current: list[str] = []
    used = 0
    for cluster in _GRAPHEME.findall(text):
        pieces = [cluster]
        cost = text_units(cluster, encoding)
        if cost > limit:
            # A pathological cluster (dozens of combining marks) longer than a whole part:
            # break it between code points, which never splits a surrogate pair.
            pieces = list(cluster)
        for piece in pieces:
            cost = text_units(piece, encoding)
            if used + cost > limit:
                parts.append("".join(current))
                current, used = [], 0
            current.append(piece)
            used += cost
    if current:
        parts.append("".join(current))
    return parts


def split_for_requests(plan: SmsPlan, max_body_units: int) -> list[str]:
    """Group a plan's segments into request bodies of at most ``max_body_units`` units.

    Bodies break only between segments, so the provider's own segmentation of each body
    matches ours. A text that fits goes in one request.
    """
    bodies: list[str] = []
    current: list[str] = []
    used = 0
    for segment in plan.segments:
        cost = text_units(segment, "UCS-2")  # providers count body length in UTF-16 units
        if current and used + cost > max_body_units:
            bodies.append("".join(current))
            current, used = [], 0
        current.append(segment)
        used += cost
    bodies.append("".join(current))
    return bodies


# --- phone numbers -----------------------------------------------------------------------

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def is_e164(number: str) -> bool:
    """Whether ``number`` looks like an E.164 phone number (``+`` and 7 to 15 digits)."""
    return _E164.fullmatch(number) is not None


# --- the provider adapter ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmsConfig:
    """How to reach the SMS provider (Twilio-shaped REST API)."""

    account_sid: str
    auth_token: str = field(repr=False)
    from_number: str
    base_url: str = "https://api.twilio.com"
    timeout_s: float = 30.0
    #: The longest ``Body`` the provider takes in one request (Twilio: 1,600 characters).
    max_body_units: int = 1600
    #: Where the provider should post delivery status updates, if anywhere.
    status_callback: str | None = None

    def __post_init__(self) -> None:
        if not self.account_sid or "/" in self.account_sid:
            raise ValueError("account_sid must be a non-empty id without '/'")
        if self.max_body_units < SEGMENT_UNITS["GSM-7"][0]:
            raise ValueError("max_body_units must hold at least one whole SMS")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")

    @property
    def messages_path(self) -> str:
        """The path of the Messages resource for this account."""
        return f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"


@dataclass(frozen=True, slots=True)
class SmsStatistics:
    """Counters for the status page."""

    requests: int
    accepted: int
    segments: int
    rejected: int
    transient_failures: int


class SmsProvider:
    """Sends texts through the provider's Messages API; one pooled httpx client.

    Use as ``async with SmsProvider(config) as sms: result = await sms.send(to, text)``.
    ``transport`` lets tests plug in ``httpx.MockTransport``.
    """

    def __init__(
        self, config: SmsConfig, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.config = config
        self._client = httpx.AsyncClient(
            base_url=config.base_url,
            auth=httpx.BasicAuth(config.account_sid, config.auth_token),
            timeout=config.timeout_s,
            transport=transport,
            headers={"Accept": "application/json"},
        )
        self._requests = 0
        self._accepted = 0
        self._segments = 0
        self._rejected = 0
        self._transient = 0

    async def __aenter__(self) -> SmsProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._client.aclose()

    def statistics(self) -> SmsStatistics:
        """Counters since start."""
        return SmsStatistics(
            self._requests, self._accepted, self._segments, self._rejected, self._transient
        )

    async def send(self, to: str, text: str) -> AttemptResult:
        """Send ``text`` to the phone number ``to``; never raises for the provider's answers.

        A number that is not E.164 fails permanently without a request. A text longer than
        one request allows goes in several; the result is that of the first request that
        did not succeed, or delivered with the first request's sid.
        """
        if not is_e164(to):
            self._rejected += 1
            return AttemptResult.permanent(FailureReason.ADDRESS_INVALID, "not an E.164 number")
        plan = plan_sms(text)
        bodies = split_for_requests(plan, self.config.max_body_units)
        first_sid: str | None = None
        segments = 0
        for body in bodies:
            result, count = await self._send_one(to, body)
            if result.outcome is not Outcome.DELIVERED:
                return result
            first_sid = first_sid or result.provider_id
            segments += count
        detail = f"{plan.encoding} {segments or plan.segment_count} segments"
        log.info("sms accepted: %s in %d request(s)", detail, len(bodies))
        return AttemptResult.delivered(detail, provider_id=first_sid)

    async def _send_one(self, to: str, body: str) -> tuple[AttemptResult, int]:
        form = {"To": to, "From": self.config.from_number, "Body": body}
        if self.config.status_callback:
            form["StatusCallback"] = self.config.status_callback
        self._requests += 1
        try:
            response = await self._client.post(self.config.messages_path, data=form)
        except httpx.ConnectTimeout:
            self._transient += 1
            log.warning("sms provider unreachable: %s", "ConnectTimeout")
            return AttemptResult.transient(FailureReason.PROVIDER_ERROR, "sms connection"), 0
        except httpx.TimeoutException:
            self._transient += 1
            log.warning("sms provider timed out (the text may still have been sent)")
            # The request may have reached the provider: the next attempt counts as a repeat.
            return connection_failure("sms timeout", maybe_sent=True), 0
        except httpx.TransportError as exc:
            self._transient += 1
            log.warning("sms provider unreachable: %s", type(exc).__name__)
            return AttemptResult.transient(FailureReason.PROVIDER_ERROR, "sms connection"), 0
        payload = _json_object(response.content)
        if response.is_success:
            self._accepted += 1
            sid = payload.get("sid")
            count = _int_or_none(payload.get("num_segments")) or 0
            self._segments += count
            result = classify_sms_reply(response.status_code)
            return (
                AttemptResult.delivered(result.detail, str(sid) if sid else None),
                count,
            )
        code = _int_or_none(payload.get("code"))
        retry_after = (
            parse_retry_after(response.headers.get("Retry-After"))
            if response.status_code in (429, 503)
            else None
        )
        result = classify_sms_reply(response.status_code, code, retry_after)
        if result.outcome is Outcome.TRANSIENT:
            self._transient += 1
        else:
            self._rejected += 1
        log.warning("sms provider refused: %s", result.detail)
        return result, 0


def _json_object(content: bytes) -> dict[str, object]:
    try:
        value = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


# --- webhook signatures ------------------------------------------------------------------


def webhook_signature(url: str, params: Mapping[str, str], auth_token: str) -> str:
    """The provider's ``X-Twilio-Signature`` for a form POST to ``url``.

    HMAC-SHA1, keyed with the auth token, over the full URL followed by each form field's
    name and value, sorted by name, without separators; base64-encoded.
    """
    data = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def check_webhook_signature(
    url: str, params: Mapping[str, str], auth_token: str, signature: str | None
) -> bool:
    """Whether ``signature`` is the provider's signature of this request (constant time)."""
    if not signature:
        return False
    expected = webhook_signature(url, params, auth_token)
    return hmac.compare_digest(expected.encode(), signature.encode())
