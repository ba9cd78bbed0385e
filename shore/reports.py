"""Reports: the shore's side of a monthly compliance report, built from the log and the store.

:func:`build_report` gathers, for one vessel and one month (UTC), the vessel's log leaves
with text of that month and their inclusion proofs, a signed tree head that covers them
(the latest one, or a fresh one if the latest is older than the leaves), the month's earlier
daily heads with consistency proofs, and the shore's own figures per crew member: text bytes
received (the leaves' sum), delivered and failed (the delivery records). With the agent's
signed statement it lists every disagreement and runs the rule's test; then the shore
counter-signs the whole report. :func:`fleet_summary` gives an inspector one line per vessel.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Protocol, TypeVar

import typer

from protocol.compliance import (
    AgentStatement,
    ComplianceReport,
    Cosignature,
    EarlierHead,
    GrievanceLane,
    LinkFigures,
    LogLeaf,
    ProvenLeaf,
    ReportInvalid,
    ShoreCrew,
    SignedTreeHead,
    TreeHead,
    disagreements,
    message_text_bytes,
    note_cosignatures,
    rule_test,
)
from protocol.months import LOG_ZONE, Month
from protocol.signing import SigningKey
from protocol.slots import day_of, slot_header
from shore.store.deliveries import DeliveryQueue
from shore.store.registry import VesselRecord
from shore.store.relay_store import RelayStore
from shore.store.transparency_log import TransparencyError
from shore.store.uplink import Uplink
from shore.transparency import (
    LogStore,
    add_cosignature,
    consistency_proofs,
    heads,
    inclusion_proofs,
    latest_head,
    sign_head,
    vessel_leaves,
)
from shore.vocabulary import DeliveryOutcome

log = logging.getLogger(__name__)

T = TypeVar("T")


class ReportError(Exception):
    """A report that cannot be built as asked (the message says why and what to do)."""


class ReportStore(LogStore, Protocol):
    """What a report reads (``shore.store.RelayStore`` has it): the registry's vessels, and
    in one transaction each, the log, the uplink and the delivery queue."""

    @property
    def uplink(self) -> Uplink:
        """Batches and messages as stored."""

    @property
    def delivery_queue(self) -> DeliveryQueue:
        """Deliveries and their outcomes."""

    async def get_vessel(self, vessel_id: int) -> VesselRecord | None:
        """A registered vessel, or None."""

    async def list_vessels(self) -> Sequence[VesselRecord]:
        """Every registered vessel, by id."""


async def shore_crew_figures(
    store: ReportStore, vessel_id: int, month: int, leaves: list[LogLeaf]
) -> tuple[ShoreCrew, ...]:
    """Text bytes received (from the leaves), delivered and failed, per crew member."""
    sent: dict[int, int] = {}
    for leaf in leaves:
        for crew, text_bytes in leaf.text_bytes_in(month).items():
            sent[crew] = sent.get(crew, 0) + text_bytes
    start, end = Month.from_key(month).bounds_minutes(LOG_ZONE)
    async with store.db.transaction() as tx:
        written = await store.uplink.crew_messages_written(tx, vessel_id, start, end)
        seqs = [row[0] for row in written]
        outcomes = (
            await store.delivery_queue.outcomes(tx, vessel_id, min(seqs), max(seqs)) if seqs else {}
        )
    delivered: dict[int, int] = {}
    failed: dict[int, int] = {}
    for seq, crew, body, quick, voice, subject in written:
        text_bytes = message_text_bytes(body, quick, voice, subject)
        outcome = outcomes.get(seq)
        if outcome is DeliveryOutcome.DELIVERED:
            delivered[crew] = delivered.get(crew, 0) + text_bytes
        elif outcome is DeliveryOutcome.FAILED:
            failed[crew] = failed.get(crew, 0) + text_bytes
    crews = sorted(set(sent) | set(delivered) | set(failed))
    return tuple(ShoreCrew(c, sent.get(c, 0), delivered.get(c, 0), failed.get(c, 0)) for c in crews)


async def shore_link_figures(store: ReportStore, vessel_id: int, month: int) -> LinkFigures:
    """Uplink batches stored ashore with a batch time in ``month``: their link bytes."""
    start, end = Month.from_key(month).bounds_minutes(LOG_ZONE)
    async with store.db.transaction() as tx:
        _, link_bytes = await store.uplink.stored_batches_between(tx, vessel_id, start, end)
    return LinkFigures("shore", None, link_bytes, None, None, batch_bytes=link_bytes)


async def grievance_lane(
    store: ReportStore, vessel_id: int, month: int, crew: Sequence[int] | None, now: float
) -> GrievanceLane | None:
    """The shore's check that each crew member's daily slot arrived on every day of
    ``month`` that is over at ``now`` (UTC days); None if the vessel never sent a slot.

    ``crew`` are the crew numbers of the agent's statement; without it, the crew members
    whose slots arrived. Slot headers (crew, day) are read in the clear; nothing is opened.
    """
    start, end = Month.from_key(month).bounds_minutes(LOG_ZONE)
    first_day = start // 1440
    last_day = min(end // 1440, day_of(now)) - 1  # the days that are over
    async with store.db.transaction() as tx:
        reports = await store.uplink.vessel_reports_sealed(tx, vessel_id)
    arrived: dict[int, set[int]] = {}
    any_slot = False
    for sealed in reports:
        header = slot_header(sealed)
        if header is None:
            continue
        any_slot = True
        if first_day <= header.day <= last_day:
            arrived.setdefault(header.crew, set()).add(header.day)
    if not any_slot:
        return None
    days = max(0, last_day - first_day + 1)
    missing: list[tuple[int, int]] = []
    for number in sorted(arrived if crew is None else crew):
        seen = arrived.get(number, set())
        checked_from = min(seen, default=first_day)
        absent = (last_day - checked_from + 1) - len(seen)
        if absent > 0:
            missing.append((number, absent))
    return GrievanceLane(first_day, days, tuple(missing))


@dataclass(frozen=True, slots=True)
class _LoggedMonth:
    leaves: list[tuple[int, bytes, LogLeaf]]


async def _month_leaves(store: ReportStore, vessel_id: int, month: int) -> _LoggedMonth:
    found = []
    for index, data in await vessel_leaves(store, vessel_id):
        leaf = LogLeaf.decode(data)
        if leaf.text_bytes_in(month):
            found.append((index, data, leaf))
    return _LoggedMonth(found)


async def build_report(
    store: ReportStore,
    vessel_id: int,
    month: int,
    shore_key: SigningKey,
    now: float,
    *,
    statement: AgentStatement | None = None,
) -> ComplianceReport:
    """The shore-signed compliance report of one vessel for one month (UTC, ``YYYYMM``)."""
    vessel = await store.get_vessel(vessel_id)
    if vessel is None:
        raise ReportError(f"vessel {vessel_id} is not registered; see 'shore vessel list'")
    if statement is not None and (statement.vessel_id, statement.month) != (vessel_id, month):
        raise ReportError(
            f"the agent's statement is for vessel {statement.vessel_id}, month "
            f"{statement.month}, not vessel {vessel_id}, month {month}"
        )
    logged = await _month_leaves(store, vessel_id, month)
    head = await latest_head(store)
    needed = max((index + 1 for index, _, _ in logged.leaves), default=0)
    last_logged = max((leaf.received_minutes for _, _, leaf in logged.leaves), default=0)
    if head is None or head.head.tree_size < needed or head.head.timestamp_minutes < last_logged:
        head = await sign_head(store, shore_key, now)
    size = head.head.tree_size
    paths = await inclusion_proofs(store, [index for index, _, _ in logged.leaves], size)
    proven = tuple(
        ProvenLeaf(index, data, tuple(path))
        for (index, data, _), path in zip(logged.leaves, paths, strict=True)
    )
    start, end = Month.from_key(month).bounds_minutes(LOG_ZONE)
    month_heads = [
        h
        for h in await heads(store, from_minutes=start, to_minutes=end)
        if h.head.tree_size <= size and h != head
    ]
    proofs = await consistency_proofs(store, [h.head.tree_size for h in month_heads], size)
    earlier = tuple(
        EarlierHead(h, tuple(proof)) for h, proof in zip(month_heads, proofs, strict=True)
    )
    shore_crew = await shore_crew_figures(
        store, vessel_id, month, [leaf for _, _, leaf in logged.leaves]
    )
    shore_link = await shore_link_figures(store, vessel_id, month)
    quota = {c.crew: c.quota_bytes for c in statement.crew} if statement else {}
    sent = {c.crew: c.sent_bytes for c in shore_crew}
    notes: list[str] = []
    if statement is None:
        notes.append(
            "no agent statement: the crew's names, the quota granted and the link sessions "
            "are unknown, so the rule's test cannot be met"
        )
    else:
        if statement.days_at_sea is None:
            notes.append("days at sea: not measured")
    crew_numbers = [c.crew for c in statement.crew] if statement else None
    lane = await grievance_lane(store, vessel_id, month, crew_numbers, now)
    if lane is None:
        notes.append(
            "grievance lane open every day: not measured (the vessel sends no daily slots)"
        )
    report = ComplianceReport(
        vessel_id=vessel_id,
        vessel_name=vessel.info.name,
        month=month,
        made_minutes=int(now // 60),
        statement=statement,
        shore_crew=shore_crew,
        shore_link=shore_link,
        rule=rule_test(quota, sent),
        disagreements=disagreements(statement, shore_crew, shore_link),
        leaves=proven,
        head=head,
        earlier_heads=earlier,
        notes=tuple(notes),
        lane=lane,
    ).signed(shore_key)
    log.info(
        "compliance report for vessel %d month %d: %d leaves, head size %d, rule %s, "
        "%d disagreements",
        vessel_id,
        month,
        len(proven),
        size,
        "met" if report.rule.met else "not met",
        len(report.disagreements),
    )
    return report


@dataclass(frozen=True, slots=True)
class FleetLine:
    """One vessel's line in an inspector's fleet summary (shore figures only)."""

    vessel_id: int
    name: str
    batches: int
    crew_with_text: int
    text_bytes: int
    link_bytes: int


async def fleet_summary(store: ReportStore, month: int) -> list[FleetLine]:
    """Per registered vessel: logged batches, crew members with text, text and link bytes."""
    lines = []
    for vessel in await store.list_vessels():
        logged = await _month_leaves(store, vessel.vessel_id, month)
        crew: dict[int, int] = {}
        for _, _, leaf in logged.leaves:
            for c, b in leaf.text_bytes_in(month).items():
                crew[c] = crew.get(c, 0) + b
        link = await shore_link_figures(store, vessel.vessel_id, month)
        lines.append(
            FleetLine(
                vessel.vessel_id,
                vessel.info.name,
                len(logged.leaves),
                len(crew),
                sum(crew.values()),
                link.link_bytes,
            )
        )
    return lines


def head_of(report: ComplianceReport) -> SignedTreeHead:
    """The report's signed tree head (for co-signing and the QR code)."""
    return report.head


