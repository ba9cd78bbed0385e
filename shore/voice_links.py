"""Voice links: an SMS family hears a voice message at an unguessable, expiring URL.

An SMS cannot carry sound, so a voice message to a contact reached by SMS goes as a text
with a link (:func:`sms_text`) to a page on the relay's public web app (the SMS webhook's,
:mod:`shore.replies`) that plays it. The link's token is the message's (vessel, sequence
number, expiry) sealed with AES-SIV under a key derived from the relay's shore key
(:class:`VoiceLinks`): nobody can make or alter one without the key, it names no vessel or
message to whoever reads the URL, and the same message always gets the same link (a
repeated delivery attempt sends the same text). No table holds the links: the relay
already keeps the message's Codec2 frames, and the page decodes them to Opus in Ogg when
asked (:func:`shore.voice.voice_attachment`).

Routes (:func:`voice_routes`)::

    GET /voice/{token}       a small page in the family's language with the player
    GET /voice/{token}.ogg   the recording (audio/ogg), never cached by anyone

A token that does not open is 404; one whose time has passed is 410 with a sentence in the
family's language. Logs name the vessel and message only, never a token or an address.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from protocol.languages import Language
from shore.mail import LANGUAGE_TAGS
from shore.store.uplink import CodedVoice
from shore.voice import voice_attachment

__all__ = [
    "DEFAULT_LINK_DAYS",
    "VoiceLink",
    "VoiceLinks",
    "VoiceTarget",
    "sms_text",
    "voice_routes",
]

log = logging.getLogger(__name__)

#: How long a voice link plays, counted from when the relay accepted the message.
DEFAULT_LINK_DAYS = 7
_PAYLOAD = struct.Struct(">IQI")  # vessel id, message sequence number, expiry (Unix seconds)
_KEY_PERSON = b"vr voice link 1"

#: The SMS a family reads (``{name}``, ``{seconds}``, ``{url}``, ``{until}``: a date).
#: Translations to be checked by native speakers before production use.
SMS_LINES: Mapping[Language, str] = {
    Language.ENG: "{name} sent you a voice message ({seconds} s). Listen until {until}: {url}",
    Language.MYA: "{name} က အသံမက်ဆေ့ချ် ({seconds} စက္ကန့်) ပို့ထားပါသည်။ {until} အထိ နားထောင်ရန်: {url}",
    Language.THA: "{name} ส่งข้อความเสียงถึงคุณ ({seconds} วินาที) ฟังได้ถึง {until}: {url}",
    Language.KHM: "{name} បានផ្ញើសារជាសំឡេងមកអ្នក ({seconds} វិនាទី)។ ស្តាប់បានរហូតដល់ {until}: {url}",
    Language.LAO: "{name} ສົ່ງຂໍ້ຄວາມສຽງຫາທ່ານ ({seconds} ວິນາທີ). ຟັງໄດ້ເຖິງ {until}: {url}",
    Language.VIE: (
        "{name} đã gửi cho bạn một tin nhắn thoại ({seconds} giây). Nghe đến {until}: {url}"
    ),
    Language.IND: (
        "{name} mengirimi Anda pesan suara ({seconds} detik). Dengarkan sampai {until}: {url}"
    ),
    Language.TGL: "Nagpadala sa iyo si {name} ng voice message ({seconds} segundo). "
    "Pakinggan hanggang {until}: {url}",
}

#: The page's words: (title, the line under the player, the expired sentence).
PAGE_WORDS: Mapping[Language, tuple[str, str, str]] = {
    Language.ENG: (
        "Voice message",
        "You can listen until {until}.",
        "This voice message can no longer be played: its link expired on {until}. "
        "Ask the sender to send it again.",
    ),
    Language.MYA: (
        "အသံမက်ဆေ့ချ်",
        "{until} အထိ နားထောင်နိုင်ပါသည်။",
        "ဤအသံမက်ဆေ့ချ်ကို နားထောင်၍ မရတော့ပါ - လင့်ခ်သည် {until} တွင် သက်တမ်းကုန်သွားပါပြီ။ ပို့သူကို ထပ်ပို့ပေးရန် ပြောပါ။",
    ),
    Language.THA: (
        "ข้อความเสียง",
        "ฟังได้ถึง {until}",
        "ข้อความเสียงนี้เล่นไม่ได้แล้ว: ลิงก์หมดอายุเมื่อ {until} โปรดขอให้ผู้ส่งส่งมาใหม่",
    ),
    Language.KHM: (
        "សារជាសំឡេង",
        "អ្នកអាចស្តាប់បានរហូតដល់ {until}។",
        "សារជាសំឡេងនេះមិនអាចចាក់បានទៀតទេ៖ តំណភ្ជាប់បានផុតកំណត់នៅ {until}។ សូមសុំឲ្យអ្នកផ្ញើផ្ញើម្តងទៀត។",
    ),
    Language.LAO: (
        "ຂໍ້ຄວາມສຽງ",
        "ທ່ານຟັງໄດ້ເຖິງ {until}.",
        "ຂໍ້ຄວາມສຽງນີ້ຫຼິ້ນບໍ່ໄດ້ແລ້ວ: ລິ້ງໝົດອາຍຸເມື່ອ {until}. ກະລຸນາຂໍໃຫ້ຜູ້ສົ່ງສົ່ງມາໃໝ່.",
    ),
    Language.VIE: (
        "Tin nhắn thoại",
        "Bạn có thể nghe đến {until}.",
        "Không thể phát tin nhắn thoại này nữa: liên kết đã hết hạn vào {until}. "
        "Hãy nhờ người gửi gửi lại.",
    ),
    Language.IND: (
        "Pesan suara",
        "Anda dapat mendengarkan sampai {until}.",
        "Pesan suara ini tidak bisa diputar lagi: tautannya kedaluwarsa pada {until}. "
        "Minta pengirim untuk mengirimnya lagi.",
    ),
    Language.TGL: (
        "Mensaheng boses",
        "Mapapakinggan mo ito hanggang {until}.",
        "Hindi na mapapatugtog ang voice message na ito: nag-expire ang link noong {until}. "
        "Hilingin sa nagpadala na ipadala ito ulit.",
    ),
}
_NOT_FOUND = "This link is not known. Check that it was copied whole."


@dataclass(frozen=True, slots=True)
class VoiceLink:
    """What a token opens to: the message it plays and until when (Unix seconds)."""

    vessel_id: int
    message_seq: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class VoiceTarget:
    """A stored voice message, as the page needs it: its speech and the family's language."""

    voice: CodedVoice
    contact_lang: Language | None


