"""The compliance report's PDF is an archive an auditor can file: PDF/A-3b, numbered pages,
the signed JSON inside it, its hash on every page; 'report verify' checks a PDF through that
JSON and refuses one whose attachment was changed or swapped for another report."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter
from pypdf.generic import NameObject, NumberObject, StreamObject
from typer.testing import CliRunner

from shore.report_render import (
    ATTACHMENT_RELATIONSHIP,
    FOOTER_HASH_LABEL,
    attachment_name,
    render_pdf,
)
from tests.compliance.month import Month
from tests.shore.store_fixtures import SHORE_KEY
from vessel_relay.cli import app
from vessel_relay.report_cli import PRINTED_HASH

runner = CliRunner()


@pytest.fixture(scope="module")
def pdf(month: Month) -> bytes:
    return render_pdf(month.report)


def _verify(path: Path) -> tuple[int, str]:
    result = runner.invoke(
        app, ["report", "verify", str(path), "--shore-key", SHORE_KEY.verify_key.hex()]
    )
    return result.exit_code, result.output


def _with_attachment(pdf: bytes, content: bytes) -> bytes:
    """The PDF with its attached file's bytes replaced (as a forger would, with a tool)."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    names = writer.root_object["/Names"]["/EmbeddedFiles"]["/Names"]  # type: ignore[index]
    spec = names[1].get_object()
    stream = spec["/EF"]["/F"].get_object()
    assert isinstance(stream, StreamObject)
    stream.set_data(content)
    stream["/Params"][NameObject("/Size")] = NumberObject(len(content))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_the_pdf_is_pdf_a_3b_with_the_signed_json_attached(month: Month, pdf: bytes) -> None:
    """The PDF declares PDF/A-3 level B in its XMP metadata, has an sRGB output intent,
    and carries exactly the signed JSON, named after vessel and month, as its 'Source'."""
    reader = PdfReader(io.BytesIO(pdf))
    xmp = reader.xmp_metadata
    assert xmp is not None
    packet = xmp.stream.get_data().decode()
    assert 'pdfaid:part="3"' in packet
    assert 'pdfaid:conformance="B"' in packet
    root = reader.trailer["/Root"]
    assert root["/OutputIntents"][0].get_object()["/S"] == "/GTS_PDFA1"
    assert reader.attachments == {attachment_name(month.report): [month.report.to_json()]}
    (spec,) = {ref.get_object()["/F"]: ref.get_object() for ref in root["/AF"]}.values()
    assert spec["/AFRelationship"] == f"/{ATTACHMENT_RELATIONSHIP}"
    assert spec["/EF"]["/F"].get_object()["/Subtype"] == "/application/json"  # #2F decoded


def test_every_page_has_its_number_and_the_reports_hash(month: Month, pdf: bytes) -> None:
    """Each page's footer says 'Page N of M' and the SHA-256 of the attached JSON, so a
    single printed page still names the exact signed report it belongs to."""
    reader = PdfReader(io.BytesIO(pdf))
    digest = hashlib.sha256(month.report.to_json()).hexdigest()
    pages = len(reader.pages)
    assert pages >= 1
    for number, page in enumerate(reader.pages, start=1):
        text = page.extract_text()
        assert f"Page {number} of {pages}" in text
        assert f"{FOOTER_HASH_LABEL} {digest}" in text
        assert PRINTED_HASH.findall(text) == [digest]


def test_verify_accepts_the_pdf(pdf: bytes, tmp_path: Path) -> None:
    """An inspector checks the PDF itself: the attached report verifies and every page
    prints its hash."""
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    code, output = _verify(path)
    assert code == 0, output
    assert re.search(
        r"^PDF: \d+ pages, the signed report attached as 'compliance-report-", output, re.M
    )
    assert "OK: the report verifies" in output


def test_verify_refuses_a_pdf_whose_attached_report_was_edited(
    month: Month, pdf: bytes, tmp_path: Path
) -> None:
    """Someone edits a figure in the attached JSON: the shore's signature no longer
    matches, and the pages' hash is not the attachment's; exit 1."""
    signed = month.report.to_json()
    edited = signed.replace(b'"failed_bytes": ', b'"failed_bytes": 1', 1)
    assert edited != signed
    path = tmp_path / "edited.pdf"
    path.write_bytes(_with_attachment(pdf, edited))
    code, output = _verify(path)
    assert code == 1, output
    assert "the pages show another report than the one attached" in output
    assert "FAIL: the shore's signature over the report does not match its contents" in output


def test_verify_refuses_a_pdf_with_another_genuine_report_attached(
    month: Month, pdf: bytes, tmp_path: Path
) -> None:
    """A genuine, signed report of another vessel swapped in: its signature verifies, but
    every page prints the hash of the report it shows, not of this one; exit 1."""
    path = tmp_path / "swapped.pdf"
    path.write_bytes(_with_attachment(pdf, month.other_leaf_report.to_json()))
    code, output = _verify(path)
    assert code == 1, output
    assert re.search(r"^FAIL: page 1 prints SHA-256 [0-9a-f]{64}, but the attached", output, re.M)


def test_verify_explains_a_pdf_without_a_report(tmp_path: Path, pdf: bytes) -> None:
    """A PDF without the attached JSON, or a damaged one, gets one sentence and exit 1."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    del writer.root_object["/Names"]  # type: ignore[attr-defined]
    bare = io.BytesIO()
    writer.write(bare)
    path = tmp_path / "bare.pdf"
    path.write_bytes(bare.getvalue())
    code, output = _verify(path)
    assert code == 1
    assert "carries exactly one attached .json file (the signed report); this one has 0" in output
    damaged = tmp_path / "damaged.pdf"
    damaged.write_bytes(pdf[:200])
    code, output = _verify(damaged)
    assert code == 1
    assert "is not a readable compliance report PDF" in output
