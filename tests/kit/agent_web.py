"""The agent's web server (crew page and crew API) on loopback, for synchronous callers.

Browser tests and the crew-page benchmark drive Chromium through Playwright's synchronous
API, so the agent's asyncio server runs in a thread of its own: :func:`agent_web_server`
starts it on a free port, waits until it listens, and stops it on the way out.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from shipboard.http_api import create_app, serve_http
from shipboard.intake import Intake

from .ports import free_port


@contextmanager
def agent_web_server(intake: Intake, timeout_s: float = 30.0) -> Iterator[str]:
    """Serve ``intake``'s web app on 127.0.0.1 and a free port; its base URL while open."""
    port = free_port()
    loop = asyncio.new_event_loop()
    stopping = asyncio.Event()
    ready = threading.Event()

    async def serve() -> None:
        started = asyncio.Event()
        task = asyncio.create_task(
            serve_http(create_app(intake), "127.0.0.1", port, stopping, started)
        )
        await started.wait()
        ready.set()
        await task

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        if not ready.wait(timeout_s):
            raise RuntimeError(f"the agent's web server did not start within {timeout_s:.0f} s")
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout_s)
        loop.close()
