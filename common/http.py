"""HTTP doors: bodies bounded before they are read, JSON parsed within bounds, typed refusals.

Every web app of the project (crew API and crew page on the vessel; union API, SMS webhook,
dashboard ashore; the union's own app) wraps itself in :class:`BodyLimit` and parses JSON
with :func:`parse_json`, so hostile requests get a 4xx with a sentence and never a 500::

    app = BodyLimit(app, limit_bytes=64 * 1024, routes={"/api/grievances": 256 * 1024},
                    refuse=my_error_page)
    data = parse_json(await request.body())        # MalformedJson -> 400
    form = await read_form(request)                  # MalformedRequest -> 400

:class:`BodyLimit` refuses a request whose ``Content-Length`` is over its route's limit
before reading a byte, and stops reading a body sent without a length (chunked) as soon as
it passes the limit; the app then gets the body already read (at most the limit), so the
memory a request can take is bounded by the limit of its route.

Refusals form one small tree::

    RequestRefused          (base: status, code, sentence for the person)
    ├── BodyTooLarge        413: over the route's limit
    └── MalformedRequest    400: not what the door takes
        └── MalformedJson   400: not JSON, too deep, a huge number, broken text
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "ANY_METHOD",
    "BodyLimit",
    "BodyTooLarge",
    "MalformedJson",
    "MalformedRequest",
    "RequestRefused",
    "bounded_int",
    "check_text",
    "parse_json",
    "read_form",
]

#: For a route that answers every method itself (a wrong one with the door's own refusal).
ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
#: Nesting of objects and arrays that any of our JSON requests needs, with room to spare.
MAX_JSON_DEPTH = 16
#: Digits in a JSON integer: 18 keeps every integer inside SQLite's and PostgreSQL's int64.
MAX_INT_DIGITS = 18


class RequestRefused(Exception):
    """A request a door will not take; ``sentence`` says why, for the person who sent it."""

    status = 400
    code = "bad-request"

    def __init__(
        self, sentence: str, *, status: int | None = None, code: str | None = None
    ) -> None:
        super().__init__(sentence)
        self.sentence = sentence
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class BodyTooLarge(RequestRefused):
    """The request body is over the route's limit (refused before or while reading it)."""

    status = 413
    code = "too-large"

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        super().__init__(
            f"The request is too large: this page takes at most {_kib(limit_bytes)} KB."
        )


class MalformedRequest(RequestRefused):
    """The request is not in the shape the door takes."""


class MalformedJson(MalformedRequest):
    """Not JSON, nested too deep, a number too large, or text that is not valid Unicode."""


def _kib(n: int) -> str:
    return f"{n / 1024:,.0f}" if n >= 1024 else f"{n / 1024:.1f}"