def report_command(
    vessel: Annotated[int, typer.Option(help="The vessel's id.")],
    month: Annotated[str, typer.Option(help="The month, YYYY-MM (UTC), e.g. 2026-10.")],
    statement: Annotated[
        Path | None, typer.Option(help="The agent's statement from 'ship report'.")
    ] = None,
    config: Annotated[Path, typer.Option(help="The relay's config file.")] = Path("relay.toml"),
    out: Annotated[Path, typer.Option(help="Directory for the JSON, CSV, HTML and PDF.")] = Path(
        "."
    ),
) -> None:
    """Build, sign and write a vessel's compliance report for a month (JSON, CSV, HTML, PDF).

    Example: vessel-relay shore report --vessel 4242 --month 2026-10 --statement s.json
    """
    import asyncio
    import time

    from common.exits import UsageError, fail
    from common.keyfiles import KeyFileError, read_secret
    from shore.config import ConfigError, load_config
    from shore.relay import open_store
    from shore.report_render import RenderError, write_all
    from shore.store.errors import StoreError

    try:
        parsed = Month.parse(month)
    except ValueError as exc:
        raise fail(UsageError(str(exc))) from None
    try:
        loaded = load_config(config)
        key = SigningKey.from_seed(read_secret(loaded.path(loaded.relay.shore_key)))
    except (ConfigError, KeyFileError) as exc:
        raise fail(exc) from None
    try:
        given = (
            None
            if statement is None
            else AgentStatement.from_obj(json.loads(statement.read_text(encoding="utf-8")))
        )
    except (ValueError, OSError, ReportInvalid) as exc:
        raise fail(UsageError(f"the statement {statement}: {exc}")) from None

    async def main() -> ComplianceReport:
        store = await open_store(loaded)
        try:
            return await build_report(store, vessel, parsed.key, key, time.time(), statement=given)
        finally:
            await store.close()

    try:
        report = asyncio.run(main())
        paths = write_all(report, out, f"compliance-{vessel}-{parsed}")
    except (StoreError, ReportError, RenderError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for path in paths:
        typer.echo(f"written: {path}")
    typer.echo(
        f"rule {'met' if report.rule.met else 'NOT met'}; "
        f"{len(report.disagreements)} disagreements listed"
    )


def fleet_command(
    month: Annotated[str, typer.Option(help="The month, YYYY-MM (UTC), e.g. 2026-10.")],
    config: Annotated[Path, typer.Option(help="The relay's config file.")] = Path("relay.toml"),
) -> None:
    """Print one line per vessel for an inspector: logged batches, crew with text, bytes.

    Example: vessel-relay shore fleet-report --month 2026-10
    """
    import asyncio

    from common.exits import UsageError, fail
    from shore.config import ConfigError, load_config
    from shore.relay import open_store

    try:
        parsed = Month.parse(month)
    except ValueError as exc:
        raise fail(UsageError(str(exc))) from None
    try:
        loaded = load_config(config)
    except ConfigError as exc:
        raise fail(exc) from None

    async def main() -> list[FleetLine]:
        store = await open_store(loaded)
        try:
            return await fleet_summary(store, parsed.key)
        finally:
            await store.close()

    typer.echo("vessel  name                      batches  crew  text bytes  link bytes")
    for line in asyncio.run(main()):
        typer.echo(
            f"{line.vessel_id:>6}  {line.name[:24]:<24}  {line.batches:>7}  "
            f"{line.crew_with_text:>4}  {line.text_bytes:>10,}  {line.link_bytes:>10,}"
        )


# --- the transparency log's heads, for witnesses ('vessel-relay shore log ...') -------------

log_app = typer.Typer(
    help="The transparency log: signed tree heads and witnesses' co-signatures.",
    no_args_is_help=True,
)


def _store_action(config: Path, action: Callable[[RelayStore], Awaitable[T]]) -> T:
    """Run ``action`` on the relay's store; config and store errors become one line."""
    import asyncio

    from shore.config import ConfigError, load_config
    from shore.relay import open_store
    from shore.store.errors import StoreError

    async def main() -> T:
        store = await open_store(loaded)
        try:
            return await action(store)
        finally:
            await store.close()

    try:
        loaded = load_config(config)
        return asyncio.run(main())
    except (ConfigError, StoreError, TransparencyError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@log_app.command("heads")
def log_heads_command(
    config: Annotated[Path, typer.Option(help="The relay's config file.")] = Path("relay.toml"),
    json_out: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the heads as JSON here (for a witness)."),
    ] = None,
) -> None:
    """List the signed tree heads, oldest first, with their witnesses.

    Example: vessel-relay shore log heads --json heads.json
    """
    found = _store_action(config, heads)
    typer.echo(f"{'size':>6}  {'signed (UTC)':<16}  {'digest':<64}  witnesses")
    for signed in found:
        head = signed.head
        when = datetime.fromtimestamp(head.timestamp_minutes * 60, UTC).strftime("%Y-%m-%d %H:%M")
        names = ", ".join(w.witness for w in signed.witnesses) or "-"
        typer.echo(f"{head.tree_size:>6}  {when}  {head.digest().hex()}  {names}")
    if json_out is not None:
        data = json.dumps([h.to_obj() for h in found], indent=1).encode() + b"\n"
        _write_atomically(json_out, data)
        typer.echo(f"written: {json_out} ({len(found)} heads)")


@log_app.command("checkpoint")
def log_checkpoint_command(
    config: Annotated[Path, typer.Option(help="The relay's config file.")] = Path("relay.toml"),
    out: Annotated[
        Path | None, typer.Option(help="Write the signed note here (default: print it).")
    ] = None,
) -> None:
    """Print the latest signed tree head as a C2SP checkpoint: a signed note with the
    shore's Ed25519 signature and the witnesses' tlog-cosignature lines, for witness
    software that speaks the C2SP formats.

    Example: vessel-relay shore log checkpoint --out checkpoint.txt
    """
    found = _store_action(config, latest_head)
    if found is None or found.head.origin is None:
        typer.echo(
            "error: the log has no checkpoint yet (the relay signs one a day; a report "
            "signs one too)",
            err=True,
        )
        raise typer.Exit(1)
    note = found.note()
    if out is None:
        typer.echo(note, nl=False)
        return
    _write_atomically(out, note.encode())
    typer.echo(f"written: {out} (the checkpoint of size {found.head.tree_size})")


@log_app.command("add-cosignature")
def log_add_cosignature_command(
    file: Annotated[
        Path,
        typer.Argument(
            help="A co-signature from 'report cosign', or a checkpoint signed note that "
            "witness software co-signed (then give --witness)."
        ),
    ],
    config: Annotated[Path, typer.Option(help="The relay's config file.")] = Path("relay.toml"),
    witness: Annotated[
        list[str] | None,
        typer.Option(
            help="For a signed note: a witness whose tlog-cosignature line to keep, as "
            "NAME=KEY (the witness's Ed25519 public key, hex; repeatable)."
        ),
    ] = None,
) -> None:
    """Keep a witness's co-signature of a head (checked first); reports then carry it.

    Example: vessel-relay shore log add-cosignature cosignature-ilo-1234.json
    """
    try:
        data = file.read_bytes()
        if data.lstrip().startswith(b"{"):
            head, cosignature = read_cosignature(data)
            cosignatures = [cosignature]
        else:
            keys = _witness_keys(witness or [])
            head, cosignatures = note_cosignatures(data, keys)
            if not cosignatures:
                typer.echo(
                    f"error: {file} has no tlog-cosignature line of "
                    f"{', '.join(sorted(keys)) or 'any witness given'}; give "
                    "--witness NAME=KEY for the witness that co-signed",
                    err=True,
                )
                raise typer.Exit(1)
    except OSError as exc:
        typer.echo(f"error: cannot read {file}: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    except ReportInvalid as exc:
        typer.echo(f"error: {file} is not a co-signature: {exc.message}", err=True)
        raise typer.Exit(1) from None

    async def add(store: RelayStore) -> None:
        for cosignature in cosignatures:
            await add_cosignature(store, head, cosignature)

    _store_action(config, add)
    for cosignature in cosignatures:
        typer.echo(
            f"co-signature of {cosignature.witness!r} kept for the head of size {head.tree_size}"
        )


def _witness_keys(entries: Sequence[str]) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for entry in entries:
        name, _, key = entry.partition("=")
        try:
            raw = bytes.fromhex(key.strip())
        except ValueError:
            raw = b""
        if not name or len(raw) != 32:
            raise ReportInvalid(
                f"--witness {entry!r} must be NAME=KEY, KEY the witness's public key in 64 "
                "hex digits"
            )
        keys[name] = raw
    return keys


def cosignature_file(head: SignedTreeHead, cosignature: Cosignature) -> bytes:
    """What a witness hands back to the shore: the head and the co-signature (JSON)."""
    obj = {
        "kind": "vessel-relay tree head cosignature",
        "head": head.to_obj(),
        "cosignature": cosignature.to_obj(),
    }
    return json.dumps(obj, indent=1).encode() + b"\n"


def read_cosignature(data: bytes) -> tuple[TreeHead, Cosignature]:
    """The head and co-signature of a :func:`cosignature_file`; ReportInvalid otherwise."""
    try:
        obj: object = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ReportInvalid(f"not JSON: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("kind") != "vessel-relay tree head cosignature":
        raise ReportInvalid("not a vessel-relay tree head co-signature")
    return SignedTreeHead.from_obj(obj.get("head")).head, Cosignature.from_obj(
        obj.get("cosignature")
    )


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
