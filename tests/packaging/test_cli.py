"""The root command behaves like its neighbours: --version, --help without loading any
part of the system, choices refused with exit 2, and a missing extra named in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from typing import get_args

import pytest
import typer
from typer.testing import CliRunner

from vessel_relay import cli
from vessel_relay.cli import GROUPS, MissingExtra, app, load_group
from vessel_relay.demo import BrokerKind, LinkName
from vessel_relay.link_emulator import PROFILES

runner = CliRunner()


def test_version_prints_the_installed_version() -> None:
    """'vessel-relay --version' prints the distribution's version and exits 0."""
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"vessel-relay {version('vessel-relay')}\n"


def test_root_help_loads_no_part_of_the_system() -> None:
    """'vessel-relay --help' lists every group with its help, and imports none of them
    (which is what keeps it fast: see the README for the measured time)."""
    code = (
        "import sys, json\n"
        "sys.argv = ['vessel-relay', '--help']\n"
        "from vessel_relay.cli import main\n"
        "try:\n    main()\n"
        "except SystemExit:\n    pass\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('protocol', 'shipboard', 'shore', 'rich', 'pydantic', 'nacl'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    *help_lines, loaded = result.stdout.strip().splitlines()
    assert json.loads(loaded) == []
    text = "\n".join(help_lines)
    for group in GROUPS:
        assert f"  {group.name} " in text
    assert "--version" in text


@pytest.mark.parametrize("group", GROUPS, ids=lambda group: group.name)
def test_each_group_says_in_its_own_help_what_the_root_lists(group: cli.Group) -> None:
    """The root's one-line help for a group is the start of that group's own help."""
    command = load_group(group.name)
    assert (command.help or "").split("\n")[0].strip() == group.help


@pytest.mark.parametrize(
    "args",
    [
        ["ship", "run", "--log-format", "xml"],
        ["ship", "run", "--log-level", "loud"],
        ["shore", "run", "--log-format", "yaml"],
        ["shore", "run", "--log-level", "verbose"],
        ["shore", "dashboard", "--log-level", "trace"],
        ["demo", "--broker", "rabbitmq"],
        ["demo", "--link", "carrier-pigeon"],
        ["dict", "train", "x.txt", "-o", "x.dict", "--codec", "gzip"],
    ],
)
def test_an_option_outside_its_choices_is_a_usage_error(args: list[str]) -> None:
    """An operator's typo in an enumerated option stops at once with exit 2 and the list
    of accepted values, before any file is read or anything started."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "is not one of" in result.output


def test_log_level_is_case_insensitive() -> None:
    """--log-level INFO is accepted like info (the config error that follows is exit 78)."""
    result = runner.invoke(
        app, ["ship", "run", "-c", "/nonexistent/ship.toml", "--log-level", "INFO"]
    )
    assert result.exit_code == 78, result.output


def test_the_demo_choices_are_the_emulator_profiles() -> None:
    """--link offers exactly the link emulator's profiles, --broker the three kinds."""
    assert set(get_args(LinkName)) == set(PROFILES)
    assert get_args(BrokerKind) == ("auto", "mosquitto", "amqtt")


def _failing_group(module: str) -> typer.Typer:
    group = typer.Typer(add_completion=False)

    @group.command("run")
    def run() -> None:
        """Needs a library that is not installed."""
        raise ModuleNotFoundError(f"No module named {module!r}", name=module)

    @group.command("other")
    def other() -> None:
        """A second command, so that this is a group."""

    return group


@pytest.mark.parametrize(
    ("group", "extra"), [("shore", "shore"), ("ship", "ship"), ("demo", "demo")]
)
def test_a_missing_extra_is_named_with_the_command_to_install_it(
    monkeypatch: pytest.MonkeyPatch, group: str, extra: str
) -> None:
    """A vessel install asked to run a shore command: one line naming the extra and the
    pip command, exit 78 (the installation is wrong; retrying changes nothing)."""
    entry = next(g for g in GROUPS if g.name == group)
    monkeypatch.setitem(
        cli._BY_NAME,
        group,
        cli.Group(group, entry.help, entry.extra, lambda: _failing_group("weasyprint")),
    )
    monkeypatch.setattr(cli, "_loaded", {})
    result = runner.invoke(app, [group, "run"])
    assert result.exit_code == 78, result.output
    assert result.stderr.strip() == (
        f"error: vessel-relay {group} needs the '{extra}' extra, which is not installed here "
        f"(no Python module 'weasyprint'): pip install 'vessel-relay[{extra}]'"
    )


def test_a_missing_module_of_our_own_is_a_bug_not_an_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A module of vessel-relay itself missing is not blamed on an extra: it propagates."""
    entry = GROUPS[0]
    monkeypatch.setitem(
        cli._BY_NAME,
        entry.name,
        cli.Group(entry.name, entry.help, entry.extra, lambda: _failing_group("shipboard.gone")),
    )
    monkeypatch.setattr(cli, "_loaded", {})
    result = runner.invoke(app, [entry.name, "run"])
    assert isinstance(result.exception, ModuleNotFoundError)


def test_missing_extra_exit_code_is_ex_config() -> None:
    """The error class carries exit 78 for common.exits."""
    assert MissingExtra("shore", "shore", "asyncpg").exit_code == 78
