"""The satellite session over a real Mosquitto, with the model shore built on protocol/.

The vessel side is :func:`shipboard.link.run_session` (and :func:`run_link`) with an
in-memory outbox implementing :class:`shipboard.link.OutboxPort`; the shore side is
:class:`tests.kit.model_shore.ModelShore` behind the broker: the pure shore exchange, which
verifies uplink batches and answers with a signed downlink ``BatchAck`` plus one
``DeliveryReceipt(ACCEPTED_ASHORE)`` per new message, as the real relay does after its
commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

from protocol.batch import Batch, Direction, decode_batch, encode_batch
from protocol.codebook import Codebook
from protocol.envelopes import (
    BatchAck,
    CrewMessage,
    DeliveryReceipt,
    Envelope,
    GrievanceReport,
    ReceiptStage,
    Reply,
    Sos,
    acknowledges_only,
)
from protocol.languages import Language
from protocol.replay import RangeSet
from protocol.signing import SigningKey
from shipboard.config import ShipConfig
from shipboard.errors import NothingToSend
from shipboard.link import (
    LinkDown,
    LinkSettings,
    LinkStatistics,
    OutboxPort,
    SessionReport,
    client_tls_context,
    downlink_topic,
    reconnect_delay_s,
    run_link,
    run_session,
)
from shipboard.mqtt_link import MqttLink, make_client
from shipboard.outbox import Outbox
from shipboard.profiles import IRIDIUM_CERTUS, VSAT
from shipboard.scheduler import SchedulerSettings
from tests.kit.clock import FakeClock
from tests.kit.model_shore import ModelShore
from tests.kit.mosquitto import MosquittoBroker
from tests.kit.mqtt import publish_downlink, shore_over_mqtt
from tests.kit.ports import free_port
from tests.kit.wait import eventually
from tests.shipboard.conftest import Crew
from vessel_relay.corpus import corpus_dir
from vessel_relay.demo.defaults import demo_ship_config
from vessel_relay.demo.tls import DEPLOYED_KEY_TYPE, make_broker_tls
from vessel_relay.link_emulator import Direction as EmulatedDirection
from vessel_relay.link_emulator import LinkEmulator
from vessel_relay.link_emulator import LinkProfile as EmulatedLink

NOW = 1_790_000_000.0

# --- an in-memory outbox -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Pending:
    message_seq: int
    kind: str
    crew: int | None
    text_bytes: int
    payload_bytes: int
    accepted_at: float


@dataclass(frozen=True, slots=True)
class _Stored:
    batch_seq: int
    data: bytes
    ack_only: bool = False
    send_count: int = 0
    overtaken: bool = False


@dataclass(frozen=True, slots=True)
class _Result:
    duplicate: bool
    acknowledged_batches: tuple[int, ...] = ()
    rejected_batches: tuple[int, ...] = ()


@dataclass
class FakeOutbox:
    """The outbox's contract in memory: messages, stored batches, downlink seen, receipts."""

    vessel_id: int
    messages: dict[int, Envelope] = field(default_factory=dict)
    state: dict[int, str] = field(default_factory=dict)
    batches: dict[int, bytes] = field(default_factory=dict)
    batch_messages: dict[int, tuple[int, ...]] = field(default_factory=dict)
    acked_batches: set[int] = field(default_factory=set)
    sent_count: dict[int, int] = field(default_factory=dict)
    downlink_seen: RangeSet = field(default_factory=RangeSet)
    ack_pending: bool = False
    receipts: dict[int, ReceiptStage] = field(default_factory=dict)
    replies: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None

    async def wait_for_state(self, seq: int, state: str) -> None:
        """Wait (on an event rung by apply_downlink) until message ``seq`` is in ``state``."""
        self.loop = asyncio.get_running_loop()
        self.changed = changed = asyncio.Event()
        while self.state[seq] != state:
            await changed.wait()
            changed.clear()

    def add_message(self, text: str, crew: int = 1, at: float = NOW) -> int:
        seq = len(self.messages) + 1
        self.messages[seq] = CrewMessage(
            message_seq=seq,
            crew=crew,
            contact=1,
            written_minutes=int(at // 60),
            lang=Language.ENG,
            body=text,
        )
        self.state[seq] = "accepted"
        return seq

    def add_sos(self, crew: int = 1, at: float = NOW) -> int:
        seq = len(self.messages) + 1
        self.messages[seq] = Sos(message_seq=seq, crew=crew, written_minutes=int(at // 60))
        self.state[seq] = "accepted"
        return seq

    # OutboxPort ----------------------------------------------------------------------------

    def pending_messages(self, now: float) -> tuple[_Pending, ...]:
        with self.lock:
            result = []
            for seq, envelope in sorted(self.messages.items()):
                if self.state[seq] != "accepted":
                    continue
                at = envelope.written_minutes * 60.0
                if isinstance(envelope, CrewMessage):
                    size = len((envelope.body or "").encode())
                    result.append(_Pending(seq, "message", envelope.crew, size, size, at))
                elif isinstance(envelope, Sos):
                    result.append(_Pending(seq, "sos", envelope.crew, 0, 10, at))
                elif isinstance(envelope, GrievanceReport):
                    result.append(_Pending(seq, "grievance", None, 0, len(envelope.sealed), at))
            return tuple(result)

    def quota_ledger(self, now: float) -> dict[int, int]:
        return {}

    def unacknowledged_batches(self) -> tuple[_Stored, ...]:
        with self.lock:
            return tuple(
                _Stored(
                    seq,
                    data,
                    ack_only=not self.batch_messages[seq],
                    send_count=self.sent_count.get(seq, 0),
                )
                for seq, data in sorted(self.batches.items())
                if seq not in self.acked_batches
            )

    def make_batch(
        self, message_seqs: Sequence[int], codebook: Codebook, signing_key: SigningKey, now: float
    ) -> tuple[int, bytes]:
        with self.lock:
            envelopes: list[Envelope] = []
            if self.ack_pending:
                envelopes.append(range_ack(self.downlink_seen, int(now // 60)))
            for seq in message_seqs:
                assert self.state[seq] == "accepted", f"message {seq} is {self.state[seq]}"
                envelopes.append(self.messages[seq])
            if not envelopes:
                raise NothingToSend("nothing")
            batch_seq = len(self.batches) + 1
            data = encode_batch(
                envelopes,
                direction=Direction.UPLINK,
                vessel_id=self.vessel_id,
                batch_seq=batch_seq,
                batch_minutes=int(now // 60),
                signing_key=signing_key,
                codebook=codebook,
            )
            self.batches[batch_seq] = data
            self.batch_messages[batch_seq] = tuple(message_seqs)
            for seq in message_seqs:
                self.state[seq] = "batched"
            self.ack_pending = False
            return batch_seq, data

    def mark_sent(self, batch_seq: int, now: float) -> None:
        with self.lock:
            self.sent_count[batch_seq] = self.sent_count.get(batch_seq, 0) + 1
            for seq in self.batch_messages[batch_seq]:
                if self.state[seq] == "batched":
                    self.state[seq] = "sent"

    def apply_downlink(self, batch: Batch, now: float) -> _Result:
        with self.lock:
            if not acknowledges_only(batch.envelopes):  # the outbox's rule
                self.ack_pending = True
            if batch.batch_seq in self.downlink_seen:
                return _Result(duplicate=True)
            self.downlink_seen.add(batch.batch_seq)
            acknowledged = []
            for envelope in batch.envelopes:
                if isinstance(envelope, BatchAck):
                    for seq in self.batches:
                        if seq not in self.acked_batches and envelope.covers(seq):
                            self.acked_batches.add(seq)
                            acknowledged.append(seq)
                            for message_seq in self.batch_messages[seq]:
                                self.state[message_seq] = "acknowledged"
                elif isinstance(envelope, DeliveryReceipt):
                    self.receipts[envelope.message_seq] = envelope.stage
                elif isinstance(envelope, Reply):
                    self.replies.append(envelope.reply_seq)
            if self.loop is not None and self.changed is not None:
                self.loop.call_soon_threadsafe(self.changed.set)
            return _Result(duplicate=False, acknowledged_batches=tuple(acknowledged))


def range_ack(seen: RangeSet, minutes: int) -> BatchAck:
    """A cumulative BatchAck for the batch numbers in ``seen``."""
    return BatchAck(up_to=seen.up_to, written_minutes=minutes, ranges=seen.ranges or None)


def test_fake_outbox_and_real_outbox_share_the_contract() -> None:
    """Both outboxes fit the link's interface (mypy checks this assignment)."""
    ports: list[type[OutboxPort]] = [FakeOutbox, Outbox]
    assert len(ports) == 2


# --- the model shore over MQTT ----------------------------------------------------------


def shore_running(
    shore: ModelShore, broker: MosquittoBroker, mqtt_version: str = "5"
) -> contextlib.AbstractAsyncContextManager[ModelShore]:
    """The model shore behind ``broker``, answering on this file's fixed clock."""
    return shore_over_mqtt(
        shore, broker.host, broker.port, clock=lambda: NOW, protocol=to_protocol(mqtt_version)
    )


# --- fixtures and helpers ----------------------------------------------------------------

PROTOCOLS = pytest.mark.parametrize("mqtt_version", ["5", "3.1.1"], ids=["mqtt5", "mqtt311"])


def new_vessel_id() -> int:
    return 100_000 + uuid.uuid4().int % 1_000_000_000


def to_protocol(mqtt_version: str) -> aiomqtt.ProtocolVersion:
    return aiomqtt.ProtocolVersion.V5 if mqtt_version == "5" else aiomqtt.ProtocolVersion.V311


def link_settings(vessel_id: int, host: str, port: int, **overrides: object) -> LinkSettings:
    base = LinkSettings(
        vessel_id=vessel_id,
        host=host,
        port=port,
        profile=VSAT,
        downlink_quiet_s=0.3,
        ack_wait_s=5.0,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


@dataclass
class Vessel:
    """What a test needs to run sessions for one vessel."""

    vessel_id: int
    outbox: FakeOutbox
    vessel_key: SigningKey
    shore_key: SigningKey
    codebook: Codebook

    async def session(self, settings: LinkSettings, **kwargs: object) -> SessionReport:
        async with asyncio.timeout(60):
            return await run_session(
                settings,
                self.outbox,
                signing_key=self.vessel_key,
                codebook=self.codebook,
                shore_verify_key=self.shore_key.verify_key,
                clock=lambda: NOW,
                **kwargs,  # type: ignore[arg-type]
            )

    def shore(self) -> ModelShore:
        """The model shore for this vessel (run it behind a broker with shore_running)."""
        return ModelShore.for_keys(self.codebook, self.vessel_key, self.shore_key, self.vessel_id)


@pytest.fixture
def vessel(codebook: Codebook, vessel_key: SigningKey, shore_key: SigningKey) -> Vessel:
    vessel_id = new_vessel_id()
    return Vessel(vessel_id, FakeOutbox(vessel_id), vessel_key, shore_key, codebook)


CORPUS = corpus_dir() / "eng.dev.txt"


def family_lines(count: int) -> list[str]:
    lines = [line for line in CORPUS.read_text().splitlines() if line.strip()]
    return [lines[index % len(lines)] for index in range(count)]


# --- sessions ----------------------------------------------------------------------------


@PROTOCOLS
async def test_messages_go_ashore_and_the_shore_acknowledges_them(
    mosquitto: MosquittoBroker, vessel: Vessel, mqtt_version: str
) -> None:
    """Five crew members' messages leave in one batch; the shore's signed BatchAck and the
    "accepted ashore" receipts come back in the same session, and nothing is left open."""
    seqs = [vessel.outbox.add_message(text, crew=n) for n, text in enumerate(family_lines(5))]
    settings = link_settings(
        vessel.vessel_id, mosquitto.host, mosquitto.port, mqtt_version=mqtt_version
    )
    async with shore_running(vessel.shore(), mosquitto, mqtt_version) as shore:
        report = await vessel.session(settings, message_seqs=seqs)
    assert report.published == (1,)
    assert report.acknowledged == (1,)
    assert report.unacknowledged_after == 0
    assert vessel.outbox.unacknowledged_batches() == ()
    assert vessel.outbox.receipts == dict.fromkeys(seqs, ReceiptStage.ACCEPTED_ASHORE)
    assert [r.message_seqs for r in shore.received] == [tuple(seqs)]


@PROTOCOLS
async def test_downlink_queued_while_away_is_fetched_and_forgeries_are_skipped(
    mosquitto: MosquittoBroker, vessel: Vessel, mqtt_version: str
) -> None:
    """While the vessel is away the broker keeps its downlink: a family's reply, a batch
    signed with the wrong key and garbage. The next session applies the reply, logs and
    skips the other two, acknowledges the reply in its next batch, and does not crash."""
    settings = link_settings(
        vessel.vessel_id, mosquitto.host, mosquitto.port, mqtt_version=mqtt_version
    )
    await vessel.session(settings)  # first contact: the broker now holds our session
    shore = vessel.shore()
    reply = Reply(7, 1, 1, int(NOW // 60), Language.MYA, "ကျန်းမာပါတယ်")
    forged = shore.sign([reply], int(NOW // 60), key=SigningKey.from_seed(b"\x07" * 32))
    genuine = shore.sign([reply], int(NOW // 60))
    await publish_downlink(
        mosquitto.host,
        mosquitto.port,
        vessel.vessel_id,
        [forged, b"\x02not a batch at all", genuine],
        protocol=to_protocol(mqtt_version),
    )
    async with shore_running(shore, mosquitto, mqtt_version):
        report = await vessel.session(settings)
    # The reply; the session does not wait for the shore's answer to a batch that only
    # acknowledges (the real shore answers those lazily).
    assert report.downlink_applied == 1
    assert report.unacknowledged_after == 0
    assert report.downlink_refused == 2
    assert vessel.outbox.replies == [7]
    # The downlink batch is acknowledged in the batch this session made.
    assert report.published == (1,)
    batch = decode_batch(
        vessel.outbox.batches[1],
        codebook=vessel.codebook,
        verify_key=vessel.vessel_key.verify_key,
    )
    assert [type(e) for e in batch.envelopes] == [BatchAck]


async def test_unreachable_broker_is_link_down_and_nothing_is_lost(
    vessel: Vessel,
) -> None:
    """With no broker listening, the session fails with LinkDown and the batch it made
    stays in the outbox for the next try."""
    seq = vessel.outbox.add_message("hello")
    settings = link_settings(vessel.vessel_id, "127.0.0.1", free_port())
    with pytest.raises(LinkDown):
        await vessel.session(settings, message_seqs=[seq])
    assert vessel.outbox.state[seq] in ("accepted", "batched")


async def test_link_cut_mid_publish_then_resent_byte_identical(
    mosquitto: MosquittoBroker, vessel: Vessel
) -> None:
    """The satellite drops while a big batch is going up: the session fails at once (not
    after a publish timeout), the batch stays unacknowledged, and the next session sends
    the very same bytes; the shore may see it twice, always with the same message numbers."""
    seqs = [vessel.outbox.add_message(secrets.token_hex(100), crew=n % 7) for n in range(60)]
    slow = EmulatedLink(bandwidth_bps=16_000)
    up_bytes = 0
    mid_publish = asyncio.Event()

    def count(session_id: int, direction: EmulatedDirection, segment: bytes) -> None:
        nonlocal up_bytes
        if direction is EmulatedDirection.UP:
            up_bytes += len(segment)
            if up_bytes >= 2_000:  # CONNECT and SUBSCRIBE are long past: the batch is going up
                mid_publish.set()

    async with (
        shore_running(vessel.shore(), mosquitto) as shore,
        LinkEmulator("127.0.0.1", 0, mosquitto.host, mosquitto.port, slow, capture=count) as link,
    ):
        settings = link_settings(vessel.vessel_id, link.host, link.port)
        session = asyncio.create_task(vessel.session(settings, message_seqs=seqs))
        async with asyncio.timeout(30):
            await mid_publish.wait()
        link.cut()
        started = asyncio.get_running_loop().time()
        with pytest.raises(LinkDown):
            await session
        assert asyncio.get_running_loop().time() - started < 5
        assert [b.batch_seq for b in vessel.outbox.unacknowledged_batches()] == [1]
        first_bytes = vessel.outbox.batches[1]

        link.set_profile(EmulatedLink())
        report = await vessel.session(settings)
    assert report.published == (1,)
    assert report.acknowledged == (1,)
    assert vessel.outbox.unacknowledged_batches() == ()
    copies = [r for r in shore.received if r.batch_seq == 1]
    assert all(copy.data == first_bytes for copy in copies)
    assert all(copy.message_seqs == tuple(seqs) for copy in copies)


async def test_link_stalls_mid_publish_and_the_session_gives_up_in_bounded_time(
    mosquitto: MosquittoBroker, vessel: Vessel
) -> None:
    """The satellite stalls (bytes stop, nothing closes) while a batch is going up: the
    session gives up after its publish timeout with LinkDown instead of hanging, and once
    the link is back the next session gets the batch acknowledged."""
    seqs = [vessel.outbox.add_message(secrets.token_hex(100), crew=n % 7) for n in range(60)]
    mid_publish = asyncio.Event()
    up_bytes = 0

    def count(session_id: int, direction: EmulatedDirection, segment: bytes) -> None:
        nonlocal up_bytes
        if direction is EmulatedDirection.UP:
            up_bytes += len(segment)
            if up_bytes >= 2_000:
                mid_publish.set()

    slow = EmulatedLink(bandwidth_bps=16_000)
    async with (
        shore_running(vessel.shore(), mosquitto) as shore,
        LinkEmulator("127.0.0.1", 0, mosquitto.host, mosquitto.port, slow, capture=count) as link,
    ):
        settings = link_settings(
            vessel.vessel_id,
            link.host,
            link.port,
            profile=dataclasses.replace(VSAT, bandwidth_bps=16_000),  # what the link emulates
            min_timeout_s=1.0,
        )
        session = asyncio.create_task(vessel.session(settings, message_seqs=seqs))
        async with asyncio.timeout(30):
            await mid_publish.wait()
        link.blackhole()
        started = asyncio.get_running_loop().time()
        with pytest.raises(LinkDown):
            await session
        assert asyncio.get_running_loop().time() - started < settings.publish_timeout_s(8_000)
        link.restore()
        link.set_profile(EmulatedLink())
        report = await vessel.session(dataclasses.replace(settings, min_timeout_s=10.0))
    # The stalled bytes may have reached the broker once the link returned: then the
    # shore's ack was waiting for us and only our ack of it went up (the session does not
    # wait for the answer to such an ack-only batch). Either way, the messages are done.
    assert 1 in report.acknowledged
    assert [b for b in vessel.outbox.unacknowledged_batches() if not b.ack_only] == []
    assert {r.message_seqs for r in shore.received if r.batch_seq == 1} == {tuple(seqs)}


async def test_broker_sigkill_without_persistence_loses_nothing(
    fresh_mosquitto: MosquittoBroker, vessel: Vessel
) -> None:
    """The broker PUBACKs a batch while the shore is offline, then dies (SIGKILL, no
    persistence): the queued copy is gone. The vessel never got the shore's BatchAck, so
    its next session resends the batch, and this time the shore acknowledges it."""
    broker = fresh_mosquitto
    shore = vessel.shore()
    async with shore_running(shore, broker):
        pass  # the shore's persistent session now queues uplink while it is away
    seq = vessel.outbox.add_message("the boat is fine, send my love")
    settings = link_settings(vessel.vessel_id, broker.host, broker.port, ack_wait_s=0.5)
    report = await vessel.session(settings, message_seqs=[seq])
    assert report.published == (1,)
    assert report.unacknowledged_after == 1
    assert vessel.outbox.state[seq] == "sent"

    broker.kill()
    broker.start()
    async with shore_running(shore, broker):
        assert shore.received == []  # the broker lost it
        report = await vessel.session(dataclasses.replace(settings, ack_wait_s=5.0))
    assert report.published == (1,)
    assert report.acknowledged == (1,)
    assert vessel.outbox.unacknowledged_batches() == ()
    assert [r.message_seqs for r in shore.received] == [(seq,)]
    assert vessel.outbox.receipts == {seq: ReceiptStage.ACCEPTED_ASHORE}


async def test_real_outbox_message_is_acknowledged_end_to_end(
    fresh_mosquitto: MosquittoBroker,
    outbox: Outbox,
    crew: Crew,
    codebook: Codebook,
    vessel_key: SigningKey,
    shore_key: SigningKey,
) -> None:
    """A crew member's message accepted into the real SQLite outbox goes up in one session
    and ends "acknowledged", with the contact announced in the same batch."""
    accepted = outbox.accept_message(
        crew=crew.member.crew,
        contact=crew.mother.contact,
        lang=Language.MYA,
        now=NOW,
        quota_bytes=1 << 20,
        body="မင်္ဂလာပါ အမေ",
    )
    vessel = Vessel(outbox.vessel_id, FakeOutbox(outbox.vessel_id), vessel_key, shore_key, codebook)
    settings = link_settings(outbox.vessel_id, fresh_mosquitto.host, fresh_mosquitto.port)
    async with shore_running(vessel.shore(), fresh_mosquitto) as shore, asyncio.timeout(60):
        report = await run_session(
            settings,
            outbox,
            signing_key=vessel_key,
            codebook=codebook,
            shore_verify_key=shore_key.verify_key,
            message_seqs=[accepted.message_seq],
        )
    assert report.acknowledged == (1,)
    assert outbox.unacknowledged_batches() == ()
    stages = outbox.message_stages(accepted.message_seq)
    assert stages is not None
    assert stages["state"] == "acknowledged"
    assert shore.received[0].message_seqs == (accepted.message_seq,)


# --- TLS and bytes -----------------------------------------------------------------------


@pytest.fixture
def tls_broker(
    tmp_path: Path, make_mosquitto: Callable[..., MosquittoBroker]
) -> tuple[MosquittoBroker, int, Path]:
    """A broker with a TLS listener as deploy/ has it: a private CA's certificate (of the
    key type the demo and the benchmarks use), deploy/'s OpenSSL settings; returns the
    broker, the TLS port and the CA certificate the vessels trust."""
    files = make_broker_tls(tmp_path / "tls", DEPLOYED_KEY_TYPE)
    tls_port = free_port()
    broker = make_mosquitto(
        extra_config=(
            f"listener {tls_port} 127.0.0.1",
            f"certfile {files.cert_file}",
            f"keyfile {files.key_file}",
        )
    )
    return broker, tls_port, files.ca_file


def tls_records(stream: bytes) -> list[tuple[int, int]]:
    """(content type, length) of each TLS record in one direction's bytes, in order."""
    records: list[tuple[int, int]] = []
    at = 0
    while at + 5 <= len(stream):
        length = int.from_bytes(stream[at + 3 : at + 5], "big")
        records.append((stream[at], length))
        at += 5 + length
    assert at == len(stream), "the stream ends inside a TLS record"
    return records


TLS_CHANGE_CIPHER_SPEC, TLS_HANDSHAKE = 20, 22


async def test_tls_resumption_measured(
    tls_broker: tuple[MosquittoBroker, int, Path], vessel: Vessel
) -> None:
    """Sessions as a vessel has them at sea, each with one batch of 20 family messages and
    the shore's receipt, through a broker that kept the vessel's session (so no SUBSCRIBE):
    plain MQTT, TLS with a full handshake, TLS resumed. The resumed session is cheaper than
    the full one and is what fits an Iridium Certus session. No handshake carries
    middlebox-compatibility records, and the resumed hello is not padded and carries the
    broker's stateful ticket (an id, not the encrypted session). Printed with -s; these are
    ``benchmarks/sessions.py``'s ``MEASURED_SESSION``."""
    broker, tls_port, cert = tls_broker
    context = client_tls_context(cert)
    measured: dict[str, int] = {}
    streams: dict[str, dict[EmulatedDirection, bytes]] = {}
    captured: dict[int, list[tuple[int, EmulatedDirection, bytes]]] = {}

    def emulator(port: int) -> LinkEmulator:
        seen = captured.setdefault(port, [])

        def capture(session: int, way: EmulatedDirection, data: bytes) -> None:
            seen.append((session, way, data))

        return LinkEmulator("127.0.0.1", 0, "127.0.0.1", port, capture=capture)

    async with (
        shore_running(vessel.shore(), broker),
        emulator(broker.port) as plain,
        emulator(tls_port) as secure,
    ):
        for link, tls in ((plain, None), (secure, context)):
            # first contact at each address (not measured): the vessel subscribes once
            await vessel.session(
                link_settings(vessel.vessel_id, link.host, link.port), tls_context=tls
            )
        for name, link, port, tls in (
            ("plain", plain, broker.port, None),
            ("tls-full", secure, tls_port, context),
            ("tls-resumed", secure, tls_port, context),
        ):
            if name == "tls-full":
                context.forget()
            seqs = [vessel.outbox.add_message(t, crew=n) for n, t in enumerate(family_lines(20))]
            settings = link_settings(vessel.vessel_id, link.host, link.port)
            report = await vessel.session(settings, message_seqs=seqs, tls_context=tls)
            await link.wait_for_open_sessions(0)
            session = link.statistics().sessions[-1]
            measured[name] = session.ip_bytes_estimate
            streams[name] = {
                way: b"".join(
                    data
                    for number, went, data in captured[port]
                    if number == session.session_id and went is way
                )
                for way in EmulatedDirection
            }
            payload = (report.uplink_payload_bytes, report.downlink_payload_bytes)
            assert report.acknowledged
            assert report.tls_resumed is (None if tls is None else name == "tls-resumed")
    print(f"\nbatch bytes up / down: {payload}; session IP bytes: {measured}")
    for name, value in measured.items():
        print(f"  {name:12} {value:6d} B  billed on Certus: {IRIDIUM_CERTUS.billed_bytes(value)}")
    assert measured["plain"] < measured["tls-resumed"] < measured["tls-full"]
    for name in ("tls-full", "tls-resumed"):
        for way in EmulatedDirection:
            types = [kind for kind, _ in tls_records(streams[name][way])]
            assert TLS_CHANGE_CIPHER_SPEC not in types, f"{name} {way.value}: compatibility mode"
    hello_type, hello_length = tls_records(streams["tls-resumed"][EmulatedDirection.UP])[0]
    assert hello_type == TLS_HANDSHAKE
    # padded, a hello would be 512 B; with a stateless ticket (~200 B) about 460 B
    assert hello_length < 320


async def test_a_ticket_older_than_its_max_age_is_not_offered(
    tls_broker: tuple[MosquittoBroker, int, Path], vessel: Vessel
) -> None:
    """A time-compressed month tells the agent the broker's two-hour ticket lifetime on its
    own clock: a session that comes later than that does the full handshake, as at sea a
    session six hours after the last one does; one that comes sooner resumes."""
    broker, tls_port, ca_file = tls_broker
    now = [0.0]
    context = client_tls_context(ca_file, ticket_max_age_s=1.0, clock=lambda: now[0])
    settings = link_settings(vessel.vessel_id, "127.0.0.1", tls_port)
    async with shore_running(vessel.shore(), broker):
        first = await vessel.session(settings, tls_context=context)
        now[0] += 0.5
        sooner = await vessel.session(settings, tls_context=context)
        now[0] += 1.0
        later = await vessel.session(settings, tls_context=context)
        after_later = await vessel.session(settings, tls_context=context)
    assert first.tls_resumed is False
    assert sooner.tls_resumed is True
    assert later.tls_resumed is False
    assert after_later.tls_resumed is True  # the full handshake's new ticket is kept


def test_a_ticket_age_cannot_be_negative() -> None:
    """A negative ticket age is a mistake in the caller's settings and is refused."""
    with pytest.raises(ValueError, match="age"):
        client_tls_context(None, ticket_max_age_s=-1.0)


# --- the loop ----------------------------------------------------------------------------


def test_reconnect_backoff_doubles_is_capped_and_jittered() -> None:
    """After repeated failures the agent waits longer each time, never over 30 minutes, and
    two vessels that failed together do not retry in the same second."""
    rng = random.Random(1)
    delays = [reconnect_delay_s(n, rng) for n in range(1, 12)]
    assert 7.5 <= delays[0] <= 15
    assert all(delay <= 1800 for delay in delays)
    assert delays[-1] >= 900
    assert reconnect_delay_s(0, rng) == 0
    other = random.Random(2)
    assert reconnect_delay_s(5, other) != reconnect_delay_s(5, random.Random(1))


async def test_run_link_sends_an_sos_at_once_and_messages_when_the_doorbell_rings(
    mosquitto: MosquittoBroker, vessel: Vessel, tmp_path: Path
) -> None:
    """The agent's link loop: an SOS waiting at start goes at once; later a message
    committed by intake rings the doorbell and (on a cheap VSAT link) goes right away;
    stopping ends the loop cleanly."""
    base = demo_ship_config(tmp_path)
    config: ShipConfig = dataclasses.replace(
        base,
        vessel=dataclasses.replace(base.vessel, vessel_id=vessel.vessel_id),
        shore=dataclasses.replace(
            base.shore,
            broker_url=f"mqtt://{mosquitto.host}:{mosquitto.port}",
            public_key_hex=vessel.shore_key.verify_key.hex(),
        ),
    )
    sos = vessel.outbox.add_sos()
    stopping, doorbell = asyncio.Event(), asyncio.Event()
    clock = FakeClock(NOW)  # the agent's wall clock; it sleeps on the loop's
    stats = LinkStatistics()
    settings = link_settings(vessel.vessel_id, mosquitto.host, mosquitto.port)
    async with shore_running(vessel.shore(), mosquitto), asyncio.timeout(60):
        task = asyncio.create_task(
            run_link(
                config=config,
                outbox=vessel.outbox,
                signing_key=vessel.vessel_key,
                codebook=vessel.codebook,
                stopping=stopping,
                doorbell=doorbell,
                clock=clock,
                link_settings=settings,
                scheduler_settings=SchedulerSettings(min_gap_s=1.0),
                statistics=stats,
            )
        )
        await vessel.outbox.wait_for_state(sos, "acknowledged")
        await eventually(lambda: stats.last_session_at is not None, 10, 0.01, what="the session")
        clock.advance(1.1)  # past the scheduler's minimum gap between sessions
        message = vessel.outbox.add_message("we are coming home in May")
        doorbell.set()
        await vessel.outbox.wait_for_state(message, "acknowledged")
        stopping.set()
        await task
    assert stats.sessions >= 2
    assert stats.failures == 0
    assert vessel.outbox.unacknowledged_batches() == ()


async def test_run_link_with_the_real_outbox_delivers_an_sos_and_a_report(
    fresh_mosquitto: MosquittoBroker,
    outbox: Outbox,
    crew: Crew,
    codebook: Codebook,
    vessel_key: SigningKey,
    shore_key: SigningKey,
    tmp_path: Path,
) -> None:
    """The agent's link loop over the real SQLite outbox on an Iridium Certus profile: an
    SOS and a sealed grievance report committed by intake go up in the first session (the
    SOS does not wait to fill the 5 KB session) and come back acknowledged."""
    sos = outbox.accept_sos(crew=crew.member.crew, now=NOW, position=(1_300_000, 10_050_000))
    report_seq = outbox.accept_grievance(
        union_id=1, sealed=secrets.token_bytes(304), case_key=b"k" * 32, now=NOW
    )
    base = demo_ship_config(tmp_path)
    config: ShipConfig = dataclasses.replace(
        base,
        shore=dataclasses.replace(base.shore, public_key_hex=shore_key.verify_key.hex()),
    )
    settings = link_settings(
        outbox.vessel_id, fresh_mosquitto.host, fresh_mosquitto.port, profile=IRIDIUM_CERTUS
    )
    sessions: list[SessionReport] = []
    done = asyncio.Event()

    async def counted(*args: object, **kwargs: object) -> SessionReport:
        report = await run_session(*args, **kwargs)  # type: ignore[arg-type]
        sessions.append(report)
        done.set()
        return report

    stopping = asyncio.Event()
    shore = ModelShore.for_keys(codebook, vessel_key, shore_key, outbox.vessel_id)
    async with shore_running(shore, fresh_mosquitto), asyncio.timeout(60):
        task = asyncio.create_task(
            run_link(
                config=config,
                outbox=outbox,
                signing_key=vessel_key,
                codebook=codebook,
                stopping=stopping,
                doorbell=asyncio.Event(),
                link_settings=settings,
                session_runner=counted,
            )
        )
        await done.wait()
        stopping.set()
        await task
    assert len(sessions) == 1
    assert sessions[0].acknowledged == (1,)
    assert shore.received[0].message_seqs == (sos.message_seq, report_seq.message_seq)
    for seq in (sos.message_seq, report_seq.message_seq):
        stages = outbox.message_stages(seq)
        assert stages is not None
        assert stages["state"] == "acknowledged"
    assert outbox.unacknowledged_batches() == ()


@contextlib.contextmanager
def relay_vessel_outbox(
    path: Path, name: str, language: Language, now: float
) -> Iterator[tuple[Outbox, Callable[[str], int]]]:
    """The SQLite outbox of the vessel the in-process relay knows, with one crew member
    and one family contact; yields it and ``accept(body) -> message_seq``."""
    from shipboard.crew import CrewRegister
    from tests.shore.test_ingest import VESSEL

    box = Outbox.open(path, VESSEL)
    try:
        register = CrewRegister(box)
        member, _pin = register.add(
            name=name, document="SB-1", nationality="MM", language=language, now=now
        )
        family = register.add_contact(
            member.crew,
            channel="email",
            address="family@example.org",
            name="Family",
            language=language,
            now=now,
        )

        def accept(body: str) -> int:
            return box.accept_message(
                crew=member.crew,
                contact=family.contact,
                lang=language,
                now=now,
                quota_bytes=1 << 20,
                body=body,
            ).message_seq

        yield box, accept
    finally:
        box.close()


async def test_the_real_shore_relay_acknowledges_what_the_agent_sends(
    fresh_mosquitto: MosquittoBroker, codebook: Codebook, tmp_path: Path
) -> None:
    """Vessel and shore as shipped, meeting only through the broker: a crew member's message
    committed in the SQLite outbox goes up in one session; the shore relay verifies and
    commits it and its BatchAck and "accepted ashore" receipt come down in the same session."""
    from tests.shore.store_fixtures import SHORE_KEY, VESSEL_KEY
    from tests.shore.test_ingest import VESSEL, relay_in_process, stored_seqs

    outbox_path = tmp_path / "outbox.sqlite3"
    with relay_vessel_outbox(outbox_path, "Ko Ko", Language.MYA, time.time()) as (box, accept):
        message_seq = accept("နေကောင်းလား အမေ")
        settings = link_settings(VESSEL, fresh_mosquitto.host, fresh_mosquitto.port)
        async with relay_in_process(tmp_path / "relay", fresh_mosquitto), asyncio.timeout(60):
            report = await run_session(
                settings,
                box,
                signing_key=VESSEL_KEY,
                codebook=codebook,
                shore_verify_key=SHORE_KEY.verify_key,
                message_seqs=[message_seq],
            )
        assert report.published == (1,)
        assert report.acknowledged == (1,)
        assert box.unacknowledged_batches() == ()
        stages = box.message_stages(message_seq)
        assert stages is not None
        assert stages["state"] == "acknowledged"
        assert await stored_seqs(tmp_path / "relay") == [message_seq]


async def test_a_batch_that_only_acknowledges_the_downlink_does_not_hold_the_session_open(
    fresh_mosquitto: MosquittoBroker, codebook: Codebook, tmp_path: Path
) -> None:
    """Nobody acknowledges a batch that carries only a BatchAck for its own sake, so a
    session that has nothing else to send must not wait ``ack_wait_s`` for it: it ends,
    the batch stays in the outbox, is not sent again, and the BatchAck that answers the
    next session's message covers it."""
    from tests.shore.store_fixtures import SHORE_KEY, VESSEL_KEY
    from tests.shore.test_ingest import VESSEL, relay_in_process

    outbox_path = tmp_path / "outbox.sqlite3"
    with relay_vessel_outbox(outbox_path, "Sok Dara", Language.KHM, time.time()) as (box, accept):
        # ack_wait_s bounds the downlink drain too; the quiet time ends that one early.
        settings = link_settings(
            VESSEL, fresh_mosquitto.host, fresh_mosquitto.port, ack_wait_s=600.0
        )

        async def session(message_seqs: list[int]) -> SessionReport:
            return await run_session(
                settings,
                box,
                signing_key=VESSEL_KEY,
                codebook=codebook,
                shore_verify_key=SHORE_KEY.verify_key,
                message_seqs=message_seqs,
            )

        async with relay_in_process(tmp_path / "relay", fresh_mosquitto), asyncio.timeout(90):
            first = await session([accept("សួស្តី")])
            assert first.acknowledged == (1,)
            assert first.downlink_applied >= 1  # the receipt came down: it must be acked

            second = await session([])  # nothing to say but "we got your downlink"
            assert second.published == (2,)
            assert second.unacknowledged_after == 0
            (open_batch,) = box.unacknowledged_batches()
            assert (open_batch.batch_seq, open_batch.ack_only) == (2, True)

            third = await session([accept("ខ្ញុំសុខសប្បាយ")])
            assert third.published == (3,)  # the ack-only batch is not sent again
            assert third.unacknowledged_after == 0
            assert box.unacknowledged_batches() == ()


async def test_a_kept_session_is_not_subscribed_again_and_still_gets_its_downlink(
    fresh_mosquitto: MosquittoBroker,
) -> None:
    """The first session subscribes to the downlink; the next finds its session kept by
    the broker (CONNACK's flag), sends no SUBSCRIBE (about 170 bytes a session over the
    satellite) and still receives what the shore published meanwhile; after the broker
    lost every session (restart without persistence) the vessel subscribes again."""
    broker = fresh_mosquitto
    settings = link_settings(41, broker.host, broker.port)

    async def one_session() -> tuple[MqttLink, bytes | None]:
        link = MqttLink(settings)
        await link.connect()
        try:
            async with asyncio.timeout(5):
                got = await link.receive() if waiting else None
        finally:
            await link.close()
        return link, got

    waiting = False
    first, _ = await one_session()
    assert (first.session_present, first.subscribed) == (False, True)
    async with aiomqtt.Client(broker.host, broker.port, identifier="shore-test") as shore:
        await shore.publish(downlink_topic(41), b"queued while away", qos=1)
    waiting = True
    second, got = await one_session()
    assert (second.session_present, second.subscribed) == (True, False)
    assert got == b"queued while away"
    broker.kill()
    broker.start()
    waiting = False
    third, _ = await one_session()
    assert (third.session_present, third.subscribed) == (False, True)
    # a restarted agent does not know the kept session was ever confirmed: once more
    MqttLink._confirmed.clear()
    fourth, _ = await one_session()
    assert (fourth.session_present, fourth.subscribed) == (True, True)
    fifth, _ = await one_session()
    assert (fifth.session_present, fifth.subscribed) == (True, False)


async def test_a_kept_session_without_a_confirmed_subscription_subscribes(
    fresh_mosquitto: MosquittoBroker,
) -> None:
    """The broker keeps a session for the vessel that holds no subscription (its SUBSCRIBE
    was cut before the broker took it): the next session subscribes although the session
    is present, because no SUBACK was seen for it, and receives its downlink."""
    broker = fresh_mosquitto
    settings = link_settings(42, broker.host, broker.port)
    async with make_client(settings, None):
        pass  # CONNECT only: a kept session, no subscription in it
    MqttLink._confirmed.discard((settings.host, settings.port, 42))
    link = MqttLink(settings)
    await link.connect()
    try:
        assert (link.session_present, link.subscribed) == (True, True)
        async with aiomqtt.Client(broker.host, broker.port, identifier="shore-test") as shore:
            await shore.publish(downlink_topic(42), b"after the cut", qos=1)
        async with asyncio.timeout(5):
            assert await link.receive() == b"after the cut"
    finally:
        await link.close()
