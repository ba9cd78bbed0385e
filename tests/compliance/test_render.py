"""The report's PDF, HTML, CSV and QR: Thai glyphs embedded, figures on the page."""

from __future__ import annotations

import csv
import io
import re
import zlib

import pypdfium2
import pytest
from fontTools.ttLib import TTFont  # type: ignore[import-untyped]  # no stubs

from shore.report_render import THAI_FONT, qr_svg, render_csv, render_html, render_pdf
from tests.compliance.month import CREW, Month


@pytest.fixture(scope="module")
def pdf(month: Month) -> bytes:
    return render_pdf(month.report)


def test_every_thai_character_has_a_glyph(month: Month) -> None:
    """Each Thai character on the page is in the embedded Thai font's character map."""
    html = render_html(month.report)
    thai = {ch for ch in html if "\u0e00" <= ch <= "\u0e7f"}
    assert len(thai) > 20
    cmap = TTFont(str(THAI_FONT)).getBestCmap()
    missing = sorted(ch for ch in thai if ord(ch) not in cmap)
    assert missing == []


def _pdf_objects(pdf: bytes) -> bytes:
    """The PDF's bytes with every deflated stream (object streams too) inflated."""
    parts = [pdf]
    for raw in re.findall(rb"stream\r?\n(.*?)endstream", pdf, flags=re.DOTALL):
        try:
            parts.append(zlib.decompress(raw))
        except zlib.error:
            continue
    return b"\n".join(parts)


def test_pdf_embeds_a_thai_font_and_renders(pdf: bytes) -> None:
    """The PDF names an embedded Noto Sans Thai, its Thai text extracts, and page 1 draws."""
    objects = _pdf_objects(pdf)
    fonts = set(re.findall(rb"/FontName\s*/(?:[A-Z]{6}\+)?([A-Za-z0-9-]+)", objects))
    names = {name.decode() for name in fonts}
    assert any(name.startswith("Noto-Sans-Thai") for name in names), names
    assert b"/FontFile2" in objects  # TrueType program embedded, not merely referenced
    document = pypdfium2.PdfDocument(pdf)
    page = document[0]
    text = page.get_textpage().get_text_range()
    # (pdfium extracts SARA AM as two code points, so check a phrase without it)
    assert "รายงานการปฏิบัติตามกฎ" in text
    assert "\ufffd" not in text
    assert "Monthly compliance report" in text
    image = page.render(scale=1.5).to_pil()
    grey = image.convert("L")
    histogram = grey.histogram()
    dark = sum(histogram[:128])
    assert dark > 1000  # text was drawn, not a blank page
    document.close()


def test_csv_has_a_row_per_crew_member(month: Month) -> None:
    """The CSV for machines: a header and one row per crew member, shore and vessel figures."""
    rows = list(csv.DictReader(io.StringIO(render_csv(month.report))))
    assert len(rows) == CREW
    shore = {c.crew: c.sent_bytes for c in month.report.shore_crew}
    for row in rows:
        assert int(row["sent_bytes_ashore"]) == shore.get(int(row["crew"]), 0)
        assert row["sent_bytes_on_board"] == row["sent_bytes_ashore"]


def test_qr_carries_the_tree_head_digest(month: Month) -> None:
    """The QR code's payload is the signed head's size and digest (as printed beside it)."""
    svg = qr_svg(month.report)
    assert svg.lstrip().startswith("<svg")
    html = render_html(month.report)
    assert month.report.head.head.digest().hex()[:32] in html


def test_the_report_shows_each_link_under_its_own_tariff(month: Month) -> None:
    """The vessel's statement breaks its link use down by link (its Certus terminal, the
    SBD fallback, the harbour's 4G): the report lists each with its sessions, bytes, billed
    bytes and cost, and a statement without the breakdown shows no such line."""
    import dataclasses

    from protocol.compliance import LinkFigures

    statement = month.report.statement
    assert statement is not None
    links = (
        LinkFigures("iridium-certus", 3, 9_550, 15_360, 153_600),
        LinkFigures("iridium-sbd", 2, 230, 250, 800_000, failed_sessions=1),
        LinkFigures("port-4g", 1, 44_600, 44_600, 22_300),
    )
    broken_down = dataclasses.replace(
        month.report, statement=dataclasses.replace(statement, links=links)
    )
    html = render_html(broken_down)
    assert "per link, each under its own tariff" in html
    assert "iridium-sbd 2 sessions (and 1 failed), 230 link bytes, 250 billed, US$ 0.80;" in html
    assert "port-4g 1 sessions, 44,600 link bytes, 44,600 billed, US$ 0.02;" in html
    plain = dataclasses.replace(month.report, statement=dataclasses.replace(statement, links=None))
    assert "per link, each under its own tariff" not in render_html(plain)
