"""Spoken replies: a family's voice memo attached to their reply mail, made into Codec2.

A phone's voice memo comes in many containers (Ogg/Opus from WhatsApp or Android
recorders, M4A/AAC from iPhone's Voice Memos, MP3, AMR, 3GP, WAV). :func:`find_spoken_part`
picks the first attachment that says it is sound (``audio/*``, ``application/ogg``, or a
sound file's name); :func:`code_spoken_reply` decodes it with FFmpeg (PyAV), resamples it
to 8 kHz mono, trims the silence before and after the words and codes the rest with Codec2
in the relay's mode (:mod:`common.speech`, the same path a crew member's voice note takes
on board). A memo longer than the limit once trimmed is **refused, not cut**: a reply cut
mid-sentence can say the opposite of what was meant, so the family is asked for a shorter
one. Each refusal has a stable code and a sentence in the family's language
(:func:`voice_notice_line`) for the reply server's notice; the rest of the mail (its text)
goes down regardless. CPU-bound: the reply server calls it in a thread. Nothing of the
memo is logged but its size and length.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from enum import StrEnum

from common.speech import (
    CodedSpeech,
    RecordingNotAudio,
    RecordingSilent,
    RecordingTooLong,
    SpeechError,
    decode_recording,
    encode_codec2,
    trim_silence,
)
from protocol.languages import Language
from protocol.voice import DEFAULT_VOICE_MODE, MAX_VOICE_NOTE_MS, SAMPLE_RATE_HZ, VoiceMode

__all__ = [
    "SOUND_FILE_SUFFIXES",
    "SpokenPart",
    "SpokenReplyRefused",
    "VoiceRefusal",
    "VoiceReplyConfig",
    "code_spoken_reply",
    "find_spoken_part",
    "voice_notice_line",
]

log = logging.getLogger(__name__)

#: Names of sound files as phones and mail apps attach them (lower case).
SOUND_FILE_SUFFIXES = (
    ".ogg",
    ".oga",
    ".opus",
    ".m4a",
    ".aac",
    ".mp3",
    ".amr",
    ".3gp",
    ".3ga",
    ".wav",
    ".webm",
    ".caf",
    ".flac",
)


@dataclass(frozen=True, slots=True)
class VoiceReplyConfig:
    """Families' spoken replies: which vessels take them, how long one may be, its mode.

    ``vessels`` lists the vessels whose agents read voice replies (kind 14): an older
    agent refuses a downlink batch holding one as malformed, so the relay operator names a
    vessel here once its agent is upgraded. For any other vessel a voice memo is an
    attachment like any other: not forwarded, and the family told so.
    """

    vessels: frozenset[int] = frozenset()
    max_seconds: int = 30
    mode: VoiceMode = DEFAULT_VOICE_MODE

    def __post_init__(self) -> None:
        longest = MAX_VOICE_NOTE_MS // 1000
        if not 1 <= self.max_seconds <= longest:
            raise ValueError(
                f"a voice reply's limit is {self.max_seconds} s; choose 1 to {longest} seconds"
            )

    def takes(self, vessel_id: int) -> bool:
        """Whether spoken replies go down to this vessel."""
        return vessel_id in self.vessels


class VoiceRefusal(StrEnum):
    """Why a family's voice memo did not go down (stable codes, in statistics and tests)."""

    NOT_AUDIO = "not_audio"  # not sound, or in no container this relay reads
    SILENT = "silent"  # nothing above the silence gate
    TOO_LONG = "too_long"  # more speech than the limit, once trimmed


class SpokenReplyRefused(Exception):
    """A voice memo that cannot go down; ``refusal`` says why."""

    def __init__(self, refusal: VoiceRefusal, message: str) -> None:
        super().__init__(message)
        self.refusal = refusal


@dataclass(frozen=True, slots=True)
class SpokenPart:
    """The voice memo found in a reply mail: its bytes and the type it says it has."""

    data: bytes
    content_type: str


def _is_sound(part: Message) -> bool:
    kind = part.get_content_type()
    if part.get_content_maintype() == "audio" or kind == "application/ogg":
        return True
    name = (part.get_filename() or "").strip().lower()
    return name.endswith(SOUND_FILE_SUFFIXES)


def find_spoken_part(raw: bytes) -> SpokenPart | None:
    """The first attachment of a received mail that says it is sound, or None.

    Only what the attachment *says* is weighed here; whether it really is sound is for
    :func:`code_spoken_reply` to find out.
    """
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)  # policy.default makes EmailMessage objects
    for part in message.walk():
        if part.is_multipart() or not _is_sound(part):
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            return SpokenPart(payload, part.get_content_type())
    return None


