"""SBD fragments ashore survive a relay restart: the store contract of held fragments, on
SQLite and on a real PostgreSQL 15, and the MO webhook over it.

A vessel on its SBD fallback sends a batch as several MO messages (each costs credits).
Fragments already received are held in the relay's store until the batch is whole and
kept, so a relay restarted mid-message takes the rest and the vessel resends nothing;
duplicates change nothing; what is held is bounded per vessel and expires.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import httpx
import pytest

from protocol.fragments import (
    DEFAULT_REASSEMBLY_LIMITS,
    SBD_MO_BYTES,
    LinkFragment,
    PayloadKind,
    Reassembled,
    ReassemblyLimits,
    fragment,
    read_link_message,
)
from shore.sbd import MO_WEBHOOK_PATH, MoWebhook, SbdConfig, StoredReassembly
from shore.sbd_auth import ProviderJwt
from shore.store import RegistryError, RelayStore, SqliteStore, VesselInfo
from shore.store.errors import StoreUnavailable
from shore.store.postgres import PostgresStore
from shore.store.sbd_units import FragmentOutcome, FragmentTaken, HeldFragments
from tests.kit.sbd_world import IMEI, provider_key
from tests.shore.store_fixtures import T0, VESSEL_KEY, PostgresServer
from tests.shore.test_sbd_webhook_auth import form_for, rockblock_jwt
from tests.shore.test_store import postgres  # noqa: F401 (the session's PostgreSQL server)

INFO = VesselInfo("Sea Star 7", "TH", "TH-0042", "Andaman Fishing Co", (1,))
NOTHING_HELD = HeldFragments(0, 0, 0)

Opener = Callable[[], Awaitable[RelayStore]]


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens the same database again each call (a relay process starting), per backend."""
    if request.param == "sqlite":
        path = tmp_path / "relay.db"

        async def sqlite() -> RelayStore:
            return await SqliteStore.open(path)

        return sqlite
    server: PostgresServer = request.getfixturevalue("postgres")
    dsn = server.create_database()

    async def postgres_store() -> RelayStore:
        return await PostgresStore.open(dsn)

    return postgres_store


@pytest.fixture
async def store(open_store: Opener) -> AsyncIterator[RelayStore]:
    """A fresh store of each backend."""
    opened = await open_store()
    try:
        yield opened
    finally:
        await opened.close()


def batch_fragments(seed: int, size: int = 1200) -> tuple[bytes, list[LinkFragment]]:
    """A payload of ``size`` bytes and its MO fragments, as the vessel's link cuts them."""
    payload = random.Random(seed).randbytes(size)
    pieces = [read_link_message(m) for m in fragment(payload, PayloadKind.BATCH, SBD_MO_BYTES)]
    assert all(isinstance(p, LinkFragment) for p in pieces)
    return payload, [p for p in pieces if isinstance(p, LinkFragment)]


async def test_fragments_held_before_a_restart_complete_the_payload_after_it(
    open_store: Opener,
) -> None:
    """Two of a batch's four fragments reach the relay, which restarts; the other two
    (and a repeat of one sent before) arrive after: the batch is whole exactly once, and
    once kept nothing of it is held."""
    payload, pieces = batch_fragments(1)
    assert len(pieces) == 4
    first = await open_store()
    try:
        vessel = await first.add_vessel(INFO, VESSEL_KEY.verify_key.key, T0)
        for piece in pieces[:2]:
            taken = await first.take_sbd_fragment(vessel, piece, T0, DEFAULT_REASSEMBLY_LIMITS)
            assert taken.outcome is FragmentOutcome.HELD
    finally:
        await first.close()
    second = await open_store()
    try:
        assert await second.sbd_fragments_held(vessel) == HeldFragments(
            1, 2, sum(len(p.piece) for p in pieces[:2])
        )
        taken = [
            await second.take_sbd_fragment(vessel, piece, T0 + 60, DEFAULT_REASSEMBLY_LIMITS)
            for piece in (pieces[3], pieces[0], pieces[2])
        ]
        assert [t.outcome for t in taken] == [
            FragmentOutcome.HELD,
            FragmentOutcome.DUPLICATE,
            FragmentOutcome.COMPLETE,
        ]
        whole = taken[-1].whole
        assert whole is not None
        assert (whole.kind, whole.payload, whole.fragments) == (PayloadKind.BATCH, payload, 4)
        await second.sbd_payload_kept(vessel, whole)
        assert await second.sbd_fragments_held(vessel) == NOTHING_HELD
    finally:
        await second.close()


async def test_a_whole_payload_not_yet_kept_is_given_again(store: RelayStore) -> None:
    """The ingest fails after the last fragment (its store is down): the provider's retry
    of that fragment gives the whole batch again, until it is kept."""
    vessel = await store.add_vessel(INFO, VESSEL_KEY.verify_key.key, T0)
    _, pieces = batch_fragments(2, 500)
    limits = DEFAULT_REASSEMBLY_LIMITS
    assert (await store.take_sbd_fragment(vessel, pieces[0], T0, limits)).whole is None
    first = await store.take_sbd_fragment(vessel, pieces[1], T0, limits)
    again = await store.take_sbd_fragment(vessel, pieces[1], T0 + 30, limits)
    assert first.whole is not None
    assert again.whole == first.whole
    assert again.outcome is FragmentOutcome.COMPLETE
    await store.sbd_payload_kept(vessel, first.whole)
    assert await store.sbd_fragments_held(vessel) == NOTHING_HELD


