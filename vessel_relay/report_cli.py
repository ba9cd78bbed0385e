"""``vessel-relay report``: check a compliance report offline, with public keys only
(``verify-stats``: a union's signed grievance statistics, the same way).

A report comes as its signed JSON or as the PDF the relay prints (PDF/A-3b with that JSON
attached, :mod:`shore.report_render`). For a PDF, ``verify`` checks the attached JSON like
a JSON file, and ties the pages to it: every page must print the attached JSON's SHA-256
in its footer, and the first page the tree head digest the JSON is signed over. The pages'
figures are not read one by one: the attached, signed JSON is the report; the hash on
every page says which report a printed page belongs to.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from common.exits import UsageError, fail
from common.keyfiles import KeyFileError
from protocol.compliance import ComplianceReport, ReportInvalid, verify_report
from protocol.evidence import fingerprint

app = typer.Typer(help="Compliance reports: verify them offline.", no_args_is_help=True)

#: Where an inspector gets the shore's key (said whenever it is missing).
WHERE_THE_SHORE_KEY_IS = (
    "get the shore's public key from the relay operator ('vessel-relay shore init' prints it "
    "as 'public key') or from the vessel's ship.toml ([shore] public_key), over a channel you "
    "trust, not from the report"
)


#: The hash every page of the PDF prints (``shore.report_render``'s footer).
PRINTED_HASH = re.compile(r"SHA-256\s+([0-9a-f]{64})\b")


class PdfUnreadable(Exception):
    """The file is a PDF, but not one a signed report can be taken from; says why."""


@dataclass(frozen=True, slots=True)
class PdfReport:
    """What a report's PDF holds: the attached JSON and what each page prints."""

    attachment_name: str
    signed_json: bytes
    page_hashes: tuple[str | None, ...]
    first_page_text: str


def read_pdf_report(data: bytes) -> PdfReport:
    """The signed JSON attached to a report's PDF, and each page's printed hash."""
    import io

    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        attachments = reader.attachments
        json_files = [
            (name, content)
            for name, contents in attachments.items()
            if name.lower().endswith(".json")
            for content in contents
        ]
        texts = [page.extract_text() or "" for page in reader.pages]
    except Exception as exc:  # pypdf raises many kinds on a damaged or hostile file
        raise PdfUnreadable(f"the PDF cannot be read ({type(exc).__name__}: {exc})") from exc
    if len(json_files) != 1:
        found = ", ".join(sorted(attachments)) or "none"
        raise PdfUnreadable(
            "a report's PDF carries exactly one attached .json file (the signed report); "
            f"this one has {len(json_files)} (attachments: {found})"
        )
    name, signed = json_files[0]
    hashes = []
    for text in texts:
        found_hashes = set(PRINTED_HASH.findall(text))
        hashes.append(found_hashes.pop() if len(found_hashes) == 1 else None)
    return PdfReport(name, signed, tuple(hashes), texts[0] if texts else "")


def pdf_problems(pdf: PdfReport, tree_head_digest: str) -> list[str]:
    """Where the PDF's pages and its attached report disagree (empty: they agree)."""
    attached = hashlib.sha256(pdf.signed_json).hexdigest()
    problems = []
    if not pdf.page_hashes:
        problems.append("the PDF has no pages")
    for number, printed in enumerate(pdf.page_hashes, start=1):
        if printed is None:
            problems.append(f"page {number} prints no report hash (SHA-256) in its footer")
        elif printed != attached:
            problems.append(
                f"page {number} prints SHA-256 {printed}, but the attached report's is "
                f"{attached}: the pages show another report than the one attached"
            )
    flat = "".join(pdf.first_page_text.split())
    if tree_head_digest not in flat:
        problems.append(
            "page 1 does not print the tree head digest the attached report is signed over"
        )
    return problems


