"""Mail: a crew member's message as an e-mail to a family, and sending it through a smarthost.

Composition is pure (:func:`compose_family_mail`): stdlib ``email`` with ``policy.SMTP``,
UTF-8 text, RFC 2047 headers. The ``From`` display name is the crew member's name ("Ko Aung
via vessel-relay"), the ``Reply-To`` a routed address (:class:`ReplyAddressBook`) that
brings the family's answer back to that crew member, and the ``Message-ID`` the message's
idempotency key ``<{vessel_id}.{message_seq}@{relay domain}>``, identical on every retry, so
a resend after a crash in mid-send is recognisable downstream. A footer in the family's
language explains replies.

Names and texts from a vessel are untrusted: :func:`clean_header_text` turns every line
break and control character into a space and drops bidirectional overrides before a name
reaches a header, so no name can add a header.

Sending (:class:`MailSender`) uses aiosmtplib over sessions kept open to the smarthost
(:class:`shore.smtp_pool.SmtpPool`) and turns every answer or error of the smarthost into a
:class:`~shore.retry.AttemptResult`; it never raises for them. A kept session the server
dropped is found out on its next command: if nothing of the message had left (``DATA`` not
begun), the message goes again at once on another session; if ``DATA`` had begun, the
result is a transient failure marked ``maybe_sent`` (the retry is a counted repeat).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import logging
import re
import ssl
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy, quoprimime
from email.errors import HeaderParseError
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import Policy
from email.utils import format_datetime
from typing import Any

import aiosmtplib
import regex

from protocol.envelopes import MAX_SUBJECT_CHARS, FailureReason
from protocol.languages import Language
from shore.retry import AttemptResult, Outcome, classify_smtp_reply, connection_failure
from shore.smtp_pool import PooledSmtp, PoolStatistics, SmtpPool

log = logging.getLogger(__name__)

#: Header names whose values repeat from message to message (a family's address, a crew
#: member's name, the MIME headers, the Date of the second): parsed once (see below).
_REPEATING_HEADERS = frozenset(
    {"subject", "date", "mime-version", "content-type", "content-transfer-encoding",
     "content-language"}
)  # fmt: skip


class _FoldedOnce:
    """A header that keeps its folded form per folding rule (the line length, line end and
    UTF-8 setting: all that folding reads of a policy); for headers shared by messages."""

    def fold(self, *, policy: Policy) -> str:
        rule = (policy.max_line_length, policy.linesep, getattr(policy, "utf8", False))
        folded: dict[tuple[object, ...], str] = self.__dict__.setdefault("_folded", {})
        text = folded.get(rule)
        if text is None:
            text = folded[rule] = super().fold(policy=policy)  # type: ignore[misc]
        return text


class _RepeatedHeaders(HeaderRegistry):
    """stdlib ``email``'s header registry, remembering the headers whose values repeat.

    Parsing a header value is most of the cost of composing a message, and most values
    repeat: the policy hands a header object on as it is, and header objects are
    immutable, so one parse serves every message with that value, and, as it is written
    out (flattened) to the smarthost again and again, one folding (:class:`_FoldedOnce`).
    The stdlib registry also makes a new header class at every look-up (``registry[name]``,
    asked for each header set); one per name is kept here.
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        made = self._classes.get(name)
        if made is None:
            kind = self.registry.get(name.lower(), self.default_class)
            made = type("_" + kind.__name__, (_FoldedOnce, kind, self.base_class), {})
            self._classes[name] = made
        return made

    def __call__(self, name: str, value: Any) -> BaseHeader:
        if isinstance(value, str) and name.lower() in _REPEATING_HEADERS:
            return _parsed_header(self, name, value)
        header: BaseHeader = super().__call__(name, value)
        return header


@functools.lru_cache(maxsize=4096)
def _parsed_header(registry: HeaderRegistry, name: str, value: str) -> BaseHeader:
    header: BaseHeader = registry[name](name, value)
    return header


#: Policy for every message we write: CRLF line ends, lines folded at 78, headers checked.
MAIL_POLICY = policy.SMTP.clone(header_factory=_RepeatedHeaders())

#: The most characters of a crew member's name that reach a header.
MAX_NAME_CHARS = 64

_GRAPHEME = regex.compile(r"\X")
#: Bidirectional controls: they can make a header read differently from what it is.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_SPACES = re.compile(r"\s+")


def clean_header_text(text: str, max_chars: int = MAX_NAME_CHARS) -> str:
    """Text fit for one header line: no line breaks or controls, NFC, at most ``max_chars``.

    Every control, line or paragraph separator becomes a space, bidirectional overrides
    disappear, runs of white space become one space, and the result is cut between
    grapheme clusters. Joiners (ZWJ, ZWNJ, ZWSP) stay: scripts such as Khmer need them.
    ``=?`` becomes ``= ?``, so no text can pose as an RFC 2047 encoded word.
    """
    chars = []
    for ch in unicodedata.normalize("NFC", text):
        if ch in _BIDI_CONTROLS:
            continue
        category = unicodedata.category(ch)
        chars.append(" " if category in ("Cc", "Zl", "Zp", "Cs", "Co", "Cn") else ch)
    cleaned = _SPACES.sub(" ", "".join(chars)).strip()
    # "=?" could start an RFC 2047 encoded word that a reader decodes into "@", "<" or ",":
    # break it so a name stays a name.
    while "=?" in cleaned:
        cleaned = cleaned.replace("=?", "= ?")
    if len(cleaned) <= max_chars:
        return cleaned
    out: list[str] = []
    length = 0
    for cluster in _GRAPHEME.findall(cleaned):
        if length + len(cluster) > max_chars:
            break
        out.append(cluster)
        length += len(cluster)
    return "".join(out).rstrip()