async def test_a_contradicting_or_garbled_payload_is_dropped(store: RelayStore) -> None:
    """A fragment that repeats an index with other bytes drops the payload in progress;
    pieces that do not hash to their tag are dropped when the last arrives. Nothing of
    either stays held."""
    vessel = await store.add_vessel(INFO, VESSEL_KEY.verify_key.key, T0)
    limits = DEFAULT_REASSEMBLY_LIMITS
    _, pieces = batch_fragments(3, 900)
    await store.take_sbd_fragment(vessel, pieces[0], T0, limits)
    other = LinkFragment(pieces[0].kind, pieces[0].tag, 0, pieces[0].count, b"x" * 10)
    taken = await store.take_sbd_fragment(vessel, other, T0, limits)
    assert taken.outcome is FragmentOutcome.CONTRADICTED
    assert await store.sbd_fragments_held(vessel) == NOTHING_HELD
    garbled = [LinkFragment(p.kind, p.tag, p.index, p.count, p.piece[::-1]) for p in pieces]
    outcomes = [(await store.take_sbd_fragment(vessel, p, T0, limits)).outcome for p in garbled]
    assert outcomes[-1] is FragmentOutcome.GARBLED
    assert await store.sbd_fragments_held(vessel) == NOTHING_HELD


async def test_payloads_in_progress_expire(store: RelayStore) -> None:
    """A batch whose other fragments never came is purged once older than the limit, at
    the next fragment the relay takes (of any vessel); a younger one stays."""
    limits = ReassemblyLimits(max_age_s=3600.0)
    vessel = await store.add_vessel(INFO, VESSEL_KEY.verify_key.key, T0)
    other = await store.add_vessel(
        VesselInfo("Ocean 8", "TH", "TH-0043", "Another Owner", (1,)), b"k" * 32, T0
    )
    _, old = batch_fragments(4)
    _, young = batch_fragments(5)
    _, others = batch_fragments(6)
    await store.take_sbd_fragment(vessel, old[0], T0, limits)
    await store.take_sbd_fragment(vessel, young[0], T0 + 1800, limits)
    taken = await store.take_sbd_fragment(other, others[0], T0 + 3601, limits)
    assert taken.expired == 1
    held = await store.sbd_fragments_held(vessel)
    assert (held.partials, held.pieces) == (1, 1)
    assert (await store.take_sbd_fragment(vessel, young[1], T0 + 3602, limits)).outcome is (
        FragmentOutcome.HELD
    )


async def test_what_a_vessel_holds_is_capped(store: RelayStore) -> None:
    """Over the per-vessel cap of payloads in progress (or of bytes), the oldest is
    dropped first; another vessel's are not touched."""
    limits = ReassemblyLimits(max_partial=2, max_held_bytes=2_000)
    vessel = await store.add_vessel(INFO, VESSEL_KEY.verify_key.key, T0)
    other = await store.add_vessel(
        VesselInfo("Ocean 8", "TH", "TH-0043", "Another Owner", (1,)), b"k" * 32, T0
    )
    batches = [batch_fragments(seed) for seed in (10, 11, 12)]
    await store.take_sbd_fragment(other, batches[0][1][0], T0, limits)
    for second, (_, pieces) in enumerate(batches):
        await store.take_sbd_fragment(vessel, pieces[0], T0 + second, limits)
    held = await store.sbd_fragments_held(vessel)
    assert held.partials == 2
    # the oldest (batch 10) went: its next fragment starts it anew, evicting batch 11
    taken = await store.take_sbd_fragment(vessel, batches[0][1][1], T0 + 10, limits)
    assert (taken.outcome, taken.evicted) == (FragmentOutcome.HELD, 1)
    assert (await store.sbd_fragments_held(other)).partials == 1
    # bytes (1,000 at most): the other vessel's batch 10 piece (333 B) and three pieces of
    # a long batch go over, so batch 10 is dropped; a piece of a fourth batch drops the
    # long one
    by_bytes = ReassemblyLimits(max_held_bytes=1_000)
    _, long = batch_fragments(13, 3000)
    for piece in long[:3]:
        await store.take_sbd_fragment(other, piece, T0 + 30, by_bytes)
    _, short = batch_fragments(14)
    assert (await store.sbd_fragments_held(other)) == HeldFragments(1, 3, 999)
    taken = await store.take_sbd_fragment(other, short[0], T0 + 31, by_bytes)
    assert taken.evicted == 1
    assert await store.sbd_fragments_held(other) == HeldFragments(1, 1, len(short[0].piece))


