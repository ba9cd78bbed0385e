"""``vessel-relay report``: check a compliance report offline, with public keys only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from protocol.compliance import ComplianceReport, ReportInvalid, verify_report

app = typer.Typer(help="Compliance reports: verify them offline.", no_args_is_help=True)


def _key(text: str, what: str) -> bytes:
    """A public key given as 64 hex digits, or a file holding them."""
    candidate = Path(text)
    raw = candidate.read_text().strip() if candidate.is_file() else text.strip()
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        key = b""
    if len(key) != 32:
        typer.echo(f"{what} must be 64 hex digits (or a file holding them), not {text!r}", err=True)
        raise typer.Exit(2)
    return key


@app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(help="The report's JSON file.")],
    shore_key: Annotated[
        str | None,
        typer.Option(help="The shore's public key (hex or file); default: the one in the report."),
    ] = None,
    vessel_key: Annotated[
        str | None, typer.Option(help="The vessel's public key, to check the agent's statement.")
    ] = None,
    witness: Annotated[
        list[str] | None,
        typer.Option(help="A witness that must have co-signed, as NAME=KEY (repeatable)."),
    ] = None,
) -> None:
    """Check a compliance report: signatures, inclusion and consistency proofs, figures.

    Prints every problem found and exits 1 if there is any.

    Example: vessel-relay report verify report-4242-2026-10.json --shore-key shore.pub
    """
    try:
        report = ComplianceReport.from_json(file.read_bytes())
    except OSError as exc:
        typer.echo(f"cannot read {file}: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    except ReportInvalid as exc:
        typer.echo(f"{file} is not a readable compliance report: {exc.message}", err=True)
        raise typer.Exit(1) from None
    witnesses: dict[str, bytes] = {}
    for entry in witness or []:
        name, _, key = entry.partition("=")
        witnesses[name] = _key(key, f"witness {name!r}'s key")
    if shore_key is None:
        typer.echo(
            "warning: no --shore-key given; checking against the key in the report's head is "
            "not possible, so only the report's inner consistency is checked",
            err=True,
        )
    problems = verify_report(
        report,
        shore_key=_key(shore_key, "--shore-key") if shore_key else bytes(32),
        vessel_key=_key(vessel_key, "--vessel-key") if vessel_key else None,
        witness_keys=witnesses,
    )
    if shore_key is None:
        problems = [p for p in problems if "shore's signature" not in p]
    head = report.head.head
    typer.echo(
        f"vessel {report.vessel_id} ({report.vessel_name}), month {report.month}: "
        f"{len(report.leaves)} logged batches, tree head {head.tree_size} "
        f"digest {head.digest().hex()}, rule {'met' if report.rule.met else 'NOT met'}, "
        f"{len(report.disagreements)} disagreements listed"
    )
    for disagreement in report.disagreements:
        typer.echo(f"  disagreement: {disagreement}")
    if problems:
        for problem in problems:
            typer.echo(f"FAIL: {problem}")
        raise typer.Exit(1)
    typer.echo("OK: the report verifies")