def message_id(vessel_id: int, message_seq: int, relay_domain: str) -> str:
    """The Message-ID of a crew message: its idempotency key ``(vessel_id, message_seq)``."""
    return f"<{vessel_id}.{message_seq}@{relay_domain}>"


# --- routed reply addresses ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplyRoute:
    """Where a family's answer goes: a crew member of a vessel, from one of their contacts."""

    vessel_id: int
    crew: int
    contact: int


_MAC_BYTES = 10  # 80 bits: guessing a valid address takes ~2**79 tries
#: Reply addresses remembered per book (crew members times their contacts, of a fleet).
_ROUTES_KEPT = 65_536
_TOKEN = re.compile(r"r-([a-z2-7]{16,80})")


class ReplyAddressBook:
    """Reply-To addresses ``r-{token}@{domain}`` that name a route and cannot be guessed.

    The token is base32 (lower case, so mail systems that fold case keep it) of the route's
    three numbers as varints followed by an 80-bit HMAC-SHA256 of them. Nothing is stored:
    the relay's key proves the address is ours. ``keys[0]`` signs; every key verifies, so a
    key can be rotated while old addresses still work.
    """

    def __init__(self, keys: Sequence[bytes], domain: str) -> None:
        if not keys or any(len(key) < 16 for key in keys):
            raise ValueError("need at least one reply key of 16 bytes or more")
        if not domain or any(c in domain for c in "@ \r\n<>"):
            raise ValueError(f"{domain!r} is not a mail domain")
        self._keys = tuple(keys)
        self.domain = domain.lower()
        self._made: dict[ReplyRoute, str] = {}

    def address_for(self, route: ReplyRoute) -> str:
        """The Reply-To address for ``route`` (made once per route: an HMAC per message
        was a tenth of composing it)."""
        address = self._made.get(route)
        if address is None:
            payload = _varint(route.vessel_id) + _varint(route.crew) + _varint(route.contact)
            raw = payload + self._mac(self._keys[0], payload)
            token = base64.b32encode(raw).decode("ascii").rstrip("=").lower()
            address = f"r-{token}@{self.domain}"
            if len(self._made) >= _ROUTES_KEPT:
                self._made.clear()
            self._made[route] = address
        return address

    def resolve(self, address: str) -> ReplyRoute | None:
        """The route an address names, or None if it is not one of ours (constant-time MAC)."""
        local, at, domain = address.strip().strip("<>").rpartition("@")
        if not at or domain.lower() != self.domain:
            return None
        match = _TOKEN.fullmatch(local.lower())
        if match is None:
            return None
        token = match.group(1).upper()
        try:
            raw = base64.b32decode(token + "=" * (-len(token) % 8))
        except (binascii.Error, ValueError):
            return None
        if len(raw) <= _MAC_BYTES:
            return None
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not any(hmac.compare_digest(mac, self._mac(key, payload)) for key in self._keys):
            return None
        numbers = _read_varints(payload)
        if numbers is None or len(numbers) != 3:
            return None
        return ReplyRoute(*numbers)

    @staticmethod
    def _mac(key: bytes, payload: bytes) -> bytes:
        return hmac.new(key, b"vessel-relay reply route\0" + payload, hashlib.sha256).digest()[
            :_MAC_BYTES
        ]


def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("route numbers are never negative")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varints(data: bytes) -> list[int] | None:
    numbers: list[int] = []
    value = shift = 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        shift += 7
        if shift > 63:
            return None
        if not byte & 0x80:
            numbers.append(value)
            value = shift = 0
    return numbers if shift == 0 else None


# --- words in the family's language --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Phrases:
    """What the relay says to a family, in one language (``{name}``, ``{count}``, ``{limit}``)."""

    subject: str
    footer: str
    notice_subject: str
    notice_intro: str
    notice_attachments: str
    notice_truncated: str


ENGLISH = Phrases(
    subject="Message from {name}",
    footer=(
        "This message was sent from a fishing vessel through vessel-relay. You can answer "
        "by replying to this e-mail. Long replies are shortened to about {limit} characters, "
        "and attachments and pictures are not forwarded."
    ),
    notice_subject="Your reply was forwarded, but not all of it",
    notice_intro="Your reply has been passed on to the fishing vessel, with these changes:",
    notice_attachments=(
        "{count} attachment(s) (files or pictures) were not forwarded: the satellite link "
        "carries text only."
    ),
    notice_truncated=(
        "Your reply was longer than {limit} characters: only the beginning was forwarded. "
        "The crew member can ask you for the rest."
    ),
)

