"""Run one prepared demo vessel's agent as its own process (the end-to-end tests kill it).

    python -m vessel_relay.demo.agent_main DATA_DIR

``DATA_DIR`` is what :func:`vessel_relay.demo.setup.prepare_vessel` wrote (ship.toml and
tuning.json). SIGTERM or SIGINT drains for a few seconds, as ``vessel-relay ship run`` does.
Unlike ``ship run``, it accepts the demo's published keys (``allow_demo_keys``): tests hand
it configs made with :mod:`vessel_relay.demo.defaults`. It is never a way to run a vessel.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from shipboard.agent import run_agent
from shipboard.config import load_config
from vessel_relay.demo.setup import Tuning


async def main(data_dir: Path, grace_s: float) -> None:
    """Run the agent until SIGTERM/SIGINT."""
    config = load_config(data_dir / "ship.toml", allow_demo_keys=True)
    tuning = Tuning.load(data_dir / "tuning.json")
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    agent = asyncio.create_task(
        run_agent(config, stopping=stopping, link_options=tuning.link_options(config))
    )
    await asyncio.wait({agent, asyncio.create_task(stopping.wait())}, return_when="FIRST_COMPLETED")
    if not agent.done():
        try:
            async with asyncio.timeout(grace_s):
                await asyncio.shield(agent)
        except TimeoutError:
            agent.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await agent


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--grace-s", type=float, default=5.0)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(main(arguments.data_dir, arguments.grace_s))
