"""Exit codes of every ``vessel-relay`` command, chosen in one place.

::

    0   done
    1   a runtime failure (broker unreachable, store error, a check that found problems)
    2   a usage error: an option missing, malformed or contradicting another (typer and
        click use 2 for their own option errors; ours do the same)
    78  a configuration error (``EX_CONFIG`` of sysexits.h): a missing, unreadable or
        invalid config file, a bad or unreadable key file, a demo key refused. Nothing
        changes by trying again: a service manager should not restart the command
        (systemd: ``RestartPreventExitStatus=78``).

An error says which code it means by a class attribute ``exit_code`` (the config errors
of ``shipboard``, ``shore`` and the union app, :class:`~common.keyfiles.KeyFileError`,
:class:`UsageError`); everything else is 1. Each CLI module turns an error into an exit
with :func:`fail`, so the rule is not written twice.
"""

from __future__ import annotations

import os

import typer

__all__ = ["EX_CONFIG", "EX_FAILURE", "EX_USAGE", "UsageError", "exit_code", "fail"]

EX_FAILURE = 1
EX_USAGE = 2
EX_CONFIG: int = getattr(os, "EX_CONFIG", 78)


class UsageError(Exception):
    """The command line asks for something impossible; the message says what to write."""

    exit_code = EX_USAGE


def exit_code(error: BaseException) -> int:
    """The exit code for ``error``: its class's ``exit_code``, else 1."""
    code = getattr(type(error), "exit_code", EX_FAILURE)
    return code if isinstance(code, int) and code > 0 else EX_FAILURE


def fail(error: BaseException) -> typer.Exit:
    """Print ``error: MESSAGE`` on stderr and return the exit to raise (``raise fail(exc)``)."""
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(exit_code(error))
