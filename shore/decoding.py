"""Decoding the vessels' batches, in the relay's own process or in worker processes.

Decoding a batch (signature, zstd, the context models' arithmetic decoding) is a third of
the relay's CPU per message and pure Python: in the relay's process it holds the event
loop, and with it ingest, delivery and the downlink. :class:`ProcessDecoder` does it in
worker processes (``[relay] decode_processes``), so a relay worker uses a second core;
:class:`InlineDecoder` does it in place (tests, one-core machines: ``decode_processes =
0``).

Both give the same answers: a :class:`~protocol.batch.Batch`, or the
:class:`~protocol.errors.ProtocolError` the batch earns (its reason and message cross the
process boundary as :class:`DecodeRefused`). A decoding process that dies (the kernel's
OOM killer, a crash in a C library) takes its batches with it: the pool is started again
and each of them is decoded once more; a batch that kills the new pool too is the
batch's fault, and :class:`DecoderCrashed` says so (ingest refuses it as
``UNPROCESSABLE``, so one hostile batch cannot stop the relay for every vessel).
A ``MemoryError`` in the worker is the relay's failure as it is in place: re-raised, the
batch left unacknowledged for the vessel to resend.

A worker ends with its relay: it watches its parent and exits when the parent is gone
(a relay SIGKILLed by an operator or the OOM killer leaves no decoding process behind).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Protocol

from protocol.batch import Batch, Direction, decode_batch
from protocol.codebook import Codebook
from protocol.errors import Reason, RemoteProtocolError
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.signing import VerifyKey

__all__ = [
    "BatchDecoder",
    "DecodeFailed",
    "DecodeRefused",
    "DecoderCrashed",
    "InlineDecoder",
    "ProcessDecoder",
    "started_or_in_place",
]

log = logging.getLogger(__name__)


class BatchDecoder(Protocol):
    """Decodes an uplink batch whose signature ``verify_key`` checked."""

    async def decode(self, data: bytes, verify_key: VerifyKey) -> Batch: ...

    async def aclose(self) -> None: ...


class DecodeRefused(RemoteProtocolError):
    """The batch is refused for ``reason`` (a ``ProtocolError`` raised in a worker)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class DecodeFailed(Exception):
    """Decoding failed in a worker with something other than a ``ProtocolError`` (a bug:
    the worker's exception type and message are in the text)."""


class DecoderCrashed(Exception):
    """The decoding processes died twice on this batch: refuse it, it is the batch's doing."""


class InlineDecoder:
    """Decodes in the calling process (holding the event loop while it does)."""

    def __init__(self, codebook: Codebook, limits: Limits = DEFAULT_LIMITS) -> None:
        self.codebook = codebook
        self.limits = limits

    async def decode(self, data: bytes, verify_key: VerifyKey) -> Batch:
        return decode_batch(
            data,
            codebook=self.codebook,
            verify_key=verify_key,
            direction=Direction.UPLINK,
            limits=self.limits,
        )

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class _Refused:
    reason: int
    message: str


@dataclass(frozen=True, slots=True)
class _Failed:
    kind: str
    message: str
    out_of_memory: bool = False


# The worker process's state: its codebook and limits, set once by _start_worker.
_worker_codebook: Codebook | None = None
_worker_limits: Limits = DEFAULT_LIMITS


#: How often a worker checks that its relay still lives.
PARENT_CHECK_S = 1.0


def _start_worker(load_codebook: Callable[[], Codebook], limits: Limits, parent_pid: int) -> None:
    global _worker_codebook, _worker_limits
    _exit_with(parent_pid)
    _worker_codebook = load_codebook()
    _worker_limits = limits


def _exit_with(parent_pid: int) -> None:
    """End this process when ``parent_pid`` is no longer its parent (the relay died and the
    worker was handed to init): the pool's queues hold both ends of their pipes, so the
    worker would otherwise wait on them for ever."""
    if os.getppid() != parent_pid:
        os._exit(0)

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(PARENT_CHECK_S):
            if os.getppid() != parent_pid:
                os._exit(0)

    threading.Thread(target=watch, name="relay-watch", daemon=True).start()


