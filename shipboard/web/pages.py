"""Crew web page: server-rendered pages (Jinja2) over :class:`~shipboard.intake.Intake`.

Pages: sign in (crew number + PIN; choose an own PIN and an optional duress PIN at the
first sign-in), home (menu and quota meter), write home (the limit said in characters
first; a text over it is refused with how many characters to take off, and kept), quick
messages (one confirmation step before one is queued), a message's stages, report a
problem (the choices first; who can read it one tap away), SOS (one confirmation step),
inbox (conversations: :mod:`shipboard.web.conversations`), add a contact, language
switch. The sign-in page has an SOS button: ``/sos`` works without signing in too (crew
number typed, no PIN; flagged ashore as sent without a PIN). Wrong PINs count with the
API's and SMTP's (:mod:`shipboard.signin`); a paused sign-in says how many minutes to
wait and that an SOS needs no PIN. Forms are read within bounds (:func:`read_form`); a
refused request gets the error page in the crew member's language.
No JavaScript but the write page's voice recorder (a small inline script: record or
choose a recording, listen, send; the page works without it); every form carries a
CSRF token (but the SOS without a PIN, which uses nobody's sign-in and must not fail on
a stale form); sign-ins are cookies that expire
(:mod:`shipboard.web.phones`); every page is ``Cache-Control: no-store`` (the API's
middleware), while fonts and style sheets are cached for a year under URLs that name
their content; icons are drawn inline (:func:`icon`).

A duress PIN signs in normally but shows an empty inbox, no contacts' history and no
cases; a grievance report or SOS sent from it still goes out. Message text, report text
and addresses are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import math
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, pass_context, select_autoescape
from jinja2.runtime import Context
from markupsafe import Markup
from starlette.datastructures import FormData, QueryParams
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from common.http import BodyTooLarge, MalformedRequest, RequestRefused, bounded_int
from common.signins import SignInGuard
from protocol.cases import case_number as make_case_number
from protocol.cases import reporter_reply_keys
from protocol.envelopes import CaseStatus, FailureReason
from protocol.evidence import fingerprint
from protocol.languages import Language
from protocol.phrases import PHRASE_CODES, phrase, phrase_icon
from protocol.sealing import GrievanceCategory
from shipboard.case_view import Reader, my_cases, show_case
from shipboard.crew import MAX_CREW_NUMBER
from shipboard.errors import (
    CrewRegisterError,
    IntakeRefused,
    LaneBusy,
    NotSignedIn,
    OutboxUnavailable,
    SignInPaused,
)
from shipboard.inbox import DeliveryStage, InboxKind
from shipboard.intake import FiledReport, Intake
from shipboard.lane import LaneProgress
from shipboard.message_limit import characters_left, characters_over, usual_characters
from shipboard.signin import CrewSignIn
from shipboard.states import MessageKind, MessageState
from shipboard.voice import MAX_RECORDING_BYTES, playable_speech
from shipboard.web import fonts, local
from shipboard.web.conversations import case_thread, contact_threads, newest_first
from shipboard.web.i18n import (
    HTML_LANG,
    NATIVE_NAMES,
    PAGE_LANGUAGES,
    Translations,
    html_lang,
    page_language,
)
from shipboard.web.phones import SignedInPhone, SignedInPhones, csrf_ok

logger = logging.getLogger(__name__)

_Page = Callable[[Request, SignedInPhone], Awaitable[Response]]

HERE = Path(__file__).parent
SIGN_IN_COOKIE = "vr_session"  # the name phones hold (kept)
LOGIN_COOKIE = "vr_login"
LANG_COOKIE = "vr_lang"
#: Largest body of a report sealed on the phone (the largest padding bucket, sealed).
MAX_SEALED_BYTES = 65536
#: Bytes of quota that one short message uses, to say the quota in plain words.
SHORT_MESSAGE_BYTES = 100

#: Grievance categories: icon name and short label (a msgid), in the order shown.
CATEGORIES: tuple[tuple[GrievanceCategory, str, str], ...] = (
    (GrievanceCategory.WITHHOLDING_OF_WAGES, "no-wages", "Wages withheld"),
    (GrievanceCategory.UNPAID_OR_UNSENT_WAGES, "money-home", "Wages not paid or not sent home"),
    (GrievanceCategory.RETENTION_OF_DOCUMENTS, "passport", "Documents kept from me"),
    (GrievanceCategory.PHYSICAL_OR_SEXUAL_VIOLENCE, "fist", "Violence"),
    (GrievanceCategory.INTIMIDATION_AND_THREATS, "warn", "Threats"),
    (GrievanceCategory.EXCESSIVE_OVERTIME, "clock", "Too many working hours"),
    (GrievanceCategory.INJURY_OR_ILLNESS, "sick", "Injury or illness"),
    (GrievanceCategory.CANNOT_CONTACT_FAMILY, "no-signal", "Cannot contact family"),
    (GrievanceCategory.FOOD_AND_WATER, "food", "Food and water"),
    (GrievanceCategory.DEBT_BONDAGE, "chain", "Debt I cannot pay off"),
    (GrievanceCategory.DECEPTION, "mask", "Lied to about the job"),
    (GrievanceCategory.RESTRICTION_OF_MOVEMENT, "lock", "Not allowed to leave"),
    (GrievanceCategory.ISOLATION, "island", "Kept away from others"),
    (GrievanceCategory.ABUSIVE_CONDITIONS, "bed", "Bad living conditions"),
    (GrievanceCategory.ABUSE_OF_VULNERABILITY, "pressed", "Taken advantage of"),
    (GrievanceCategory.OTHER, "other", "Something else"),
)

#: What a message's state (or its stage ashore, in the inbox) is called on the page.
STAGE_WORDS: dict[str, str] = {
    MessageState.ACCEPTED: "Queued on board",
    MessageState.BATCHED: "Queued on board",
    MessageState.SENT: "Sent",
    MessageState.ACKNOWLEDGED: "Accepted ashore",
    DeliveryStage.ACCEPTED_ASHORE: "Accepted ashore",
    MessageState.DELIVERED: "Delivered",
    MessageState.FAILED: "Failed",
}
STAGE_ORDER = (
    MessageState.ACCEPTED,
    MessageState.SENT,
    MessageState.ACKNOWLEDGED,
    MessageState.DELIVERED,
)

#: How far a report of the grievance lane has got on board (known only since the agent
#: started), in the case's timeline.
PROGRESS_WORDS = {
    LaneProgress.SENT: "Sent",
    LaneProgress.ACKNOWLEDGED: "Accepted ashore",
}

FAILURE_WORDS = {
    FailureReason.ADDRESS_INVALID: "The address or phone number is wrong.",
    FailureReason.RECIPIENT_REFUSED: "Your family's e-mail or phone refused it.",
    FailureReason.DEADLINE_PASSED: "It could not be delivered in time.",
    FailureReason.UNKNOWN_CONTACT: "This contact is not known ashore yet. It will be sent again.",
    FailureReason.REJECTED_BY_RELAY: "The shore relay refused it.",
    FailureReason.PROVIDER_ERROR: "The e-mail or SMS service failed.",
}

CASE_WORDS = {
    CaseStatus.RECEIVED: "Received by the union",
    CaseStatus.ACKNOWLEDGED: "The union is looking at it",
    CaseStatus.IN_PROGRESS: "The union is working on it",
    CaseStatus.REFERRED: "Passed to an authority",
    CaseStatus.RESOLVED: "Resolved",
    CaseStatus.CLOSED: "Closed",
}

REFUSAL_WORDS = {
    "quota-exceeded": "Not enough of this month's quota is left for this message. Write a "
    "shorter message or send a quick message.",
    # (an empty text says so: shipboard.errors.EmptyText carries its own sentence)
    "bad-text": "Some of the text cannot be read. Please type it again.",
    "too-large": "The message is too long. Please make it shorter.",
    "unknown-contact": "Choose a contact from your list.",
    "unknown-union": "Choose a union from the list.",
}
NOT_SAVED = (
    "NOT saved: the vessel's computer has a storage problem. Try again later and tell the captain."
)
RATE_LIMITED = "You sent many messages in a short time. Wait ten minutes, then try again."
#: A sealed report whose case number this sign-in did not draw (an old page).
STALE_PAGE = "The page is too old. Reload it and send the report again."
#: What a blank message or report is told (:class:`shipboard.errors.EmptyText`; the
#: catalogue has them from here, ``tests/web`` checks they are the same sentences).
EMPTY_TEXTS = (
    "The message is empty. Write something, then send it.",
    "The report is empty. Write what happened, then send it.",
)
#: What a family message over the limit is told (the ``msgid`` of
#: :class:`shipboard.errors.MessageTooLong`; ``tests/web`` checks it is the same sentence).
TOO_LONG_BY = (
    "The message is too long by {n} characters. Shorten it by {n} characters, or send "
    "the rest in a second message. One message holds about {limit} characters."
)
#: What a report over its text limit is told (:class:`shipboard.errors.ReportTextTooLong`).
REPORT_TOO_LONG_BY = (
    "The report is too long by {n} characters. Shorten it by {n} characters, or send the "
    "rest in a second report."
)
#: What the grievance lane's refusals say (the ``msgid`` of :class:`shipboard.errors.
#: LaneBusy` and :class:`shipboard.errors.ReportTooLongForLane`), here so that the
#: catalogue has them; ``tests/web`` checks they are the same sentences.
LANE_REFUSALS = (
    "The report was NOT saved: the reporting channel is full until {time}. Keep your "
    "text and send it again after {time}.",
    "The report is too long to send: the reporting channel takes at most {limit} KB. "
    "Please shorten it or send it in two reports.",
)
#: When a report leaves the vessel (the "report saved" page, and the phone's in mode A):
#: the usual sentence, and the one with the time when it leaves later than that.
LEAVES_USUALLY = (
    "It leaves the vessel within about a day and a half, inside traffic that looks the same "
    "whether anyone reports or not. A long report takes longer."
)
LEAVES_LATE = (
    "It leaves the vessel by about {time}, inside traffic that looks the same whether "
    "anyone reports or not. It waits this long because the report is long or the vessel's "
    "computer was restarted."
)
#: Sign-in sentences (the crew API says them too, in the visitor's language).
WRONG_PIN = "The crew number or the PIN is wrong."
SIGNED_OFF = "You are signed off this vessel; messages can no longer be sent."
SIGN_IN_PAUSED = (
    "Too many wrong PINs for this crew number. Try again in {minutes} min. "
    "An SOS needs no PIN: use the SOS button."
)
CANNOT_CHECK = (
    "The vessel's computer cannot check PINs right now. Try again later. An SOS still works."
)
#: Refusals of a request itself (too large, broken), in the visitor's language.
TOO_LARGE = "This is too long for this page. Please make it shorter."
BROKEN_REQUEST = "The page sent a broken request. Reload the page and try again."
UNREADABLE_TEXT = "Some of the text cannot be read. Please type it again."
#: Fields a form of the crew page has at most (the report form has the most).
MAX_FORM_FIELDS = 16

PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; font-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

#: The write page's voice recorder: a small script inlined in the page (no request of its
#: own, no framework), allowed by its hash alone; it records with the phone's browser
#: (MediaRecorder) or takes a recording chosen on the phone, plays it back from memory
#: (``blob:``) and posts it to ``/write/voice``. Without it the page works as before.
VOICE_SCRIPT = Markup((HERE / "templates" / "voice_note.js").read_text(encoding="utf-8"))
_VOICE_SCRIPT_HASH = base64.b64encode(hashlib.sha256(VOICE_SCRIPT.encode("utf-8")).digest())
WRITE_CSP = (
    f"default-src 'none'; script-src 'sha256-{_VOICE_SCRIPT_HASH.decode('ascii')}'; "
    "connect-src 'self'; media-src 'self' blob:; style-src 'self'; img-src 'self'; "
    "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
#: What a voice message sent from the write page is told when it is not saved because
#: of how it was sent (the recording's own refusals are shipboard.errors.VoiceNoteRefused).
VOICE_NOT_SAVED = "The voice message was NOT saved. Reload the page and send it again."


#: Cache lifetime of a static file asked for by its content hash (``static_url``) or
#: named by it (the fonts): a year, never revalidated. Anything else: a day, then a
#: revalidation that costs a 304 (ETag, Last-Modified).
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "public, max-age=86400"
_HASHED_NAME = re.compile(r"-[0-9a-f]{10}\.[a-z0-9]+$")


class _CachedStatic(StaticFiles):
    """Fonts, icons and the style sheet: immutable when the URL names their content
    (``?v=HASH`` or a hashed file name), else cached a day and revalidated (ETag)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        hashed = b"v=" in scope.get("query_string", b"") or _HASHED_NAME.search(path)
        response.headers["cache-control"] = IMMUTABLE if hashed else REVALIDATE
        return response


