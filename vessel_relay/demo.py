"""``vessel-relay demo``: placeholder until the end-to-end demo lands (see issue 6)."""

from __future__ import annotations

import typer


def demo() -> None:
    """Run the demo."""
    typer.echo("not yet")