#: Finds a stored voice message by (vessel id, message sequence number).
VoiceLookup = Callable[[int, int], Awaitable[VoiceTarget | None]]


class VoiceLinks:
    """Makes and opens voice links under a key derived from the relay's secret."""

    def __init__(self, secret: bytes, base_url: str, days: int = DEFAULT_LINK_DAYS) -> None:
        if len(secret) < 32:
            raise ValueError("a voice link key is derived from at least 32 secret bytes")
        if not 1 <= days <= 90:
            raise ValueError(f"a voice link lasts 1 to 90 days, not {days}")
        key = hashlib.blake2b(secret, digest_size=64, person=_KEY_PERSON[:16]).digest()
        self._siv = AESSIV(key)
        self.base_url = base_url.rstrip("/")
        self.ttl_s = days * 86400

    def make(self, vessel_id: int, message_seq: int, accepted_at: float) -> tuple[str, int]:
        """The link's URL for a message accepted ashore at ``accepted_at``, and its expiry."""
        expires = int(accepted_at) + self.ttl_s
        sealed = self._siv.encrypt(_PAYLOAD.pack(vessel_id, message_seq, expires), None)
        token = base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")
        return f"{self.base_url}/voice/{token}", expires

    def open(self, token: str) -> VoiceLink | None:
        """The link a token names, or None when it is not one of ours (whatever its time)."""
        if len(token) != 43 or not token.isascii():
            return None
        try:
            sealed = base64.urlsafe_b64decode(token + "=")
            plain = self._siv.decrypt(sealed, None)
        except (ValueError, InvalidTag):
            return None
        vessel_id, message_seq, expires = _PAYLOAD.unpack(plain)
        return VoiceLink(vessel_id, message_seq, expires)


