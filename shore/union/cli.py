"""``vessel-relay union ...``: the union's commands (keys, fetch, list, show, reply, status,
export, verify, alerts, web; encrypt, assign, note, access-log; caseworkers and their TOTP).

``union init`` makes the union's store encrypted at rest from the start: it asks for a new
passphrase (``--passphrase-file``, else the file named by
``VESSEL_RELAY_UNION_PASSPHRASE_FILE``, else a hidden prompt asked twice, else the first
line of stdin). Every command that opens an encrypted store asks for the passphrase first
(the same file, prompt or stdin). A store that is not encrypted (made by an older version)
still opens, with a warning, except for ``fetch`` and ``web``, which bring reports in and
serve them: they refuse (exit 78) and name ``union encrypt``, unless ``--allow-plaintext``
or ``allow_plaintext_store = true`` in union.toml says the union accepts reports in clear.
The union's own commands act as ``cli:<OS user>`` in the access log.
"""

from __future__ import annotations

import datetime
import getpass
import logging
import os
import sys
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
from shore.union.access_log import to_csv, to_json
from shore.union.client import RelayClient, RelayUnreachable
from shore.union.inbox import InboxError, UnionInbox, create_encrypted_store, verify_export
from shore.union.keys import UnionSetupError, init_union, load_union
from shore.union.totp import SecondFactorFileError, enrol, totp_path
from shore.union.vault import MIN_PASSPHRASE_CHARS, PlaintextStore, VaultError

logger = logging.getLogger(__name__)

app = typer.Typer(
    help="The union's inbox: fetch sealed grievance reports, open them here, answer them.",
    no_args_is_help=True,
)

DirOption = Annotated[
    Path, typer.Option("--dir", help="The union's directory (keys, union.toml, union.db).")
]
_ERRORS = (InboxError, UnionSetupError, RelayUnreachable, ProtocolError, VaultError)
#: The environment variable naming a file that holds the store's passphrase (services).
PASSPHRASE_FILE_ENV = "VESSEL_RELAY_UNION_PASSPHRASE_FILE"
AllowPlaintextOption = Annotated[
    bool,
    typer.Option(
        "--allow-plaintext",
        help="Accept a store not encrypted at rest (or allow_plaintext_store = true in "
        "union.toml); without it, run vessel-relay union encrypt first.",
    ),
]


def _actor() -> str:
    """Who acts, in the access log, when a command of this machine does."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid {os.getuid()}"


def _read_passphrase_file(path: Path, named_by: str) -> str:
    """The first line of ``path`` (``named_by`` says who named it, for the error)."""
    try:
        return path.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, UnicodeDecodeError, IndexError) as exc:
        raise VaultError(f"{named_by} names {path}, which holds no passphrase ({exc})") from exc


def _passphrase(*, confirm: bool = False, file: Path | None = None) -> str:
    """The store's passphrase (see the module docstring for where it comes from)."""
    if file is not None:
        return _read_passphrase_file(file, "--passphrase-file")
    named = os.environ.get(PASSPHRASE_FILE_ENV)
    if named:
        return _read_passphrase_file(Path(named), PASSPHRASE_FILE_ENV)
    if sys.stdin.isatty():
        return str(
            typer.prompt(
                "the union's store passphrase", hide_input=True, confirmation_prompt=confirm
            )
        )
    return sys.stdin.readline().rstrip("\n")