# Translations to be checked by native speakers before production use.
PHRASES: Mapping[Language, Phrases] = {
    Language.ENG: ENGLISH,
    Language.MYA: Phrases(
        subject="{name} ထံမှ စာ",
        footer=(
            "ဤစာကို ငါးဖမ်းသင်္ဘောတစ်စင်းပေါ်မှ vessel-relay မှတစ်ဆင့် ပို့ထားပါသည်။ "
            "ဤအီးမေးလ်ကို ပြန်စာရေး၍ ဖြေကြားနိုင်ပါသည်။ ရှည်လျားသော ပြန်စာများကို "
            "စာလုံး {limit} ခန့်အထိ တိုစေမည်ဖြစ်ပြီး ပူးတွဲဖိုင်များနှင့် ဓာတ်ပုံများကို ပို့ပေးမည် မဟုတ်ပါ။"
        ),
        notice_subject="သင့်ပြန်စာကို ပို့ပေးပြီးပါပြီ၊ သို့သော် အားလုံးမဟုတ်ပါ",
        notice_intro="သင့်ပြန်စာကို ငါးဖမ်းသင်္ဘောသို့ ပို့ပေးပြီးပါပြီ။ ပြောင်းလဲမှုများမှာ -",
        notice_attachments=(
            "ပူးတွဲဖိုင် {count} ခု (ဖိုင် သို့မဟုတ် ဓာတ်ပုံ) ကို မပို့ပေးနိုင်ပါ - ဂြိုဟ်တုလိုင်းသည် စာသားကိုသာ ပို့ပေးနိုင်ပါသည်။"
        ),
        notice_truncated=(
            "သင့်ပြန်စာသည် စာလုံး {limit} ထက် ရှည်သဖြင့် အစပိုင်းကိုသာ ပို့ပေးပါသည်။ "
            "ကျန်ရှိသောအပိုင်းကို သင်္ဘောသားက ထပ်မံတောင်းဆိုနိုင်ပါသည်။"
        ),
    ),
    Language.THA: Phrases(
        subject="ข้อความจาก {name}",
        footer=(
            "ข้อความนี้ส่งมาจากเรือประมงผ่าน vessel-relay คุณตอบกลับได้โดยตอบอีเมลนี้ "
            "ข้อความตอบกลับที่ยาวจะถูกตัดให้เหลือประมาณ {limit} ตัวอักษร "
            "และจะไม่ส่งต่อไฟล์แนบหรือรูปภาพ"
        ),
        notice_subject="ส่งต่อคำตอบของคุณแล้ว แต่ไม่ทั้งหมด",
        notice_intro="คำตอบของคุณถูกส่งต่อไปยังเรือประมงแล้ว โดยมีการเปลี่ยนแปลงดังนี้:",
        notice_attachments="ไฟล์แนบ {count} รายการ (ไฟล์หรือรูปภาพ) ไม่ถูกส่งต่อ: ดาวเทียมส่งได้เฉพาะข้อความ",
        notice_truncated=(
            "คำตอบของคุณยาวเกิน {limit} ตัวอักษร จึงส่งต่อเฉพาะส่วนต้น ลูกเรือสามารถขอส่วนที่เหลือจากคุณได้"
        ),
    ),
    Language.KHM: Phrases(
        subject="សារពី {name}",
        footer=(
            "សារនេះត្រូវបានផ្ញើពីកប៉ាល់នេសាទតាមរយៈ vessel-relay។ អ្នកអាចឆ្លើយតបដោយឆ្លើយអ៊ីមែលនេះ។ "
            "ការឆ្លើយតបវែងៗនឹងត្រូវកាត់ឱ្យខ្លីត្រឹមប្រហែល {limit} តួអក្សរ "
            "ហើយឯកសារភ្ជាប់ និងរូបភាពនឹងមិនត្រូវបានបញ្ជូនបន្តទេ។"
        ),
        notice_subject="ការឆ្លើយតបរបស់អ្នកត្រូវបានបញ្ជូនបន្ត ប៉ុន្តែមិនទាំងអស់ទេ",
        notice_intro="ការឆ្លើយតបរបស់អ្នកត្រូវបានបញ្ជូនទៅកប៉ាល់នេសាទ ដោយមានការផ្លាស់ប្តូរទាំងនេះ៖",
        notice_attachments=(
            "ឯកសារភ្ជាប់ {count} (ឯកសារ ឬរូបភាព) មិនត្រូវបានបញ្ជូនបន្តទេ៖ ខ្សែផ្កាយរណបដឹកតែអត្ថបទប៉ុណ្ណោះ។"
        ),
        notice_truncated=(
            "ការឆ្លើយតបរបស់អ្នកវែងជាង {limit} តួអក្សរ៖ មានតែផ្នែកដំបូងប៉ុណ្ណោះដែលត្រូវបានបញ្ជូន។ "
            "នាវិកអាចសុំផ្នែកដែលនៅសល់ពីអ្នក។"
        ),
    ),
    Language.LAO: Phrases(
        subject="ຂໍ້ຄວາມຈາກ {name}",
        footer=(
            "ຂໍ້ຄວາມນີ້ຖືກສົ່ງມາຈາກເຮືອຫາປາຜ່ານ vessel-relay. ທ່ານສາມາດຕອບໄດ້ໂດຍການຕອບອີເມວນີ້. "
            "ຄຳຕອບທີ່ຍາວຈະຖືກຕັດໃຫ້ເຫຼືອປະມານ {limit} ຕົວອັກສອນ "
            "ແລະ ໄຟລ໌ແນບ ແລະ ຮູບພາບຈະບໍ່ຖືກສົ່ງຕໍ່."
        ),
        notice_subject="ຄຳຕອບຂອງທ່ານຖືກສົ່ງຕໍ່ແລ້ວ ແຕ່ບໍ່ທັງໝົດ",
        notice_intro="ຄຳຕອບຂອງທ່ານຖືກສົ່ງຕໍ່ໄປຫາເຮືອຫາປາແລ້ວ ໂດຍມີການປ່ຽນແປງດັ່ງນີ້:",
        notice_attachments=(
            "ໄຟລ໌ແນບ {count} ລາຍການ (ໄຟລ໌ ຫຼື ຮູບພາບ) ບໍ່ໄດ້ຖືກສົ່ງຕໍ່: ສັນຍານດາວທຽມສົ່ງໄດ້ແຕ່ຂໍ້ຄວາມ."
        ),
        notice_truncated=(
            "ຄຳຕອບຂອງທ່ານຍາວເກີນ {limit} ຕົວອັກສອນ: ສົ່ງຕໍ່ສະເພາະສ່ວນຕົ້ນ. ລູກເຮືອສາມາດຂໍສ່ວນທີ່ເຫຼືອຈາກທ່ານໄດ້."
        ),
    ),
    Language.VIE: Phrases(
        subject="Tin nhắn từ {name}",
        footer=(
            "Tin nhắn này được gửi từ một tàu cá qua vessel-relay. Bạn có thể trả lời bằng cách "
            "trả lời email này. Thư trả lời dài sẽ được rút ngắn còn khoảng {limit} ký tự, "
            "tệp đính kèm và hình ảnh sẽ không được chuyển tiếp."
        ),
        notice_subject="Thư trả lời của bạn đã được chuyển, nhưng không đầy đủ",
        notice_intro="Thư trả lời của bạn đã được chuyển đến tàu cá, với những thay đổi sau:",
        notice_attachments=(
            "{count} tệp đính kèm (tệp hoặc hình ảnh) không được chuyển tiếp: "
            "đường truyền vệ tinh chỉ mang văn bản."
        ),
        notice_truncated=(
            "Thư trả lời của bạn dài hơn {limit} ký tự: chỉ phần đầu được chuyển tiếp. "
            "Thuyền viên có thể hỏi bạn phần còn lại."
        ),
    ),
    Language.IND: Phrases(
        subject="Pesan dari {name}",
        footer=(
            "Pesan ini dikirim dari kapal penangkap ikan melalui vessel-relay. Anda dapat "
            "menjawab dengan membalas email ini. Balasan yang panjang dipersingkat menjadi "
            "sekitar {limit} karakter, dan lampiran serta gambar tidak diteruskan."
        ),
        notice_subject="Balasan Anda sudah diteruskan, tetapi tidak seluruhnya",
        notice_intro="Balasan Anda sudah diteruskan ke kapal penangkap ikan, dengan perubahan ini:",
        notice_attachments=(
            "{count} lampiran (file atau gambar) tidak diteruskan: jalur satelit hanya "
            "membawa teks."
        ),
        notice_truncated=(
            "Balasan Anda lebih dari {limit} karakter: hanya bagian awal yang diteruskan. "
            "Awak kapal dapat meminta sisanya kepada Anda."
        ),
    ),
    Language.TGL: Phrases(
        subject="Mensahe mula kay {name}",
        footer=(
            "Ipinadala ang mensaheng ito mula sa isang barkong pangisda sa pamamagitan ng "
            "vessel-relay. Maaari kang sumagot sa pag-reply sa email na ito. Paiikliin ang "
            "mahahabang sagot sa humigit-kumulang {limit} character, at hindi ipapasa ang mga "
            "attachment at larawan."
        ),
        notice_subject="Naipasa ang iyong sagot, pero hindi lahat",
        notice_intro="Naipasa na sa barkong pangisda ang iyong sagot, na may mga pagbabagong ito:",
        notice_attachments=(
            "Hindi naipasa ang {count} attachment (file o larawan): teksto lamang ang "
            "dinadala ng satellite."
        ),
        notice_truncated=(
            "Mas mahaba sa {limit} character ang iyong sagot: ang simula lamang ang naipasa. "
            "Maaaring hingin sa iyo ng tripulante ang natitira."
        ),
    ),
}