def _date(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")


def sms_text(name: str, seconds: int, url: str, expires_at: int, lang: Language | None) -> str:
    """The SMS that carries a voice link, in the family's language (English otherwise)."""
    line = SMS_LINES.get(lang or Language.ENG, SMS_LINES[Language.ENG])
    return line.format(name=name or "?", seconds=seconds, url=url, until=_date(expires_at))


def _page(lang: Language | None, body: str, status: int) -> HTMLResponse:
    chosen = lang if lang in PAGE_WORDS else Language.ENG
    assert chosen is not None
    title = PAGE_WORDS[chosen][0]
    tag = LANGUAGE_TAGS.get(chosen, "en")
    html = (
        f'<!doctype html><html lang="{tag}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex"><meta name="referrer" content="no-referrer">'
        f"<title>{escape(title)}</title></head><body><main><h1>{escape(title)}</h1>"
        f"{body}</main></body></html>"
    )
    response = HTMLResponse(html, status_code=status)
    _private(response)
    return response


def _private(response: Response) -> None:
    response.headers["cache-control"] = "no-store"
    response.headers["referrer-policy"] = "no-referrer"
    response.headers["x-robots-tag"] = "noindex"
    response.headers["content-security-policy"] = (
        "default-src 'none'; media-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    )


def voice_routes(
    links: VoiceLinks, lookup: VoiceLookup, clock: Callable[[], float] = time.time
) -> list[BaseRoute]:
    """The voice link's page and recording, to put on the relay's public web app."""

    async def found(token: str) -> tuple[VoiceLink, VoiceTarget] | Response:
        link = links.open(token)
        target = None if link is None else await lookup(link.vessel_id, link.message_seq)
        if link is None or target is None:
            return _page(None, f"<p>{escape(_NOT_FOUND)}</p>", 404)
        if clock() >= link.expires_at:
            log.info("voice link of vessel %d message %d expired", link.vessel_id, link.message_seq)
            words = PAGE_WORDS.get(target.contact_lang or Language.ENG, PAGE_WORDS[Language.ENG])
            said = words[2].format(until=_date(link.expires_at))
            return _page(target.contact_lang, f'<p id="expired">{escape(said)}</p>', 410)
        return link, target

    async def page(request: Request) -> Response:
        token = request.path_params["token"]
        opened = await found(token)
        if isinstance(opened, Response):
            return opened
        link, target = opened
        words = PAGE_WORDS.get(target.contact_lang or Language.ENG, PAGE_WORDS[Language.ENG])
        until = escape(words[1].format(until=_date(link.expires_at)))
        body = (
            f'<audio controls preload="none" src="/voice/{escape(token)}.ogg"></audio>'
            f"<p>{until}</p>"
        )
        return _page(target.contact_lang, body, 200)

    async def recording(request: Request) -> Response:
        opened = await found(request.path_params["token"])
        if isinstance(opened, Response):
            return opened
        link, target = opened
        try:
            attachment = await asyncio.to_thread(voice_attachment, target.voice)
        except ValueError:
            log.exception(
                "voice link: vessel %d message %d cannot be decoded",
                link.vessel_id,
                link.message_seq,
            )
            return Response(status_code=500)
        log.info("voice link of vessel %d message %d played", link.vessel_id, link.message_seq)
        response = Response(attachment.ogg, media_type="audio/ogg")
        _private(response)
        return response

    return [
        Route("/voice/{token}.ogg", recording, methods=["GET", "HEAD"]),
        Route("/voice/{token}", page, methods=["GET", "HEAD"]),
    ]