@contextmanager
def _inbox(
    directory: Path,
    *,
    online: bool = True,
    unlock: bool = True,
    refuse_plaintext: bool = False,
) -> Iterator[UnionInbox]:
    """The union's store, unlocked (``unlock``); with ``refuse_plaintext``, a store not
    encrypted at rest is refused unless union.toml allows it (``allow_plaintext_store``)."""
    try:
        identity = load_union(directory)
        client = RelayClient(identity) if online else None
        inbox = UnionInbox(identity, default_codebook(), client=client)
        try:
            if not inbox.encrypted and refuse_plaintext and not identity.allow_plaintext_store:
                raise PlaintextStore(
                    f"the union's store {identity.database} is not encrypted at rest, so "
                    "reports would be kept in clear: run vessel-relay union encrypt --dir "
                    f"{directory} (or, to accept that, pass --allow-plaintext or set "
                    "allow_plaintext_store = true in union.toml)"
                )
            if not inbox.encrypted:
                logger.warning(
                    "the union's store %s is not encrypted at rest: run vessel-relay union "
                    "encrypt --dir %s",
                    identity.database,
                    directory,
                )
            elif unlock:
                inbox.unlock(_passphrase())
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
    passphrase_file: Annotated[
        Path | None,
        typer.Option(
            "--passphrase-file",
            help="A file (0600) whose first line is the store's new passphrase (default: "
            f"the file named by {PASSPHRASE_FILE_ENV}, else asked twice).",
        ),
    ] = None,
) -> None:
    """Make the union's keys (private halves stay in DIR, 0600), print the public ones,
    write the union's card (DIR/union-card.json) for vessel owners and the relay operator,
    and make the union's store (DIR/union.db) encrypted at rest under a new passphrase
    (at least 12 characters; without it the reports cannot be read: keep it safe).

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
        # the passphrase before the keys: a refused one leaves nothing behind to move away
        passphrase = _passphrase(confirm=True, file=passphrase_file)
        if len(passphrase) < MIN_PASSPHRASE_CHARS:
            raise VaultError(
                f"the passphrase must have at least {MIN_PASSPHRASE_CHARS} characters; a few "
                "unrelated words are easy to remember and hard to guess"
            )
        identity = init_union(directory, union_id, name, relay_url, languages)
        create_encrypted_store(identity, default_codebook(), passphrase)
    except (UsageError, UnionSetupError, VaultError) as exc:
        raise fail(exc) from exc
    typer.echo(identity.describe())
    typer.echo(f"union card: {identity.card_path} (public keys only: give it to vessel owners)")
    typer.echo(f"private keys are in {directory} (0600); they never leave this machine")
    typer.echo(
        f"the union's store {identity.database} is encrypted at rest: every command and the "
        "web app ask for the passphrase; without it the reports cannot be read"
    )


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
def fetch(directory: DirOption, allow_plaintext: AllowPlaintextOption = False) -> None:
    """Fetch sealed reports from the relay and open them here (the grievance lane's blocks
    too: this union's are found by trying its key on each, and reports are put back
    together here); post notes not yet posted.

    Example: vessel-relay union fetch --dir ~/union
    """
    with _inbox(directory, refuse_plaintext=not allow_plaintext) as inbox:
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
        view = inbox.show(case, by=_actor())
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
        typer.echo(f"assigned to: {summary.assignee or 'nobody'}")
        for note in inbox.notes(case):
            stamp = _when(int(note.at // 60))
            typer.echo(f"internal note {note.note_id} by {note.caseworker}, {stamp}: {note.text}")


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
        entry = inbox.reply(case, text, language, by=_actor())
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
        entry = inbox.set_status(case, parse_stage(stage), reason, by=_actor())
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
        count = inbox.export(case, out, by=_actor())
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


@app.command("encrypt")
def encrypt(directory: DirOption) -> None:
    """Encrypt the union's store at rest under a passphrase (once); from then on every
    command, and the web app, needs it to read reports. Keep the passphrase safe: without
    it the reports cannot be read again.

    Example: vessel-relay union encrypt --dir ~/union
    """
    with _inbox(directory, online=False, unlock=False) as inbox:
        if inbox.encrypted:
            raise fail(VaultError("this union's store is encrypted already"))
        try:
            count = inbox.encrypt_store(_passphrase(confirm=True))
        except VaultError as exc:
            raise fail(exc) from exc
        typer.echo(
            f"{inbox.identity.database} is encrypted: {count} texts sealed; the old plain "
            "copies were wiped from the file and its journal"
        )


@app.command("assign")
def assign(
    directory: DirOption,
    case: Annotated[str, typer.Argument(help="Case number or receipt code.")],
    caseworker: Annotated[str, typer.Argument(help="The caseworker's login name ('' for nobody).")],
) -> None:
    """Assign a case to a caseworker (logged in the access log).

    Example: vessel-relay union assign --dir ~/union 42-17 thida
    """
    from shore.union.web import CaseworkerError, read_caseworkers

    with _inbox(directory, online=False, unlock=False) as inbox:
        if caseworker:
            try:
                known = read_caseworkers(directory)
            except CaseworkerError as exc:
                raise fail(exc) from exc
            if caseworker not in known:
                raise fail(InboxError(f"no caseworker {caseworker!r}; add one with union user add"))
        number = inbox.assign(case, caseworker or None, by=_actor())
        typer.echo(f"case {number} assigned to {caseworker or 'nobody'}")


@app.command("note")
def note(
    directory: DirOption,
    case: Annotated[str, typer.Argument(help="Case number or receipt code.")],
    text: Annotated[str, typer.Argument(help="The note (caseworkers only).")],
) -> None:
    """Keep an internal note on a case: for caseworkers only, never sent to the reporter.

    Example: vessel-relay union note --dir ~/union 42-17 "Called the manning agency."
    """
    with _inbox(directory, online=False) as inbox:
        note_id = inbox.add_note(case, text, by=_actor())
        typer.echo(f"internal note {note_id} kept (never sent to the reporter)")


@app.command("access-log")
def access_log(
    directory: DirOption,
    case: Annotated[
        str | None, typer.Option(help="Only this case (number or receipt code).")
    ] = None,
    output_format: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="The file to write (default: stdout).")
    ] = None,
) -> None:
    """Export the access log: who opened, exported, replied to or changed which case.

    Example: vessel-relay union access-log --dir ~/union --case 42-17 --format json -o a.json
    """
    if output_format not in ("csv", "json"):
        raise fail(UsageError(f"--format must be csv or json, not {output_format!r}"))
    with _inbox(directory, online=False, unlock=False) as inbox:
        rows = inbox.access_log(case)
        body = to_csv(rows) if output_format == "csv" else to_json(rows)
        if out is None:
            typer.echo(body, nl=False)
        else:
            out.write_text(body, encoding="utf-8")
            typer.echo(f"wrote {len(rows)} access records to {out}")


@app.command("stats")
def stats(
    directory: DirOption,
    out: Annotated[Path, typer.Option("-o", "--out", help="The signed JSON file to write.")],
    first: Annotated[
        str | None, typer.Option("--from", help="First month, YYYY-MM (default: January).")
    ] = None,
    last: Annotated[
        str | None, typer.Option("--to", help="Last month, YYYY-MM (default: this month).")
    ] = None,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="Also write the figures as CSV here.")
    ] = None,
    threshold: Annotated[
        int, typer.Option(help="Counts under this are suppressed (never below 2).")
    ] = 5,
) -> None:
    """Grievance statistics (UNGP 31): reports by category and ILO indicator, times to
    acknowledge, in each stage and to close, outcomes and escalations, per vessel, owner
    and month; anonymous (small counts suppressed) and signed with the union's key.
    Anyone can check the file offline with 'vessel-relay report verify-stats'.

    Example: vessel-relay union stats --dir ~/union --from 2026-01 --to 2026-12 -o stats.json
    """
    from shore.union.statistics import (
        make_statistics,
        statistics_files,
        write_atomically,
        year_to_date,
    )

    with _inbox(directory, online=False, unlock=False) as inbox:
        default_first, default_last = year_to_date(inbox.clock())
        document = make_statistics(
            inbox,
            first_month=first or default_first,
            last_month=last or default_last,
            threshold=threshold,
        )
        as_json, as_csv = statistics_files(document)
        write_atomically(out, as_json)
        if csv_out is not None:
            write_atomically(csv_out, as_csv)
        body = document["statistics"]
        assert isinstance(body, dict)
        total = body["total"]
        assert isinstance(total, dict)
        reports = total["reports"]
        typer.echo(
            f"wrote {out}: {reports if reports is not None else 'fewer than ' + str(threshold)}"
            f" reports from {body['period']['from']} to {body['period']['to']}, "
            f"{len(body['suppressed'])} cells suppressed, signed by key "
            f"{fingerprint(inbox.identity.signing_key.verify_key.key)}"
        )


@app.command("publish-stats")
def publish_stats(
    directory: DirOption,
    file: Annotated[Path, typer.Argument(help="The signed statistics ('union stats -o').")],
    receipt_out: Annotated[
        Path, typer.Option("-o", "--receipt", help="Where to write the relay's receipt.")
    ],
) -> None:
    """Have the relay log a signed statistics file in its transparency log, and write its
    receipt (the leaf, the relay's signed checkpoint and the inclusion proof) once a
    checkpoint covers it. Posting the same file again keeps its first leaf, so run this
    again after the relay's next checkpoint (daily) if the receipt is not ready. Give the
    receipt with the file: 'vessel-relay report verify-stats FILE --receipt RECEIPT
    --shore-key-file shore.pub' checks it offline.

    Example: vessel-relay union publish-stats --dir ~/union stats.json -o stats.receipt.json
    """
    import json

    from shore.union.statistics import write_atomically

    try:
        document = file.read_bytes()
        json.loads(document)
        identity = load_union(directory)
        client = RelayClient(identity)
        try:
            index, new = client.publish_statistics(document)
            receipt = client.statistics_receipt(index)
        finally:
            client.close()
    except OSError as exc:
        raise fail(InboxError(f"cannot read {file}: {exc.strerror}")) from exc
    except ValueError as exc:
        raise fail(InboxError(f"{file} is not a signed statistics file (JSON): {exc}")) from exc
    except (UnionSetupError, RelayUnreachable) as exc:
        raise fail(exc) from exc
    said = "logged" if new else "already logged"
    if receipt is None:
        typer.echo(
            f"{file} {said} by the relay as leaf {index}; no signed checkpoint covers it yet: "
            "run this command again after the relay's next checkpoint for the receipt"
        )
        return
    write_atomically(receipt_out, json.dumps(receipt, indent=1, sort_keys=True).encode())
    typer.echo(f"{file} {said} by the relay as leaf {index}; receipt: {receipt_out}")


@app.command("retention")
def retention(
    directory: DirOption,
    days: Annotated[
        str | None,
        typer.Argument(help="Days to keep a closed case, or 'none' to keep for ever."),
    ] = None,
) -> None:
    """Show or set how long closed and resolved cases are kept; past it, a case's texts and
    the reporter's details are purged at the next fetch (its export still verifies).

    Example: vessel-relay union retention --dir ~/union 365
    """
    with _inbox(directory, online=False, unlock=False) as inbox:
        if days is not None:
            if days.strip().lower() == "none":
                inbox.set_retention_days(None)
            elif days.strip().isdigit():
                inbox.set_retention_days(int(days))
            else:
                raise fail(UsageError(f"give a number of days or 'none', not {days!r}"))
        kept = inbox.retention_days()
        typer.echo(
            "closed cases are kept for ever"
            if kept is None
            else f"closed cases are purged {kept} days after their last stage"
        )


@app.command("purge")
def purge(directory: DirOption) -> None:
    """Purge now the closed cases past the union's retention (fetch does it too).

    Example: vessel-relay union purge --dir ~/union
    """
    with _inbox(directory, online=False) as inbox:
        purged = inbox.purge_due(by=_actor())
        typer.echo(
            f"purged {len(purged)} cases: {', '.join(purged)}" if purged else "nothing to purge"
        )


@app.command("escalate-to")
def escalate_to(
    directory: DirOption,
    card: Annotated[Path, typer.Option(help="The second organisation's union card (JSON).")],
    vessel: Annotated[int | None, typer.Option(help="For this vessel's cases.")] = None,
    flag: Annotated[str | None, typer.Option(help="For cases of vessels of this flag.")] = None,
    deadline_days: Annotated[
        int | None,
        typer.Option(help="Days to acknowledge before escalating (default: the indicative 2)."),
    ] = None,
) -> None:
    """Name a second organisation (another union at the relay) for a vessel or a flag
    state: a case not acknowledged in time goes to it (the report only if the reporter
    agreed at filing, else a notice without content), and the reporter is told on board.

    Example: vessel-relay union escalate-to --dir ~/union --flag TH --card ngo-card.json
    """
    from protocol.union_card import UnionCard

    with _inbox(directory, online=False, unlock=False) as inbox:
        try:
            parsed = UnionCard.from_json(card.read_bytes())
        except OSError as exc:
            raise fail(UsageError(f"cannot read {card}: {exc.strerror}")) from exc
        scope = inbox.set_escalation_route(
            card=parsed, vessel=vessel, flag=flag, deadline_days=deadline_days
        )
        typer.echo(f"{scope}: cases not acknowledged in time go to {parsed.name}")
        for route, org_id, name, days in inbox.escalation_routes():
            typer.echo(f"  {route:<14} -> union {org_id} ({name}) after {days} days")


@app.command("escalations")
def escalations(directory: DirOption) -> None:
    """List the cases other unions escalated to this one (fetch collects them): their
    history, and the report where the reporter agreed to share it.

    Example: vessel-relay union escalations --dir ~/union
    """
    with _inbox(directory, online=False) as inbox:
        found = inbox.received_escalations()
        if not found:
            typer.echo("no escalations")
        for case in found:
            body = case.body
            typer.echo(
                f"case {case.case_number} from union {case.from_union} (key "
                f"{case.signer_fingerprint}), vessel {body.get('vessel')}"
            )
            history = body.get("history")
            for step in history if isinstance(history, list) else []:
                if isinstance(step, dict):
                    typer.echo(f"  {step.get('stage')}: {_when(int(step.get('minutes', 0)))}")
            report = case.report
            if report is None:
                typer.echo("  a notice without content: the reporter did not agree to share it")
            else:
                typer.echo(
                    f"  {report.get('category')} ({report.get('lang')}): {report.get('text')}"
                )


vessels_app = typer.Typer(help="The union's record of its vessels: owner and flag state.")
app.add_typer(vessels_app, name="vessel")


@vessels_app.command("set")
def vessel_set(
    directory: DirOption,
    vessel: Annotated[int, typer.Argument(help="The vessel's id at the relay.")],
    owner: Annotated[str, typer.Option(help="The vessel's owner (for statistics).")] = "",
    flag: Annotated[str, typer.Option(help="Flag state, two letters (e.g. TH).")] = "",
    name: Annotated[str, typer.Option(help="The vessel's name.")] = "",
) -> None:
    """Record a vessel's owner, flag state and name (statistics per owner; escalation per
    flag state).

    Example: vessel-relay union vessel set --dir ~/union 42 --owner "Sea Co" --flag TH
    """
    with _inbox(directory, online=False, unlock=False) as inbox:
        inbox.set_vessel(vessel, name=name, owner=owner, flag=flag)
        typer.echo(f"vessel {vessel}: owner {owner or '-'}, flag {flag.upper() or '-'}")


users_app = typer.Typer(help="Caseworkers who may log in to the union's web app.")
app.add_typer(users_app, name="user")


@users_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="The caseworker's login name.")],
    directory: DirOption,
) -> None:
    """Add (or reset) a caseworker and enrol their second factor; the password is asked
    for (or read from stdin). Prints the otpauth:// URI for their authenticator app, once.

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
        uri = enrol(directory, name)
    except (CaseworkerError, UnionSetupError, SecondFactorFileError, OSError) as exc:
        raise fail(exc) from exc
    typer.echo(f"caseworker {name} saved in {caseworkers_path(directory)} (0600)")
    _show_enrolment(directory, name, uri)


