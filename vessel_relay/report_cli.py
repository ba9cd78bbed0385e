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
        typer.Option(
            help="The shore's public key (hex or file); without it, signatures are not checked."
        ),
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


@app.command("cosign")
def cosign_head(
    heads_file: Annotated[
        Path, typer.Argument(help="Signed heads from 'shore log heads --json' (or one head).")
    ],
    key: Annotated[Path, typer.Option(help="The witness's signing key file (0600, hex).")],
    witness: Annotated[str, typer.Option(help="The witness's name, e.g. 'ILO Bangkok'.")],
    shore_key: Annotated[str, typer.Option(help="The shore's public key (hex or file).")],
    size: Annotated[
        int | None, typer.Option(help="Co-sign the head of this size (default: the latest).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Where to write the co-signature.")] = Path("."),
) -> None:
    """Co-sign a tree head as a witness (a union or labour office), after checking it.

    Checks the shore's signature on the head and that no two heads in the file give one
    size two roots; then writes a co-signature file for 'shore log add-cosignature'.

    Example: vessel-relay report cosign heads.json --key ilo.key --witness ILO
    --shore-key shore.pub
    """
    import json

    from protocol.compliance import SignedTreeHead, cosign
    from protocol.errors import ProtocolError
    from protocol.signing import SigningKey, VerifyKey
    from shore.reports import cosignature_file
    from vessel_relay.keyfiles import KeyFileError, read_secret

    try:
        obj: object = json.loads(heads_file.read_text(encoding="utf-8"))
        entries = obj if isinstance(obj, list) else [obj]
        signed = [SignedTreeHead.from_obj(entry) for entry in entries]
        witness_key = SigningKey.from_seed(read_secret(key))
    except OSError as exc:
        typer.echo(f"error: cannot read {exc.filename}: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    except (ValueError, ReportInvalid, KeyFileError) as exc:
        typer.echo(f"error: {heads_file} holds no signed tree heads: {exc}", err=True)
        raise typer.Exit(1) from None
    chosen = [h for h in signed if size is None or h.head.tree_size == size]
    if not chosen:
        typer.echo(f"error: no head of size {size} in {heads_file}", err=True)
        raise typer.Exit(1)
    roots: dict[int, bytes] = {}
    for other in signed:
        if roots.setdefault(other.head.tree_size, other.head.root) != other.head.root:
            typer.echo(
                f"REFUSED: two heads of size {other.head.tree_size} with different roots "
                "(the log showed two histories); do not co-sign",
                err=True,
            )
            raise typer.Exit(1)
    head = chosen[-1]
    try:
        VerifyKey(_key(shore_key, "--shore-key")).verify(
            head.head.signed_bytes(), head.shore_signature, what="tree head"
        )
    except ProtocolError:
        typer.echo(
            f"REFUSED: the head of size {head.head.tree_size} is not signed by that shore key",
            err=True,
        )
        raise typer.Exit(1) from None
    cosignature = cosign(head, witness, witness_key)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"cosignature-{head.head.tree_size}-{head.head.timestamp_minutes}.json"
    path.write_bytes(cosignature_file(head, cosignature))
    typer.echo(f"co-signed the head of size {head.head.tree_size} as {witness!r}: {path}")
    typer.echo("Give it to the relay operator: vessel-relay shore log add-cosignature FILE")
