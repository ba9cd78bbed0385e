"""The ``vessel-relay`` command: one app, with a sub-command group per part of the system.

Each group's module is imported only when that group runs or shows its help, so
``vessel-relay --help`` and ``--version`` load typer and this file and nothing else, and a
vessel's install (``vessel-relay[ship]``) never imports the shore's libraries. The groups
and the extra each one needs::

    ship     the shipboard agent            vessel-relay[ship]
    shore    the shore relay                vessel-relay[shore]
    union    the union's inbox              vessel-relay[union]
    dict     dictionaries and models        (core)
    inspect  decode a batch file            (core)
    report   verify or co-sign a report     (core; 'report cosign' needs [shore])
    demo     everything on one machine      vessel-relay[demo]

A command whose libraries are not installed stops with one line naming the extra to
install and exit 78 (``EX_CONFIG``: the installation, not the input, is wrong, and trying
again changes nothing; see :mod:`common.exits`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from common.exits import EX_CONFIG, fail

#: Our own top-level packages: a missing module among them is a bug, not a missing extra.
OWN_PACKAGES = frozenset({"common", "protocol", "shipboard", "shore", "vessel_relay"})
#: ``ctx.meta`` key: the group being formatted for help (stubs are enough) or resolved.
_LISTING = "vessel_relay.listing"
_RESOLVED = "vessel_relay.group"


class MissingExtra(Exception):
    """A command needs libraries of an extra that is not installed; says what to install."""

    exit_code = EX_CONFIG

    def __init__(self, group: str, extra: str | None, module: str) -> None:
        if extra is None:
            what = (
                f"vessel-relay {group} needs the Python module {module!r}, part of "
                "vessel-relay's own requirements, which is missing: reinstall vessel-relay"
            )
        else:
            what = (
                f"vessel-relay {group} needs the '{extra}' extra, which is not installed "
                f"here (no Python module {module!r}): pip install 'vessel-relay[{extra}]'"
            )
        super().__init__(what)
        self.group = group
        self.extra = extra
        self.module = module


def _ship() -> typer.Typer:
    from shipboard import cli as ship_cli

    group = typer.Typer(add_completion=False, no_args_is_help=True, help=_BY_NAME["ship"].help)
    ship_cli.register(group)
    return group


def _shore() -> typer.Typer:
    from shore import cli as shore_cli

    group = typer.Typer(add_completion=False, no_args_is_help=True, help=_BY_NAME["shore"].help)
    shore_cli.register(group)
    return group


def _union() -> typer.Typer:
    from shore.union import cli as union_cli

    parent = typer.Typer(add_completion=False)
    union_cli.register(parent)  # mounts its app as 'union' under parent
    return parent.registered_groups[0].typer_instance  # type: ignore[return-value]


def _dict() -> typer.Typer:
    from vessel_relay import dictionary_cli

    return dictionary_cli.app


def _inspect() -> typer.Typer:
    from vessel_relay import inspect_cli

    single = typer.Typer(add_completion=False)
    single.command("inspect")(inspect_cli.inspect)
    return single


def _report() -> typer.Typer:
    from vessel_relay import report_cli

    return report_cli.app


def _demo() -> typer.Typer:
    from vessel_relay import demo

    single = typer.Typer(add_completion=False)
    single.command("demo")(demo.demo)
    return single


@dataclass(frozen=True, slots=True)
class Group:
    """A sub-command (group) of ``vessel-relay``, loaded on first use."""

    name: str
    help: str
    extra: str | None
    load: Callable[[], typer.Typer]


#: In the order ``vessel-relay --help`` lists them. ``help`` is the first line of what the
#: group's own help says (tests/packaging/test_cli.py checks they agree).
GROUPS: tuple[Group, ...] = (
    Group("ship", "The shipboard agent (runs on the vessel).", "ship", _ship),
    Group("shore", "The shore relay.", "shore", _shore),
    Group("dict", "Train and list compression dictionaries and models.", None, _dict),
    Group("inspect", "Decode a batch file and print its header and envelopes.", None, _inspect),
    Group(
        "union",
        "The union's inbox: fetch sealed grievance reports, open them here, answer them.",
        "union",
        _union,
    ),
    Group("report", "Compliance reports: verify them offline.", "shore", _report),
    Group(
        "demo",
        "Run the whole system on this machine: broker, relay, mail sink, agent, crew.",
        "demo",
        _demo,
    ),
)
_BY_NAME = {group.name: group for group in GROUPS}
_loaded: dict[str, Any] = {}


def load_group(name: str) -> Any:
    """The click command of group ``name``, built once per process."""
    if name not in _loaded:
        command = typer.main.get_command(_BY_NAME[name].load())
        command.name = name
        _plain_help(command)
        _loaded[name] = command
    return _loaded[name]


def full_command() -> Any:
    """The whole command tree with every group loaded (for documentation and tests)."""
    root = typer.main.get_command(app)
    for group in GROUPS:
        root.commands[group.name] = load_group(group.name)  # type: ignore[attr-defined]
    return root


def _plain_help(command: Any) -> None:
    """Help and errors as plain text, like the root's (and like git's, pip's, apt's): rich's
    boxes cost 0.2 s of imports on every call, and plain text reads well in any pipe."""
    command.rich_markup_mode = None
    for child in getattr(command, "commands", {}).values():
        _plain_help(child)


class LazyRoot(TyperGroup):
    """The root group: lists every group by name and help, imports one only to run it."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for group in GROUPS:  # placeholders keep the order and typo suggestions
            self.commands.setdefault(group.name, TyperCommand(group.name, help=group.help))

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:  # type: ignore[override]
        if cmd_name not in _BY_NAME or ctx.meta.get(_LISTING):
            return super().get_command(ctx, cmd_name)
        return load_group(cmd_name)

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:  # type: ignore[override]
        ctx.meta[_LISTING] = True
        try:
            super().format_help(ctx, formatter)
        finally:
            ctx.meta.pop(_LISTING, None)

    def resolve_command(self, ctx: typer.Context, args: list[str]) -> Any:  # type: ignore[override]
        if args:
            ctx.meta[_RESOLVED] = args[0]
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            module = (exc.name or "").split(".")[0]
            group = _BY_NAME.get(str(ctx.meta.get(_RESOLVED)))
            if not module or module in OWN_PACKAGES or group is None:
                raise
            raise fail(MissingExtra(group.name, group.extra, module)) from exc


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vessel-relay {installed_version()}")
        raise typer.Exit()


def installed_version() -> str:
    """The installed distribution's version (``0+unknown`` when run from an uninstalled tree)."""
    from common.build import installed_version as version

    return version()


app = typer.Typer(
    name="vessel-relay",
    help="Messages and grievance reports from fishing vessels over satellite links.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=LazyRoot,
)


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Messages and grievance reports from fishing vessels over satellite links."""


def main() -> None:
    """Entry point of the console script."""
    app()