async def test_a_vessel_that_is_not_registered_holds_nothing(store: RelayStore) -> None:
    """Fragments in the name of an unknown vessel are refused by the store."""
    _, pieces = batch_fragments(7)
    with pytest.raises(RegistryError):
        await store.take_sbd_fragment(999, pieces[0], T0, DEFAULT_REASSEMBLY_LIMITS)


class Kept:
    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    async def __call__(self, vessel_id: int, kind: PayloadKind, payload: bytes) -> None:
        self.payloads.append(payload)


async def post(hook: MoWebhook, form: Mapping[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=hook.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://relay") as client:
        return await client.post(MO_WEBHOOK_PATH, data=dict(form))


def signed_form(message: bytes, momsn: int) -> dict[str, str]:
    form = form_for(message, momsn=momsn)
    form["JWT"] = rockblock_jwt(form, iat=T0)
    return form


async def test_the_relays_webhook_takes_the_rest_after_a_restart(open_store: Opener) -> None:
    """The provider posts three of a batch's five MO messages; the relay restarts (store
    closed, opened again, a new webhook); the provider posts the other two, in another
    order, and one of the first three again: the ingest gets the batch once, and nothing
    of it stays held."""
    payload = random.Random(8).randbytes(1500)
    messages = fragment(payload, PayloadKind.BATCH, SBD_MO_BYTES)
    assert len(messages) == 5
    kept = Kept()

    def webhook(store: RelayStore, vessel: int) -> MoWebhook:
        config = SbdConfig({IMEI: vessel}, provider_jwt=ProviderJwt(provider_key().public_key()))
        return MoWebhook(config, kept, clock=lambda: T0 + 5, reassembly=StoredReassembly(store))

    first = await open_store()
    try:
        vessel = await first.add_vessel(INFO, VESSEL_KEY.verify_key.key, T0)
        hook = webhook(first, vessel)
        for momsn in (0, 1, 2):
            assert (await post(hook, signed_form(messages[momsn], momsn))).status_code == 200
    finally:
        await first.close()
    second = await open_store()
    try:
        hook = webhook(second, vessel)
        for momsn in (4, 1, 3):
            assert (await post(hook, signed_form(messages[momsn], momsn))).status_code == 200
        assert kept.payloads == [payload]
        assert await second.sbd_fragments_held(vessel) == NOTHING_HELD
        assert hook.statistics.payloads == 1
    finally:
        await second.close()


class DownStore:
    """A store whose database is down."""

    def __init__(self) -> None:
        self.asked = 0

    async def take_sbd_fragment(
        self, vessel_id: int, fragment: LinkFragment, now: float, limits: ReassemblyLimits
    ) -> FragmentTaken:
        self.asked += 1
        raise StoreUnavailable("PostgreSQL failed (test); nothing was changed")

    async def sbd_payload_kept(self, vessel_id: int, whole: Reassembled) -> None:
        raise AssertionError("nothing is whole")


async def test_the_webhook_answers_503_when_the_store_fails() -> None:
    """The store is down when a fragment comes: the webhook answers 503 (the provider
    retries) and hands nothing on; a message that is not one of ours is refused (200,
    a retry would not help) before the store is asked."""
    messages = fragment(random.Random(9).randbytes(600), PayloadKind.BATCH, SBD_MO_BYTES)
    kept, down = Kept(), DownStore()
    config = SbdConfig({IMEI: 1}, provider_jwt=ProviderJwt(provider_key().public_key()))
    hook = MoWebhook(config, kept, clock=lambda: T0, reassembly=StoredReassembly(down))
    response = await post(hook, signed_form(messages[0], 0))
    assert response.status_code == 503
    assert down.asked == 1
    response = await post(hook, signed_form(bytes([0x7F, 1]), 1))
    assert (response.status_code, response.text) == (200, "refused")
    assert down.asked == 1
    assert kept.payloads == []


async def test_two_relay_workers_taking_one_batchs_fragments_make_it_whole_once(
    open_store: Opener,
) -> None:
    """Two relay workers (two stores on one database) take a batch's six fragments at
    once, each fragment twice: each piece is held once, the batch is whole for the
    worker that took its last piece (and again for a repeat taken after that), always
    the batch itself, and once kept nothing of it is held."""
    first, second = await open_store(), await open_store()
    try:
        vessel = await first.add_vessel(INFO, VESSEL_KEY.verify_key.key, T0)
        payload, pieces = batch_fragments(15, 1900)
        assert len(pieces) == 6
        limits = DEFAULT_REASSEMBLY_LIMITS
        taken = await asyncio.gather(
            *(
                worker.take_sbd_fragment(vessel, piece, T0, limits)
                for piece in pieces
                for worker in (first, second)
            )
        )
        wholes = [t.whole for t in taken if t.whole is not None]
        assert wholes
        assert all(w.payload == payload for w in wholes)
        held = await first.sbd_fragments_held(vessel)
        assert (held.partials, held.pieces) == (1, 6)
        await second.sbd_payload_kept(vessel, wholes[0])
        assert await first.sbd_fragments_held(vessel) == NOTHING_HELD
    finally:
        await first.close()
        await second.close()
