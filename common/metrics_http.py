"""Serve a Prometheus registry on ``/metrics`` (agent and relay share this)."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CollectorRegistry, start_http_server

log = logging.getLogger(__name__)


async def serve_registry(
    registry: CollectorRegistry, host: str, port: int, stopping: asyncio.Event
) -> None:
    """Serve ``/metrics`` on ``host:port`` (a thread of prometheus_client) until ``stopping``."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    log.info("metrics on http://%s:%d/metrics", host, port)
    try:
        await stopping.wait()
    finally:
        server.shutdown()
        server.server_close()
        await asyncio.to_thread(thread.join, 5.0)