def _show_enrolment(directory: Path, name: str, uri: str) -> None:
    typer.echo(f"second factor of {name} kept in {totp_path(directory)} (0600)")
    typer.echo("add it to the caseworker's authenticator app (shown once; as a QR code or typed):")
    typer.echo(uri)


@users_app.command("totp")
def user_totp(
    name: Annotated[str, typer.Argument(help="The caseworker's login name.")],
    directory: DirOption,
) -> None:
    """Give a caseworker a new second factor (a lost phone); the old codes stop working.

    Example: vessel-relay union user totp thida --dir ~/union
    """
    from shore.union.web import CaseworkerError, read_caseworkers

    try:
        load_union(directory)
        if name not in read_caseworkers(directory):
            raise CaseworkerError(f"no caseworker {name!r}; add one with union user add")
        uri = enrol(directory, name)
    except (CaseworkerError, UnionSetupError, SecondFactorFileError, OSError) as exc:
        raise fail(exc) from exc
    _show_enrolment(directory, name, uri)


@app.command("web")
def web(
    directory: DirOption,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8050,
    https_only: Annotated[
        bool, typer.Option(help="Session cookie only over HTTPS (behind a TLS proxy).")
    ] = False,
    allow_plaintext: AllowPlaintextOption = False,
) -> None:
    """Serve the union's web app: cases, replies, stages, alerts, exports (login with password
    and TOTP code; an encrypted store is unlocked at start, or on the app's /unlock page).

    Example: vessel-relay union web --dir ~/union --port 8050
    """
    from shore.union.totp import SecondFactorBook
    from shore.union.web import CaseworkerError, UnionWebSettings, read_caseworkers, run_union_web

    try:
        settings = UnionWebSettings(
            read_caseworkers(directory),
            https_only=https_only,
            second_factor=SecondFactorBook.load(directory),
        )
    except (CaseworkerError, SecondFactorFileError) as exc:
        raise fail(exc) from exc
    # the passphrase at start when someone can type it (or a file names it); else the app
    # starts locked and a signed-in caseworker enters it on /unlock
    at_start = sys.stdin.isatty() or bool(os.environ.get(PASSPHRASE_FILE_ENV))
    with _inbox(directory, unlock=at_start, refuse_plaintext=not allow_plaintext) as inbox:
        typer.echo(f"union web app on http://{host}:{port}/ — cases in {inbox.identity.database}")
        run_union_web(inbox, settings, host, port)


def register(parent: typer.Typer) -> None:
    """Mount these commands as ``vessel-relay union``."""
    parent.add_typer(app, name="union")
