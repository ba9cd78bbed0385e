"""Mail addresses of the SMTP intake: a family contact, a union's report address, or the
address that lists the unions.

The vessel's own addresses are written in a domain without a dot (``@vessel``, as the
SMS contacts' ``+959123456789@sms``): no family e-mail contact can have one (the crew
register wants a dot in a family e-mail address's domain), so a report can never be
taken for a family message, nor a family message for a report. Any dot-less domain is
taken (``@vessel``, ``@ship``): the crew member need not know the vessel's host name; so
is any domain under ``.invalid`` (``@vessel.invalid``: reserved by RFC 2606, no real
mailbox has one) for mail apps that want a dot in every address.

* ``report+<union>@vessel`` files a grievance report for that union; ``<union>`` is the
  union's slug (its name in lower-case ASCII letters and digits joined by ``-``, e.g.
  ``fishers-union``) or its number (``report+7@vessel``). Optional further parts, in any
  order: ``+anonymous`` (no name or document in the report) and ``+<category number>``
  (what it is about, :class:`~protocol.sealing.GrievanceCategory`; without one a mailed
  report is filed as :data:`MAIL_REPORT_CATEGORY`).
* ``report@vessel`` and ``unions@vessel`` answer with the list of report addresses.

Pure: no I/O; the unions come from the vessel's config.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.sealing import GrievanceCategory
from shipboard.config import UnionConfig

#: The domain the report addresses are written with (any dot-less domain is taken).
VESSEL_DOMAIN = "vessel"
#: What a mailed report without a category is filed as: the broadest of the categories
#: (the union reads the text; the crew page asks, a mail cannot).
MAIL_REPORT_CATEGORY = GrievanceCategory.ABUSIVE_CONDITIONS
_LIST_NAMES = frozenset({"report", "reports", "unions", "union"})
_ANONYMOUS = frozenset({"anonymous", "anon"})
#: Latin letters that NFKD does not split into a letter and an accent (Vietnamese đ ...).
_NO_DECOMPOSITION = str.maketrans({"đ": "d", "Đ": "D", "ø": "o", "Ø": "O", "ł": "l", "Ł": "L"})


@dataclass(frozen=True, slots=True)
class ReportAddress:
    """A report to ``union_id`` (``category``, ``anonymous`` as the address says)."""

    union_id: int
    category: GrievanceCategory
    anonymous: bool


@dataclass(frozen=True, slots=True)
class UnionList:
    """The address that answers with the list of report addresses."""


@dataclass(frozen=True, slots=True)
class UnknownReportAddress:
    """A ``report+...@vessel`` address that names no union of this vessel, or a part that
    is neither ``anonymous`` nor a category number."""


VesselAddress = ReportAddress | UnionList | UnknownReportAddress


def union_slug(union: UnionConfig) -> str:
    """The union's name in lower-case ASCII letters and digits joined by ``-`` (accents
    dropped, ``đ`` as ``d``); ``union<number>`` when nothing of the name is left (a name
    in Thai script)."""
    name = union.name.translate(_NO_DECOMPOSITION)
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = "-".join(re.findall(r"[a-z0-9]+", plain.lower().replace("'", "")))
    return slug or f"union{union.union_id}"


def report_addresses(unions: Sequence[UnionConfig]) -> list[tuple[UnionConfig, str]]:
    """Each union with its report address (``report+<slug>@vessel``; the number in place
    of the slug when two unions' slugs are the same)."""
    slugs = [union_slug(union) for union in unions]
    found = []
    for union, slug in zip(unions, slugs, strict=True):
        tag = slug if slugs.count(slug) == 1 else str(union.union_id)
        found.append((union, f"report+{tag}@{VESSEL_DOMAIN}"))
    return found


def vessel_address(address: str, unions: Sequence[UnionConfig]) -> VesselAddress | None:
    """What a recipient address is, if it is one of the vessel's own (None: it is not,
    so it may be a family contact's)."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not domain or ("." in domain and not domain.lower().endswith(".invalid")):
        return None
    parts = local.lower().split("+")
    if len(parts) == 1:
        return UnionList() if parts[0] in _LIST_NAMES else None
    if parts[0] not in ("report", "reports"):
        return None
    union = _union_named(parts[1], unions)
    if union is None:
        return UnknownReportAddress()
    category, anonymous = MAIL_REPORT_CATEGORY, False
    for part in parts[2:]:
        if part in _ANONYMOUS:
            anonymous = True
        elif part.isascii() and part.isdigit() and int(part) in _CATEGORY_NUMBERS:
            category = GrievanceCategory(int(part))
        else:
            return UnknownReportAddress()
    return ReportAddress(union.union_id, category, anonymous)


_CATEGORY_NUMBERS = frozenset(category.value for category in GrievanceCategory)


def _union_named(tag: str, unions: Sequence[UnionConfig]) -> UnionConfig | None:
    for union, address in report_addresses(unions):
        if tag == address.partition("@")[0].removeprefix("report+"):
            return union
    for union in unions:  # the number always works (a shared slug works for neither)
        if tag.isascii() and tag == str(union.union_id):
            return union
    return None
