"""Decoding batches in worker processes (``shore.decoding``): the same answers as in place,
a dead worker costs nothing, and a batch that kills the workers is refused, not retried
forever; ingest with several payloads at once keeps each vessel's order."""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import aiomqtt
import pytest

from common.codebooks import default_codebook
from protocol.batch import decode_batch
from protocol.codebook import Codebook
from protocol.errors import Reason
from shore.decoding import (
    PARENT_CHECK_S,
    DecoderCrashed,
    DecodeRefused,
    InlineDecoder,
    ProcessDecoder,
    started_or_in_place,
)
from shore.ingest import Ingestor
from shore.store import IngestOutcome, SqliteStore
from tests.shore.store_fixtures import OTHER_KEY, T0, VESSEL_KEY, uplink
from tests.shore.test_hostile_batches import (
    NEIGHBOUR,
    VESSEL,
    _contact,
    _FakeClient,
    _message,
    _open_store,
    year_10136_batch,
)

CODEBOOK = default_codebook()
VESSEL_VERIFY = VESSEL_KEY.verify_key


def dies_on_start() -> Codebook:
    """A codebook loader that kills its worker process as it starts (module level, so a
    spawned worker can import it by name)."""
    os._exit(3)


@pytest.fixture
async def decoder() -> AsyncIterator[ProcessDecoder]:
    """A started one-process decoder with the shipped codebook."""
    made = ProcessDecoder(default_codebook, processes=1)
    await made.start()
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A real SQLite store with the two vessels registered."""
    opened = await _open_store(tmp_path / "relay.db")
    try:
        yield opened
    finally:
        await opened.close()


async def test_worker_decodes_what_the_relay_decodes(decoder: ProcessDecoder) -> None:
    """A vessel's batch of Burmese messages decodes in the worker to the very batch the
    relay's own process makes of it."""
    data = uplink(VESSEL, 1, [_contact(), *(_message(seq) for seq in range(1, 6))])
    in_place = decode_batch(data, codebook=CODEBOOK, verify_key=VESSEL_VERIFY)
    assert await decoder.decode(data, VESSEL_VERIFY) == in_place
    assert await InlineDecoder(CODEBOOK).decode(data, VESSEL_VERIFY) == in_place


async def test_worker_refuses_with_the_same_reason(decoder: ProcessDecoder) -> None:
    """The tester's authentic batch from the year 10136 is refused in the worker with the
    reason and message the relay's own process gives it."""
    data = year_10136_batch()
    with pytest.raises(DecodeRefused) as in_worker:
        await decoder.decode(data, VESSEL_VERIFY)
    try:
        await InlineDecoder(CODEBOOK).decode(data, VESSEL_VERIFY)
    except Exception as exc:  # the protocol's own error type
        in_place = exc
    else:  # pragma: no cover - the batch must be refused
        pytest.fail("the year-10136 batch decoded in place")
    assert in_worker.value.reason is getattr(in_place, "reason", None)
    assert in_worker.value.message == getattr(in_place, "message", None)


async def test_a_killed_worker_is_replaced_and_the_batch_decoded(
    decoder: ProcessDecoder,
) -> None:
    """The kernel kills the decoding process (SIGKILL, as the OOM killer does): the next
    batch starts a new pool and is decoded; nothing is refused for it."""
    pool = decoder._pool
    pids = list(pool._processes or {})  # the worker's pid
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    data = uplink(VESSEL, 2, [_message(7)])
    for _ in range(50):  # until the pool has noticed (its manager thread reaps the worker)
        if pool._broken:
            break
        await asyncio.sleep(0.05)
    batch = await decoder.decode(data, VESSEL_VERIFY)
    assert [getattr(e, "message_seq", None) for e in batch.envelopes] == [7]
    assert decoder.restarts == 1


async def test_a_batch_that_kills_the_workers_twice_is_refused() -> None:
    """Workers that die on every start (standing in for a batch that kills them each
    time): the second death is the batch's, and ``DecoderCrashed`` says so at once
    instead of the relay retrying it forever."""
    decoder = ProcessDecoder(dies_on_start, processes=1)
    try:
        with pytest.raises(DecoderCrashed, match="died twice"):
            await decoder.decode(uplink(VESSEL, 1, [_message(1)]), VESSEL_VERIFY)
    finally:
        await decoder.aclose()


