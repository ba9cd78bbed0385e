"""The link emulator between a vessel and a real Mosquitto, driven with aiomqtt.

Times are measured loosely: a delay must be at least what the profile says, never at most.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiomqtt
import pytest

from tests.kit.mosquitto import MosquittoBroker
from tests.kit.mqtt import next_message, persistent_client, unique_identifier, unique_topic
from vessel_relay.link_emulator import (
    FLAKY_SATELLITE,
    PROFILES,
    SATELLITE,
    TCP_CLOSE_BYTES,
    TCP_IP_HEADER_BYTES,
    TCP_OPEN_BYTES,
    UNLIMITED,
    CaptureHook,
    Direction,
    LinkEmulator,
    LinkProfile,
    LinkState,
    Outage,
    SessionEnd,
)

TIMER_SLACK_S = 0.001
"""asyncio may fire a timer up to its clock resolution early; allow for it, no more."""

PROTOCOLS = pytest.mark.parametrize(
    "protocol",
    [aiomqtt.ProtocolVersion.V5, aiomqtt.ProtocolVersion.V311],
    ids=["mqtt5", "mqtt311"],
)


def emulator(
    broker: MosquittoBroker,
    profile: LinkProfile = UNLIMITED,
    *,
    capture: CaptureHook | None = None,
    seed: int | None = None,
) -> LinkEmulator:
    """A link emulator in front of `broker`, listening on a port of its choosing."""
    return LinkEmulator(
        "127.0.0.1", 0, broker.host, broker.port, profile, capture=capture, seed=seed
    )


def elapsed_since(start: float) -> float:
    return asyncio.get_running_loop().time() - start


def now() -> float:
    return asyncio.get_running_loop().time()


def emulator_tasks() -> list[asyncio.Task[object]]:
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "").startswith("LinkEmulator.")
    ]


@pytest.mark.broker
@PROTOCOLS
async def test_batch_up_and_receipt_down_through_the_link(
    mosquitto: MosquittoBroker, protocol: aiomqtt.ProtocolVersion
) -> None:
    """A vessel publishes a batch at QoS 1 through the link and the shore receives it; the
    shore queues a receipt while the vessel is offline, and the vessel's persistent session
    (fixed identifier, no clean start) hands it over when the vessel comes back."""
    topic = unique_topic()
    identifier = unique_identifier()
    async with (
        emulator(mosquitto) as link,
        aiomqtt.Client(mosquitto.host, mosquitto.port) as shore,
    ):
        await shore.subscribe(f"{topic}/batches", qos=1)
        async with persistent_client(link.host, link.port, identifier, protocol=protocol) as vessel:
            await vessel.subscribe(f"{topic}/receipts", qos=1)
            await vessel.publish(f"{topic}/batches", b"batch 1", qos=1)
            batch = await next_message(shore)
            assert batch.payload == b"batch 1"
            assert batch.qos == 1

        await link.wait_for_open_sessions(0)
        await shore.publish(f"{topic}/receipts", b"receipt for batch 1", qos=1)

        async with persistent_client(link.host, link.port, identifier, protocol=protocol) as vessel:
            receipt = await next_message(vessel)
            assert receipt.payload == b"receipt for batch 1"
        await link.wait_for_open_sessions(0)

    sessions = link.statistics().sessions
    assert [s.end for s in sessions] == [SessionEnd.CLOSED, SessionEnd.CLOSED]


@pytest.mark.broker
async def test_bytes_are_counted_as_the_provider_bills(fresh_mosquitto: MosquittoBroker) -> None:
    """One satellite session as FIELD-NOTES measured it with tcpdump: MQTT 5 connect with a
    persistent session and a short identifier, a 2 KB batch up, a 200 B receipt down,
    disconnect. CONNECT is 22 bytes, CONNACK 11, PUBACK 4; the IP estimate adds 52 bytes a
    segment and the TCP open and close, and lands near the measured 3,300 bytes."""
    segments: list[tuple[int, Direction, bytes]] = []
    topic = unique_topic()
    async with (
        emulator(fresh_mosquitto, capture=lambda *s: segments.append(s)) as link,
        aiomqtt.Client(fresh_mosquitto.host, fresh_mosquitto.port) as shore,
    ):
        await shore.subscribe(f"{topic}/batches", qos=1)
        async with persistent_client(link.host, link.port, "v1") as vessel:
            await vessel.subscribe(f"{topic}/receipts", qos=1)
            await vessel.publish(f"{topic}/batches", b"B" * 2000, qos=1)
            await next_message(shore)
            await shore.publish(f"{topic}/receipts", b"R" * 200, qos=1)
            await next_message(vessel)
        await link.wait_for_open_sessions(0)

    up = [s for _, d, s in segments if d is Direction.UP]
    down = [s for _, d, s in segments if d is Direction.DOWN]
    assert (up[0][0], len(up[0])) == (0x10, 22)  # CONNECT
    assert (down[0][0], len(down[0])) == (0x20, 11)  # CONNACK
    pubacks = [s for s in up + down if s[0] == 0x40]
    assert [len(s) for s in pubacks] == [4, 4]  # one each way
    assert b"B" * 1000 in b"".join(up)  # the capture hook sees what crossed

    (session,) = link.statistics().sessions
    assert session.payload_bytes_up == sum(map(len, up))
    assert session.payload_bytes_down == sum(map(len, down))
    assert session.segments_up == len(up) >= 3  # the 2 KB batch needs two 1,448-byte segments
    assert session.ip_bytes_estimate == (
        session.payload_bytes_up
        + session.payload_bytes_down
        + TCP_IP_HEADER_BYTES * (len(up) + len(down))
        + TCP_OPEN_BYTES
        + TCP_CLOSE_BYTES
    )
    assert 2_800 <= session.ip_bytes_estimate <= 3_400
    assert link.statistics().billed_bytes(minimum_session_bytes=5_000) == 5_000


@pytest.mark.broker
async def test_latency_delays_every_exchange(mosquitto: MosquittoBroker) -> None:
    """On a link with 0.25 s one-way latency (plus jitter), connecting and a QoS 1 publish
    each take at least a round trip; switching the profile at run time takes effect."""
    latency_s = 0.25
    slow = LinkProfile(latency_s=latency_s, jitter_s=0.05)
    async with emulator(mosquitto, slow, seed=7) as link:
        vessel = persistent_client(link.host, link.port, unique_identifier())
        start = now()
        async with vessel:
            assert elapsed_since(start) >= 2 * latency_s - TIMER_SLACK_S  # CONNECT, CONNACK
            start = now()
            await vessel.publish(unique_topic(), b"batch", qos=1)
            assert elapsed_since(start) >= 2 * latency_s - TIMER_SLACK_S  # PUBLISH, PUBACK

            link.set_profile(LinkProfile(latency_s=2 * latency_s))
            start = now()
            await vessel.publish(unique_topic(), b"batch", qos=1)
            assert elapsed_since(start) >= 4 * latency_s - TIMER_SLACK_S


@pytest.mark.broker
@pytest.mark.parametrize(
    ("bandwidth_bps", "batch_bytes"),
    [(2_400, 600), (22_000, 4_000)],
    ids=["2400bps", "22kbps"],
)
async def test_bandwidth_cap_shapes_a_batch(
    mosquitto: MosquittoBroker, bandwidth_bps: int, batch_bytes: int
) -> None:
    """A batch of N bytes on a link of R bit/s takes at least N * 8 / R seconds to be
    acknowledged (aiomqtt's publish timeout raised, as FIELD-NOTES advise)."""
    profile = LinkProfile(bandwidth_bps=bandwidth_bps)
    async with (
        emulator(mosquitto, profile) as link,
        persistent_client(link.host, link.port, unique_identifier()) as vessel,
    ):
        before = link.statistics().payload_bytes_up
        start = now()
        await vessel.publish(unique_topic(), b"B" * batch_bytes, qos=1, timeout=60)
        assert elapsed_since(start) >= batch_bytes * 8 / bandwidth_bps - TIMER_SLACK_S
        assert link.statistics().payload_bytes_up - before > batch_bytes


@pytest.mark.broker
@PROTOCOLS
async def test_cut_fails_the_vessel_at_once_and_its_session_keeps_the_receipts(
    mosquitto: MosquittoBroker, protocol: aiomqtt.ProtocolVersion
) -> None:
    """The satellite drops mid-session: aiomqtt raises at once (long before its 60 s
    keep-alive could notice), the broker sees the vessel gone too, and a receipt the
    shore sends meanwhile waits in the vessel's persistent session until it reconnects."""
    topic = unique_topic()
    identifier = unique_identifier()
    async with (
        emulator(mosquitto) as link,
        aiomqtt.Client(mosquitto.host, mosquitto.port) as shore,
    ):
        async with persistent_client(
            link.host, link.port, identifier, protocol=protocol, keepalive=60
        ) as vessel:
            await vessel.subscribe(f"{topic}/receipts", qos=1)
            link.cut()
            with pytest.raises(aiomqtt.MqttError):
                await next_message(vessel, timeout_s=5)

        statistics = link.statistics()
        assert statistics.cuts == 1
        assert [s.end for s in statistics.sessions] == [SessionEnd.CUT]
        assert statistics.state is LinkState.FORWARDING  # a cut is a moment, not a state

        await shore.publish(f"{topic}/receipts", b"receipt while away", qos=1)
        async with persistent_client(link.host, link.port, identifier, protocol=protocol) as vessel:
            receipt = await next_message(vessel)
            assert receipt.payload == b"receipt while away"


@pytest.mark.broker
async def test_blackhole_is_noticed_only_by_keep_alive(mosquitto: MosquittoBroker) -> None:
    """The link goes silent without closing anything: the vessel notices only when its
    keep-alive (1 s here) goes unanswered; the emulator's session stays open through the
    blackhole and closes once the link returns and the goodbyes get through."""
    async with emulator(mosquitto) as link:
        async with persistent_client(
            link.host, link.port, unique_identifier(), keepalive=1, timeout=2
        ) as vessel:
            await vessel.subscribe(unique_topic(), qos=1)
            link.blackhole()
            with pytest.raises(aiomqtt.MqttError):
                await next_message(vessel, timeout_s=15)
            assert link.statistics().open_sessions == 1
            assert link.statistics().state is LinkState.BLACKHOLE

        link.restore()
        async with asyncio.timeout(10):
            await link.wait_for_open_sessions(0)
        assert link.statistics().cuts == 0


@pytest.mark.broker
async def test_stall_holds_bytes_and_then_delivers_them(mosquitto: MosquittoBroker) -> None:
    """A stall of 0.5 s holds a batch in flight; the link then recovers by itself and the
    publish completes on the same session, no sooner than the stall ends."""
    async with emulator(mosquitto) as link:
        async with persistent_client(link.host, link.port, unique_identifier()) as vessel:
            start = now()
            link.stall(0.5)
            await vessel.publish(unique_topic(), b"batch", qos=1)
            assert elapsed_since(start) >= 0.5 - TIMER_SLACK_S
            assert link.statistics().state is LinkState.FORWARDING
        await link.wait_for_open_sessions(0)
    assert [s.end for s in link.statistics().sessions] == [SessionEnd.CLOSED]


@pytest.mark.broker
async def test_down_refuses_sessions_until_restored(mosquitto: MosquittoBroker) -> None:
    """While the link is down, the vessel's connection attempts fail and nothing crosses;
    after restore() the vessel connects again. (aiomqtt notices a connection closed before
    its CONNACK only when its timeout runs out, 2 s here.)"""
    async with emulator(mosquitto) as link:
        link.down()
        with pytest.raises(aiomqtt.MqttError):
            async with persistent_client(link.host, link.port, unique_identifier(), timeout=2):
                pass
        link.restore()
        async with persistent_client(link.host, link.port, unique_identifier()) as vessel:
            await vessel.publish(unique_topic(), b"batch", qos=1)
        await link.wait_for_open_sessions(0)

    refused, served = link.statistics().sessions
    assert refused.end is SessionEnd.REFUSED
    assert refused.ip_bytes_estimate == 0
    assert served.end is SessionEnd.CLOSED


@pytest.mark.broker
async def test_scheduled_outage_cuts_and_then_lets_the_vessel_back(
    mosquitto: MosquittoBroker,
) -> None:
    """An outage of 1 s starting 0.1 s into the profile cuts the connected vessel; its
    reconnection loop is refused until the outage ends, then gets through."""
    outage = Outage(start_s=0.1, duration_s=1.0)
    async with emulator(mosquitto) as link:
        identifier = unique_identifier()
        async with persistent_client(link.host, link.port, identifier) as vessel:
            await vessel.subscribe(unique_topic(), qos=1)
            start = now()
            link.set_profile(LinkProfile(outages=(outage,)))
            with pytest.raises(aiomqtt.MqttError):
                await next_message(vessel, timeout_s=5)

        async with asyncio.timeout(20):
            while True:  # the vessel's reconnection loop
                try:
                    async with persistent_client(link.host, link.port, identifier, timeout=2):
                        break
                except aiomqtt.MqttError:
                    await asyncio.sleep(0.05)
            await link.wait_for_open_sessions(0)
        assert elapsed_since(start) >= outage.start_s + outage.duration_s - TIMER_SLACK_S

    statistics = link.statistics()
    assert statistics.cuts == 1
    assert statistics.sessions[0].end is SessionEnd.CUT
    assert statistics.sessions[-1].end is SessionEnd.CLOSED


@pytest.mark.broker
async def test_random_connection_loss(mosquitto: MosquittoBroker) -> None:
    """With losses every 0.05 s on average, a connected vessel soon loses its session, and
    the loss is counted as such, not as a cut."""
    async with emulator(mosquitto, seed=3) as link:
        async with persistent_client(link.host, link.port, unique_identifier()) as vessel:
            await vessel.subscribe(unique_topic(), qos=1)
            link.set_profile(LinkProfile(mean_s_between_losses=0.05))
            with pytest.raises(aiomqtt.MqttError):
                await next_message(vessel, timeout_s=10)
        link.set_profile(UNLIMITED)

    statistics = link.statistics()
    assert statistics.losses >= 1
    assert statistics.cuts == 0
    assert statistics.sessions[0].end is SessionEnd.LOST


@pytest.mark.broker
async def test_emulator_shuts_down_cleanly_with_sessions_open(mosquitto: MosquittoBroker) -> None:
    """Leaving `async with` while a vessel is connected closes its session on both sides,
    and leaves none of the emulator's tasks behind."""
    release = asyncio.Event()
    running: asyncio.Future[LinkEmulator] = asyncio.get_running_loop().create_future()

    async def run_link() -> None:
        async with emulator(mosquitto) as link:
            running.set_result(link)
            await release.wait()

    async with asyncio.TaskGroup() as group:
        link_task = group.create_task(run_link())
        link = await running
        async with persistent_client(link.host, link.port, unique_identifier()) as vessel:
            await vessel.subscribe(unique_topic(), qos=1)
            release.set()
            async with asyncio.timeout(5):
                await link_task
            with pytest.raises(aiomqtt.MqttError):
                await next_message(vessel, timeout_s=5)

    assert emulator_tasks() == []
    assert [s.end for s in link.statistics().sessions] == [SessionEnd.SHUTDOWN]
    with pytest.raises(RuntimeError, match="not running"):
        link.stall(1)


async def test_cancelling_the_emulator_reraises_and_leaves_no_tasks() -> None:
    """Cancelling the task that runs the emulator propagates CancelledError out of it, and
    every task the emulator started is gone afterwards."""
    started = asyncio.Event()

    async def run() -> None:
        async with LinkEmulator("127.0.0.1", 0, "127.0.0.1", 9, UNLIMITED) as link:
            link.stall(60)
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(run())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert emulator_tasks() == []


@pytest.mark.parametrize(
    "bad",
    [
        lambda: LinkProfile(latency_s=-1),
        lambda: LinkProfile(bandwidth_bps=0),
        lambda: LinkProfile(mean_s_between_losses=float("nan")),
        lambda: LinkProfile(mss_bytes=0),
        lambda: Outage(start_s=0, duration_s=0),
        lambda: Outage(start_s=1, duration_s=1, state=LinkState.FORWARDING),
    ],
)
def test_impossible_profiles_fail_when_built(bad: Callable[[], object]) -> None:
    """A profile or outage that cannot exist raises ValueError before it exists."""
    with pytest.raises(ValueError, match="must"):
        bad()


@pytest.mark.broker
@pytest.mark.parametrize(
    ("persistence", "hard", "survivors"),
    [
        (False, True, []),
        (True, True, []),
        (True, False, [b"receipt 0", b"receipt 1", b"receipt 2"]),
    ],
    ids=["no-persistence-killed", "persistence-killed-before-autosave", "persistence-sigterm"],
)
async def test_broker_is_not_a_record(
    make_mosquitto: Callable[..., MosquittoBroker],
    persistence: bool,
    hard: bool,
    survivors: list[bytes],
) -> None:
    """Receipts queued for an offline vessel's persistent session are lost when the broker
    is killed, with persistence off, and with persistence on but before its next snapshot
    (autosave every 1,800 s); only a graceful stop, which snapshots on the way out, keeps
    them. Hence our own application receipts (FIELD-NOTES)."""
    broker = make_mosquitto(persistence=persistence, autosave_interval_s=1800)
    topic = unique_topic()
    identifier = unique_identifier()
    async with persistent_client(broker.host, broker.port, identifier) as vessel:
        await vessel.subscribe(topic, qos=1)
    async with aiomqtt.Client(broker.host, broker.port) as shore:
        for n in range(3):
            await shore.publish(topic, f"receipt {n}".encode(), qos=1)

    broker.restart(hard=hard)

    received: list[bytes] = []
    async with persistent_client(broker.host, broker.port, identifier) as vessel:
        await vessel.subscribe(topic, qos=1)  # again: a lost session lost this too
        async with aiomqtt.Client(broker.host, broker.port) as shore:
            await shore.publish(topic, b"marker", qos=1)
        while not received or received[-1] != b"marker":
            message = await next_message(vessel)
            assert isinstance(message.payload, bytes)
            received.append(message.payload)
    assert received == [*survivors, b"marker"]


@pytest.mark.broker
async def test_satellite_profile_delays_and_caps_a_batch(mosquitto: MosquittoBroker) -> None:
    """The demo's "satellite" profile (600-1,500 ms one way, 22 kbit/s): connecting takes
    at least a 1.2 s round trip, and a 4 KB batch at least that plus its time on the wire."""
    profile = PROFILES["satellite"]
    assert profile is SATELLITE
    assert (profile.latency_s, profile.latency_s + profile.jitter_s) == (0.6, 1.5)
    assert profile.bandwidth_bps is not None
    assert profile.mean_s_between_losses is None
    batch = b"B" * 4_000
    async with emulator(mosquitto, profile, seed=11) as link:
        start = now()
        async with persistent_client(link.host, link.port, unique_identifier()) as vessel:
            assert elapsed_since(start) >= 2 * profile.latency_s - TIMER_SLACK_S
            start = now()
            await vessel.publish(unique_topic(), batch, qos=1, timeout=60)
            wire_s = len(batch) * 8 / profile.bandwidth_bps
            assert elapsed_since(start) >= 2 * profile.latency_s + wire_s - TIMER_SLACK_S
        await link.wait_for_open_sessions(0)
    statistics = link.statistics()
    assert statistics.payload_bytes_up > len(batch)
    assert statistics.losses == statistics.cuts == 0


@pytest.mark.broker
async def test_flaky_satellite_drops_the_vessel_and_its_session_keeps_the_receipt(
    mosquitto: MosquittoBroker,
) -> None:
    """The "flaky-satellite" profile is the satellite profile plus random connection losses
    (every 20 s on average): a connected vessel is dropped (counted as a loss, not a cut),
    and a receipt the shore sent meanwhile waits in its persistent session."""
    profile = PROFILES["flaky-satellite"]
    assert profile is FLAKY_SATELLITE
    assert (profile.latency_s, profile.jitter_s, profile.bandwidth_bps) == (
        SATELLITE.latency_s,
        SATELLITE.jitter_s,
        SATELLITE.bandwidth_bps,
    )
    assert profile.mean_s_between_losses is not None
    topic = unique_topic()
    identifier = unique_identifier()
    async with (
        # Seed 9: the first loss comes ~12 s after the link starts, once the vessel has
        # connected and subscribed (at most 6 s); the wait below allows for any seed.
        emulator(mosquitto, profile, seed=9) as link,
        aiomqtt.Client(mosquitto.host, mosquitto.port) as shore,
    ):
        async with persistent_client(link.host, link.port, identifier) as vessel:
            await vessel.subscribe(f"{topic}/receipts", qos=1, timeout=60)
            with pytest.raises(aiomqtt.MqttError):  # the loss ends the session
                await next_message(vessel, timeout_s=10 * profile.mean_s_between_losses)
        assert link.statistics().losses >= 1
        await shore.publish(f"{topic}/receipts", b"receipt", qos=1)
        link.set_profile(SATELLITE)  # no more losses: the reconnection must get through
        async with persistent_client(link.host, link.port, identifier) as vessel:
            receipt = await next_message(vessel, timeout_s=30)
            assert receipt.payload == b"receipt"
    statistics = link.statistics()
    assert statistics.sessions[0].end is SessionEnd.LOST
    assert statistics.cuts == 0


@pytest.mark.broker
async def test_fast_profile_is_a_plain_counting_proxy(mosquitto: MosquittoBroker) -> None:
    """The "fast" profile (the demo's default) adds no delay, cap or loss: a batch goes up,
    its PUBACK comes back, and the bytes are counted as on any link."""
    profile = PROFILES["fast"]
    assert profile == UNLIMITED
    topic = unique_topic()
    async with (
        emulator(mosquitto, profile) as link,
        aiomqtt.Client(mosquitto.host, mosquitto.port) as shore,
    ):
        await shore.subscribe(topic, qos=1)
        async with persistent_client(link.host, link.port, unique_identifier()) as vessel:
            await vessel.publish(topic, b"B" * 2_000, qos=1)
            assert (await next_message(shore)).payload == b"B" * 2_000
        await link.wait_for_open_sessions(0)
    (session,) = link.statistics().sessions
    assert session.end is SessionEnd.CLOSED
    assert session.payload_bytes_up > 2_000
    assert session.payload_bytes_down > 0


def test_time_compressed_profile_runs_every_clock_faster() -> None:
    """Compressing a link by C divides its delays, loss interval and outage schedule by C
    and multiplies its bandwidth by C; segment size (what is billed) stays."""
    profile = LinkProfile(
        latency_s=0.6,
        jitter_s=0.9,
        bandwidth_bps=22_000,
        mean_s_between_losses=3_600.0,
        outages=(Outage(start_s=7_200.0, duration_s=1_800.0, state=LinkState.BLACKHOLE),),
        mss_bytes=1_000,
    )
    fast = profile.time_compressed(1_200)
    assert fast.latency_s == pytest.approx(0.0005)
    assert fast.jitter_s == pytest.approx(0.00075)
    assert fast.bandwidth_bps == pytest.approx(26_400_000)
    assert fast.mean_s_between_losses == pytest.approx(3.0)
    assert fast.outages == (Outage(start_s=6.0, duration_s=1.5, state=LinkState.BLACKHOLE),)
    assert fast.mss_bytes == 1_000
    assert UNLIMITED.time_compressed(50) == UNLIMITED
    assert profile.time_compressed(1) == profile


@pytest.mark.parametrize("factor", [0.5, 0, -3, float("inf"), float("nan")])
def test_time_compression_below_one_is_refused(factor: float) -> None:
    """A link cannot be slowed down by "compression", nor compressed infinitely."""
    with pytest.raises(ValueError, match="compression factor must be"):
        SATELLITE.time_compressed(factor)


@pytest.mark.broker
async def test_time_compressed_satellite_carries_a_batch_faster_and_counts_the_same(
    mosquitto: MosquittoBroker,
) -> None:
    """The satellite profile compressed 20 times: a 40 KB batch (14.5 s at 22 kbit/s) takes
    at least its compressed time on the wire, far less than its real one, and crosses in
    the same number of full-size segments."""
    factor = 20.0
    profile = SATELLITE.time_compressed(factor)
    assert SATELLITE.bandwidth_bps is not None
    batch = b"B" * 40_000
    real_wire_s = len(batch) * 8 / SATELLITE.bandwidth_bps
    async with emulator(mosquitto, profile, seed=5) as link:
        async with persistent_client(link.host, link.port, unique_identifier()) as vessel:
            start = now()
            await vessel.publish(unique_topic(), batch, qos=1, timeout=60)
            elapsed = elapsed_since(start)
        await link.wait_for_open_sessions(0)
    assert elapsed >= real_wire_s / factor - TIMER_SLACK_S
    assert elapsed < real_wire_s / 2  # the real link could not have done it
    statistics = link.statistics()
    (session,) = statistics.sessions
    assert session.payload_bytes_up > len(batch)
    assert session.segments_up >= -(-len(batch) // profile.mss_bytes)