def _ready() -> bool:
    return _worker_codebook is not None


def _decode_in_worker(data: bytes, verify_key: VerifyKey) -> Batch | _Refused | _Failed:
    codebook = _worker_codebook
    if codebook is None:  # pragma: no cover - the initializer always ran
        return _Failed("RuntimeError", "decoding worker has no codebook")
    try:
        return decode_batch(
            data,
            codebook=codebook,
            verify_key=verify_key,
            direction=Direction.UPLINK,
            limits=_worker_limits,
        )
    except RemoteProtocolError as exc:
        return _Refused(int(exc.reason), exc.message)
    except MemoryError:
        return _Failed("MemoryError", "out of memory decoding the batch", out_of_memory=True)
    except Exception as exc:  # a bug; the parent refuses the batch as UNPROCESSABLE
        return _Failed(type(exc).__name__, str(exc)[:500])


class ProcessDecoder:
    """Decodes in ``processes`` worker processes (started with ``spawn``: the relay has
    threads, and fork would copy their locks), each loading its codebook once with
    ``load_codebook`` (a module-level function: it is sent to the worker by name).

    :meth:`start` starts the workers ahead of the first batch (otherwise the first batch
    waits for them); :meth:`aclose` stops them.
    """

    def __init__(
        self,
        load_codebook: Callable[[], Codebook],
        *,
        processes: int = 1,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        if processes < 1:
            raise ValueError("a ProcessDecoder needs at least one process")
        self.processes = processes
        self._load_codebook = load_codebook
        self.limits = limits
        self._pool = self._new_pool()
        self.restarts = 0

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self._load_codebook, self.limits, os.getpid()),
        )

    async def start(self) -> None:
        """Start every worker and wait until each has its codebook."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._pool, _ready) for _ in range(self.processes))
        )

    def _restart(self, broken: ProcessPoolExecutor) -> None:
        if self._pool is broken:  # one restart for every batch the crash took with it
            self.restarts += 1
            log.error(
                "a batch-decoding process died; starting the pool again (restart %d)",
                self.restarts,
            )
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()

    async def decode(self, data: bytes, verify_key: VerifyKey) -> Batch:
        loop = asyncio.get_running_loop()
        key = verify_key
        pool = self._pool
        try:
            result = await loop.run_in_executor(pool, _decode_in_worker, data, key)
        except BrokenProcessPool:
            self._restart(pool)
            pool = self._pool
            try:
                result = await loop.run_in_executor(pool, _decode_in_worker, data, key)
            except BrokenProcessPool as exc:
                self._restart(pool)
                raise DecoderCrashed(
                    "the batch-decoding process died twice while decoding this batch"
                ) from exc
        if isinstance(result, _Refused):
            raise DecodeRefused(Reason(result.reason), result.message)
        if isinstance(result, _Failed):
            if result.out_of_memory:
                raise MemoryError(result.message)
            raise DecodeFailed(f"{result.kind}: {result.message}")
        return result

    async def aclose(self) -> None:
        pool = self._pool
        await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


async def started_or_in_place(decoder: ProcessDecoder, codebook: Codebook) -> BatchDecoder:
    """``decoder`` started, or, when its processes cannot start (a host without the
    resources, a main script that cannot be imported again by ``spawn``), an
    :class:`InlineDecoder` on ``codebook``, with the reason in the log: the relay runs
    slower rather than not at all."""
    try:
        await decoder.start()
    except (BrokenProcessPool, OSError) as exc:
        log.error(
            "the batch-decoding process did not start (%s: %s); decoding in the relay's own "
            "process ([relay] decode_processes = 0 says so without this message)",
            type(exc).__name__,
            exc,
        )
        await decoder.aclose()
        return InlineDecoder(codebook, decoder.limits)
    return decoder
