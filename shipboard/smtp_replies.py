"""SMTP replies of the intake: a code, an enhanced status code and sentences in plain words.

RFC 5321 (section 4.2) allows only printable ASCII in reply text; RFC 6531 (section
3.7.4.2) lets a server use UTF-8 in its replies once the client has asked for SMTPUTF8 in
the transaction's MAIL command. So a reply is always its English sentence in ASCII, and,
when the client asked for SMTPUTF8 and the crew member's language is known (signed in)
and has the sentence in the catalogue, the crew member's own sentence comes first, as the
first line of a multi-line reply: ``550-5.6.0 <own words>`` then ``550 5.6.0 <English>``.

Lines are cleaned (control characters out, 400 characters at most) so that nothing a mail
carried (a charset name, a union's name) can break a reply into two.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from protocol.languages import Language
from shipboard.web.i18n import Translations

#: Longest line of reply text (RFC 5321 allows 512 octets for the whole reply line).
MAX_LINE_CHARS = 400
#: Characters that could end or break a reply line (control characters, line separators).
_BREAKING = frozenset({"Cc", "Cs", "Zl", "Zp"})


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply: ``code``, ``enhanced`` (RFC 3463), the sentence as a catalogue
    ``msgid`` with its ``fields``, and ``extra`` lines that are not translated (addresses)."""

    code: int
    enhanced: str
    msgid: str
    fields: Mapping[str, object] = field(default_factory=dict)
    extra: Sequence[str] = ()
    #: Further sentences (msgid, fields), said after the first in each language.
    also: Sequence[tuple[str, Mapping[str, object]]] = ()
    #: The catalogue sentence said in the crew member's language in place of ``msgid``
    #: (which stays the English line), when the English one has figures no catalogue
    #: sentence has (the crew page's words for the same refusal).
    own_msgid: str | None = None

    def render(self, lang: Language | None, utf8: bool, words: Translations | None) -> str:
        """The reply as aiosmtpd pushes it (lines joined by CRLF, the last without one)."""
        sentences = [(self.msgid, self.fields), *self.also]
        lines: list[str] = []
        if utf8 and words is not None and lang is not None and lang is not Language.ENG:
            said: list[tuple[str, Mapping[str, object]]] = sentences
            if self.own_msgid is not None:
                said = [(self.own_msgid, {}), *self.also]
            for msgid, fields in said:
                own = words.gettext(lang, msgid)
                if own != msgid:
                    lines.append(_clean(own.format(**fields), utf8=True))
        lines += [_clean(msgid.format(**fields), utf8=False) for msgid, fields in sentences]
        lines += [_clean(line, utf8=utf8) for line in self.extra]
        last = len(lines) - 1
        return "\r\n".join(
            f"{self.code}{' ' if n == last else '-'}{self.enhanced} {line}"
            for n, line in enumerate(lines)
        )


def _clean(line: str, *, utf8: bool) -> str:
    """One line of reply text: no control characters; ASCII unless ``utf8`` (others as
    ``?``); at most :data:`MAX_LINE_CHARS`."""
    text = "".join(" " if unicodedata.category(c) in _BREAKING else c for c in line)
    text = " ".join(text.split())
    if not utf8:
        text = text.encode("ascii", "replace").decode("ascii")
    return text[:MAX_LINE_CHARS] or "-"