class BodyLimit:
    """ASGI middleware: each request body bounded by its route's limit (longest path prefix).

    ``refuse(scope, error)`` returns the ASGI app (a Starlette ``Response`` works) that
    answers a refusal in the door's own format; by default a plain-text sentence.
    """

    def __init__(
        self,
        app: ASGIApp,
        limit_bytes: int,
        routes: Mapping[str, int] | None = None,
        refuse: Callable[[Scope, RequestRefused], ASGIApp] | None = None,
    ) -> None:
        self.app = app
        self.limit_bytes = limit_bytes
        self.routes = sorted((routes or {}).items(), key=lambda item: -len(item[0]))
        self.refuse = refuse or _plain_refusal

    def limit_for(self, path: str) -> int:
        """The body limit of ``path`` (the longest matching prefix, else the default)."""
        for prefix, limit in self.routes:
            if path.startswith(prefix):
                return limit
        return self.limit_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(str(scope.get("path", "")))
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self.refuse(scope, BodyTooLarge(limit))(scope, _no_body, send)
            return
        if declared == 0:
            await self.app(scope, receive, send)
            return
        # Every other request is read here within its limit, a GET too: an app may read the
        # body of any method (the union API signs it), and a request without a length (chunked,
        # or HTTP/2) says nothing of its size. A request without a body costs one receive().
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > limit:
                await self.refuse(scope, BodyTooLarge(limit))(scope, _no_body, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        del chunks
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect

        await self.app(scope, replay, send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return 1 << 62  # unreadable length: treat as over any limit
            return length if length >= 0 else 1 << 62
    return None


def _plain_refusal(scope: Scope, error: RequestRefused) -> ASGIApp:
    del scope
    body = (error.sentence + "\n").encode("utf-8")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        del scope, receive
        await send(
            {
                "type": "http.response.start",
                "status": error.status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def parse_json(
    body: bytes, *, max_depth: int = MAX_JSON_DEPTH, max_int_digits: int = MAX_INT_DIGITS
) -> Any:
    """``body`` as JSON, or :class:`MalformedJson` with a sentence.

    Refused: bytes that are not UTF-8; nesting deeper than ``max_depth`` (checked before
    parsing, so a deep document cannot exhaust the stack); integers of more than
    ``max_int_digits`` digits; NaN and Infinity; strings or keys holding lone surrogates
    (``"\\ud800"``), which no database or mail can store.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedJson("The request is not valid UTF-8 text.") from None
    if _depth(text) > max_depth:
        raise MalformedJson("The request is nested too deeply.")

    def parse_int(digits: str) -> int:
        if len(digits.lstrip("-")) > max_int_digits:
            raise MalformedJson("A number in the request is too large.")
        return int(digits)

    def parse_constant(name: str) -> Any:
        raise MalformedJson(f"The request holds {name}, which is not a number we take.")

    def parse_float(digits: str) -> float:
        if len(digits) > 64:
            raise MalformedJson("A number in the request is too long.")
        value = float(digits)
        if value in (float("inf"), float("-inf")):
            raise MalformedJson("A number in the request is too large.")
        return value

    try:
        data = json.loads(
            text, parse_int=parse_int, parse_constant=parse_constant, parse_float=parse_float
        )
    except MalformedJson:
        raise
    except (ValueError, RecursionError):
        raise MalformedJson("The request is not valid JSON.") from None
    _check_strings(data)
    return data


def _depth(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` outside strings (no parsing, no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _check_strings(data: Any) -> None:
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _unicode_or_refuse(item)
        elif isinstance(item, dict):
            for key, value in item.items():
                _unicode_or_refuse(key)
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def _unicode_or_refuse(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedJson("A text in the request is not valid Unicode text.") from None


def check_text(text: str, what: str = "A text in the request") -> str:
    """``text`` itself, or :class:`MalformedRequest` when it is not valid Unicode (lone
    surrogates, which cannot be stored or sent)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedRequest(f"{what} is not valid Unicode text.") from None
    return text


def bounded_int(value: object, what: str, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]``, or :class:`MalformedRequest` naming ``what``.

    Booleans are not numbers here; strings of ASCII digits (from forms) are read as numbers
    (other digits, such as "²" or "٣", are refused: ``int()`` would fail or read them).
    """
    if isinstance(value, str):
        stripped = value.strip()
        digits = stripped.removeprefix("-")
        if (
            not digits
            or len(digits) > MAX_INT_DIGITS
            or not (digits.isascii() and digits.isdigit())
        ):
            raise MalformedRequest(f"{what} must be a number.")
        value = int(stripped)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedRequest(f"{what} must be a number.")
    if not low <= value <= high:
        raise MalformedRequest(f"{what} must be between {low} and {high}.")
    return value


#: Fields in any form of our web apps, with room to spare.
MAX_FORM_FIELDS = 32


async def read_form(request: Request, *, max_fields: int = MAX_FORM_FIELDS) -> dict[str, str]:
    """The text fields of a form POST (URL-encoded, or multipart without files), last value
    of a repeated name winning; :class:`MalformedRequest` for a file, too many fields or a
    body that is not a form. Any other content type reads as an empty form.

    The body is bounded by :class:`BodyLimit` before this runs; bytes that are not UTF-8
    are read as Latin-1 by Starlette, so every value is text that can be stored.
    """
    try:
        form = await request.form(max_files=0, max_fields=max_fields)
    except HTTPException as exc:
        raise MalformedRequest(f"The form could not be read: {exc.detail}") from None
    fields: dict[str, str] = {}
    for name, value in form.multi_items():
        if not isinstance(value, str):
            raise MalformedRequest("The form holds a file, which this page does not take.")
        fields[name] = value
    return fields
