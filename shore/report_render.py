"""Report rendering: a compliance report as HTML and PDF (Thai and English side by side), CSV, JSON.

The PDF is WeasyPrint's rendering of the HTML page, with Noto Sans Thai (Debian package
``fonts-noto-core``) embedded through ``@font-face`` so that an inspector's reader needs no
Thai font of its own. A QR code (segno) on the page carries the signed tree head's digest,
the value ``vessel-relay report verify`` checks; weekly access is a table of the month's
ISO weeks per crew member, and each crew member's bytes per link a table of their own. The
CSV has one row per crew member (weekly access and bytes per link in its last columns); the
JSON is the signed report itself (:meth:`protocol.compliance.ComplianceReport.to_json`).

The PDF is PDF/A-3b (archival: fonts embedded, sRGB output intent, XMP metadata) and
carries the signed JSON inside it as an attached file (:data:`ATTACHMENT_RELATIONSHIP`
"Source": the data the pages are made from). Every page's footer prints its page number
and the SHA-256 of that attached JSON, so a printed page names the exact signed report it
shows; ``vessel-relay report verify report.pdf`` checks the attachment's signatures and
that every page's hash is the attachment's (:mod:`vessel_relay.report_cli`).
"""

from __future__ import annotations

import csv
import gc
import hashlib
import io
import os
import warnings
from datetime import UTC, datetime
from pathlib import Path

import jinja2
import segno

from protocol.compliance import ComplianceReport
from protocol.months import Month

#: Fonts embedded in the PDF (Thai first, then Latin); Debian's fonts-noto-core paths.
THAI_FONT = Path("/usr/share/fonts/truetype/noto/NotoSansThai-Regular.ttf")
THAI_BOLD_FONT = Path("/usr/share/fonts/truetype/noto/NotoSansThai-Bold.ttf")
LATIN_FONT = Path("/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf")

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
)


#: The PDF/A part and conformance level the PDF declares (ISO 19005-3, level B).
PDF_VARIANT = "pdf/a-3b"
#: How the attached JSON relates to the PDF (PDF/A-3 ``AFRelationship``).
ATTACHMENT_RELATIONSHIP = "Source"
#: The footer's words before the hash; ``report verify`` finds the hash after them.
FOOTER_HASH_LABEL = "Signed report attached as JSON, SHA-256"


class RenderError(Exception):
    """The report cannot be rendered here (for example, the Thai font is not installed)."""


def _minutes_text(minutes: int) -> str:
    return datetime.fromtimestamp(minutes * 60, UTC).strftime("%Y-%m-%d %H:%M UTC")


def qr_svg(report: ComplianceReport) -> str:
    """An SVG QR code carrying the tree head's digest (``vr-sth:SIZE:DIGEST``)."""
    head = report.head.head
    payload = f"vr-sth:{head.tree_size}:{head.digest().hex()}"
    buffer = io.BytesIO()
    segno.make(payload, error="m").save(buffer, kind="svg", scale=3, xmldecl=False)
    return buffer.getvalue().decode()


def render_html(report: ComplianceReport) -> str:
    """The report as one self-contained HTML page (fonts referenced by file URL)."""
    if not THAI_FONT.exists():
        raise RenderError(
            f"the Thai font {THAI_FONT} is missing; install it with "
            "'apt-get install fonts-noto-core'"
        )
    template = _TEMPLATES.get_template("compliance_report.html")
    return template.render(
        report=report,
        lines=report.crew_lines(),
        names={c.crew: c.name for c in report.statement.crew} if report.statement else {},
        month=str(Month.from_key(report.month)),
        made=_minutes_text(report.made_minutes),
        head_time=_minutes_text(report.head.head.timestamp_minutes),
        digest=report.head.head.digest().hex(),
        qr=qr_svg(report),
        thai_font=THAI_FONT.as_uri(),
        thai_bold_font=THAI_BOLD_FONT.as_uri(),
        latin_font=LATIN_FONT.as_uri(),
    )


def attachment_name(report: ComplianceReport) -> str:
    """The attached JSON's file name, e.g. ``compliance-report-4242-2026-10.json``."""
    return f"compliance-report-{report.vessel_id}-{Month.from_key(report.month)}.json"


def report_sha256(signed_json: bytes) -> str:
    """The hash printed on every page: SHA-256 of the signed JSON, in hex."""
    return hashlib.sha256(signed_json).hexdigest()


