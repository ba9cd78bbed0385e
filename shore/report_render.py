"""Report rendering: a compliance report as HTML and PDF (Thai and English side by side), CSV, JSON.

The PDF is WeasyPrint's rendering of the HTML page, with Noto Sans Thai (Debian package
``fonts-noto-core``) embedded through ``@font-face`` so that an inspector's reader needs no
Thai font of its own. A QR code (segno) on the page carries the signed tree head's digest,
the value ``vessel-relay report verify`` checks. The CSV has one row per crew member; the
JSON is the signed report itself (:meth:`protocol.compliance.ComplianceReport.to_json`).
"""

from __future__ import annotations

import csv
import io
import os
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
        month=str(Month.from_key(report.month)),
        made=_minutes_text(report.made_minutes),
        head_time=_minutes_text(report.head.head.timestamp_minutes),
        digest=report.head.head.digest().hex(),
        qr=qr_svg(report),
        thai_font=THAI_FONT.as_uri(),
        thai_bold_font=THAI_BOLD_FONT.as_uri(),
        latin_font=LATIN_FONT.as_uri(),
    )


def render_pdf(report: ComplianceReport) -> bytes:
    """The report as a PDF with its fonts embedded (WeasyPrint)."""
    import weasyprint

    html = render_html(report)
    pdf: bytes = weasyprint.HTML(string=html, base_url=str(Path(__file__).parent)).write_pdf()
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
        ]
    )
    for line in report.crew_lines():
        a, s = line.agent, line.shore
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
            ]
        )
    return out.getvalue()


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
