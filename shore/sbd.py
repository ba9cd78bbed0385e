"""SBD: the relay's side of Iridium short-burst data, through a RockBLOCK-shaped provider.

**MO (vessel to shore).** The provider POSTs each message a vessel's modem sent to our
webhook, form-encoded as RockBLOCK's web service does: ``imei``, ``momsn``,
``transmit_time``, ``iridium_latitude``, ``iridium_longitude``, ``iridium_cep`` and
``data`` (the message, hex). :class:`MoWebhook` checks the request, maps the IMEI to a
vessel, hands the message to the vessel's reassembly, and gives every whole payload to
``on_payload`` (the ingest: ``Ingestor.handle`` with the
vessel's uplink topic), which verifies the batch's signature over the whole and applies
the replay window. The answer is ``200`` once the message is taken (or known to be a
duplicate); ``503`` when the ingest's store failed (the provider retries, and the
reassembly gives the payload again).

The relay's reassembly is :class:`StoredReassembly`: fragments are held in the relay's
store (``shore.store.sbd_units``) until their payload is whole and kept, so fragments
already received survive a relay restart (the vessel does not pay to send them again);
bounded per vessel by :data:`protocol.fragments.DEFAULT_REASSEMBLY_LIMITS`, purged when
kept or expired. Without a store (tests, tools) :class:`MemoryReassembly` keeps a
:class:`~protocol.fragments.Reassembler` per vessel.

Authenticity of the webhook (:mod:`shore.sbd_auth`): RockBLOCK sends a ``JWT`` field
signed RS256 with Rock Seven's published key, whose claims repeat the post's fields; with
the provider's public key configured the webhook verifies it (RS256 only, issuer, age,
``imei``/``momsn``/``data`` equal to the form's). A provider without JWT is given a
shared secret in the webhook URL (``?secret=...``, compared in constant time); a relay may
ask for both (:class:`~shore.sbd_auth.WebhookAuth`). A post that fails is refused with
``403`` and a log line naming the reason, the vessel (when the IMEI is one) and the MOMSN,
and nothing of it is kept. Neither check matters for the content: a forged message cannot
carry a batch the vessel's key did not sign, and a replayed one is refused by the replay
window. They keep strangers from filling the reassembly and from posting in a vessel's name.

**MT (shore to vessel).** :class:`MtSender` cuts a downlink payload into messages of at
most 270 bytes and POSTs each to the provider's ``/rockblock/MT`` with ``imei``,
``username``, ``password`` and ``data`` (hex); the provider answers ``OK,<id>`` or
``FAILED,<code>,<text>``.

Logs carry IMEIs' vessel ids, sizes and MOMSNs, never content.
"""

from __future__ import annotations

import binascii
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Scope

from common.http import BodyLimit, RequestRefused, read_form
from protocol.errors import MalformedBatch, ProtocolError
from protocol.fragments import (
    DEFAULT_REASSEMBLY_LIMITS,
    SBD_MO_BYTES,
    SBD_MT_BYTES,
    LinkFragment,
    PayloadKind,
    Reassembled,
    Reassembler,
    ReassemblerStatistics,
    ReassemblyLimits,
    fragment,
    read_link_message,
)
from protocol.topics import downlink_topic
from shore.sbd_auth import ProviderJwt, WebhookAuth, WebhookForged, check_secret
from shore.store.sbd_units import FragmentOutcome, FragmentTaken

__all__ = [
    "MO_WEBHOOK_PATH",
    "MemoryReassembly",
    "MoWebhook",
    "MtRefused",
    "MtSender",
    "SbdConfig",
    "SbdDownlink",
    "SbdFragmentStore",
    "SbdReassembly",
    "SbdStatistics",
    "StoredReassembly",
    "parse_vessels",
]

log = logging.getLogger("shore.sbd")

#: Where the provider posts MO messages (configured at the provider with ``?secret=``).
MO_WEBHOOK_PATH = "/sbd/rockblock/mo"
#: Largest webhook request: a 340-byte message in hex and the other fields, with room.
WEBHOOK_BODY_BYTES = 8 * 1024