def _page_css(digest: str) -> str:
    """The PDF's footer: page N of M (left), the attached report's hash (right)."""
    if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        raise ValueError(f"not a SHA-256 hex digest: {digest!r}")
    return (
        "@page {"
        " @bottom-left { content: 'Page ' counter(page) ' of ' counter(pages)"
        " ' · หน้า ' counter(page) '/' counter(pages);"
        " font-family: 'Noto Sans', 'Noto Sans Thai', sans-serif; font-size: 7pt; color: #333; }"
        f" @bottom-right {{ content: '{FOOTER_HASH_LABEL} {digest}';"
        " font-family: 'Noto Sans', sans-serif; font-size: 7pt; color: #333; }"
        " }"
    )


def render_pdf(report: ComplianceReport) -> bytes:
    """The report as a PDF/A-3b with its fonts embedded, the signed JSON attached, and on
    every page its number and the JSON's SHA-256 (WeasyPrint)."""
    import weasyprint

    signed = report.to_json()
    made = datetime.fromtimestamp(report.made_minutes * 60, UTC)
    attachment = weasyprint.Attachment(
        file_obj=io.BytesIO(signed),
        name=attachment_name(report),
        description="The signed compliance report these pages show; check it with "
        "'vessel-relay report verify'",
        created=made,
        modified=made,
        relationship=ATTACHMENT_RELATIONSHIP,
    )
    html = render_html(report)
    with warnings.catch_warnings():
        # WeasyPrint 70 opens its sRGB profile for the PDF/A output intent and leaves the
        # file to be closed when its document is freed; collect that here, quietly.
        warnings.filterwarnings("ignore", r"unclosed file .*sRGB2014\.icc", ResourceWarning)
        pdf: bytes = weasyprint.HTML(string=html, base_url=str(Path(__file__).parent)).write_pdf(
            stylesheets=[weasyprint.CSS(string=_page_css(report_sha256(signed)))],
            attachments=[attachment],
            pdf_variant=PDF_VARIANT,
        )
        gc.collect()
    return pdf


def render_csv(report: ComplianceReport) -> str:
    """One row per crew member: the agent's and the shore's figures (bytes of text)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "vessel_id",
            "month",
            "crew",
            "name",
            "document",
            "nationality",
            "quota_bytes",
            "offered_bytes",
            "sent_bytes_on_board",
            "sent_bytes_ashore",
            "delivered_bytes_on_board",
            "delivered_bytes_ashore",
            "failed_bytes_on_board",
            "failed_bytes_ashore",
            # weekly access (issue 23), appended: ISO weeks of the month, those in which
            # the crew member could use the system, and those in which they did (YYYYWW)
            "weeks_in_month",
            "weeks_could",
            "weeks_used",
            "weeks_used_list",
            # bytes per link (issue 25), appended: "link text wire billed" per link the
            # crew member's family messages went over, separated by "; "
            "bytes_per_link",
        ]
    )
    weekly = {c.crew: c for c in report.weekly.crew} if report.weekly else {}
    for line in report.crew_lines():
        a, s = line.agent, line.shore
        weeks = weekly.get(line.crew)
        writer.writerow(
            [
                report.vessel_id,
                str(Month.from_key(report.month)),
                line.crew,
                a.name if a else "",
                a.document if a else "",
                a.nationality if a else "",
                a.quota_bytes if a else "",
                a.offered_bytes if a else "",
                a.sent_bytes if a else "",
                s.sent_bytes if s else 0,
                a.delivered_bytes if a else "",
                s.delivered_bytes if s else 0,
                a.failed_bytes if a else "",
                s.failed_bytes if s else 0,
                len(report.weekly.weeks) if report.weekly else "",
                len(weeks.could) if weeks else "",
                len(weeks.did) if weeks else "",
                " ".join(str(w) for w in weeks.did) if weeks else "",
                _bytes_per_link(report, line.crew),
            ]
        )
    return out.getvalue()


def _bytes_per_link(report: ComplianceReport, crew: int) -> str:
    """``link text wire billed`` per link of the crew member ("" when not counted)."""
    if report.statement is None:
        return ""
    return "; ".join(
        f"{entry.profile} {entry.text_bytes} {entry.wire_bytes} "
        f"{'' if entry.billed_bytes is None else entry.billed_bytes}".rstrip()
        for entry in report.statement.links_of(crew)
    )


def write_all(report: ComplianceReport, directory: Path, stem: str) -> list[Path]:
    """Write ``stem``.json, .csv, .html and .pdf into ``directory`` (each atomically)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, data in (
        (".json", report.to_json()),
        (".csv", render_csv(report).encode()),
        (".html", render_html(report).encode()),
        (".pdf", render_pdf(report)),
    ):
        path = directory / f"{stem}{suffix}"
        temporary = path.with_suffix(suffix + ".tmp")
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        written.append(path)
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return written
