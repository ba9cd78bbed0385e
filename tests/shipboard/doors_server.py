"""The agent's crew app (API and crew page) under uvicorn on loopback, as its own process.

Used by ``test_doors_memory``: that test measures this process's resident memory while it
sends it huge bodies. Run as ``python -m tests.shipboard.doors_server DATA_DIR PORT``; it
prints ``ready`` once it listens and serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from common.codebooks import default_codebook
from protocol.languages import Language
from shipboard.http_api import create_app, serve_http
from shipboard.intake import Intake
from shipboard.outbox import Outbox
from vessel_relay.demo.defaults import demo_ship_config


async def serve(data_dir: Path, port: int) -> None:
    config = demo_ship_config(data_dir)
    outbox = Outbox.open(config.database_path, config.vessel.vessel_id)
    try:
        intake = Intake(config, outbox, default_codebook())
        intake.register.add(
            name="Aung Min", document="SB-1", nationality="MM", language=Language.MYA, now=0.0
        )
        stopping, ready = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stopping.set)
        task = asyncio.create_task(
            serve_http(create_app(intake), "127.0.0.1", port, stopping, ready)
        )
        await ready.wait()
        print("ready", flush=True)
        await task
    finally:
        outbox.close()


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1]), int(sys.argv[2])))