async def test_ingest_refuses_a_batch_the_decoder_cannot_survive(store: SqliteStore) -> None:
    """Ingest through decoding workers that die on everything: the authentic batch is
    refused for good as UNPROCESSABLE (the vessel hears so) and the relay goes on."""
    decoder = ProcessDecoder(dies_on_start, processes=1)
    try:
        ingestor = Ingestor(store, CODEBOOK, clock=lambda: T0 + 60, decoder=decoder)
        outcome = await ingestor.handle(f"vr/{VESSEL}/u", uplink(VESSEL, 1, [_message(1)]))
    finally:
        await decoder.aclose()
    assert outcome is IngestOutcome.REJECTED
    assert ingestor.stats.unprocessable == 1
    [entry] = await store.quarantined()
    assert entry.reason is Reason.UNPROCESSABLE


async def test_concurrent_ingest_keeps_each_vessels_order(
    store: SqliteStore, decoder: ProcessDecoder
) -> None:
    """Two vessels' batches arrive interleaved, one of them the tester's hostile batch;
    ingest takes eight at once through a decoding worker: every good batch is stored,
    the hostile one refused, and each vessel's batches were stored in the order they
    came (the store sees vessel 7's batch 2 after its batch 1, and so on)."""
    order: list[tuple[int, int]] = []
    real = store.ingest_batch

    async def ingest_batch(batch, data, now):  # type: ignore[no-untyped-def]
        order.append((batch.vessel_id, batch.batch_seq))
        return await real(batch, data, now)

    store.ingest_batch = ingest_batch  # type: ignore[method-assign]
    payloads: list[tuple[str, bytes]] = [
        (f"vr/{VESSEL}/u", uplink(VESSEL, 1, [_contact(), _message(1)])),
        (f"vr/{NEIGHBOUR}/u", uplink(NEIGHBOUR, 1, [_contact(), _message(1)], key=OTHER_KEY)),
        (f"vr/{VESSEL}/u", year_10136_batch(batch_seq=2)),
    ]
    for seq in range(3, 12):
        payloads.append((f"vr/{VESSEL}/u", uplink(VESSEL, seq, [_message(seq)])))
        payloads.append(
            (f"vr/{NEIGHBOUR}/u", uplink(NEIGHBOUR, seq, [_message(seq)], key=OTHER_KEY))
        )
    ingestor = Ingestor(store, CODEBOOK, clock=lambda: T0 + 60, decoder=decoder, concurrency=8)
    stopping = asyncio.Event()
    async with asyncio.timeout(60):
        await ingestor.run(cast(aiomqtt.Client, _FakeClient(payloads, stopping)), stopping)
    assert ingestor.stats.batches_stored == 20
    assert ingestor.stats.batches_rejected == 1
    for vessel in (VESSEL, NEIGHBOUR):
        seqs = [seq for v, seq in order if v == vessel]
        assert seqs == sorted(seqs)
        stored = [m.message_seq for m in await store.messages(vessel)]
        assert stored == [1, *range(3, 12)]


PARENT = """
import asyncio, sys
from common.codebooks import default_codebook
from shore.decoding import ProcessDecoder

async def main() -> None:
    decoder = ProcessDecoder(default_codebook, processes=1)
    await decoder.start()
    print(*decoder._pool._processes, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_a_killed_relay_leaves_no_decoding_process(tmp_path: Path) -> None:
    """The relay is SIGKILLed (the OOM killer, ``kill -9``): its decoding process sees its
    parent gone and exits within seconds instead of living on as an orphan."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert parent.stdout is not None
        [worker] = [int(pid) for pid in parent.stdout.readline().split()]
        watch = os.pidfd_open(worker)
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
    try:
        readable, _, _ = select.select([watch], [], [], 10 * PARENT_CHECK_S)
        assert readable, f"decoding process {worker} still runs after its relay was killed"
    finally:
        os.close(watch)


async def test_a_relay_whose_decoder_cannot_start_decodes_in_place(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The decoding process dies as it starts: the relay says so in its log and decodes in
    its own process, so vessels' batches are still taken."""
    with caplog.at_level(logging.ERROR, logger="shore.decoding"):
        decoder = await started_or_in_place(ProcessDecoder(dies_on_start), CODEBOOK)
    assert isinstance(decoder, InlineDecoder)
    assert "did not start" in caplog.text
    batch = await decoder.decode(uplink(VESSEL, 1, [_message(1)]), VESSEL_VERIFY)
    assert [getattr(e, "message_seq", None) for e in batch.envelopes] == [1]
