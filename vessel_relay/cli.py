"""The ``vessel-relay`` command: one app, with a sub-command group per part of the system."""

from __future__ import annotations

import typer

from vessel_relay import dictionary_cli, inspect_cli

app = typer.Typer(
    name="vessel-relay",
    help="Messages and grievance reports from fishing vessels over satellite links.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
ship_app = typer.Typer(help="The shipboard agent (runs on the vessel).", no_args_is_help=True)
shore_app = typer.Typer(help="The shore relay.", no_args_is_help=True)

app.add_typer(ship_app, name="ship")
app.add_typer(shore_app, name="shore")
app.add_typer(dictionary_cli.app, name="dict")
app.command("inspect")(inspect_cli.inspect)


def _mount_sides() -> None:
    """Mount each side's own commands (each side owns its CLI module)."""
    from shipboard import cli as ship_cli
    from shore import cli as shore_cli

    ship_cli.register(ship_app)
    shore_cli.register(shore_app)


def _mount_union() -> None:
    """``vessel-relay union``: the union's inbox (runs on the union's machine)."""
    from shore.union import cli as union_cli

    union_cli.register(app)


def _mount_report() -> None:
    """``vessel-relay report verify FILE``: an inspector's offline check."""
    from vessel_relay import report_cli

    app.add_typer(report_cli.app, name="report")


def _mount_demo() -> None:
    from vessel_relay import demo

    app.command("demo")(demo.demo)


_mount_sides()
_mount_union()
_mount_report()
_mount_demo()


def main() -> None:
    """Entry point of the console script."""
    app()
