"""The crew page's first load, without a browser: fonts only for the page's language, a
language bar that needs none of the script fonts, static files cached by their content, a
favicon, BCP 47 ``lang`` attributes, and numbers and dates in the crew member's digits and
conventions (the rule of :mod:`shipboard.web.local`)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from common.codebooks import default_codebook
from protocol.languages import Language
from shipboard.http_api import create_app
from shipboard.intake import Intake
from shipboard.outbox import Outbox
from shipboard.web import local, pages
from shipboard.web.fonts import (
    FAMILIES,
    FONTS_DIR,
    NAMES_FAMILY,
    SCRIPT_FONTS,
    STYLE_SHEET,
    page_texts,
    script_of,
    served_fonts,
    unicode_range,
)
from shipboard.web.i18n import NATIVE_NAMES, PAGE_LANGUAGES, html_lang
from shipboard.web.pages import Moment, local_value
from vessel_relay.demo.defaults import demo_ship_config

#: The BCP 47 tags the page must write (issue 21), by ISO 639-3 code.
BCP47 = {
    "mya": "my",
    "khm": "km",
    "lao": "lo",
    "tha": "th",
    "ind": "id",
    "tgl": "fil",
    "vie": "vi",
    "eng": "en",
}


def _cmap(file: str) -> set[int]:
    from fontTools.ttLib import TTFont  # type: ignore[import-untyped]

    font = TTFont(str(FONTS_DIR / file))
    try:
        return set(font.getBestCmap())
    finally:
        font.close()


def test_each_page_subset_covers_its_language_sentences() -> None:
    """Every character that the page writes in Burmese, Khmer, Lao or Thai (sentences,
    quick messages, the language's name, digits, month names), and every part a shaper
    splits it into (Thai SARA AM is NIKHAHIT + SARA AA), is in that script's page subset,
    so a page in that language downloads that one small font and no other. (This fails
    when a translation changed and the fonts were not rebuilt.)"""
    fonts = served_fonts()
    for lang, text in page_texts().items():
        for script in {script_of(c) for c in text} - {None}:
            assert script is not None
            page = [f for f in fonts if f.family == FAMILIES[script] and "-page-" in f.file]
            assert len(page) == 1, f"{script}: one page subset"
            needed = {ord(c) for c in text if script_of(c) == script}
            needed |= {  # the parts shapers split a character into (Thai SARA AM ...)
                int(part, 16)
                for point in needed
                for part in unicodedata.decomposition(chr(point)).split()
                if not part.startswith("<")
            }
            missing = needed - (page[0].unicodes & _cmap(page[0].file))
            assert not missing, f"{lang.code}: {sorted(map(chr, missing))} not in {page[0].file}"


def test_full_fonts_come_first_so_the_page_subset_wins() -> None:
    """For each script the style sheet declares the whole-block font before the page
    subset (the browser tries the last-declared face first and fetches the whole-block
    font only for a character the subset lacks), and the subset is the smaller file."""
    fonts = served_fonts()
    for script, family in FAMILIES.items():
        faces = [f for f in fonts if f.family == family]
        assert [("-page-" in f.file) for f in faces] == [False, True], script
        full, page = faces
        assert page.unicodes < full.unicodes
        block = SCRIPT_FONTS[script][1]
        assert all(any(lo <= p <= hi for lo, hi in block) for p in full.unicodes if p > 0x2FFF)
        full_bytes = (FONTS_DIR / full.file).stat().st_size
        assert (FONTS_DIR / page.file).stat().st_size < full_bytes


def test_served_font_files_are_named_by_their_content_and_licensed() -> None:
    """Each font the style sheet names exists, its name carries the hash of its bytes
    (so a year-long cache is safe), it keeps the OFL notice in its name table, and no
    font lies in the folder that the style sheet does not name."""
    from fontTools.ttLib import TTFont

    fonts = served_fonts()
    named = {f.file for f in fonts}
    assert named == {p.name for p in FONTS_DIR.glob("*.woff2")}
    assert (FONTS_DIR / "NOTO-LICENSE.txt").exists()
    for served in fonts:
        data = (FONTS_DIR / served.file).read_bytes()
        assert served.file.endswith(f"-{hashlib.sha256(data).hexdigest()[:10]}.woff2")
        font = TTFont(str(FONTS_DIR / served.file))
        licence = font["name"].getDebugName(13) or ""
        font.close()
        assert "Open Font License" in licence, served.file


def test_the_language_bar_needs_only_the_names_font() -> None:
    """The language bar names every language in its own script; one small font (under
    4 KB) covers every such name, so a page in English loads no script font at all."""
    names = [f for f in served_fonts() if f.family == NAMES_FAMILY]
    assert len(names) == 1
    glyphs = _cmap(names[0].file)
    for lang, name in NATIVE_NAMES.items():
        for char in name:
            if script_of(char) is not None:
                assert ord(char) in glyphs, lang
                assert ord(char) in names[0].unicodes, lang
    assert (FONTS_DIR / names[0].file).stat().st_size < 4_000
    css = STYLE_SHEET.read_text(encoding="utf-8")
    assert re.search(r'\.langs a,\.langs b[^{]*\{font-family:"VR Names"', css)


def test_a_page_preloads_its_language_font_and_the_names_font() -> None:
    """A page in Burmese names its Myanmar page subset and the names font for preloading
    (fetched alongside the style sheet); a page in English only the names font."""
    from shipboard.web.fonts import preloads

    burmese = preloads(Language.MYA)
    assert len(burmese) == 2
    assert burmese[0].startswith("myanmar-page-")
    assert burmese[1].startswith("names-")
    assert preloads(Language.ENG) == burmese[1:]


def test_unicode_range_writes_runs() -> None:
    """Code points become CSS ranges: runs as ``U+A-B``, single points alone."""
    assert unicode_range([0x1002, 0x1000, 0x1001, 0x1005]) == "U+1000-1002,U+1005"


def test_digits_and_dates_follow_the_crew_members_conventions() -> None:
    """Burmese writes Myanmar digits and Khmer Khmer digits (as the Khmer sentences do);
    Thai dates count the Buddhist Era; Lao, Thai and English keep Western digits; numbers
    are grouped as each language groups them."""
    when = datetime(2026, 12, 7, 14, 5, tzinfo=UTC)
    assert local.number(10454, Language.MYA) == "၁၀,၄၅၄"
    assert local.number(10454, Language.KHM) == "១០,៤៥៤"
    assert local.number(10454, Language.ENG) == "10,454"
    assert local.number(10454, Language.IND) == "10.454"
    assert local.number(10454, Language.THA) == "10,454"
    assert local.moment(when, Language.MYA) == "၂၀၂၆ ဒီ ၇ ၁၄:၀၅"
    assert "2569" in local.moment(when, Language.THA)
    assert local.moment(when, Language.ENG) == "Dec 7, 2026, 2:05\u202fPM"
    assert local.digits("PIN 6-12", Language.MYA) == "PIN ၆-၁၂"
    for lang in PAGE_LANGUAGES:
        assert not re.search(r"\d{4}-\d{2}-\d{2}", local.moment(when, lang))


def test_identifiers_keep_western_digits() -> None:
    """A case number or a crew number shown in a sentence stays as typed (it is read out
    to the union or typed in); a count and a moment are written the crew member's way."""
    assert local_value("12-345", Language.MYA) == "12-345"
    assert local_value(True, Language.MYA) is True
    assert local_value(7, Language.MYA) == "၇"
    moment = Moment(datetime(2026, 1, 2, 3, 4, tzinfo=UTC))
    assert local_value(moment, Language.KHM) == local.moment(moment.at, Language.KHM)
    assert str(moment) == "2026-01-02 03:04"


def test_lang_attributes_are_bcp47() -> None:
    """HTML ``lang`` values are BCP 47 (``my``, ``fil`` ...), never ISO 639-3 codes that
    browsers and screen readers do not know; an unknown code is ``und``."""
    for lang in PAGE_LANGUAGES:
        assert html_lang(lang) == BCP47[lang.code]
        assert html_lang(lang.code) == BCP47[lang.code]
    assert html_lang(Language.SHN) == "shn"
    assert html_lang("xx") == "und"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    config = demo_ship_config(tmp_path)
    outbox = Outbox.open(config.database_path, config.vessel.vessel_id)
    intake = Intake(config, outbox, default_codebook())
    transport = httpx.ASGITransport(app=create_app(intake))
    async with httpx.AsyncClient(transport=transport, base_url="http://vessel") as http:
        yield http
    outbox.close()


async def test_static_files_are_cached_by_content_and_revalidated(
    client: httpx.AsyncClient,
) -> None:
    """The sign-in page names its style sheet and icons by their content hash: a phone
    keeps them a year without asking again. A static file asked for without its hash is
    kept a day and then revalidated: an unchanged one costs a 304 without a body. The
    page itself is never stored."""
    login = await client.get("/lang/mya", params={"next": "/login"}, follow_redirects=True)
    assert login.headers["cache-control"] == "no-store"
    assert '<html lang="my">' in login.text
    assert re.search(r'<a href="/lang/tgl\?next=/login" lang="fil"', login.text)
    assert 'lang="mya"' not in login.text
    assert 'lang="tgl"' not in login.text
    # icons are drawn inline (no request of their own), hidden from screen readers
    assert '<svg class="i s40" viewBox="0 0 24 24" stroke="#' in login.text
    assert "<img" not in login.text
    urls = re.findall(r'(?:href|src)="(/static/[^"]+)"', login.text)
    assert any(u.startswith("/static/style.css?v=") for u in urls)
    assert any(u.startswith("/static/fonts/names-") for u in urls)  # preloaded
    for url in urls:
        fetched = await client.get(url)
        assert fetched.status_code == 200
        assert fetched.headers["cache-control"] == "public, max-age=31536000, immutable"
        digest = hashlib.sha256(fetched.content).hexdigest()[:10]
        named = url.endswith(f"?v={digest}") or url.endswith(f"-{digest}.woff2")
        assert named, f"{url}: the URL names other content"
    plain = await client.get("/static/icons/warn.svg")
    assert plain.headers["cache-control"] == "public, max-age=86400"
    again = await client.get(
        "/static/icons/warn.svg", headers={"if-none-match": plain.headers["etag"]}
    )
    assert again.status_code == 304
    assert again.content == b""
    font = served_fonts()[0].file
    hashed = await client.get(f"/static/fonts/{font}")
    assert hashed.headers["cache-control"] == "public, max-age=31536000, immutable"


def test_an_icon_is_drawn_inline_in_as_few_bytes_as_it_takes() -> None:
    """Every icon is drawn in the page (an icon of its own would cost a request before the
    page can show) with only its colour and its paths: the style sheet gives all of them
    their stroke and size, so the report page's dozen icons stay cheap on every load."""
    sheet = (pages.HERE / "static" / "style.css").read_text()
    assert ".i{display:inline-block;" in sheet
    assert "stroke-width:2;stroke-linecap:round;stroke-linejoin:round}" in sheet
    for size in pages.ICON_SIZES:
        assert f".s{size}{{width:{size}px;height:{size}px}}" in sheet
    for path in sorted((pages.HERE / "static" / "icons").glob("*.svg")):
        drawn = str(pages.icon(path.stem, 32))
        original = path.read_text().strip()
        colour = re.search(r'stroke="(#[0-9a-f]+)"', original)
        assert colour is not None
        assert drawn.startswith(
            f'<svg class="i s32" viewBox="0 0 24 24" stroke="{colour.group(1)}" aria-hidden="true">'
        )
        assert drawn.endswith(original[original.index(">") + 1 :])  # the same paths
        assert len(drawn) < len(original)
    with pytest.raises(ValueError, match=r"no static/icons/anchor\.svg"):
        pages.icon("anchor")
    with pytest.raises(ValueError, match="sizes"):
        pages.icon("sos", 24)


async def test_the_favicon_is_served(client: httpx.AsyncClient) -> None:
    """A browser asking for /favicon.ico gets the page's icon (not a 404), cacheable."""
    icon = await client.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon.headers["content-type"] == "image/x-icon"
    assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO file
    assert icon.headers["cache-control"] == "public, max-age=604800"


async def test_a_full_reporting_channel_says_when_in_the_crew_members_digits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Burmese crew member's report meets a full reporting channel: the page says until
    when, as a Burmese date and time in Myanmar digits (the vessel's time zone), and
    keeps the text they wrote."""
    from shipboard.errors import LaneBusy

    config = demo_ship_config(tmp_path)
    outbox = Outbox.open(config.database_path, config.vessel.vessel_id)
    intake = Intake(config, outbox, default_codebook())
    member, pin = intake.register.add(
        name="Aung", document="MM-1", nationality="MM", language=Language.MYA, now=0.0
    )
    intake.register.choose_pin(member.crew, "80808080", None, 0.0)
    retry_at = 1_796_000_000.0

    def busy(*args: object, **kwargs: object) -> None:
        raise LaneBusy("(the lane's own words)", retry_at)

    monkeypatch.setattr(intake, "file_grievance", busy)
    transport = httpx.ASGITransport(app=create_app(intake))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://vessel", follow_redirects=True
    ) as http:
        login = await http.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)
        assert csrf
        home = await http.post(
            "/login", data={"crew": str(member.crew), "pin": "80808080", "csrf": csrf[1]}
        )
        assert home.url.path == "/home"
        csrf = re.search(r'name="csrf" value="([^"]+)"', home.text)
        assert csrf
        union = str(config.unions[0].union_id)
        refused = await http.post(
            "/report",
            data={"category": "8", "union": union, "text": "လစာ မရပါ", "csrf": csrf[1]},
        )
    outbox.close()
    del pin
    assert refused.status_code == 400
    when = datetime.fromtimestamp(retry_at, UTC).astimezone(config.time_zone)
    assert local.moment(when, Language.MYA) in refused.text
    assert "(the lane's own words)" not in refused.text
    assert "လစာ မရပါ" in refused.text