_STATIC = _CachedStatic(directory=HERE / "static")


#: Icon sizes a page may ask for (CSS pixels): each is a class of the style sheet.
ICON_SIZES = (20, 32, 40)
_ICON_NAME = re.compile(r"[a-z-]+")
#: What every icon file's root says (the style sheet's ``.i`` rule says it once for all
#: icons), with the stroke's colour, which is the icon's own.
_ICON_ROOT = re.compile(
    r'^<svg xmlns="http://www\.w3\.org/2000/svg" viewBox="0 0 24 24" fill="none" '
    r'stroke="(#[0-9a-f]{3,6})" stroke-width="2" stroke-linecap="round" '
    r'stroke-linejoin="round">(.*)</svg>$',
    re.S,
)


@cache
def _content_hash(path: str) -> str:
    return hashlib.sha256((HERE / "static" / path).read_bytes()).hexdigest()[:10]


def static_url(path: str) -> str:
    """The URL of a static file that names its content (``/static/style.css?v=HASH``), so
    that a phone keeps it a year and fetches it again only when it changes."""
    return f"/static/{path}?v={_content_hash(path)}"


@cache
def icon(name: str, size: int = 40) -> Markup:
    """An icon (``static/icons/NAME.svg``) drawn inline, in as few bytes as it takes: its
    colour and its paths; the style sheet's ``.i`` rule gives every icon its stroke and
    the ``sN`` class its size. Inline, because an icon of its own costs a request before
    the page can show (a round trip on a slow link; a sprite, or ``data:`` images in the
    style sheet, cost Lighthouse's simulated 3G 0.3-0.4 s of LCP on the report page).
    Decorative: hidden from screen readers, the link's text says what it does."""
    if not _ICON_NAME.fullmatch(name):
        raise ValueError(f"icon name {name!r}: lower-case letters and hyphens only")
    if size not in ICON_SIZES:
        raise ValueError(f"icon size {size}: the style sheet has sizes {ICON_SIZES}")
    path = HERE / "static" / "icons" / f"{name}.svg"
    if not path.is_file():
        raise ValueError(f"icon {name!r}: there is no static/icons/{name}.svg")
    drawn = _ICON_ROOT.match(path.read_text(encoding="utf-8").strip())
    if drawn is None:
        raise ValueError(f"icon file {path.name}: its <svg> says more than a colour")
    colour, paths = drawn.groups()
    return Markup(
        f'<svg class="i s{size}" viewBox="0 0 24 24" stroke="{colour}" aria-hidden="true">'
        f"{paths}</svg>"
    )


