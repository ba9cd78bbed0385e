"""Serving the dashboard: open the relay's store, build the app, run uvicorn until stopped."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from common.serving import AsgiServer
from shore.config import RelayConfig
from shore.dashboard.app import DashboardSettings, create_app
from shore.dashboard.auth import read_operators
from shore.relay import open_store

log = logging.getLogger(__name__)


def operators_path(config: RelayConfig) -> Path:
    """Where the operators file lives (the relay's data directory)."""
    return config.path("operators.txt")


async def serve_dashboard(
    config: RelayConfig,
    host: str,
    port: int,
    stopping: asyncio.Event,
    *,
    silent_after_s: float,
    https_only: bool = False,
) -> None:
    """Serve the dashboard on ``host:port`` until ``stopping`` is set."""
    settings = DashboardSettings(
        operators=read_operators(operators_path(config)),
        silent_after_s=silent_after_s,
        https_only=https_only,
    )
    store = await open_store(config)
    try:
        app = create_app(store, settings)
        await AsgiServer(app, host, port, name="dashboard").serve_until(stopping)
    finally:
        await store.close()