def code_spoken_reply(data: bytes, config: VoiceReplyConfig) -> CodedSpeech:
    """The memo's speech, trimmed and coded with Codec2 in ``config.mode``.

    Raises :class:`SpokenReplyRefused` (not sound or unreadable, silent, too long once
    trimmed).
    """
    limit_s = config.max_seconds
    try:
        samples = trim_silence(decode_recording(data, limit_s=limit_s))
        seconds = len(samples) / SAMPLE_RATE_HZ
        if seconds > limit_s:
            raise RecordingTooLong(
                f"{seconds:.1f} s of speech, over the limit of {limit_s} s",
                seconds=seconds,
                limit_s=limit_s,
            )
    except SpeechError as error:
        refusal = _refusal_of(error)
        log.info("voice reply refused (%s, %d bytes)", refusal.value, len(data))
        raise SpokenReplyRefused(refusal, str(error)) from error
    coded = encode_codec2(samples, config.mode)
    log.info(
        "voice reply coded: %d bytes in, %d ms of speech, %d bytes of Codec2 %s",
        len(data),
        coded.duration_ms,
        len(coded.frames),
        config.mode.label,
    )
    return coded


def _refusal_of(error: SpeechError) -> VoiceRefusal:
    if isinstance(error, RecordingTooLong):
        return VoiceRefusal.TOO_LONG
    if isinstance(error, RecordingSilent):
        return VoiceRefusal.SILENT
    if isinstance(error, RecordingNotAudio):
        return VoiceRefusal.NOT_AUDIO
    return VoiceRefusal.NOT_AUDIO  # RecordingUnreadable: no container this relay reads