class Moment:
    """A moment the page shows (message stages, replies, cases): written in the page's
    language when rendered (:func:`shipboard.web.local.moment`); ``str()`` is ISO-like."""

    __slots__ = ("at",)

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __str__(self) -> str:
        return self.at.strftime("%Y-%m-%d %H:%M")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Moment) and other.at == self.at

    def __hash__(self) -> int:
        return hash(self.at)


def local_value(value: object, lang: Language) -> object:
    """A value shown to the crew member in their digits and conventions: a number (a
    quantity, not a bool) or a :class:`Moment`; anything else as it is (identifiers such
    as case numbers are strings and keep their Western digits)."""
    if isinstance(value, Moment):
        return local.moment(value.at, lang)
    if isinstance(value, int) and not isinstance(value, bool):
        return local.number(value, lang)
    return value


@pass_context
def _finalize(context: Context, value: object) -> object:
    """Every ``{{ value }}`` of a template: moments in the page's language."""
    if isinstance(value, Moment):
        return local.moment(value.at, context.get("lang", Language.ENG))
    return value


ENV = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
    finalize=_finalize,
)


class _Refusal(Exception):
    """A sentence (msgid, with its ``{fields}``) to show on the form again."""

    def __init__(self, msgid: str, **fields: object) -> None:
        super().__init__(msgid)
        self.msgid = msgid
        self.fields = fields


def _minutes_text(minutes: int | None, zone: Any) -> Moment | str:
    """A moment given in minutes since 1970, in the vessel's time zone ("" if none)."""
    if minutes is None:
        return ""
    return Moment(datetime.fromtimestamp(minutes * 60, UTC).astimezone(zone))


def _seconds_text(seconds: float | None, zone: Any) -> Moment | str:
    """A moment given in seconds since 1970, in the vessel's time zone ("" if none)."""
    if seconds is None:
        return ""
    return Moment(datetime.fromtimestamp(seconds, UTC).astimezone(zone))


def _failure_words(code: int | None) -> str:
    """Why a message failed, in words (a msgid)."""
    try:
        return FAILURE_WORDS[FailureReason(int(code if code is not None else -1))]
    except (ValueError, KeyError):
        return "It could not be delivered."


def _count_of(text: str, lang: Language) -> dict[str, int] | None:
    """The write page's counter for a text kept in the form: characters left, or over."""
    if not text.strip():
        return None
    return {"left": characters_left(text, lang), "over": characters_over(text)}


def render_page(
    translations: Translations,
    request: HTTPConnection,
    template: str,
    phone: SignedInPhone | None,
    lang: Language,
    status: int = 200,
    **values: object,
) -> HTMLResponse:
    """A crew page in ``lang`` (``_`` translates a msgid, with ``{fields}`` filled in;
    ``ngettext`` a counted one, in the form the language uses for ``n``; numbers and
    moments in the fields are written in the language's digits and conventions)."""

    def _(msgid: str, **fields: object) -> str:
        text = translations.gettext(lang, msgid)
        if not fields:
            return text
        return text.format(**{k: local_value(v, lang) for k, v in fields.items()})

    def ngettext(singular: str, plural: str, n: int, **fields: object) -> str:
        fields_here = {k: local_value(v, lang) for k, v in fields.items()}
        text = translations.ngettext(lang, singular, plural, n)
        return text.format(n=local.number(n, lang), **fields_here)

    html = ENV.get_template(template).render(
        _=_,
        ngettext=ngettext,
        lang=lang,
        html_lang=html_lang(lang),
        languages=[(code, NATIVE_NAMES[code]) for code in PAGE_LANGUAGES],
        bcp47=html_lang,
        static=static_url,
        icon=icon,
        preloads=fonts.preloads(lang),
        here=quote(request.url.path),
        phone=phone,
        csrf=phone.csrf if phone else "",
        **values,
    )
    response = HTMLResponse(html, status_code=status)
    response.headers["content-security-policy"] = PAGE_CSP
    response.headers["referrer-policy"] = "no-referrer"
    return response


def visitor_language(request: HTTPConnection) -> Language:
    """The page language of someone not signed in: their language cookie, else the first
    page language their browser asks for, else English."""
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen:
        return page_language(chosen, Language.ENG)
    for part in request.headers.get("accept-language", "")[:200].split(","):
        tag = part.split(";")[0].strip().split("-")[0].lower()
        tag = "fil" if tag == "tl" else tag  # Tagalog's ISO 639-1 code names Filipino too
        for lang, html_tag in HTML_LANG.items():
            if tag and html_tag == tag and lang in PAGE_LANGUAGES:
                return lang
    return Language.ENG


def request_refusal_msgid(error: RequestRefused) -> str:
    """The crew page's sentence (msgid) for a refused request."""
    if isinstance(error, BodyTooLarge):
        return TOO_LARGE
    if error.sentence in (BROKEN_REQUEST, UNREADABLE_TEXT):
        return error.sentence
    return BROKEN_REQUEST


def refusal_page(
    translations: Translations, phones: SignedInPhones, scope: Scope, error: RequestRefused
) -> Response:
    """A refused request (too large, broken) as the crew page's error page, in the crew
    member's language when they are signed in, else in the visitor's."""
    request = HTTPConnection(scope)
    phone = phones.get(request.cookies.get(SIGN_IN_COOKIE))
    lang = phone.lang if phone else visitor_language(request)
    return render_page(
        translations,
        request,
        "error.html",
        phone,
        lang,
        error.status,
        message=request_refusal_msgid(error),
    )


async def read_form(request: Request, *, max_fields: int = MAX_FORM_FIELDS) -> FormData:
    """The request's form, bounded (no files, at most ``max_fields`` fields; the body is
    already bounded by ``common.http.BodyLimit``), every value a text that can be stored.

    Raises :class:`~common.http.MalformedRequest` with a page sentence (msgid)."""
    try:
        form = await request.form(
            max_files=0, max_fields=max_fields, max_part_size=MAX_SEALED_BYTES
        )
    except (HTTPException, MultiPartException):
        raise MalformedRequest(BROKEN_REQUEST) from None
    for name, value in form.multi_items():
        if not isinstance(value, str):
            raise MalformedRequest(BROKEN_REQUEST)
        try:
            name.encode("utf-8")
            value.encode("utf-8")
        except UnicodeEncodeError:  # a multipart charset such as UTF-7 can make surrogates
            raise MalformedRequest(UNREADABLE_TEXT) from None
    return form


