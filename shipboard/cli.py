"""Commands of the shipboard side, mounted under ``vessel-relay ship``."""

from __future__ import annotations

import typer

from vessel_relay.keyfiles import keygen_command


def register(app: typer.Typer) -> None:
    """Add this side's commands to its group."""
    app.command("keygen")(keygen_command("vessel", "ship"))