#: The line a family reads above a voice message's attachment (``{name}``, ``{seconds}``).
#: Translations to be checked by native speakers before production use.
VOICE_LINES: Mapping[Language, str] = {
    Language.ENG: (
        "{name} sent you a voice message ({seconds} seconds). Open the attached file to listen."
    ),
    Language.MYA: ("{name} က အသံမက်ဆေ့ချ် ({seconds} စက္ကန့်) ပို့ထားပါသည်။ နားထောင်ရန် ပူးတွဲဖိုင်ကို ဖွင့်ပါ။"),
    Language.THA: "{name} ส่งข้อความเสียงถึงคุณ ({seconds} วินาที) เปิดไฟล์แนบเพื่อฟัง",
    Language.KHM: ("{name} បានផ្ញើសារជាសំឡេងមកអ្នក ({seconds} វិនាទី)។ សូមបើកឯកសារភ្ជាប់ដើម្បីស្តាប់។"),
    Language.LAO: "{name} ສົ່ງຂໍ້ຄວາມສຽງຫາທ່ານ ({seconds} ວິນາທີ). ເປີດໄຟລ໌ແນບເພື່ອຟັງ.",
    Language.VIE: (
        "{name} đã gửi cho bạn một tin nhắn thoại ({seconds} giây). Mở tệp đính kèm để nghe."
    ),
    Language.IND: (
        "{name} mengirimi Anda pesan suara ({seconds} detik). "
        "Buka file lampiran untuk mendengarkan."
    ),
    Language.TGL: (
        "Nagpadala sa iyo si {name} ng voice message ({seconds} segundo). "
        "Buksan ang naka-attach na file para makinig."
    ),
}