#: What the notice says of a voice memo that did not go down (``{limit}`` in seconds).
#: Translations to be checked by native speakers before production use.
VOICE_NOTICES: Mapping[Language, Mapping[VoiceRefusal, str]] = {
    Language.ENG: {
        VoiceRefusal.NOT_AUDIO: (
            "Your voice message could not be played, so it was not forwarded. Please record "
            "it again with your phone's voice recorder and send it as an attachment."
        ),
        VoiceRefusal.SILENT: (
            "Your voice message was silent (no words could be heard), so it was not "
            "forwarded. Please hold the phone close and record it again."
        ),
        VoiceRefusal.TOO_LONG: (
            "Your voice message was longer than {limit} seconds, so it was not forwarded. "
            "Please record a shorter one (up to {limit} seconds) and send it again."
        ),
    },
    Language.MYA: {
        VoiceRefusal.NOT_AUDIO: (
            "သင့်အသံမက်ဆေ့ချ်ကို ဖွင့်၍မရသဖြင့် မပို့ပေးနိုင်ပါ။ ဖုန်း၏ အသံဖမ်းစက်ဖြင့် ပြန်ဖမ်းပြီး ပူးတွဲဖိုင်အဖြစ် ပို့ပါ။"
        ),
        VoiceRefusal.SILENT: ("သင့်အသံမက်ဆေ့ချ်တွင် စကားသံ မကြားရသဖြင့် မပို့ပေးနိုင်ပါ။ ဖုန်းကို နီးနီးကိုင်ပြီး ပြန်ဖမ်းပါ။"),
        VoiceRefusal.TOO_LONG: (
            "သင့်အသံမက်ဆေ့ချ်သည် {limit} စက္ကန့်ထက် ရှည်သဖြင့် မပို့ပေးနိုင်ပါ။ {limit} စက္ကန့်အထိ တိုတိုဖမ်းပြီး ပြန်ပို့ပါ။"
        ),
    },
    Language.THA: {
        VoiceRefusal.NOT_AUDIO: (
            "ไม่สามารถเปิดข้อความเสียงของคุณได้ จึงไม่ได้ส่งต่อ กรุณาอัดใหม่ด้วยแอปบันทึกเสียงของโทรศัพท์แล้วส่งเป็นไฟล์แนบ"
        ),
        VoiceRefusal.SILENT: ("ข้อความเสียงของคุณไม่มีเสียงพูด จึงไม่ได้ส่งต่อ กรุณาถือโทรศัพท์ใกล้ ๆ แล้วอัดใหม่"),
        VoiceRefusal.TOO_LONG: (
            "ข้อความเสียงของคุณยาวเกิน {limit} วินาที จึงไม่ได้ส่งต่อ "
            "กรุณาอัดให้สั้นลง (ไม่เกิน {limit} วินาที) แล้วส่งใหม่"
        ),
    },
    Language.KHM: {
        VoiceRefusal.NOT_AUDIO: (
            "សារជាសំឡេងរបស់អ្នកមិនអាចចាក់បានទេ ដូច្នេះវាមិនត្រូវបានបញ្ជូនបន្តទេ។ "
            "សូមថតម្តងទៀតដោយកម្មវិធីថតសំឡេងនៃទូរស័ព្ទ ហើយផ្ញើជាឯកសារភ្ជាប់។"
        ),
        VoiceRefusal.SILENT: (
            "សារជាសំឡេងរបស់អ្នកគ្មានសំឡេងនិយាយ ដូច្នេះវាមិនត្រូវបានបញ្ជូនបន្តទេ។ សូមកាន់ទូរស័ព្ទឱ្យជិត ហើយថតម្តងទៀត។"
        ),
        VoiceRefusal.TOO_LONG: (
            "សារជាសំឡេងរបស់អ្នកវែងជាង {limit} វិនាទី ដូច្នេះវាមិនត្រូវបានបញ្ជូនបន្តទេ។ "
            "សូមថតឱ្យខ្លីជាងនេះ (មិនលើស {limit} វិនាទី) ហើយផ្ញើម្តងទៀត។"
        ),
    },
    Language.LAO: {
        VoiceRefusal.NOT_AUDIO: (
            "ບໍ່ສາມາດເປີດຂໍ້ຄວາມສຽງຂອງທ່ານໄດ້ ຈຶ່ງບໍ່ໄດ້ສົ່ງຕໍ່. ກະລຸນາອັດໃໝ່ດ້ວຍແອັບອັດສຽງຂອງໂທລະສັບ ແລ້ວສົ່ງເປັນໄຟລ໌ແນບ."
        ),
        VoiceRefusal.SILENT: ("ຂໍ້ຄວາມສຽງຂອງທ່ານບໍ່ມີສຽງເວົ້າ ຈຶ່ງບໍ່ໄດ້ສົ່ງຕໍ່. ກະລຸນາຖືໂທລະສັບໃກ້ໆ ແລ້ວອັດໃໝ່."),
        VoiceRefusal.TOO_LONG: (
            "ຂໍ້ຄວາມສຽງຂອງທ່ານຍາວເກີນ {limit} ວິນາທີ ຈຶ່ງບໍ່ໄດ້ສົ່ງຕໍ່. ກະລຸນາອັດໃຫ້ສັ້ນລົງ (ບໍ່ເກີນ {limit} ວິນາທີ) ແລ້ວສົ່ງໃໝ່."
        ),
    },
    Language.VIE: {
        VoiceRefusal.NOT_AUDIO: (
            "Không mở được tin nhắn thoại của bạn nên nó không được chuyển tiếp. Hãy ghi âm "
            "lại bằng ứng dụng ghi âm của điện thoại và gửi dưới dạng tệp đính kèm."
        ),
        VoiceRefusal.SILENT: (
            "Tin nhắn thoại của bạn không nghe thấy tiếng nói nên không được chuyển tiếp. "
            "Hãy cầm điện thoại gần hơn và ghi âm lại."
        ),
        VoiceRefusal.TOO_LONG: (
            "Tin nhắn thoại của bạn dài hơn {limit} giây nên không được chuyển tiếp. "
            "Hãy ghi âm ngắn hơn (tối đa {limit} giây) và gửi lại."
        ),
    },
    Language.IND: {
        VoiceRefusal.NOT_AUDIO: (
            "Pesan suara Anda tidak dapat diputar, jadi tidak diteruskan. Silakan rekam lagi "
            "dengan perekam suara ponsel Anda dan kirim sebagai lampiran."
        ),
        VoiceRefusal.SILENT: (
            "Pesan suara Anda tidak berisi suara yang terdengar, jadi tidak diteruskan. "
            "Dekatkan ponsel dan rekam lagi."
        ),
        VoiceRefusal.TOO_LONG: (
            "Pesan suara Anda lebih dari {limit} detik, jadi tidak diteruskan. Silakan rekam "
            "yang lebih pendek (paling lama {limit} detik) dan kirim lagi."
        ),
    },
    Language.TGL: {
        VoiceRefusal.NOT_AUDIO: (
            "Hindi ma-play ang iyong voice message kaya hindi ito naipasa. Paki-record muli "
            "gamit ang voice recorder ng iyong telepono at ipadala bilang attachment."
        ),
        VoiceRefusal.SILENT: (
            "Walang marinig na salita sa iyong voice message kaya hindi ito naipasa. "
            "Ilapit ang telepono at mag-record muli."
        ),
        VoiceRefusal.TOO_LONG: (
            "Mas mahaba sa {limit} segundo ang iyong voice message kaya hindi ito naipasa. "
            "Mag-record ng mas maikli (hanggang {limit} segundo) at ipadala muli."
        ),
    },
}


def voice_notice_line(lang: Language | None, refusal: VoiceRefusal, limit_s: int) -> str:
    """The notice's sentence for a refused voice memo, in ``lang`` (English if we have no
    translation)."""
    words = VOICE_NOTICES.get(lang, VOICE_NOTICES[Language.ENG]) if lang else None
    words = words or VOICE_NOTICES[Language.ENG]
    return words[refusal].format(limit=limit_s)