def _parse_key(raw: str, what: str) -> bytes:
    try:
        key = bytes.fromhex(raw.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise UsageError(f"{what} must be 64 hex digits (or a file holding them), not {raw!r}")
    return key


def _key(text: str, what: str) -> bytes:
    """A public key given as 64 hex digits, or a file holding them."""
    candidate = Path(text)
    try:
        if candidate.is_file():
            return _parse_key(_read_key_file(candidate), what)
        return _parse_key(text, what)
    except (UsageError, KeyFileError) as exc:
        raise fail(exc) from exc


def _read_key_file(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc}") from exc


def _trusted_shore_key(shore_key: str | None, shore_key_file: Path | None) -> bytes:
    """The inspector's trust anchor: --shore-key or --shore-key-file, exactly one."""
    try:
        if shore_key is not None and shore_key_file is not None:
            raise UsageError("give --shore-key or --shore-key-file, not both")
        if shore_key_file is not None:
            return _parse_key(_read_key_file(shore_key_file), f"--shore-key-file {shore_key_file}")
        if shore_key is None:
            raise UsageError(
                "a report verifies only against the shore's key you trust: give --shore-key "
                f"HEX or --shore-key-file FILE; {WHERE_THE_SHORE_KEY_IS}"
            )
    except (UsageError, KeyFileError) as exc:
        raise fail(exc) from exc
    return _key(shore_key, "--shore-key")


@app.command("verify")
def verify(
    file: Annotated[
        Path, typer.Argument(help="The report's JSON file, or its PDF (the JSON is attached).")
    ],
    shore_key: Annotated[
        str | None,
        typer.Option(help="The shore's public key you trust (hex, or a file holding it)."),
    ] = None,
    shore_key_file: Annotated[
        Path | None,
        typer.Option(help="A file holding the shore's public key (hex), pinned beforehand."),
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

    The shore's public key is required (--shore-key or --shore-key-file): a report is
    only as good as the key it is checked against, so get the key from the relay operator,
    never from the report. Prints the signer's key fingerprint and every problem found;
    exits 1 if there is any, 2 if no key is given. A PDF is checked through the signed
    JSON attached to it, and every page must print that JSON's SHA-256.

    Example: vessel-relay report verify report-4242-2026-10.pdf --shore-key-file shore.pub
    """
    trusted = _trusted_shore_key(shore_key, shore_key_file)
    pdf: PdfReport | None = None
    try:
        data = file.read_bytes()
        if data.startswith(b"%PDF-"):
            pdf = read_pdf_report(data)
            data = pdf.signed_json
        report = ComplianceReport.from_json(data)
    except OSError as exc:
        typer.echo(f"cannot read {file}: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    except PdfUnreadable as exc:
        typer.echo(f"{file} is not a readable compliance report PDF: {exc}", err=True)
        raise typer.Exit(1) from None
    except ReportInvalid as exc:
        typer.echo(f"{file} is not a readable compliance report: {exc.message}", err=True)
        raise typer.Exit(1) from None
    witnesses: dict[str, bytes] = {}
    for entry in witness or []:
        name, _, key = entry.partition("=")
        witnesses[name] = _key(key, f"witness {name!r}'s key")
    problems = verify_report(
        report,
        shore_key=trusted,
        vessel_key=_key(vessel_key, "--vessel-key") if vessel_key else None,
        witness_keys=witnesses,
    )
    head = report.head.head
    if pdf is not None:
        problems = [*pdf_problems(pdf, head.digest().hex()), *problems]
        typer.echo(
            f"PDF: {len(pdf.page_hashes)} pages, the signed report attached as "
            f"{pdf.attachment_name!r} (SHA-256 {hashlib.sha256(pdf.signed_json).hexdigest()})"
        )
    typer.echo(
        f"vessel {report.vessel_id} ({report.vessel_name}), month {report.month}: "
        f"{len(report.leaves)} logged batches, tree head {head.tree_size} "
        f"digest {head.digest().hex()}, rule {'met' if report.rule.met else 'NOT met'}, "
        f"{len(report.disagreements)} disagreements listed"
    )
    named = report.shore_public_key
    typer.echo(
        "signer:  "
        + (
            f"the report names shore key fingerprint {fingerprint(named)}"
            if named is not None
            else "the report does not name its signing key (made before reports did)"
        )
    )
    typer.echo(f"trusted: shore key fingerprint {fingerprint(trusted)} (the key you gave)")
    typer.echo(
        f"log:     C2SP checkpoint of {head.origin} (report version {report.version})"
        if head.origin is not None
        else "log:     a tree head in the format of vessel-relay before checkpoints "
        "(report version 1, made by an older relay; still verified)"
    )
    weekly = report.weekly
    if weekly is not None:
        every = sum(1 for line in weekly.crew if weekly.used_every_week(line.crew))
        typer.echo(
            f"weekly:  reachable in {len(weekly.reachable)} of {len(weekly.weeks)} weeks "
            f"({'every week' if weekly.reachable_every_week else 'NOT every week'}); "
            f"{every} of {len(weekly.crew)} crew members used it every week"
        )
    for disagreement in report.disagreements:
        typer.echo(f"  disagreement: {disagreement}")
    if problems:
        for problem in problems:
            typer.echo(f"FAIL: {problem}")
        raise typer.Exit(1)
    typer.echo(f"OK: the report verifies, signed by the shore key {fingerprint(trusted)}")


@app.command("verify-stats")
def verify_stats(
    file: Annotated[Path, typer.Argument(help="A union's signed grievance statistics (JSON).")],
    fingerprint_given: Annotated[
        str | None,
        typer.Option("--fingerprint", help="The union's key fingerprint, as the union told you."),
    ] = None,
    receipt_file: Annotated[
        Path | None,
        typer.Option(
            "--receipt",
            help="The relay's receipt ('union stats --publish'): checks the file is the one "
            "logged in the relay's transparency log (needs the shore's key).",
        ),
    ] = None,
    shore_key: Annotated[
        str | None,
        typer.Option(help="The shore's public key you trust (hex, or a file holding it)."),
    ] = None,
    shore_key_file: Annotated[
        Path | None,
        typer.Option(help="A file holding the shore's public key (hex), pinned beforehand."),
    ] = None,
) -> None:
    """Check a union's grievance statistics offline: the signature over every number, and
    that no published count is under the file's suppression threshold; with --receipt and
    the shore's key, also that the relay logged this very file in its transparency log (the
    receipt's inclusion proof in a checkpoint the shore signed). Exits 1 on any problem.

    Example: vessel-relay report verify-stats stats-2026.json --fingerprint "1a2b 3c4d ..."
    --receipt stats-2026.receipt.json --shore-key-file shore.pub
    """
    import json

    from protocol.grievance_stats import StatisticsInvalid, verify_statistics

    try:
        document = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(document, dict):
            raise StatisticsInvalid("not a signed grievance statistics file")
        body = verify_statistics(document)
    except OSError as exc:
        typer.echo(f"cannot read {file}: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    except (ValueError, StatisticsInvalid) as exc:
        typer.echo(f"NOT VERIFIED: {file}: {exc}", err=True)
        raise typer.Exit(1) from None
    seen = fingerprint(bytes.fromhex(str(body["signing_key"])))
    if fingerprint_given is not None and fingerprint_given.replace(" ", "") != seen.replace(
        " ", ""
    ):
        typer.echo(
            f"NOT VERIFIED: {file} is signed by key {seen}, not by the fingerprint you were "
            f"given ({fingerprint_given}): it does not come from that union",
            err=True,
        )
        raise typer.Exit(1)
    union = body.get("union")
    period = body.get("period")
    union = union if isinstance(union, dict) else {}
    period = period if isinstance(period, dict) else {}
    typer.echo(
        f"OK: grievance statistics of union {union.get('id')} ({union.get('name')}), "
        f"{period.get('from')} to {period.get('to')}, threshold {body['threshold']}, "
        f"signed by key {seen}"
    )
    if receipt_file is not None:
        from protocol.statistics_log import StatisticsReceipt, verify_receipt

        trusted = _trusted_shore_key(shore_key, shore_key_file)
        try:
            receipt = StatisticsReceipt.from_obj(
                json.loads(receipt_file.read_text(encoding="utf-8"))
            )
            leaf = verify_receipt(document, receipt, trusted)
        except OSError as exc:
            typer.echo(f"cannot read {receipt_file}: {exc.strerror}", err=True)
            raise typer.Exit(1) from None
        except (ValueError, StatisticsInvalid) as exc:
            typer.echo(f"NOT VERIFIED: {file} against {receipt_file}: {exc}", err=True)
            raise typer.Exit(1) from None
        typer.echo(
            f"OK: logged by the relay as leaf {receipt.index} (at minute "
            f"{leaf.logged_minutes}), in its checkpoint of {receipt.head.head.tree_size} "
            "leaves signed by the shore key you gave"
        )
    elif shore_key is not None or shore_key_file is not None:
        raise fail(UsageError("--shore-key checks a --receipt: give the relay's receipt too"))
    if fingerprint_given is None:
        typer.echo("compare that fingerprint with the one the union gives you directly")


@app.command("cosign")
def cosign_head(
    heads_file: Annotated[
        Path, typer.Argument(help="Signed heads from 'shore log heads --json' (or one head).")
    ],
    key: Annotated[Path, typer.Option(help="The witness's signing key file (0600, hex).")],
    witness: Annotated[
        str,
        typer.Option(
            help="The witness's name, one word as in a signed note, e.g. 'ilo.org/bangkok'."
        ),
    ],
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
    import time

    from common.keyfiles import KeyFileError, read_secret
    from protocol.compliance import HeadAltered, SignedTreeHead, cosign
    from protocol.errors import ProtocolError
    from protocol.signing import SigningKey, VerifyKey
    from shore.reports import cosignature_file

    try:
        obj: object = json.loads(heads_file.read_text(encoding="utf-8"))
        entries = obj if isinstance(obj, list) else [obj]
        signed = [SignedTreeHead.from_obj(entry) for entry in entries]
        witness_key = SigningKey.from_seed(read_secret(key))
    except OSError as exc:
        typer.echo(f"error: cannot read {exc.filename}: {exc.strerror}", err=True)
        raise typer.Exit(1) from None
    except HeadAltered as exc:
        typer.echo(f"REFUSED: {exc.message}; do not co-sign", err=True)
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
    try:
        cosignature = cosign(head, witness, witness_key, now_s=int(time.time()))
    except ReportInvalid as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"cosignature-{head.head.tree_size}-{head.head.timestamp_minutes}.json"
    path.write_bytes(cosignature_file(head, cosignature))
    typer.echo(f"co-signed the head of size {head.head.tree_size} as {witness!r}: {path}")
    typer.echo("Give it to the relay operator: vessel-relay shore log add-cosignature FILE")