#: BCP 47 tags for ``Content-Language``.
LANGUAGE_TAGS: Mapping[Language, str] = {
    Language.ENG: "en",
    Language.MYA: "my",
    Language.THA: "th",
    Language.KHM: "km",
    Language.LAO: "lo",
    Language.VIE: "vi",
    Language.IND: "id",
    Language.TGL: "tl",
    Language.SHN: "shn",
}


def phrases_for(lang: Language | None) -> Phrases:
    """The phrases in ``lang``, or English when we have no translation."""
    return PHRASES.get(lang, ENGLISH) if lang is not None else ENGLISH


# --- composing ------------------------------------------------------------------------------


class InvalidAddress(ValueError):
    """A family contact's e-mail address cannot be written into a message."""


@dataclass(frozen=True, slots=True)
class VoiceAttachment:
    """An e-mail attachment of a voice message: Opus in Ogg, and how long it plays."""

    ogg: bytes
    duration_ms: int

    @property
    def seconds(self) -> int:
        """The length in whole seconds, rounded up (what the family is told)."""
        return max(1, -(-self.duration_ms // 1000))


@dataclass(frozen=True, slots=True)
class FamilyMail:
    """One crew message to one family e-mail contact (everything composition needs)."""

    vessel_id: int
    message_seq: int
    route: ReplyRoute
    crew_name: str
    to_address: str
    text: str
    contact_lang: Language | None = None
    #: A voice message: attached as Opus in Ogg, with a line in the family's language
    #: instead of ``text``.
    voice: VoiceAttachment | None = None
    #: The crew member's own Subject line (a mail from the vessel's SMTP door): the
    #: mail's Subject instead of "Message from {name}" (who it is from is in From).
    subject: str | None = None


@dataclass(frozen=True, slots=True)
class MailIdentity:
    """Who the relay is in mail: its domain, sender address and reply settings."""

    relay_domain: str
    from_address: str
    reply_limit_chars: int = 1000

    def __post_init__(self) -> None:
        try:
            Address(addr_spec=self.from_address)
        except (ValueError, IndexError, HeaderParseError) as exc:
            raise ValueError(f"from_address {self.from_address!r} is not an address") from exc


def display_name(crew_name: str) -> str:
    """The ``From`` display name: "{crew name} via vessel-relay" (name cleaned)."""
    name = clean_header_text(crew_name)
    return f"{name} via vessel-relay" if name else "vessel-relay"


@functools.lru_cache(maxsize=4096)
def check_address(address: str) -> Address:
    """A family e-mail address as a header ``Address``; :class:`InvalidAddress` if it is not.

    Remembered per address (families get many messages; a refused one is checked again)."""
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in address) or " " in address:
        raise InvalidAddress("address contains spaces or control characters")
    try:
        parsed = Address(addr_spec=address)
    except (ValueError, IndexError, HeaderParseError) as exc:
        raise InvalidAddress("not an e-mail address") from exc
    if not parsed.username or not parsed.domain or "." not in parsed.domain:
        raise InvalidAddress("not an e-mail address with a domain")
    if not parsed.username.isascii():
        raise InvalidAddress("non-ASCII mailbox names need SMTPUTF8, which we do not use")
    return parsed


def compose_family_mail(
    mail: FamilyMail, identity: MailIdentity, reply_book: ReplyAddressBook, now: float
) -> EmailMessage:
    """The e-mail for ``mail`` (pure, apart from ``now``, the Date in seconds since 1970).

    Raises :class:`InvalidAddress` when the family's address cannot be used.
    """
    to = check_address(mail.to_address)
    words = phrases_for(mail.contact_lang)
    name = clean_header_text(mail.crew_name) or "vessel-relay"
    shown = display_name(mail.crew_name)
    message = EmailMessage(policy=MAIL_POLICY)
    message["From"] = _address_header("From", shown, identity.from_address)
    message["To"] = _address_header("To", "", to.addr_spec)
    message["Reply-To"] = _address_header("Reply-To", shown, reply_book.address_for(mail.route))
    # The email library writes a non-ASCII Subject as RFC 2047 encoded words.
    own_subject = clean_header_text(mail.subject or "", MAX_SUBJECT_CHARS)
    message["Subject"] = own_subject or _subject(words, name)
    message["Date"] = _date(int(now))
    message["Message-ID"] = message_id(mail.vessel_id, mail.message_seq, identity.relay_domain)
    if mail.voice is not None:
        line = VOICE_LINES.get(mail.contact_lang or Language.ENG, VOICE_LINES[Language.ENG])
        body = line.format(name=name, seconds=mail.voice.seconds)
    else:
        body = _body_text(mail.text)
    text = f"{body}\n\n-- \n{_footer(words, identity.reply_limit_chars)}\n"
    message.set_content(text, charset="utf-8", cte=_cte(body))
    if mail.voice is not None:
        message.add_attachment(
            mail.voice.ogg,
            maintype="audio",
            subtype="ogg",
            filename=f"voice-{mail.vessel_id}-{mail.message_seq}.ogg",
        )
    if mail.contact_lang is not None and mail.contact_lang in LANGUAGE_TAGS:
        # after set_content and add_attachment, which move Content-* headers into parts
        message["Content-Language"] = LANGUAGE_TAGS[mail.contact_lang]
    return message


def _body_text(text: str) -> str:
    """A crew message's text as a mail body: NFC, line ends ``\\n``."""
    return unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")


@functools.lru_cache(maxsize=4096)
def _subject(words: Phrases, name: str) -> str:
    return clean_header_text(words.subject.format(name=name), 200)


@functools.lru_cache(maxsize=64)
def _date(seconds: int) -> str:
    return format_datetime(datetime.fromtimestamp(seconds, UTC))


@functools.lru_cache(maxsize=64)
def _footer(words: Phrases, limit_chars: int) -> str:
    footer = words.footer.format(limit=f"{limit_chars:,}")
    if words is not ENGLISH:
        footer += "\n\n" + ENGLISH.footer.format(limit=f"{limit_chars:,}")
    return footer


# --- the same e-mail, written straight to bytes ---------------------------------------------
#
# Composing an ``EmailMessage`` and flattening it again (aiosmtplib's ``send_message``) was
# a third of the relay's CPU per family e-mail (issue 22). A written message's e-mail has a
# fixed shape: headers that repeat from message to message (folded once, by the same stdlib
# header objects and ``policy.SMTP`` that flattening uses), a Date that changes once a
# second, a Message-ID, and the body in quoted-printable or base64 (stdlib encoders, with
# the parameters ``set_content`` uses). :func:`render_family_mail` writes exactly the bytes
# that ``send_message`` would send; tests hold it to that, byte for byte.

#: The policy aiosmtplib flattens with for a server that offers 8BITMIME.
_WIRE_POLICY = policy.SMTP
_SIMPLE_MESSAGE_ID = re.compile(r"<[0-9]+\.[0-9]+@[A-Za-z0-9.-]+>")
_NEWLINES = re.compile(r"\r\n|\r|\n")
#: Where headers and encoded body lines fold (78 for both policies).
_WIDTH: int = MAIL_POLICY.max_line_length or 78


@dataclass(frozen=True, slots=True)
class RenderedMail:
    """A family e-mail as the bytes that follow SMTP ``DATA``, with its envelope."""

    sender: str
    recipient: str
    data: bytes


def render_family_mail(
    mail: FamilyMail, identity: MailIdentity, reply_book: ReplyAddressBook, now: float
) -> RenderedMail | EmailMessage:
    """The e-mail for ``mail`` as :func:`compose_family_mail` makes it, written to bytes
    directly when it is a written message between ASCII addresses under the relay's own
    Subject; otherwise (a voice message, an address that needs SMTPUTF8, the crew
    member's own Subject) the composed ``EmailMessage`` itself.

    Raises :class:`InvalidAddress` when the family's address cannot be used.
    """
    to = check_address(mail.to_address)
    if (
        mail.voice is not None
        or mail.subject
        or not (to.addr_spec.isascii() and identity.from_address.isascii())
    ):
        return compose_family_mail(mail, identity, reply_book, now)
    words = phrases_for(mail.contact_lang)
    reply_to = reply_book.address_for(mail.route)
    body = _body_text(mail.text)
    cte = _cte(body)
    text = f"{body}\n\n-- \n{_footer(words, identity.reply_limit_chars)}\n"
    lang = LANGUAGE_TAGS.get(mail.contact_lang) if mail.contact_lang is not None else None
    sender = identity.from_address
    data = b"".join(
        (
            _folded_addressing(mail.crew_name, words, to.addr_spec, sender, reply_to),
            _folded_header("Date", _date(int(now))),
            _folded_message_id(message_id(mail.vessel_id, mail.message_seq, identity.relay_domain)),
            _folded_content_headers(cte, lang),
            b"\r\n",
            _encoded_body(text, cte),
        )
    )
    return RenderedMail(sender, to.addr_spec, data)


@functools.lru_cache(maxsize=4096)
def _folded_addressing(
    crew_name: str, words: Phrases, to: str, from_address: str, reply_to: str
) -> bytes:
    """From, To, Reply-To and Subject, folded (they repeat for a crew member's family)."""
    name = clean_header_text(crew_name) or "vessel-relay"
    shown = display_name(crew_name)
    return b"".join(
        (
            _WIRE_POLICY.fold_binary("From", _address_header("From", shown, from_address)),
            _WIRE_POLICY.fold_binary("To", _address_header("To", "", to)),
            _WIRE_POLICY.fold_binary("Reply-To", _address_header("Reply-To", shown, reply_to)),
            _folded_header("Subject", _subject(words, name)),
        )
    )


@functools.lru_cache(maxsize=256)
def _folded_header(name: str, value: str) -> bytes:
    """One header of a text value, parsed and folded as the message would be."""
    return _WIRE_POLICY.fold_binary(name, MAIL_POLICY.header_factory(name, value))


def _folded_message_id(value: str) -> bytes:
    """The Message-ID header; one that fits on its line is written as it is (what folding
    it gives), any other is folded by the stdlib."""
    line = f"Message-ID: {value}\r\n"
    if len(line) - 2 <= _WIDTH and _SIMPLE_MESSAGE_ID.fullmatch(value):
        return line.encode("ascii")
    return _WIRE_POLICY.fold_binary("Message-ID", MAIL_POLICY.header_factory("Message-ID", value))


@functools.lru_cache(maxsize=64)
def _folded_content_headers(cte: str, lang: str | None) -> bytes:
    """The MIME headers ``set_content`` writes for a UTF-8 text (and Content-Language)."""
    shape = EmailMessage(policy=MAIL_POLICY)
    shape.set_content("-", charset="utf-8", cte=cte)
    if lang is not None:
        shape["Content-Language"] = lang
    return b"".join(_WIRE_POLICY.fold_binary(name, value) for name, value in shape.items())


def _encoded_body(text: str, cte: str) -> bytes:
    """``text`` in UTF-8 under ``cte`` as ``set_content`` encodes it and flattening writes
    it (lines folded at the policy's length, every line end CRLF)."""
    lines = text.encode("utf-8").splitlines()
    if cte == "quoted-printable":
        encoded = quoprimime.body_encode(b"\n".join(lines).decode("latin-1") + "\n", _WIDTH)
    else:
        raw = b"\r\n".join(lines) + b"\r\n"
        step = _WIDTH // 4 * 3
        encoded = "".join(
            binascii.b2a_base64(raw[at : at + step]).decode("ascii")
            for at in range(0, len(raw), step)
        )
    parts = _NEWLINES.split(encoded)
    out = "\r\n".join(parts[:-1]) + ("\r\n" if len(parts) > 1 else "") + parts[-1]
    return out.encode("ascii")


# A crew member writes to the same family many times: the address headers (values that are
# ``Address`` objects, which the policy's registry cannot remember) are parsed once too.


@functools.lru_cache(maxsize=4096)
def _address_header(name: str, shown: str, addr_spec: str) -> BaseHeader:
    """An address header (From, To, Reply-To) of one mailbox, parsed once."""
    header: BaseHeader = MAIL_POLICY.header_factory(
        name, Address(display_name=shown, addr_spec=addr_spec)
    )
    return header


def _cte(text: str) -> str:
    """Quoted-printable for mostly-ASCII text, base64 for other scripts (shorter)."""
    non_ascii = sum(1 for c in text if ord(c) > 127)
    return "quoted-printable" if non_ascii * 4 < len(text) else "base64"


# --- sending --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """The smarthost that takes our family e-mail."""

    host: str = "localhost"
    port: int = 25
    #: True: require STARTTLS; False: never; None: use it when offered.
    starttls: bool | None = None
    #: Implicit TLS from the first byte (port 465).
    use_tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 60.0
    validate_certs: bool = True
    #: The envelope sender (bounces go here).
    envelope_from: str | None = None
    #: Sessions kept open to the smarthost (at most this many messages in flight).
    connections: int = 8
    #: A kept session idle longer than this is closed instead of reused.
    idle_s: float = 60.0
    #: Pipeline MAIL, RCPT and DATA when the smarthost offers PIPELINING
    #: (``shore.smtp_pool.PooledSmtp.send_wire``).
    pipelining: bool = True
    #: The TLS context of STARTTLS and implicit TLS (``shore.broker_login.verifying_context``),
    #: built once; None: aiosmtplib builds one per session from ``validate_certs``.
    tls_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class MailStatistics:
    """Counters for the status page."""

    attempts: int
    delivered: int
    transient_failures: int
    permanent_failures: int


class MailSender:
    """Sends composed messages to the smarthost over kept sessions (``config.connections``
    at most); :meth:`aclose` when done."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._counts = {outcome: 0 for outcome in Outcome}
        self._pool = SmtpPool(self._new_session, size=config.connections, idle_s=config.idle_s)

    def statistics(self) -> MailStatistics:
        """Counters since start."""
        return MailStatistics(
            sum(self._counts.values()),
            self._counts[Outcome.DELIVERED],
            self._counts[Outcome.TRANSIENT],
            self._counts[Outcome.PERMANENT],
        )

    def pool_statistics(self) -> PoolStatistics:
        """The kept sessions' counters (opened, reused, discarded, idle now)."""
        return self._pool.statistics()

    async def aclose(self) -> None:
        """Close the kept sessions (QUIT); the sender is unusable afterwards."""
        await self._pool.aclose()

    async def send(
        self, message: EmailMessage | RenderedMail, recipient: str | None = None
    ) -> AttemptResult:
        """Send ``message`` (to ``recipient``, or its ``To``); the smarthost's answer.

        A :class:`RenderedMail` goes as its bytes, to its own recipient unless ``recipient``
        is given, from ``envelope_from`` or its sender (a message's ``From``, as for an
        ``EmailMessage``); being 7-bit text, without ``BODY=8BITMIME``."""
        # A kept session may have been dropped by the server while idle; each such one is
        # closed, so this ends with a new session at the latest.
        for _ in range(self.config.connections + 1):
            result = await self._send_once(message, recipient)
            if result is not None:
                break
        else:
            result = connection_failure("smtp sessions kept dropping")
        self._counts[result.outcome] += 1
        log.debug("mail %s: %s", result.outcome.value, result.detail)
        return result

    def _new_session(self) -> PooledSmtp:
        config = self.config
        return PooledSmtp(
            hostname=config.host,
            port=config.port,
            start_tls=config.starttls,
            use_tls=config.use_tls,
            username=config.username,
            password=config.password,
            timeout=config.timeout_s,
            validate_certs=config.validate_certs,
            tls_context=config.tls_context,
            pipelining=config.pipelining,
        )

    async def _send_once(
        self, message: EmailMessage | RenderedMail, recipient: str | None
    ) -> AttemptResult | None:
        """One mail transaction on a kept or new session; None when a kept session turned
        out dropped before anything of the message left (send again)."""
        config = self.config
        try:
            async with self._pool.session() as session:
                try:
                    if isinstance(message, RenderedMail):
                        answer = await session.smtp.send_wire(
                            config.envelope_from or message.sender,
                            recipient or message.recipient,
                            message.data,
                        )
                        reply = answer.message
                    else:
                        _refused, reply = await session.smtp.send_message(
                            message,
                            sender=config.envelope_from,
                            recipients=None if recipient is None else [recipient],
                        )
                except aiosmtplib.SMTPTimeoutError:
                    session.broken()
                    if session.smtp.data_started:
                        return connection_failure(
                            "smtp timeout (the message may have been sent)", maybe_sent=True
                        )
                    return connection_failure("smtp timeout")
                except OSError as exc:  # aiosmtplib.SMTPServerDisconnected among them
                    session.broken()
                    if session.smtp.data_started:
                        return connection_failure(
                            f"smtp connection lost during DATA ({type(exc).__name__}; the "
                            "message may have been sent)",
                            maybe_sent=True,
                        )
                    if session.reused:
                        log.debug("a kept SMTP session was dropped by the server; another")
                        return None
                    return connection_failure(f"smtp connection ({type(exc).__name__})")
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0]
            return classify_smtp_reply(first.code, first.message)
        except (
            aiosmtplib.SMTPSenderRefused,
            aiosmtplib.SMTPHeloError,
            aiosmtplib.SMTPAuthenticationError,
            aiosmtplib.SMTPConnectResponseError,
        ) as exc:
            # Our own set-up is refused: the operator must act; don't fail the family.
            return AttemptResult.transient(FailureReason.PROVIDER_ERROR, f"smtp {exc.code} (relay)")
        except aiosmtplib.SMTPResponseException as exc:
            return classify_smtp_reply(exc.code, exc.message)
        except aiosmtplib.SMTPTimeoutError:
            return connection_failure("smtp timeout")
        except aiosmtplib.SMTPNotSupported:
            return AttemptResult.transient(FailureReason.PROVIDER_ERROR, "smtp starttls missing")
        except (aiosmtplib.SMTPException, OSError) as exc:
            return _session_failure(exc)
        return classify_smtp_reply(250, reply.split(" ", 1)[-1] if reply else "")


