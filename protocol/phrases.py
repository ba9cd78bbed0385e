"""Phrases: quick messages, a small integer code per common sentence, in every crew language.

A quick message travels on the link as its code (one or two bytes in CBOR) instead of its
text; the shore expands the code into the family's language with :func:`phrase`. Codes are
stable: never renumber or reuse one; retire a phrase by leaving its code out of
:data:`PHRASE_CODES` in a new version while keeping the sentence here, so old batches still
expand.

Each phrase has an icon name (the web page draws ``icons/NAME.svg``) for crew members who
read little. English is the source text. **No translation here has been checked by a
native speaker yet**: :func:`is_checked` says so per language, and the web page's catalogue
check lists them (``vessel-relay ship i18n-check``). Shan (``shn``) has no translations yet
and falls back to English like any missing language.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from protocol.languages import Language

__all__ = [
    "PHRASES",
    "PHRASE_CODES",
    "Phrase",
    "is_checked",
    "phrase",
    "phrase_icon",
]


@dataclass(frozen=True, slots=True)
class Phrase:
    """One quick message: its wire code, icon name and sentence per language."""

    code: int
    icon: str
    texts: Mapping[Language, str]
    #: Languages whose sentence a native speaker has checked (English is the source).
    checked: frozenset[Language] = field(default_factory=lambda: frozenset({Language.ENG}))

    def __post_init__(self) -> None:
        if not 1 <= self.code <= 0xFFFF:
            raise ValueError(f"phrase code {self.code} is outside 1..65535")
        if Language.ENG not in self.texts:
            raise ValueError(f"phrase {self.code} has no English sentence (the fallback)")
        if not self.icon.replace("-", "").isalnum():
            raise ValueError(f"phrase {self.code} icon {self.icon!r} is not a plain name")


M, K, L, T = Language.MYA, Language.KHM, Language.LAO, Language.THA
N, G, V, E = Language.IND, Language.TGL, Language.VIE, Language.ENG


def _p(code: int, icon: str, texts: dict[Language, str]) -> Phrase:
    return Phrase(code, icon, MappingProxyType(texts))


_ALL: tuple[Phrase, ...] = (
    _p(
        1,
        "safe",
        {
            E: "I am safe.",
            M: "ဘေးကင်းပါတယ်။",
            K: "ខ្ញុំមានសុវត្ថិភាព។",
            L: "ຂ້ອຍປອດໄພດີ.",
            T: "ฉันปลอดภัยดี",
            N: "Saya selamat.",
            G: "Ligtas ako.",
            V: "Tôi an toàn.",
        },
    ),
    _p(
        2,
        "smile",
        {
            E: "I am well. Do not worry.",
            M: "နေကောင်းပါတယ်။ စိတ်မပူပါနဲ့။",
            K: "ខ្ញុំសុខសប្បាយល្អ។ កុំបារម្ភអី។",
            L: "ຂ້ອຍສະບາຍດີ. ບໍ່ຕ້ອງເປັນຫ່ວງ.",
            T: "ฉันสบายดี ไม่ต้องเป็นห่วง",
            N: "Saya baik-baik saja. Jangan khawatir.",
            G: "Mabuti ako. Huwag kayong mag-alala.",
            V: "Tôi khỏe. Đừng lo lắng.",
        },
    ),
    _p(
        3,
        "wages",
        {
            E: "I received my wages.",
            M: "လစာ ရပြီ။",
            K: "ខ្ញុំបានទទួលប្រាក់ខែហើយ។",
            L: "ຂ້ອຍໄດ້ຮັບເງິນເດືອນແລ້ວ.",
            T: "ฉันได้รับค่าจ้างแล้ว",
            N: "Saya sudah menerima gaji.",
            G: "Natanggap ko na ang sahod ko.",
            V: "Tôi đã nhận được lương.",
        },
    ),
    _p(
        4,
        "no-wages",
        {
            E: "I have not been paid yet.",
            M: "လစာ မရသေးပါဘူး။",
            K: "ខ្ញុំមិនទាន់បានទទួលប្រាក់ខែទេ។",
            L: "ຂ້ອຍຍັງບໍ່ໄດ້ຮັບເງິນເດືອນ.",
            T: "ฉันยังไม่ได้รับค่าจ้าง",
            N: "Saya belum menerima gaji.",
            G: "Hindi pa ako nasasahuran.",
            V: "Tôi chưa được trả lương.",
        },
    ),
    _p(
        5,
        "money-home",
        {
            E: "I sent money home.",
            M: "အိမ်ကို ပိုက်ဆံ ပို့လိုက်ပြီ။",
            K: "ខ្ញុំបានផ្ញើលុយទៅផ្ទះហើយ។",
            L: "ຂ້ອຍສົ່ງເງິນກັບບ້ານແລ້ວ.",
            T: "ฉันส่งเงินกลับบ้านแล้ว",
            N: "Saya sudah mengirim uang ke rumah.",
            G: "Nagpadala na ako ng pera sa bahay.",
            V: "Tôi đã gửi tiền về nhà.",
        },
    ),
    _p(
        6,
        "phone",
        {
            E: "Call me when we reach port.",
            M: "ဆိပ်ကမ်းရောက်ရင် ဖုန်းဆက်ပါ။",
            K: "សូមទូរសព្ទមកខ្ញុំពេលយើងចូលដល់កំពង់ផែ។",
            L: "ໂທຫາຂ້ອຍເມື່ອເຮົາເຖິງທ່າເຮືອ.",
            T: "โทรหาฉันเมื่อเรือถึงท่า",
            N: "Telepon saya saat kapal sampai di pelabuhan.",
            G: "Tawagan mo ako pagdating namin sa pantalan.",
            V: "Gọi cho tôi khi tàu cập cảng.",
        },
    ),
    _p(
        7,
        "port",
        {
            E: "We reach port soon.",
            M: "မကြာခင် ဆိပ်ကမ်း ရောက်မယ်။",
            K: "យើងនឹងដល់កំពង់ផែឆាប់ៗនេះ។",
            L: "ພວກເຮົາຈະເຖິງທ່າເຮືອໃນໄວໆນີ້.",
            T: "อีกไม่นานเรือจะถึงท่า",
            N: "Kami segera sampai di pelabuhan.",
            G: "Malapit na kaming dumaong sa pantalan.",
            V: "Tàu sắp cập cảng.",
        },
    ),
    _p(
        8,
        "heart",
        {
            E: "I miss you all.",
            M: "အားလုံးကို သတိရတယ်။",
            K: "ខ្ញុំនឹកអ្នកទាំងអស់គ្នា។",
            L: "ຂ້ອຍຄິດຮອດທຸກຄົນ.",
            T: "คิดถึงทุกคน",
            N: "Saya rindu kalian semua.",
            G: "Nami-miss ko kayong lahat.",
            V: "Tôi nhớ mọi người.",
        },
    ),
    _p(
        9,
        "sick",
        {
            E: "I am sick.",
            M: "နေမကောင်းဘူး။",
            K: "ខ្ញុំឈឺ។",
            L: "ຂ້ອຍບໍ່ສະບາຍ.",
            T: "ฉันไม่สบาย",
            N: "Saya sakit.",
            G: "May sakit ako.",
            V: "Tôi bị ốm.",
        },
    ),
    _p(
        10,
        "family",
        {
            E: "How is the family? Please send news.",
            M: "မိသားစု နေကောင်းကြလား။ သတင်းပို့ပါ။",
            K: "គ្រួសារសុខសប្បាយទេ? សូមផ្ញើដំណឹងមក។",
            L: "ຄອບຄົວສະບາຍດີບໍ? ສົ່ງຂ່າວມາແດ່.",
            T: "ครอบครัวสบายดีไหม ส่งข่าวมาด้วย",
            N: "Apa kabar keluarga? Tolong kirim kabar.",
            G: "Kumusta ang pamilya? Magpadala kayo ng balita.",
            V: "Gia đình có khỏe không? Hãy gửi tin cho tôi.",
        },
    ),
    _p(
        11,
        "no-signal",
        {
            E: "No signal for a while. I will write again.",
            M: "ခဏ ဆက်သွယ်လို့ မရဘူး။ နောက်မှ ထပ်ရေးမယ်။",
            K: "មួយរយៈនេះគ្មានសេវាទំនាក់ទំនងទេ។ ខ្ញុំនឹងសរសេរម្ដងទៀត។",
            L: "ບໍ່ມີສັນຍານໄລຍະໜຶ່ງ. ຂ້ອຍຈະຂຽນມາອີກ.",
            T: "ช่วงนี้ไม่มีสัญญาณ จะเขียนมาอีก",
            N: "Untuk sementara tidak ada sinyal. Saya akan menulis lagi.",
            G: "Walang signal nang ilang panahon. Susulat ulit ako.",
            V: "Một thời gian sẽ không có sóng. Tôi sẽ viết lại.",
        },
    ),
    _p(
        12,
        "cake",
        {
            E: "Happy birthday!",
            M: "မွေးနေ့ မင်္ဂလာပါ။",
            K: "រីករាយថ្ងៃកំណើត!",
            L: "ສຸກສັນວັນເກີດ!",
            T: "สุขสันต์วันเกิด",
            N: "Selamat ulang tahun!",
            G: "Maligayang kaarawan!",
            V: "Chúc mừng sinh nhật!",
        },
    ),
    _p(
        13,
        "home",
        {
            E: "I am coming home.",
            M: "အိမ်ပြန်လာတော့မယ်။",
            K: "ខ្ញុំនឹងត្រឡប់មកផ្ទះវិញ។",
            L: "ຂ້ອຍຈະກັບບ້ານ.",
            T: "ฉันกำลังจะกลับบ้าน",
            N: "Saya akan pulang.",
            G: "Uuwi na ako.",
            V: "Tôi sắp về nhà.",
        },
    ),
    _p(
        14,
        "reply",
        {
            E: "Please reply to me.",
            M: "ပြန်စာ ရေးပါ။",
            K: "សូមឆ្លើយតបមកខ្ញុំ។",
            L: "ກະລຸນາຕອບກັບມາ.",
            T: "ช่วยตอบกลับด้วย",
            N: "Tolong balas pesan saya.",
            G: "Pakisagot ninyo ako.",
            V: "Hãy trả lời tôi.",
        },
    ),
    _p(
        15,
        "thanks",
        {
            E: "Thank you.",
            M: "ကျေးဇူးတင်ပါတယ်။",
            K: "អរគុណ។",
            L: "ຂອບໃຈ.",
            T: "ขอบคุณ",
            N: "Terima kasih.",
            G: "Salamat.",
            V: "Cảm ơn.",
        },
    ),
    _p(
        16,
        "love",
        {
            E: "I love you all.",
            M: "အားလုံးကို ချစ်တယ်။",
            K: "ខ្ញុំស្រឡាញ់អ្នកទាំងអស់គ្នា។",
            L: "ຂ້ອຍຮັກທຸກຄົນ.",
            T: "รักทุกคนนะ",
            N: "Saya sayang kalian semua.",
            G: "Mahal ko kayong lahat.",
            V: "Tôi thương mọi người.",
        },
    ),
)

#: Every phrase by code (retired ones included, so old batches still expand).
PHRASES: Mapping[int, Phrase] = MappingProxyType({p.code: p for p in _ALL})

#: Codes offered to crew members today, in the order the page shows them.
PHRASE_CODES: tuple[int, ...] = tuple(p.code for p in _ALL)

if len(PHRASES) != len(_ALL):  # pragma: no cover - a typo in the table above
    raise ValueError("two quick-message phrases share a code")


def phrase(code: int, lang: Language | None) -> str | None:
    """The sentence for ``code`` in ``lang``, else in English; None for an unknown code."""
    found = PHRASES.get(code)
    if found is None:
        return None
    if lang is not None and lang in found.texts:
        return found.texts[lang]
    return found.texts[Language.ENG]


def phrase_icon(code: int) -> str | None:
    """The icon name of a phrase (``icons/NAME.svg`` on the page); None if unknown."""
    found = PHRASES.get(code)
    return None if found is None else found.icon


def is_checked(code: int, lang: Language) -> bool:
    """Whether a native speaker checked this phrase in ``lang`` (False if it is missing)."""
    found = PHRASES.get(code)
    return found is not None and lang in found.texts and lang in found.checked
