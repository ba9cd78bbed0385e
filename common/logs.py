"""Structured logs: text or JSON lines, with correlation ids for batches and messages.

Both CLIs (``vessel-relay shore run`` and ``vessel-relay ship run``) call
:func:`configure_logging` from their ``--log-format json|text`` and ``--log-level``
options. Code that works on one batch or one message opens a correlation scope::

    with batch_scope(vessel_id, batch_seq):          # correlation id "b42.1831"
        ...
        with message_scope(vessel_id, message_seq):  # correlation id "m42.77"
            log.info("delivered")

and every line logged inside carries ``correlation_id`` (plus ``vessel_id``,
``batch_seq``, ``message_seq`` when known), in JSON as keys, in text as a
``[b42.1831]`` prefix. The scopes live in :mod:`contextvars`, so each asyncio task keeps
its own.

What a line may hold (GlobaLeaks' rule, STYLE.md): ids, sizes, states, reasons. Never
message text, grievance content, names, addresses, phone or Seabook numbers; callers log
only ids, and :class:`JsonFormatter` adds nothing but the record's own fields and the ids
above (no ``extra`` passthrough, so a stray ``extra={"text": ...}`` is not written either).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, TextIO, get_args

#: The values of ``--log-format`` and ``--log-level`` (the CLIs' choices; exit 2 otherwise).
LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]
LOG_FORMATS: tuple[str, ...] = get_args(LogFormat)
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)


@dataclass(frozen=True, slots=True)
class Correlation:
    """The ids of what is being worked on (vessel, batch, message)."""

    correlation_id: str
    vessel: int | None = None
    batch: int | None = None
    message: int | None = None


_current: contextvars.ContextVar[Correlation | None] = contextvars.ContextVar(
    "vessel_relay_correlation", default=None
)


def current_correlation() -> Correlation | None:
    """The correlation scope of the running task, if any."""
    return _current.get()


@contextlib.contextmanager
def batch_scope(vessel_id: int, batch_seq: int, direction: str = "b") -> Iterator[Correlation]:
    """Lines logged inside carry ``b{vessel}.{batch}`` (``d...`` for a downlink batch)."""
    scope = Correlation(f"{direction}{vessel_id}.{batch_seq}", vessel_id, batch_seq, None)
    token = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(token)


@contextlib.contextmanager
def message_scope(vessel_id: int, message_seq: int) -> Iterator[Correlation]:
    """Lines logged inside carry ``m{vessel}.{message}`` (and the enclosing batch, if any)."""
    outer = _current.get()
    batch = outer.batch if outer is not None and outer.vessel == vessel_id else None
    scope = Correlation(f"m{vessel_id}.{message_seq}", vessel_id, batch, message_seq)
    token = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(token)


@contextlib.contextmanager
def vessel_scope(vessel_id: int) -> Iterator[Correlation]:
    """Lines logged inside carry ``v{vessel}`` (a session, before any batch is known)."""
    scope = Correlation(f"v{vessel_id}", vessel_id)
    token = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(token)


@contextlib.contextmanager
def fresh_scope() -> Iterator[None]:
    """A scope that :func:`enter_batch_scope` may fill in; restored on exit.

    For code that learns the batch only part-way (ingest reads the header first).
    """
    token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(token)


def enter_batch_scope(vessel_id: int, batch_seq: int, direction: str = "b") -> None:
    """Set the batch scope until the enclosing :func:`fresh_scope` ends."""
    _current.set(Correlation(f"{direction}{vessel_id}.{batch_seq}", vessel_id, batch_seq))


def enter_vessel_scope(vessel_id: int) -> None:
    """Set ``v{vessel}`` for the rest of the current task (a task that serves one vessel
    all its life, like the agent's link loop; asyncio gives each task its own copy)."""
    _current.set(Correlation(f"v{vessel_id}", vessel_id))


class CorrelationFilter(logging.Filter):
    """Copies the task's correlation scope onto each record (``record.correlation``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation = _current.get()
        return True


def _utc(created: float) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{stamp}.{int((created % 1) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, ids, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        scope = getattr(record, "correlation", None)
        if isinstance(scope, Correlation):
            line["correlation_id"] = scope.correlation_id
            for key, name in (
                ("vessel", "vessel_id"),
                ("batch", "batch_seq"),
                ("message", "message_seq"),
            ):
                value = getattr(scope, key)
                if value is not None:
                    line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``time level logger: [b42.1831] message`` for people at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (stdlib name)
        text = super().formatMessage(record)
        scope = getattr(record, "correlation", None)
        if isinstance(scope, Correlation):
            head, sep, tail = text.partition(": ")
            return f"{head}{sep}[{scope.correlation_id}] {tail}"
        return text


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a line is logged, not when it was set up.

    A process whose stderr is replaced later (a test runner capturing a command's output,
    a daemon redirecting it) keeps logging to the live stream instead of a closed one.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class LogSetupError(ValueError):
    """An unknown log format or level; the message lists the accepted ones."""


def configure_logging(
    log_format: str = "text", level: str = "warning", stream: TextIO | None = None
) -> logging.Handler:
    """Send the root logger's lines to ``stream`` (stderr) as text or JSON lines.

    Replaces handlers set before (so calling it twice does not double lines). Libraries
    that log addresses at INFO (aiosmtpd's ``mail.log``) are kept to warnings.
    """
    if log_format not in LOG_FORMATS:
        raise LogSetupError(f"log format {log_format!r}: use one of {', '.join(LOG_FORMATS)}")
    if level.lower() not in LOG_LEVELS:
        raise LogSetupError(f"log level {level!r}: use one of {', '.join(LOG_LEVELS)}")
    handler: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else StderrHandler()
    )
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(CorrelationFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    return handler