#: aiosmtplib's own words (a plain ``SMTPException``) when the smarthost lacks what
#: ``[delivery]`` requires, and the detail logged for the operator.
_MISSING_EXTENSIONS = (
    ("STARTTLS extension not supported", "smtp starttls missing (relay)"),
    ("AUTH extension is not supported", "smtp auth not offered (relay)"),
)


def _session_failure(exc: aiosmtplib.SMTPException | OSError) -> AttemptResult:
    """A session that could not be set up or was lost. The smarthost's certificate not
    trusted (STARTTLS, or implicit TLS where aiosmtplib wraps it in ``SMTPConnectError``),
    or no STARTTLS or AUTH offered though the relay requires it: the operator must act, and
    nothing was sent. Otherwise a connection failure."""
    if isinstance(exc, ssl.SSLCertVerificationError) or isinstance(
        exc.__cause__, ssl.SSLCertVerificationError
    ):
        return AttemptResult.transient(
            FailureReason.PROVIDER_ERROR, "smtp certificate not trusted (relay)"
        )
    if type(exc) is aiosmtplib.SMTPException:
        for words, detail in _MISSING_EXTENSIONS:
            if words in str(exc):
                return AttemptResult.transient(FailureReason.PROVIDER_ERROR, detail)
    return connection_failure(f"smtp connection ({type(exc).__name__})")
