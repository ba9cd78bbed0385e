"""Conversations: the crew page's inbox as threads, one per contact and one per case.

A contact's thread holds the crew member's own messages as the vessel database keeps them
(their text, or the quick message in the page's language) and their family's replies,
oldest first, so that a reply stands under the message it answers (the latest one written
before it; replies do not name a message, so time is what ties them). Each own message
carries its stage as ticks: queued on board, sent, accepted ashore, delivered, or failed
with the reason in words. A case's thread is its timeline (:mod:`shipboard.case_view`);
the report's own text is not there, because nothing on board keeps it in the clear.
Threads are ordered newest first by their latest line.

This module only arranges what the doors read (pure: no database, no clock); words are
catalogue msgids that the template translates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from protocol.languages import Language
from protocol.phrases import phrase
from shipboard.outbox import KeptMessage
from shipboard.states import MessageState

__all__ = ["Conversation", "Line", "Tick", "case_thread", "contact_threads", "newest_first"]

#: Lines shown per thread (the newest ones): the page stays light on a weak Wi-Fi.
LINES_PER_THREAD = 30

#: The stages a message goes through, in order (msgid of each).
TICK_WORDS: tuple[tuple[str, str], ...] = (
    ("queued", "Queued on board"),
    ("sent", "Sent"),
    ("ashore", "Accepted ashore"),
    ("delivered", "Delivered"),
)
#: How many ticks each state has reached.
_REACHED = {
    MessageState.ACCEPTED: 1,
    MessageState.BATCHED: 1,
    MessageState.SENT: 2,
    MessageState.ACKNOWLEDGED: 3,
    MessageState.DELIVERED: 4,
}


@dataclass(frozen=True, slots=True)
class Tick:
    """One stage of an own message: its words (msgid), when it was reached, whether it was."""

    word: str
    when: object
    reached: bool


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a thread: an own message (``mine``) or a reply, or a case's step."""

    mine: bool
    text: str
    when: object
    at: float
    html_lang: str = "und"
    seq: int | None = None
    quick: bool = False
    ticks: tuple[Tick, ...] = ()
    #: The last stage reached (msgid), said in words next to the ticks.
    stage: str = ""
    failed: bool = False
    failure: str | None = None  # msgid of the reason
    truncated: bool = False
    #: The own message a reply stands under (its number), if any.
    answers: int | None = None
    #: An own voice message (no text of its own to show).
    voice: bool = False
    #: A family's spoken reply: its inbox entry (the page plays ``/inbox/voice/<entry>``)
    #: and its length in whole seconds.
    spoken_entry: int | None = None
    spoken_seconds: int = 0


@dataclass
class Conversation:
    """One thread: with a contact (``contact``) or about a case (``case``)."""

    title: str
    last_at: float
    contact: int | None = None
    address: str = ""
    case: str | None = None
    lines: list[Line] = field(default_factory=list)
    #: A case's timeline: (stage msgid, when, the union's words or None).
    steps: list[tuple[str, object, str | None]] = field(default_factory=list)


def _ticks(message: KeptMessage, when: Callable[[float | None], object]) -> tuple[Tick, ...]:
    reached = _REACHED.get(message.state, 0)
    if message.state is MessageState.FAILED:
        # how far it got before it failed
        before = (message.accepted_at, message.sent_at, message.acknowledged_at)
        reached = sum(1 for t in before if t is not None)
    times = (message.accepted_at, message.sent_at, message.acknowledged_at, message.delivered_at)
    return tuple(
        Tick(word, when(at) if index < reached else "", index < reached)
        for index, ((_, word), at) in enumerate(zip(TICK_WORDS, times, strict=True))
    )


def own_line(
    message: KeptMessage,
    lang: Language,
    when: Callable[[float | None], object],
    html_lang: Callable[[str | None], str],
    failure_words: Callable[[int | None], str],
) -> Line:
    """An own message as a line: its text (or quick message in ``lang``) and its ticks."""
    ticks = _ticks(message, when)
    failed = message.state is MessageState.FAILED
    done = [tick for tick in ticks if tick.reached]
    stage = "Failed" if failed else (done[-1].word if done else TICK_WORDS[0][1])
    if message.quick is not None:
        text, quick, text_lang = phrase(message.quick, lang) or "", True, html_lang(lang.code)
    else:
        text, quick, text_lang = message.body or "", False, html_lang(message.lang)
    return Line(
        mine=True,
        text=text,
        when=when(message.accepted_at),
        at=message.accepted_at,
        html_lang=text_lang,
        seq=message.message_seq,
        quick=quick,
        ticks=ticks,
        stage=stage,
        failed=failed,
        failure=failure_words(message.failure_reason) if failed else None,
        voice=message.body is None and message.quick is None,
    )