def int_or_none(value: object, high: int = 2**53 - 1) -> int | None:
    """A form or query value as a whole number from 0 to ``high``, or None."""
    try:
        return bounded_int(value, "number", 0, high)
    except MalformedRequest:
        return None


def web_routes(
    intake: Intake,
    phones: SignedInPhones | None = None,
    *,
    guard: SignInGuard | None = None,
    translations: Translations | None = None,
    in_port: Callable[[], bool] | None = None,
) -> list[BaseRoute]:
    """The crew pages, to add to the agent's Starlette routes.

    ``guard`` is the process's one sign-in guard (shared with the crew API and SMTP AUTH:
    :mod:`shipboard.signin`); without one, the pages get their own. ``in_port`` says
    whether the vessel is in reach of its port link (the link loop's
    ``LinkStatistics.in_port``): the home page says so (None: never)."""
    store = phones if phones is not None else SignedInPhones()
    words = translations or Translations()
    signins = CrewSignIn(intake.register, guard or SignInGuard(), intake.clock)
    zone = intake.config.time_zone
    vessel_id = intake.config.vessel.vessel_id

    def case_number(seq: int) -> str:
        return make_case_number(vessel_id, seq)

    def leaves(filed: FiledReport, lang: Language) -> str:
        """When the report leaves the vessel, said in the crew member's language."""
        if not filed.leaves_late:
            return words.gettext(lang, LEAVES_USUALLY)
        leaves_by = _seconds_text(filed.leaves_by, zone)
        return words.gettext(lang, LEAVES_LATE).format(time=local_value(leaves_by, lang))

    def refusal_fields(refused: IntakeRefused) -> dict[str, object]:
        """A refusal's ``{fields}``, a moment as a :class:`Moment` (written in the crew
        member's conventions when shown)."""
        fields = dict(refused.fields)
        if isinstance(refused, LaneBusy):
            fields["time"] = _seconds_text(refused.retry_at, zone)
        return fields

    def render(
        request: Request,
        template: str,
        phone: SignedInPhone | None,
        lang: Language,
        status: int = 200,
        **values: object,
    ) -> HTMLResponse:
        return render_page(words, request, template, phone, lang, status, **values)

    def current(request: Request) -> SignedInPhone | None:
        return store.get(request.cookies.get(SIGN_IN_COOKIE))

    def login_redirect() -> Response:
        return RedirectResponse("/login", status_code=303)

    def refused(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        """A refused request (broken form, unreadable text) as the error page."""

        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestRefused as error:
                phone = current(request)
                lang = phone.lang if phone else visitor_language(request)
                message = request_refusal_msgid(error)
                return render(request, "error.html", phone, lang, error.status, message=message)

        return wrapped

    def page(
        function: _Page, *, allow_pin_choice: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            phone = current(request)
            if phone is None:
                return login_redirect()
            if phone.must_choose_pin and not allow_pin_choice:
                return RedirectResponse("/pin", status_code=303)
            if request.method == "POST":
                form = await read_form(request)
                if not csrf_ok(phone.csrf, form.get("csrf")):
                    logger.warning("crew member %d: form without a valid CSRF token", phone.crew)
                    return render(
                        request,
                        "error.html",
                        phone,
                        phone.lang,
                        403,
                        message="This form is too old. Go back, reload the page and try again.",
                    )
            return await function(request, phone)

        return refused(wrapped)

    async def form_of(request: Request) -> FormData:
        return await read_form(request)

    def int_field(form: FormData | QueryParams, name: str) -> int | None:
        return int_or_none(form.get(name))

    # sign in --------------------------------------------------------------------------

    async def login(request: Request) -> Response:
        lang = visitor_language(request)
        error = None
        status = 400
        fields: dict[str, object] = {}
        typed: int | None = None
        if request.method == "POST":
            form = await form_of(request)
            expected = request.cookies.get(LOGIN_COOKIE, "")
            typed = int_or_none(form.get("crew"), MAX_CREW_NUMBER)
            pin = form.get("pin")
            if not expected or not csrf_ok(expected, form.get("csrf")):
                error = "This form is too old. Reload the page and try again."
            elif not typed or not isinstance(pin, str) or not pin.strip():
                error = "Write your crew number and your PIN."
            else:
                try:
                    who = await asyncio.to_thread(signins.sign_in, typed, pin.strip())
                    chosen = who.duress or await asyncio.to_thread(
                        intake.register.pin_chosen, typed
                    )
                except SignInPaused as paused:
                    error, status = SIGN_IN_PAUSED, 429
                    fields = {"minutes": paused.retry_after_minutes}
                except NotSignedIn as wrong:
                    error = SIGNED_OFF if wrong.sentence == SIGNED_OFF else WRONG_PIN
                except OutboxUnavailable:
                    error, status = CANNOT_CHECK, 503
                else:
                    logger.info("crew member %d signed in on the web page", typed)
                    phone = store.open(
                        who,
                        duress=who.duress,
                        lang=page_language(None, who.member.language),
                        must_choose_pin=not chosen,
                    )
                    target = "/pin" if phone.must_choose_pin else "/home"
                    signed = RedirectResponse(target, status_code=303)
                    signed.set_cookie(SIGN_IN_COOKIE, phone.token, httponly=True, samesite="strict")
                    signed.delete_cookie(LOGIN_COOKIE)
                    return signed
        token = secrets.token_urlsafe(24)
        response = render(
            request,
            "login.html",
            None,
            lang,
            200 if error is None else status,
            login_csrf=token,
            error=error,
            error_fields=fields,
            typed_crew=typed or "",
        )
        response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict")
        return response

    async def choose_pin(request: Request, phone: SignedInPhone) -> Response:
        error = None
        if request.method == "POST":
            form = await form_of(request)
            pin, again, duress = form.get("pin"), form.get("pin2"), form.get("duress")
            if not isinstance(pin, str) or not isinstance(again, str) or pin != again:
                error = "The two PINs are not the same. Write them again."
            else:
                duress_pin = duress.strip() if isinstance(duress, str) and duress.strip() else None
                try:
                    who = await asyncio.to_thread(
                        intake.register.choose_pin,
                        phone.crew,
                        pin.strip(),
                        duress_pin,
                        intake.clock(),
                    )
                except CrewRegisterError:
                    error = "A PIN has 6 to 12 digits; the duress PIN must be different."
                else:
                    phone.signed_in = who
                    phone.must_choose_pin = False
                    phone.duress = False
                    return RedirectResponse("/home", status_code=303)
        return render(
            request, "pin.html", phone, phone.lang, 200 if error is None else 400, error=error
        )

    async def logout(request: Request, phone: SignedInPhone) -> Response:
        store.close(phone.token)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SIGN_IN_COOKIE)
        return response

    async def switch_language(request: Request) -> Response:
        target = request.query_params.get("next", "/home")
        if not target.startswith("/") or target.startswith("//"):
            target = "/home"
        lang = page_language(request.path_params["code"], Language.ENG)
        phone = current(request)
        if phone is not None:
            phone.lang = lang
            if not phone.duress:  # a duress sign-in leaves the real register alone
                # The crew member's choice outlives the sign-in: the register keeps it.
                try:
                    await asyncio.to_thread(intake.register.choose_language, phone.crew, lang)
                except OutboxUnavailable:  # the page still switches, for this sign-in
                    logger.warning("crew member %d: language not kept (outbox)", phone.crew)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(LANG_COOKIE, lang.code, samesite="strict", max_age=365 * 86400)
        return response

    async def root(request: Request) -> Response:
        return RedirectResponse("/home" if current(request) else "/login", status_code=303)

    # home, quota ----------------------------------------------------------------------

    async def quota_words(phone: SignedInPhone) -> dict[str, int]:
        status = await asyncio.to_thread(intake.quota, phone.crew)
        total = max(status.quota_bytes, 1)
        left = status.remaining_bytes if not phone.duress else status.quota_bytes
        used = 0 if phone.duress else status.used_bytes
        return {
            "left_messages": left // SHORT_MESSAGE_BYTES,
            "used_percent": min(100, math.ceil(100 * used / total)) if used else 0,
            "left_percent": max(0, 100 - (min(100, math.ceil(100 * used / total)) if used else 0)),
        }

    async def home(request: Request, phone: SignedInPhone) -> Response:
        return render(
            request,
            "home.html",
            phone,
            phone.lang,
            quota=await quota_words(phone),
            name=phone.signed_in.member.name,
            in_port=in_port is not None and in_port(),
        )

    # write home, quick messages, stages ------------------------------------------------

    async def contact_list(phone: SignedInPhone) -> list[Any]:
        return await asyncio.to_thread(intake.register.contacts, phone.crew)

    def my_messages(phone: SignedInPhone) -> list[dict[str, object]]:
        if phone.duress:
            return []
        return [
            {
                "seq": sent.message_seq,
                "contact": sent.contact,
                "quick": sent.quick,
                "state": str(sent.state),
                "at": _seconds_text(sent.accepted_at, zone),
            }
            for sent in intake.view.recent_messages(phone.crew, 20)
        ]

    def refusal_msgid(error: IntakeRefused) -> str:
        if error.msgid is not None:
            return error.msgid
        return REFUSAL_WORDS.get(error.code, error.sentence)

    async def send(
        phone: SignedInPhone, contact: int | None, text: str | None, quick: int | None
    ) -> int:
        if contact is None:
            raise _Refusal(REFUSAL_WORDS["unknown-contact"])
        if not store.allow_action(phone.crew):
            raise _Refusal(RATE_LIMITED)
        try:
            accepted = await asyncio.to_thread(
                intake.send_message, phone.crew, contact, text, phone.lang, quick
            )
        except IntakeRefused as error:
            raise _Refusal(refusal_msgid(error), **error.fields) from None
        except OutboxUnavailable:
            raise _Refusal(NOT_SAVED) from None
        logger.info(
            "crew member %d queued message %d from the web page", phone.crew, accepted.message_seq
        )
        return accepted.message_seq

    async def write(request: Request, phone: SignedInPhone) -> Response:
        error = None
        error_fields: dict[str, object] = {}
        text = ""
        chosen = int_field(request.query_params, "contact")
        if request.method == "POST":
            form = await form_of(request)
            chosen = int_field(form, "contact")
            raw = form.get("text")
            text = raw if isinstance(raw, str) else ""
            try:
                seq = await send(phone, chosen, text, None)
            except _Refusal as refusal:
                error, error_fields = refusal.msgid, refusal.fields
            else:
                return RedirectResponse(f"/messages/{seq}", status_code=303)
        contacts = await contact_list(phone)
        messages = await asyncio.to_thread(my_messages, phone)
        names = {c.contact: c.name or c.address for c in contacts}
        response = render(
            request,
            "write.html",
            phone,
            phone.lang,
            400 if error else 200,
            contacts=contacts,
            chosen=chosen,
            text=text,
            error=error,
            error_fields=error_fields,
            limit_characters=usual_characters(phone.lang),
            count=_count_of(text, phone.lang),
            messages=messages,
            names=names,
            stage_words=STAGE_WORDS,
            quota=await quota_words(phone),
            voice_seconds=intake.config.voice.max_seconds,
            voice_script=VOICE_SCRIPT,
            voice_max_bytes=MAX_RECORDING_BYTES,
        )
        response.headers["content-security-policy"] = WRITE_CSP
        return response

    async def write_voice(request: Request) -> Response:
        """POST of a voice message from the write page's recorder: the recording as the
        body (bounded by ``common.http.BodyLimit``), the contact in the query, the CSRF
        token in a header. 201 with the message's page, or the refusal in the crew
        member's language; nothing is stored on a refusal, and nothing of the recording
        is logged but its size."""
        phone = current(request)
        if phone is None or phone.must_choose_pin:
            return JSONResponse({"error": "sign in first"}, status_code=401)
        if not csrf_ok(phone.csrf, request.headers.get("x-csrf-token")):
            logger.warning("crew member %d: form without a valid CSRF token", phone.crew)
            detail = words.gettext(phone.lang, VOICE_NOT_SAVED)
            return JSONResponse({"error": "stale-page", "detail": detail}, status_code=403)
        contact = int_or_none(request.query_params.get("contact"))
        if contact is None:
            detail = words.gettext(phone.lang, REFUSAL_WORDS["unknown-contact"])
            return JSONResponse({"error": "unknown-contact", "detail": detail}, status_code=400)
        if not store.allow_action(phone.crew):
            detail = words.gettext(phone.lang, RATE_LIMITED)
            return JSONResponse({"error": "rate-limited", "detail": detail}, status_code=429)
        recording = await request.body()
        try:
            accepted = await asyncio.to_thread(
                intake.send_voice_note, phone.crew, contact, recording
            )
        except IntakeRefused as refused:
            fields = {k: local_value(v, phone.lang) for k, v in refusal_fields(refused).items()}
            detail = words.gettext(phone.lang, refusal_msgid(refused)).format(**fields)
            status = refused.http_status if 400 <= refused.http_status < 500 else 400
            return JSONResponse({"error": refused.code, "detail": detail}, status_code=status)
        except OutboxUnavailable:
            detail = words.gettext(phone.lang, NOT_SAVED)
            return JSONResponse({"error": "storage-failed", "detail": detail}, status_code=503)
        finally:
            del recording
        logger.info(
            "crew member %d queued voice message %d from the web page",
            phone.crew,
            accepted.message_seq,
        )
        seq = accepted.message_seq
        return JSONResponse({"message_seq": seq, "location": f"/messages/{seq}"}, status_code=201)

    async def quick(request: Request, phone: SignedInPhone) -> Response:
        error = None
        chosen = int_field(request.query_params, "contact")
        if request.method == "POST":
            form = await form_of(request)
            chosen = int_field(form, "contact")
            code = int_field(form, "code")
            try:
                if code is None or code not in PHRASE_CODES:
                    raise _Refusal("Choose a message.")
                if form.get("confirm") != "yes":
                    # one tap chooses; nothing is queued until the crew member confirms
                    contacts = {c.contact: c for c in await contact_list(phone)}
                    if chosen not in contacts:
                        raise _Refusal(REFUSAL_WORDS["unknown-contact"])
                    who = contacts[chosen]
                    return render(
                        request,
                        "quick.html",
                        phone,
                        phone.lang,
                        confirm={
                            "code": code,
                            "contact": chosen,
                            "who": who.name or who.address,
                            "icon": phrase_icon(code),
                            "text": phrase(code, phone.lang),
                        },
                    )
                seq = await send(phone, chosen, None, code)
            except _Refusal as refusal:
                error = refusal.msgid
            else:
                return RedirectResponse(f"/messages/{seq}", status_code=303)
        phrases = [(code, phrase_icon(code), phrase(code, phone.lang)) for code in PHRASE_CODES]
        return render(
            request,
            "quick.html",
            phone,
            phone.lang,
            400 if error else 200,
            contacts=await contact_list(phone),
            chosen=chosen,
            phrases=phrases,
            error=error,
            confirm=None,
        )

    async def message(request: Request, phone: SignedInPhone) -> Response:
        seq = int_or_none(request.path_params["seq"]) or 0
        stages = await asyncio.to_thread(intake.view.message_stages, seq)
        if (
            stages is None
            or phone.duress
            or stages["crew"] != phone.crew
            or stages["kind"] != MessageKind.MESSAGE
        ):
            return render(
                request,
                "error.html",
                phone,
                phone.lang,
                404,
                message="There is no such message of yours.",
            )
        state = str(stages["state"])
        reached = {
            MessageState.ACCEPTED: stages["accepted_at"],
            MessageState.SENT: stages["sent_at"],
            MessageState.ACKNOWLEDGED: stages["acknowledged_at"],
            MessageState.DELIVERED: stages["delivered_at"],
        }
        steps = [
            (STAGE_WORDS[name], _seconds_text(reached[name], zone), reached[name] is not None)  # type: ignore[arg-type]
            for name in STAGE_ORDER
        ]
        failure = None
        if state == MessageState.FAILED:
            reason = stages["failure_reason"]
            try:
                failure = FAILURE_WORDS[FailureReason(int(str(reason)))]
            except (ValueError, KeyError):
                failure = "It could not be delivered."
        contact = await asyncio.to_thread(
            intake.register.contact, phone.crew, int(str(stages["contact"]))
        )
        kept = await asyncio.to_thread(intake.view.kept_messages, phone.crew)
        own = next((m for m in kept if m.message_seq == seq), None)
        said = None
        voice = own is not None and own.body is None and own.quick is None
        if own is not None and not voice:
            said = {
                "text": phrase(own.quick, phone.lang) if own.quick is not None else own.body,
                "html_lang": HTML_LANG[phone.lang]
                if own.quick is not None
                else html_lang(own.lang),
            }
        return render(
            request,
            "message.html",
            phone,
            phone.lang,
            said=said,
            voice=voice,
            seq=seq,
            steps=steps,
            failure=failure,
            failed_at=_seconds_text(stages["failed_at"], zone),  # type: ignore[arg-type]
            contact=contact,
        )

    async def add_contact(request: Request, phone: SignedInPhone) -> Response:
        error = None
        values: Mapping[str, Any] = {}
        if request.method == "POST":
            form = await form_of(request)
            values = form
            channel = form.get("channel")
            address, name, lang_code = form.get("address"), form.get("name"), form.get("lang")
            if channel not in ("email", "sms") or not isinstance(address, str):
                error = "Choose e-mail or phone, and write the address or number."
            elif not store.allow_action(phone.crew):
                error = RATE_LIMITED
            else:
                try:
                    added = await asyncio.to_thread(
                        intake.register.add_contact,
                        phone.crew,
                        channel="email" if channel == "email" else "sms",
                        address=address,
                        name=name if isinstance(name, str) and name.strip() else None,
                        language=page_language(str(lang_code or ""), phone.lang),
                        now=intake.clock(),
                    )
                except CrewRegisterError:
                    error = (
                        "This is not an e-mail address or a phone number with the country "
                        "code (+95...), or it is already in your list."
                    )
                except OutboxUnavailable:
                    error = NOT_SAVED
                else:
                    return RedirectResponse(f"/write?contact={added.contact}", status_code=303)
        return render(
            request,
            "contact.html",
            phone,
            phone.lang,
            400 if error else 200,
            error=error,
            values=values,
        )

    # report a problem ---------------------------------------------------------------------

    async def report(request: Request, phone: SignedInPhone) -> Response:
        error = None
        error_fields: dict[str, object] = {}
        kept_text = ""
        values: Mapping[str, Any] = {}
        if request.method == "POST":
            form = await form_of(request)
            values = form
            category_value = int_field(form, "category")
            union = int_field(form, "union")
            text = form.get("text")
            try:
                if category_value is None or category_value not in {
                    c.value for c in GrievanceCategory
                }:
                    raise _Refusal("Choose what the problem is about.")
                if union is None:
                    raise _Refusal(REFUSAL_WORDS["unknown-union"])
                filed = await asyncio.to_thread(
                    intake.file_grievance,
                    phone.signed_in,
                    union_id=union,
                    category=GrievanceCategory(category_value),
                    text=text if isinstance(text, str) else "",
                    lang=phone.lang,
                    anonymous=form.get("anonymous") == "yes",
                    consent_to_escalate=form.get("consent_to_escalate") == "yes",
                )
            except _Refusal as refusal:
                error = refusal.msgid
            except IntakeRefused as refused:
                error = refusal_msgid(refused)
                error_fields = refusal_fields(refused)
                if refused.msgid is not None:  # not taken now, or too long: they keep it
                    kept_text = text if isinstance(text, str) else ""
            except OutboxUnavailable:
                error = NOT_SAVED
            else:
                del text, form, values  # nothing logged (the journal is the owner's)
                return render(
                    request,
                    "report_done.html",
                    phone,
                    phone.lang,
                    201,
                    case_number=filed.case_number,
                    receipt_code=filed.receipt_code,
                    leaves=leaves(filed, phone.lang),
                )
        response = render(
            request,
            "report.html",
            phone,
            phone.lang,
            400 if error else 200,
            error=error,
            error_fields=error_fields,
            categories=CATEGORIES,
            unions=intake.config.unions,
            values=values,
            text=kept_text,
            voice_seconds=intake.config.voice.max_seconds,
            voice_script=VOICE_SCRIPT,
            voice_max_bytes=MAX_RECORDING_BYTES,
        )
        response.headers["content-security-policy"] = WRITE_CSP
        return response

    async def report_voice(request: Request) -> Response:
        """POST of a spoken report from the report page's recorder: the recording as the
        body, the category, union and anonymity in the query, the CSRF token in a header.
        It is coded and sealed in memory and only the sealed bytes are committed
        (:meth:`~shipboard.intake.Intake.file_voice_grievance`); 201 with the case number
        and receipt code, or the refusal in the crew member's language. Not rate-limited,
        like a written report; the journal gets no line that says a report was made."""
        phone = current(request)
        if phone is None or phone.must_choose_pin:
            return JSONResponse({"error": "sign in first"}, status_code=401)
        if not csrf_ok(phone.csrf, request.headers.get("x-csrf-token")):
            logger.warning("crew member %d: form without a valid CSRF token", phone.crew)
            detail = words.gettext(phone.lang, VOICE_NOT_SAVED)
            return JSONResponse({"error": "stale-page", "detail": detail}, status_code=403)
        query = request.query_params
        category = int_or_none(query.get("category"))
        union = int_or_none(query.get("union"))
        if category is None or category not in {c.value for c in GrievanceCategory}:
            detail = words.gettext(phone.lang, "Choose what the problem is about.")
            return JSONResponse({"error": "bad-category", "detail": detail}, status_code=400)
        if union is None:
            detail = words.gettext(phone.lang, REFUSAL_WORDS["unknown-union"])
            return JSONResponse({"error": "unknown-union", "detail": detail}, status_code=400)
        recording = await request.body()
        try:
            filed = await asyncio.to_thread(
                intake.file_voice_grievance,
                phone.signed_in,
                union_id=union,
                category=GrievanceCategory(category),
                recording=recording,
                lang=phone.lang,
                anonymous=query.get("anonymous") == "yes",
                consent_to_escalate=query.get("consent_to_escalate") == "yes",
            )
        except IntakeRefused as refused:
            fields = {k: local_value(v, phone.lang) for k, v in refusal_fields(refused).items()}
            detail = words.gettext(phone.lang, refusal_msgid(refused)).format(**fields)
            status = refused.http_status if 400 <= refused.http_status < 500 else 503
            return JSONResponse({"error": refused.code, "detail": detail}, status_code=status)
        except OutboxUnavailable:
            detail = words.gettext(phone.lang, NOT_SAVED)
            return JSONResponse({"error": "storage-failed", "detail": detail}, status_code=503)
        finally:
            del recording
        return JSONResponse(
            {
                "case_number": filed.case_number,
                "receipt_code": filed.receipt_code,
                "leaves": leaves(filed, phone.lang),
            },
            status_code=201,
        )

    # report a problem, sealed on the phone (intake mode A) ------------------------------

    async def report_phone(request: Request, phone: SignedInPhone) -> Response:
        member = phone.signed_in.member
        unions = [
            {
                "union_id": u.union_id,
                "name": u.name,
                "key": base64.b64encode(u.public_key).decode("ascii"),
                "fingerprint": fingerprint(u.public_key),
            }
            for u in intake.config.unions
        ]
        reply_key = reporter_reply_keys(phone.signed_in.case_key).public_key
        # a fresh case number for the report this page may send: the phone seals it in
        case = intake.new_case_number()
        phone.remember_case_number(case)
        response = render(
            request,
            "report_phone.html",
            phone,
            phone.lang,
            categories=CATEGORIES,
            unions=unions,
            vessel=vessel_id,
            crew=phone.crew,
            case=case,
            reply_key=base64.b64encode(reply_key).decode("ascii"),
            crew_name=member.name or "",
            crew_document=member.document or "",
        )
        # the page's own script and libsodium (WebAssembly); it talks only to this agent
        response.headers["content-security-policy"] = (
            "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self'; "
            "style-src 'self'; img-src 'self'; font-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
        return response

    async def report_sealed(request: Request) -> Response:
        """POST of a report sealed on the phone: only ciphertext arrives here."""
        phone = current(request)
        if phone is None or phone.must_choose_pin:
            return JSONResponse({"error": "sign in first"}, status_code=401)
        if not csrf_ok(phone.csrf, request.headers.get("x-csrf-token")):
            # the same line as any other form's (the journal must not say it was a report)
            logger.warning("crew member %d: form without a valid CSRF token", phone.crew)
            return JSONResponse({"error": "reload the page and send again"}, status_code=403)
        union = int_or_none(request.query_params.get("union"))
        case = request.query_params.get("case")
        sealed = await request.body()  # at most MAX_SEALED_BYTES: common.http.BodyLimit
        if union is None or len(sealed) > MAX_SEALED_BYTES:
            return JSONResponse({"error": "choose a union; a report is at most 64 KiB"}, 400)
        if case is not None and not phone.case_number_issued(case):
            # only a number this page drew for this sign-in (once): never someone else's
            detail = words.gettext(phone.lang, STALE_PAGE)
            return JSONResponse({"error": "stale-page", "detail": detail}, status_code=409)
        try:
            filed = await asyncio.to_thread(
                intake.file_sealed_grievance,
                phone.signed_in,
                union_id=union,
                sealed=sealed,
                case_number=case,
            )
        except IntakeRefused as refused:
            fields = {k: local_value(v, phone.lang) for k, v in refusal_fields(refused).items()}
            detail = words.gettext(phone.lang, refusal_msgid(refused)).format(**fields)
            status = 503 if refused.http_status == 503 else 400
            return JSONResponse({"error": refused.code, "detail": detail}, status_code=status)
        except OutboxUnavailable:
            detail = words.gettext(phone.lang, NOT_SAVED)
            return JSONResponse({"error": "storage-failed", "detail": detail}, status_code=503)
        if case is not None:
            phone.case_number_used(case)
        return JSONResponse(
            {
                "case_number": filed.case_number,
                "leaves_by": filed.leaves_by,
                "leaves": leaves(filed, phone.lang),
            },
            status_code=201,
        )

    # SOS --------------------------------------------------------------------------------

    async def sos(request: Request) -> Response:
        """One SOS page for everyone: signed in, it is the crew member's; not signed in
        (from the sign-in page, a paused sign-in, a forgotten PIN), it goes without a PIN."""
        if current(request) is not None:
            return await sos_signed_in(request)
        return await sos_without_pin(request)

    async def sos_of_phone(request: Request, phone: SignedInPhone) -> Response:
        if request.method == "POST":
            form = await form_of(request)
            note = form.get("note")
            try:
                accepted = await asyncio.to_thread(
                    intake.sos,
                    phone.crew,
                    note=note if isinstance(note, str) and note.strip() else None,
                    lang=phone.lang,
                    position=None,
                )
            except (IntakeRefused, OutboxUnavailable):
                return render(request, "error.html", phone, phone.lang, 503, message=NOT_SAVED)
            logger.warning("SOS %d committed from the web page", accepted.message_seq)
            return render(request, "sos_done.html", phone, phone.lang, 201, signed=True)
        return render(request, "sos.html", phone, phone.lang, signed=True)

    sos_signed_in = page(sos_of_phone, allow_pin_choice=True)

    async def sos_without_pin_page(request: Request) -> Response:
        lang = visitor_language(request)
        if request.method != "POST":
            typed = int_or_none(request.query_params.get("crew"), MAX_CREW_NUMBER)
            return render(request, "sos.html", None, lang, signed=False, typed_crew=typed or "")
        # No CSRF token here: nobody's sign-in is used, so a forged form gains nothing, and
        # a stale form must never stop an SOS. Abuse is bounded by shipboard.sos_limit.
        form = await form_of(request)
        # a crew number that cannot be read still sends the SOS, as crew number 0 (none)
        crew = int_or_none(form.get("crew"), MAX_CREW_NUMBER) or 0
        note = form.get("note")
        try:
            queued = await asyncio.to_thread(
                intake.sos_without_pin,
                crew,
                note=note if isinstance(note, str) else None,
                lang=lang,
            )
        except OutboxUnavailable:
            return render(request, "error.html", None, lang, 503, message=NOT_SAVED)
        logger.warning("SOS %d from the sign-in page (no PIN)", queued.message_seq)
        return render(request, "sos_done.html", None, lang, 201, signed=False)

    sos_without_pin = refused(sos_without_pin_page)

    # inbox --------------------------------------------------------------------------------

    async def inbox(request: Request, phone: SignedInPhone) -> Response:
        """The inbox as conversations: one per contact (own messages with their text and
        ticks, the family's replies under them) and one per case (its timeline)."""
        if phone.duress:  # an empty inbox: no contacts' history, no cases
            return render(request, "inbox.html", phone, phone.lang, threads=[], notices=[])
        reader = Reader(intake.view, phone.signed_in, intake.case_progress)
        numbers = await asyncio.to_thread(my_cases, reader)
        old = await asyncio.to_thread(reader.old_cases)
        entries = await asyncio.to_thread(intake.view.inbox, phone.crew, old)
        kept = await asyncio.to_thread(intake.view.kept_messages, phone.crew)
        contacts = {c.contact: c for c in await contact_list(phone)}
        names = {n: (c.name or c.address, c.address) for n, c in contacts.items()}
        replies = [e for e in entries if e["kind"] == InboxKind.REPLY]
        notices = [
            _minutes_text(e.get("written_minutes"), zone)  # type: ignore[arg-type]
            for e in entries
            if e["kind"] == InboxKind.QUOTA
        ]
        threads = contact_threads(
            kept,
            replies,
            names,
            phone.lang,
            when=lambda at: _seconds_text(at, zone),
            html_lang=html_lang,
            failure_words=_failure_words,
        )
        # a case from before the lane: its updates (and its stages ashore) are inbox entries
        old_steps: dict[str, list[tuple[str, object, str | None]]] = {}
        old_last: dict[str, float] = {}
        for entry in reversed(entries):  # oldest first
            kind = entry["kind"]
            seq = entry.get("case_seq") if kind == InboxKind.CASE else entry.get("message_seq")
            if kind not in (InboxKind.CASE, InboxKind.STAGE) or seq not in old:
                continue
            old_number = case_number(int(str(seq)))
            when = _minutes_text(entry.get("written_minutes"), zone)  # type: ignore[arg-type]
            if kind == InboxKind.CASE:
                try:
                    word = CASE_WORDS[CaseStatus(int(str(entry["code"])))]
                except (ValueError, KeyError):
                    word = str(entry.get("stage"))
            else:
                word = STAGE_WORDS.get(str(entry["stage"]), str(entry["stage"]))
            old_steps.setdefault(old_number, []).append((word, when, None))
            at = float(str(entry.get("at") or 0))
            old_last[old_number] = max(old_last.get(old_number, 0.0), at)
        for number in sorted(numbers, reverse=True):
            case = await asyncio.to_thread(show_case, reader, number)
            if case is None:
                continue
            steps: list[tuple[str, object, str | None]] = []
            last_at = case.filed_at or 0.0
            if case.filed_at is not None:
                steps.append(
                    (STAGE_WORDS[MessageState.ACCEPTED], _seconds_text(case.filed_at, zone), None)
                )
            if case.progress is not None and case.progress in PROGRESS_WORDS:
                steps.append((PROGRESS_WORDS[case.progress], "", None))
            if case.lane:
                steps += [
                    (CASE_WORDS[note.stage], _seconds_text(note.at, zone), note.text or note.reason)
                    for note in case.notes
                ]
                last_at = max([last_at, *(note.at for note in case.notes)])
            else:
                steps += old_steps.get(case.case_number, [])
                last_at = max(last_at, old_last.get(case.case_number, 0.0))
            threads.append(case_thread(case.case_number, steps, last_at))
        return render(
            request,
            "inbox.html",
            phone,
            phone.lang,
            threads=newest_first(threads),
            notices=notices,
        )

    async def spoken_reply(request: Request, phone: SignedInPhone) -> Response:
        """A family's spoken reply to the signed-in crew member, decoded from Codec2 to Opus
        in Ogg for the phone's player (never cached: every page is ``no-store``)."""
        entry = int_or_none(request.path_params["entry"])
        found = (
            None
            if entry is None or phone.duress
            else await asyncio.to_thread(intake.view.spoken_reply, phone.crew, entry)
        )
        if found is None:
            return render(
                request,
                "error.html",
                phone,
                phone.lang,
                404,
                message="There is no such message of yours.",
            )
        audio = await asyncio.to_thread(playable_speech, *found)
        return Response(audio, media_type="audio/ogg")

    async def favicon(request: Request) -> Response:
        """The page's icon, where browsers look for it (no sign-in needed, cached a week)."""
        icon = FileResponse(HERE / "static" / "favicon.ico", media_type="image/x-icon")
        icon.headers["cache-control"] = "public, max-age=604800"
        return icon

    def both(function: _Page, **kwargs: bool) -> Callable[[Request], Awaitable[Response]]:
        return page(function, **kwargs)

    return [
        Route("/", root, methods=["GET"]),
        Route("/login", refused(login), methods=["GET", "POST"]),
        Route("/pin", both(choose_pin, allow_pin_choice=True), methods=["GET", "POST"]),
        Route("/logout", page(logout, allow_pin_choice=True), methods=["POST"]),
        Route("/lang/{code}", switch_language, methods=["GET"]),
        Route("/home", page(home), methods=["GET"]),
        Route("/write", page(write), methods=["GET", "POST"]),
        Route("/write/voice", write_voice, methods=["POST"]),
        Route("/quick", page(quick), methods=["GET", "POST"]),
        Route("/messages/{seq}", page(message), methods=["GET"]),
        Route("/contacts/new", page(add_contact), methods=["GET", "POST"]),
        Route("/report", page(report), methods=["GET", "POST"]),
        Route("/report/voice", report_voice, methods=["POST"]),
        Route("/report/phone", page(report_phone), methods=["GET"]),
        Route("/report/phone/sealed", report_sealed, methods=["POST"]),
        Route("/sos", sos, methods=["GET", "POST"]),
        Route("/inbox", page(inbox), methods=["GET"]),
        Route("/inbox/voice/{entry}", page(spoken_reply), methods=["GET"]),
        Route("/favicon.ico", favicon, methods=["GET"]),
        # gzip for the style sheet and scripts (fonts and images are compressed already;
        # pages are not compressed: they carry the CSRF token, see BREACH)
        Mount("/static", app=GZipMiddleware(_STATIC, minimum_size=1000), name="static"),
    ]


def is_static(scope: Scope) -> bool:
    """Whether a request is for a cached static file (fonts, icons, style sheet, the
    page's icon)."""
    path = str(scope.get("path", ""))
    return path.startswith("/static/") or path == "/favicon.ico"