#: What the relay does with a whole payload: (vessel id, kind, payload) -> None; raises
#: when it could not be kept (then the provider is told to retry).
OnPayload = Callable[[int, PayloadKind, bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SbdConfig:
    """The relay's SBD settings (``[sbd]`` in relay.toml)."""

    #: Which vessel each modem (IMEI, 15 digits) belongs to.
    vessels_by_imei: Mapping[str, int]
    #: The secret in the webhook URL configured at the provider ("" when ``auth`` is JWT).
    webhook_secret: str = field(default="", repr=False)
    #: The provider's JWT check (its RSA public key), when it signs its posts.
    provider_jwt: ProviderJwt | None = None
    #: What a post must carry; None: JWT when ``provider_jwt`` is given, else the secret.
    auth: WebhookAuth | None = None
    #: The provider's MT API and the relay's account there.
    provider_url: str = "https://rockblock.rock7.com"
    username: str = ""
    password: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if self.auth is None:
            chosen = WebhookAuth.JWT if self.provider_jwt is not None else WebhookAuth.SECRET
            object.__setattr__(self, "auth", chosen)
        if self.webhook_auth.needs_secret and len(self.webhook_secret) < 16:
            raise ValueError("the SBD webhook secret must be at least 16 characters")
        if self.webhook_auth.needs_jwt and self.provider_jwt is None:
            raise ValueError(
                f"[sbd] webhook_auth = {self.webhook_auth.value!r} needs the provider's public "
                "key: set provider_public_key_file"
            )
        for imei in self.vessels_by_imei:
            if not (imei.isascii() and imei.isdigit() and len(imei) == 15):
                raise ValueError(f"an IMEI is 15 digits, not {imei!r}")

    @property
    def webhook_auth(self) -> WebhookAuth:
        """What a post must carry (``auth``, as chosen when built)."""
        assert self.auth is not None  # set in __post_init__
        return self.auth

    def imei_of(self, vessel_id: int) -> str | None:
        """The IMEI of the vessel's modem, if it has one."""
        for imei, vessel in self.vessels_by_imei.items():
            if vessel == vessel_id:
                return imei
        return None


@dataclass(slots=True)
class SbdStatistics:
    """Counters since start (metrics, dashboard)."""

    mo_messages: int = 0
    mo_bytes: int = 0
    payloads: int = 0
    refused: int = 0
    #: Posts refused as not the provider's (secret or JWT), by any reason.
    forged: int = 0
    unknown_imei: int = 0
    mt_messages: int = 0
    mt_bytes: int = 0


class SbdReassembly(Protocol):
    """Link messages in, whole payloads out, per vessel (:class:`protocol.fragments.
    Reassembler`'s rules)."""

    async def add(self, vessel_id: int, message: bytes, now: float) -> Reassembled | None:
        """Take one MO message; the whole payload once complete. Raises
        :class:`~protocol.errors.MalformedBatch` for a message that is not one of ours."""

    async def kept(self, vessel_id: int, whole: Reassembled) -> None:
        """The ingest kept ``whole``: nothing of it need be held any longer."""

    async def not_kept(self, vessel_id: int, whole: Reassembled) -> None:
        """The ingest could not keep ``whole``: the provider's retry must give it again."""


class MemoryReassembly:
    """A :class:`~protocol.fragments.Reassembler` per vessel, in memory (lost on restart)."""

    def __init__(self, limits: ReassemblyLimits = DEFAULT_REASSEMBLY_LIMITS) -> None:
        self.limits = limits
        self._reassemblers: dict[int, Reassembler] = {}

    async def add(self, vessel_id: int, message: bytes, now: float) -> Reassembled | None:
        reassembler = self._reassemblers.get(vessel_id)
        if reassembler is None:
            reassembler = Reassembler(
                max_partial=self.limits.max_partial,
                max_held_bytes=self.limits.max_held_bytes,
                max_age_s=self.limits.max_age_s,
            )
            self._reassemblers[vessel_id] = reassembler
        return reassembler.add(message, now)

    async def kept(self, vessel_id: int, whole: Reassembled) -> None:
        return None  # the reassembler holds nothing of a completed payload

    async def not_kept(self, vessel_id: int, whole: Reassembled) -> None:
        reassembler = self._reassemblers.get(vessel_id)
        if reassembler is not None:
            reassembler.forget(whole)


class SbdFragmentStore(Protocol):
    """What :class:`StoredReassembly` needs of the relay's store (``shore.store.sbd_units``)."""

    async def take_sbd_fragment(
        self, vessel_id: int, fragment: LinkFragment, now: float, limits: ReassemblyLimits
    ) -> FragmentTaken:
        """Hold one fragment (one transaction); the payload when whole."""

    async def sbd_payload_kept(self, vessel_id: int, whole: Reassembled) -> None:
        """Forget the fragments of a payload the ingest kept."""


class StoredReassembly:
    """Fragments held in the relay's store until their payload is kept (module docstring).

    Whole-payload messages never touch the store. A fragment is one transaction; a store
    failure raises (the webhook answers 503 and the provider retries)."""

    def __init__(
        self, store: SbdFragmentStore, limits: ReassemblyLimits = DEFAULT_REASSEMBLY_LIMITS
    ) -> None:
        self.store = store
        self.limits = limits
        self.statistics = ReassemblerStatistics()

    async def add(self, vessel_id: int, message: bytes, now: float) -> Reassembled | None:
        read = read_link_message(message)
        if isinstance(read, Reassembled):
            self.statistics.completed += 1
            return read
        taken = await self.store.take_sbd_fragment(vessel_id, read, now, self.limits)
        self.statistics.expired += taken.expired
        self.statistics.evicted += taken.evicted
        if taken.expired or taken.evicted:
            log.info(
                "vessel %d: SBD payloads in progress dropped: %d expired, %d over the limits",
                vessel_id,
                taken.expired,
                taken.evicted,
            )
        match taken.outcome:
            case FragmentOutcome.CONTRADICTED:
                raise MalformedBatch(
                    f"fragment {read.index} of {read.count} arrived twice with different "
                    "bytes; the payload in progress is dropped and waits for the sender's resend"
                )
            case FragmentOutcome.GARBLED:
                raise MalformedBatch(
                    f"the {read.count} fragments do not make the payload their tag names; "
                    "dropped, the sender's resend starts it again"
                )
            case FragmentOutcome.DUPLICATE:
                self.statistics.duplicates_dropped += 1
            case FragmentOutcome.COMPLETE:
                self.statistics.completed += 1
        return taken.whole

    async def kept(self, vessel_id: int, whole: Reassembled) -> None:
        await self.store.sbd_payload_kept(vessel_id, whole)

    async def not_kept(self, vessel_id: int, whole: Reassembled) -> None:
        return None  # its fragments stay held: a retry of any of them gives it again


def _refusal(status: int, message: str) -> Response:
    return PlainTextResponse(message, status_code=status)


def _refuse(scope: Scope, error: RequestRefused) -> ASGIApp:
    log.warning("SBD webhook request refused: %s", error.code)
    return _refusal(error.status, error.sentence)


class MoWebhook:
    """The MO webhook (see the module docstring); :attr:`app` is its Starlette app, to be
    served alone or mounted in the relay's."""

    def __init__(
        self,
        config: SbdConfig,
        on_payload: OnPayload,
        *,
        clock: Callable[[], float] = time.time,
        reassembly: SbdReassembly | None = None,
    ) -> None:
        self.config = config
        self.on_payload = on_payload
        self.clock = clock
        self.statistics = SbdStatistics()
        #: Where fragments wait for the rest of their payload (in memory unless given).
        self.reassembly: SbdReassembly = reassembly or MemoryReassembly()
        #: Called with (vessel id, now) for every whole payload taken (the downlink router).
        self.heard: Callable[[int, float], None] | None = None
        self.app: ASGIApp = Starlette(
            routes=[Route(MO_WEBHOOK_PATH, self.handle, methods=["POST"])],
            middleware=[Middleware(BodyLimit, limit_bytes=WEBHOOK_BODY_BYTES, refuse=_refuse)],
        )

    async def handle(self, request: Request) -> Response:
        """Answer one MO webhook request."""
        auth = self.config.webhook_auth
        try:
            if auth.needs_secret:
                check_secret(request.query_params.get("secret", ""), self.config.webhook_secret)
        except WebhookForged as forged:
            return self._forged(forged, None, "")
        try:
            form = await read_form(request)
        except RequestRefused as refused:
            return _refusal(refused.status, refused.sentence)
        imei = form.get("imei", "")
        vessel_id = self.config.vessels_by_imei.get(imei)
        if auth.needs_jwt:
            assert self.config.provider_jwt is not None  # SbdConfig checks it
            try:
                self.config.provider_jwt.check(form, self.clock())
            except WebhookForged as forged:
                return self._forged(forged, vessel_id, form.get("momsn", ""))
        if vessel_id is None:
            self.statistics.unknown_imei += 1
            log.warning("SBD message from a modem no vessel has: dropped")
            return _refusal(200, "unknown imei: dropped")  # a retry would not help
        try:
            data = binascii.unhexlify(form.get("data", ""))
        except (binascii.Error, ValueError):
            self.statistics.refused += 1
            return _refusal(400, "data must be hex")
        if not 1 <= len(data) <= SBD_MO_BYTES:
            self.statistics.refused += 1
            return _refusal(400, f"an MO message is 1 to {SBD_MO_BYTES} bytes")
        self.statistics.mo_messages += 1
        self.statistics.mo_bytes += len(data)
        momsn = _loggable_momsn(form.get("momsn", ""))
        try:
            whole = await self.reassembly.add(vessel_id, data, self.clock())
        except ProtocolError as exc:
            self.statistics.refused += 1
            log.warning("vessel %d: SBD message %s refused: %s", vessel_id, momsn, exc)
            return _refusal(200, "refused")  # the same bytes again would be refused again
        except Exception:
            log.exception("vessel %d: SBD message %s could not be held", vessel_id, momsn)
            return _refusal(503, "could not be stored now; try again later")
        if whole is None:
            return _refusal(200, "OK")
        try:
            await self.on_payload(vessel_id, whole.kind, whole.payload)
        except Exception:
            await self._not_kept(vessel_id, whole)
            log.exception("vessel %d: an SBD payload could not be kept", vessel_id)
            return _refusal(503, "could not be stored now; try again later")
        try:
            await self.reassembly.kept(vessel_id, whole)
        except Exception:  # kept all the same; its fragments expire with the limits
            log.exception("vessel %d: the fragments of a kept SBD payload stay held", vessel_id)
        self.statistics.payloads += 1
        if self.heard is not None:
            self.heard(vessel_id, self.clock())
        log.info(
            "vessel %d: SBD payload of %d B from %d messages",
            vessel_id,
            len(whole.payload),
            whole.fragments,
        )
        return _refusal(200, "OK")

    async def _not_kept(self, vessel_id: int, whole: Reassembled) -> None:
        try:
            await self.reassembly.not_kept(vessel_id, whole)
        except Exception:  # the 503 stands; the vessel's resend starts it again
            log.exception("vessel %d: the reassembly could not be told", vessel_id)

    def _forged(self, forged: WebhookForged, vessel_id: int | None, momsn: str) -> Response:
        """Refuse a post that is not the provider's: 403, one log line without content."""
        self.statistics.forged += 1
        log.warning(
            "SBD webhook post refused: reason=%s vessel=%s momsn=%s",
            forged.reason.value,
            vessel_id if vessel_id is not None else "-",
            _loggable_momsn(momsn),
        )
        return _refusal(403, f"forbidden: {forged.sentence}")


class MtRefused(Exception):
    """The provider refused an MT message (its code and text say why: credit, IMEI, size)."""


class MtSender:
    """Sends downlink payloads to a vessel's modem through the provider's MT API."""

    def __init__(self, config: SbdConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._client = client or httpx.AsyncClient(timeout=30.0)
        self.statistics = SbdStatistics()

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def send_message(self, imei: str, data: bytes) -> str:
        """One MT message (1-270 bytes); the provider's message id. :class:`MtRefused`
        when the provider says no; ``httpx.HTTPError`` when it cannot be reached."""
        if not 1 <= len(data) <= SBD_MT_BYTES:
            raise ValueError(f"an MT message is 1 to {SBD_MT_BYTES} bytes, not {len(data)}")
        response = await self._client.post(
            self.config.provider_url.rstrip("/") + "/rockblock/MT",
            data={
                "imei": imei,
                "username": self.config.username,
                "password": self.config.password,
                "data": data.hex(),
            },
        )
        answer = response.text.strip()
        if response.status_code != 200 or not answer.startswith("OK,"):
            raise MtRefused(f"the SBD provider refused an MT message: {answer[:80]!r}")
        self.statistics.mt_messages += 1
        self.statistics.mt_bytes += len(data)
        return answer[3:]

    async def send_payload(self, vessel_id: int, kind: PayloadKind, payload: bytes) -> int:
        """A whole downlink payload, fragmented; how many MT messages it took."""
        imei = self.config.imei_of(vessel_id)
        if imei is None:
            raise MtRefused(f"vessel {vessel_id} has no SBD modem in [sbd] vessels")
        messages = fragment(payload, kind, SBD_MT_BYTES)
        for message in messages:
            await self.send_message(imei, message)
        log.info(
            "vessel %d: %d B sent down in %d SBD messages", vessel_id, len(payload), len(messages)
        )
        return len(messages)


Publish = Callable[[str, bytes], Awaitable[None]]


class SbdDownlink:
    """Sends the shore's small downlink batches down over SBD to vessels heard over SBD.

    The relay publishes every downlink batch to the vessel's MQTT topic as always (the
    broker keeps it for when the main link is back). A vessel whose last uplink came over
    SBD less than ``window_s`` ago is on its fallback: its downlink batches of at most
    ``max_payload_bytes`` (a BatchAck, a receipt: what ends the vessel's SBD session) also
    go down as MT messages. Bigger ones (a lane block, a long reply) wait for the main
    link: an MT credit is dearer than the wait. A failed MT send is logged and counted,
    never fatal: the vessel's next session resends its batch, and the shore resends what
    was not acknowledged.
    """

    def __init__(
        self,
        sender: MtSender,
        *,
        window_s: float = 3600.0,
        max_payload_bytes: int = 2 * SBD_MT_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sender = sender
        self.window_s = window_s
        self.max_payload_bytes = max_payload_bytes
        self.clock = clock
        self._heard: dict[int, float] = {}
        self.sent = 0
        self.too_big = 0
        self.failed = 0

    def heard(self, vessel_id: int, now: float) -> None:
        """The vessel's payload just came over SBD."""
        self._heard[vessel_id] = now

    def on_fallback(self, vessel_id: int) -> bool:
        """Whether the vessel was heard over SBD within the window."""
        last = self._heard.get(vessel_id)
        return last is not None and self.clock() - last <= self.window_s

    def ack_within(self, vessel_id: int) -> int | None:
        """The most bytes a downlink batch with the vessel's BatchAck may have: what goes
        down over SBD while it is on its fallback (None: no limit, it is not)."""
        return self.max_payload_bytes if self.on_fallback(vessel_id) else None

    def wrap(self, publish: Publish) -> Publish:
        """``publish`` (MQTT), and then SBD for a vessel on its fallback."""

        async def routed(topic: str, data: bytes) -> None:
            await publish(topic, data)
            vessel_id = _downlink_vessel(topic)
            if vessel_id is None or not self.on_fallback(vessel_id):
                return
            if len(data) > self.max_payload_bytes:
                self.too_big += 1
                log.info(
                    "vessel %d: a %d B downlink batch waits for the main link", vessel_id, len(data)
                )
                return
            try:
                await self.sender.send_payload(vessel_id, PayloadKind.BATCH, data)
            except (MtRefused, httpx.HTTPError) as exc:
                self.failed += 1
                log.warning("vessel %d: downlink over SBD failed: %s", vessel_id, exc)
                return
            self.sent += 1

        return routed


def _loggable_momsn(momsn: str) -> str:
    """A MOMSN as it may go in a log line (digits only: the form is the caller's)."""
    return momsn if momsn.isascii() and momsn.isdigit() and len(momsn) <= 6 else "-"


def _downlink_vessel(topic: str) -> int | None:
    parts = topic.split("/")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    vessel_id = int(parts[1])
    return vessel_id if downlink_topic(vessel_id) == topic else None


def parse_vessels(entries: tuple[str, ...]) -> dict[str, int]:
    """``[sbd] vessels = ["300234010753370=42", ...]`` as {IMEI: vessel id}; ValueError
    naming the entry when one is not ``IMEI=VESSEL``."""
    vessels: dict[str, int] = {}
    for entry in entries:
        imei, _, vessel = entry.partition("=")
        imei, vessel = imei.strip(), vessel.strip()
        if not (imei.isdigit() and len(imei) == 15 and vessel.isdigit() and int(vessel) > 0):
            raise ValueError(f"[sbd] vessels: {entry!r} is not IMEI=VESSEL (15 digits = id)")
        if imei in vessels:
            raise ValueError(f"[sbd] vessels: IMEI {imei} is listed twice")
        vessels[imei] = int(vessel)
    return vessels