def contact_threads(
    messages: Iterable[KeptMessage],
    replies: Iterable[Mapping[str, object]],
    names: Mapping[int, tuple[str, str]],
    lang: Language,
    *,
    when: Callable[[float | None], object],
    html_lang: Callable[[str | None], str],
    failure_words: Callable[[int | None], str],
) -> list[Conversation]:
    """One thread per contact from the crew member's kept messages and the inbox's reply
    entries (``contact``, ``body``, ``lang``, ``truncated``, ``written_minutes``, and for a
    spoken reply ``entry`` and ``voice_ms``);
    ``names`` maps a contact to (name, address)."""
    threads: dict[int, Conversation] = {}

    def thread(contact: int) -> Conversation:
        if contact not in threads:
            name, address = names.get(contact, ("?", ""))
            threads[contact] = Conversation(
                title=name, last_at=0.0, contact=contact, address=address
            )
        return threads[contact]

    for message in messages:
        if message.contact is None:
            continue
        thread(message.contact).lines.append(
            own_line(message, lang, when, html_lang, failure_words)
        )
    for reply in replies:
        contact = int(str(reply["contact"]))
        at = _reply_at(reply)
        thread(contact).lines.append(
            Line(
                mine=False,
                text=str(reply.get("body") or ""),
                when=when(at),
                at=at,
                html_lang=html_lang(str(reply.get("lang") or "und")),
                truncated=bool(reply.get("truncated")),
                spoken_entry=_spoken_entry(reply),
                spoken_seconds=_spoken_seconds(reply),
            )
        )
    for conversation in threads.values():
        # oldest first; an own message and a reply at the same moment: the message first
        conversation.lines.sort(key=lambda line: (line.at, not line.mine))
        answered: int | None = None
        ordered: list[Line] = []
        for line in conversation.lines:
            if line.mine:
                answered = line.seq
                ordered.append(line)
            else:
                ordered.append(_answering(line, answered))
        conversation.lines = ordered[-LINES_PER_THREAD:]
        conversation.last_at = ordered[-1].at if ordered else 0.0
    return sorted(threads.values(), key=lambda c: c.last_at, reverse=True)


def _spoken_entry(reply: Mapping[str, object]) -> int | None:
    """The inbox entry of a spoken reply (an entry with ``voice_ms``), else None."""
    return None if reply.get("voice_ms") is None else int(str(reply["entry"]))


def _spoken_seconds(reply: Mapping[str, object]) -> int:
    """A spoken reply's length in whole seconds (at least 1), 0 for a written one."""
    voice_ms = reply.get("voice_ms")
    return 0 if voice_ms is None else max(1, round(int(str(voice_ms)) / 1000))


def _reply_at(reply: Mapping[str, object]) -> float:
    """When a reply was written, for ordering: the end of the minute the shore says it was
    written in (a reply written in the same minute as the message it answers comes after
    it), but never later than when it reached the vessel."""
    arrived = float(str(reply.get("at") or 0.0))
    minutes = reply.get("written_minutes")
    if minutes is None:
        return arrived
    written = int(str(minutes)) * 60 + 59.999
    return min(written, arrived) if arrived else written


def _answering(line: Line, seq: int | None) -> Line:
    return dataclasses.replace(line, answers=seq)


def case_thread(
    case: str, steps: list[tuple[str, object, str | None]], last_at: float
) -> Conversation:
    """A case's thread: its timeline, oldest step first."""
    return Conversation(title=case, last_at=last_at, case=case, steps=steps)


def newest_first(threads: Iterable[Conversation]) -> list[Conversation]:
    """Every thread, the one with the latest line first."""
    return sorted(threads, key=lambda c: c.last_at, reverse=True)
