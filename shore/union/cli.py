"""``vessel-relay union ...``: the union's commands (keys, fetch, list, show, reply, status,
export, verify, alerts, web)."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from common.codebooks import default_codebook
from common.exits import UsageError, fail
from protocol.cases import STAGE_WORDS, format_receipt_code, parse_stage
from protocol.errors import ProtocolError
from protocol.evidence import fingerprint
from protocol.languages import Language
from shore.union.client import RelayClient, RelayUnreachable
from shore.union.inbox import InboxError, UnionInbox, verify_export
from shore.union.keys import UnionSetupError, init_union, load_union

logger = logging.getLogger(__name__)

app = typer.Typer(
    help="The union's inbox: fetch sealed grievance reports, open them here, answer them.",
    no_args_is_help=True,
)

DirOption = Annotated[
    Path, typer.Option("--dir", help="The union's directory (keys, union.toml, union.db).")
]
_ERRORS = (InboxError, UnionSetupError, RelayUnreachable, ProtocolError)


@contextmanager
def _inbox(directory: Path, *, online: bool = True) -> Iterator[UnionInbox]:
    try:
        identity = load_union(directory)
        client = RelayClient(identity) if online else None
        inbox = UnionInbox(identity, default_codebook(), client=client)
        try:
            yield inbox
        finally:
            inbox.close()
            if client is not None:
                client.close()
    except _ERRORS as exc:
        raise fail(exc) from exc


def _when(minutes: int) -> str:
    return datetime.datetime.fromtimestamp(minutes * 60, datetime.UTC).strftime("%Y-%m-%d %H:%M")


@app.command("init")
def init(
    directory: DirOption,
    union_id: Annotated[int, typer.Option("--id", help="The union's id (1-65535).")],
    relay_url: Annotated[str, typer.Option("--relay", help="The relay's union API URL.")],
    name: Annotated[str, typer.Option(help="The union's name.")] = "",
    language: Annotated[
        list[str] | None,
        typer.Option(help="A language the union reads, e.g. tha (repeatable; on the card)."),
    ] = None,
) -> None:
    """Make the union's keys (private halves stay in DIR, 0600), print the public ones and
    write the union's card (DIR/union-card.json) for vessel owners and the relay operator.

    Example: vessel-relay union init --dir ~/union --id 7 --relay https://relay.example.org
    --name "Fishers' Rights Network" --language tha --language mya
    """
    try:
        if not 0 < union_id < 2**16:
            raise UsageError(f"--id must be from 1 to 65535, not {union_id}")
        try:
            languages = tuple(Language.from_code(code) for code in language or ())
        except ValueError as exc:
            raise UsageError(f"--language: {exc}") from exc
        identity = init_union(directory, union_id, name, relay_url, languages)
    except (UsageError, UnionSetupError) as exc:
        raise fail(exc) from exc
    typer.echo(identity.describe())
    typer.echo(f"union card: {identity.card_path} (public keys only: give it to vessel owners)")
    typer.echo(f"private keys are in {directory} (0600); they never leave this machine")


@app.command("card")
def card(
    directory: DirOption,
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="Where to write it (default: DIR).")
    ] = None,
) -> None:
    """Write the union's card again (public keys, fingerprints, relay URL) and print it.

    Example: vessel-relay union card --dir ~/union -o fishers-union-card.json
    """
    try:
        identity = load_union(directory)
        path = identity.write_card(out)
    except (UnionSetupError, OSError) as exc:
        raise fail(exc) from exc
    typer.echo(identity.describe())
    typer.echo(f"union card: {path}")


@app.command("fetch")
def fetch(directory: DirOption) -> None:
    """Fetch sealed reports from the relay and open them here (the grievance lane's blocks
    too: this union's are found by trying its key on each, and reports are put back
    together here); post notes not yet posted.

    Example: vessel-relay union fetch --dir ~/union
    """
    with _inbox(directory) as inbox:
        result = inbox.fetch()
        typer.echo(
            f"{result.new_cases} new cases, {result.additions} additions, "
            f"{result.unreadable} unreadable, {result.notes_posted} notes posted"
            f"; {result.lane_blocks} lane blocks read"
            + (
                f", {result.lane_incomplete} reports still arriving"
                if result.lane_incomplete
                else ""
            )
        )


@app.command("list")
def list_cases(
    directory: DirOption,
    vessel: Annotated[int | None, typer.Option(help="Only this vessel's cases.")] = None,
    category: Annotated[str | None, typer.Option(help="Only this category.")] = None,
    older_than: Annotated[float | None, typer.Option(help="Opened at least N days ago.")] = None,
    newer_than: Annotated[float | None, typer.Option(help="Opened at most N days ago.")] = None,
) -> None:
    """List cases, newest first, with their stage and when it is due to move on.

    Example: vessel-relay union list --dir ~/union --vessel 42 --category withholding_of_wages
    """
    with _inbox(directory, online=False) as inbox:
        rows = inbox.cases(
            vessel=vessel,
            category=category,
            older_than_days=older_than,
            newer_than_days=newer_than,
        )
        if not rows:
            typer.echo("no cases")
        for case in rows:
            due = case.due_minutes
            typer.echo(
                f"{case.case_number:>10}  {STAGE_WORDS[case.status]:<12} {case.category:<28} "
                f"{case.lang:<4} opened {_when(case.opened_minutes)}"
                + (f"  next step by {_when(due)}" if due is not None else "")
                + (f"  +{case.additions} additions" if case.additions else "")
            )


@app.command("show")
def show(
    directory: DirOption,
    case: Annotated[str, typer.Argument(help="Case number (42-17) or receipt code.")],
) -> None:
    """Show a case: the reporter's words as written (original kept), and its history.

    Example: vessel-relay union show --dir ~/union 42-17
    """
    with _inbox(directory, online=False) as inbox:
        view = inbox.show(case)
        summary = view.summary
        typer.echo(f"case {summary.case_number} — vessel {summary.vessel} — {summary.category}")
        typer.echo(f"stage: {STAGE_WORDS[summary.status]}   language: {summary.lang}")
        typer.echo(f"receipt code: {format_receipt_code(view.receipt_code)}")
        typer.echo(
            "reporter: "
            + (
                f"{view.crew_name} ({view.crew_document})"
                if view.crew_name
                else "anonymous (no name given)"
            )
        )
        if view.reporter_key is not None:
            typer.echo(
                "signed on the reporter's phone, key "
                f"{fingerprint(view.reporter_key)} (mode A; confirm it with the reporter)"
            )
        else:
            typer.echo("sealed by the vessel agent (mode B): no signature of the reporter")
        if not view.can_reply:
            typer.echo("note: this report carries no reply key; the reporter sees stages only")
        for entry in view.entries:
            fields = {k: v for k, v in entry.fields.items() if not isinstance(v, bytes)}
            typer.echo(f"\n[{entry.index}] {entry.kind.value}  {_when(entry.at_minutes)}")
            for key in ("status", "reason", "category", "lang"):
                if key in fields:
                    typer.echo(f"  {key}: {fields[key]}")
            if "text" in fields:
                typer.echo(f"  {fields['text']}")
        typer.echo(f"\nevidence chain verified ({len(view.entries)} entries)")


@app.command("reply")
def reply(
    directory: DirOption,
    case: Annotated[str, typer.Argument(help="Case number or receipt code.")],
    text: Annotated[str, typer.Argument(help="What to tell the reporter.")],
    lang: Annotated[
        str | None, typer.Option(help="Language code of the reply (default: the reporter's).")
    ] = None,
) -> None:
    """Write to the reporter; sealed to their key, it reaches their inbox on board.

    Example: vessel-relay union reply --dir ~/union 42-17 "We have called the agency."
    """
    with _inbox(directory) as inbox:
        language = Language.from_code(lang) if lang else None
        entry = inbox.reply(case, text, language)
        left = inbox.pending_notes()
        typer.echo(
            f"reply recorded as entry {entry.index}"
            + (f"; {left} notes wait for the relay (run fetch)" if left else "; sent to the relay")
        )


@app.command("status")
def status(
    directory: DirOption,
    case: Annotated[str, typer.Argument(help="Case number or receipt code.")],
    stage: Annotated[
        str, typer.Argument(help="acknowledged, in progress, referred, resolved or closed.")
    ],
    reason: Annotated[str | None, typer.Option(help="Why (required to close).")] = None,
) -> None:
    """Move a case to its next stage; the reporter is told on board.

    Example: vessel-relay union status --dir ~/union 42-17 "in progress"
    """
    with _inbox(directory) as inbox:
        entry = inbox.set_status(case, parse_stage(stage), reason)
        typer.echo(f"case is now {STAGE_WORDS[parse_stage(stage)]} (entry {entry.index})")


@app.command("export")
def export(
    directory: DirOption,
    case: Annotated[str, typer.Argument(help="Case number or receipt code.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="The file to write.")],
) -> None:
    """Export a case with its signed evidence chain, for an inspector.

    Example: vessel-relay union export --dir ~/union 42-17 -o case-42-17.json
    """
    with _inbox(directory, online=False) as inbox:
        count = inbox.export(case, out)
        typer.echo(f"wrote {count} signed entries to {out}")


@app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(help="A case export file.")],
    fingerprint: Annotated[
        str | None, typer.Option(help="The union's key fingerprint, as the union told you.")
    ] = None,
) -> None:
    """Check an exported case offline: every entry signed, none removed, changed or moved.

    Example: vessel-relay union verify case-42-17.json --fingerprint "1a2b 3c4d ..."
    """
    try:
        result = verify_export(file, fingerprint)
    except InboxError as exc:
        typer.echo(f"NOT VERIFIED: {exc}", err=True)
        raise typer.Exit(1) from exc  # a check that failed: exit 1
    typer.echo(
        f"verified: case {result.case_number}, {len(result.entries)} entries, signed by union "
        f"{result.union_id} ({result.union_name}), key fingerprint {result.signing_fingerprint}"
    )
    if fingerprint is None:
        typer.echo("compare that fingerprint with the one the union gives you directly")


@app.command("alerts")
def alerts(directory: DirOption) -> None:
    """Show the relay's silence alerts: "lane silent" (a vessel syncs but its grievance
    lane blocks stopped coming), "vessel silent" (no sync within its link's expected gap),
    and "crew member silent" for vessels still on daily slots.

    Example: vessel-relay union alerts --dir ~/union
    """
    with _inbox(directory) as inbox:
        assert inbox.client is not None
        found = inbox.client.alerts()
        if not found:
            typer.echo("no alerts")
        for alert in found:
            typer.echo(" ".join(f"{key}={value}" for key, value in alert.items()))


users_app = typer.Typer(help="Caseworkers who may log in to the union's web app.")
app.add_typer(users_app, name="user")


@users_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="The caseworker's login name.")],
    directory: DirOption,
) -> None:
    """Add (or reset) a caseworker; the password is asked for (or read from stdin).

    Example: vessel-relay union user add thida --dir ~/union
    """
    import sys

    from shore.union.web import CaseworkerError, add_caseworker, caseworkers_path

    if sys.stdin.isatty():
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        load_union(directory)
        add_caseworker(directory, name, password)
    except (CaseworkerError, UnionSetupError, OSError) as exc:
        raise fail(exc) from exc
    typer.echo(f"caseworker {name} saved in {caseworkers_path(directory)} (0600)")


@app.command("web")
def web(
    directory: DirOption,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8050,
    https_only: Annotated[
        bool, typer.Option(help="Session cookie only over HTTPS (behind a TLS proxy).")
    ] = False,
) -> None:
    """Serve the union's web app: cases, replies, stages, alerts, exports (login required).

    Example: vessel-relay union web --dir ~/union --port 8050
    """
    from shore.union.web import CaseworkerError, UnionWebSettings, read_caseworkers, run_union_web

    try:
        settings = UnionWebSettings(read_caseworkers(directory), https_only=https_only)
    except CaseworkerError as exc:
        raise fail(exc) from exc
    with _inbox(directory) as inbox:
        typer.echo(f"union web app on http://{host}:{port}/ — cases in {inbox.identity.database}")
        run_union_web(inbox, settings, host, port)


def register(parent: typer.Typer) -> None:
    """Mount these commands as ``vessel-relay union``."""
    parent.add_typer(app, name="union")
