"""The SMTP door's own addresses: what a crew member types to report to a union or to
ask for the list, and that no family address is ever taken for one of them."""

from __future__ import annotations

import pytest

from protocol.languages import Language
from protocol.sealing import GrievanceCategory
from shipboard.config import UnionConfig
from shipboard.mail_addresses import (
    MAIL_REPORT_CATEGORY,
    ReportAddress,
    UnionList,
    UnknownReportAddress,
    report_addresses,
    union_slug,
    vessel_address,
)

KEY = bytes(32)
UNIONS = (
    UnionConfig(7, "Fishers' Union", KEY, (Language.MYA,)),
    UnionConfig(8, "Seafarers' Aid", KEY, (Language.ENG,)),
    UnionConfig(9, "สหภาพแรงงานประมง", KEY, (Language.THA,)),
    UnionConfig(10, "Liên đoàn Ngư dân", KEY, (Language.VIE,)),
)


def test_each_union_has_a_report_address_a_crew_member_can_type() -> None:
    """Names become lower-case ASCII slugs (accents dropped); a name in Thai script, with
    no ASCII left, gets its number; two unions of the same slug get their numbers."""
    assert [address for _, address in report_addresses(UNIONS)] == [
        "report+fishers-union@vessel",
        "report+seafarers-aid@vessel",
        "report+union9@vessel",
        "report+lien-doan-ngu-dan@vessel",
    ]
    twins = (UNIONS[0], UnionConfig(11, "FISHERS UNION", KEY, ()))
    assert union_slug(twins[1]) == "fishers-union"
    assert [a for _, a in report_addresses(twins)] == ["report+7@vessel", "report+11@vessel"]
    assert vessel_address("report+fishers-union@vessel", twins) == UnknownReportAddress()
    assert vessel_address("report+11@vessel", twins) == ReportAddress(
        11, MAIL_REPORT_CATEGORY, False
    )


@pytest.mark.parametrize(
    ("address", "meaning"),
    [
        ("report+fishers-union@vessel", ReportAddress(7, MAIL_REPORT_CATEGORY, False)),
        ("Report+Fishers-Union@Ship", ReportAddress(7, MAIL_REPORT_CATEGORY, False)),
        ("report+7@vessel.invalid", ReportAddress(7, MAIL_REPORT_CATEGORY, False)),
        ("report+8+anonymous@vessel", ReportAddress(8, MAIL_REPORT_CATEGORY, True)),
        (
            "report+union9+8+anonymous@vessel",
            ReportAddress(9, GrievanceCategory.WITHHOLDING_OF_WAGES, True),
        ),
        ("report@vessel", UnionList()),
        ("unions@vessel", UnionList()),
        ("report+nobody@vessel", UnknownReportAddress()),
        ("report+7+99@vessel", UnknownReportAddress()),
        ("report+7+secret@vessel", UnknownReportAddress()),
        ("report+٧@vessel", UnknownReportAddress()),  # an Arabic-Indic seven is no number
    ],
)
def test_the_vessels_own_addresses(address: str, meaning: object) -> None:
    """Report addresses by slug or number, in any case, with any dot-less domain or one
    under .invalid; +anonymous and a category number in any order; the list addresses;
    a report address naming no union, or a part that means nothing, is said to be so."""
    assert vessel_address(address, UNIONS) == meaning


@pytest.mark.parametrize(
    "address",
    [
        "report+fishers-union@example.org",  # a real domain: a family address, if any
        "report@gmail.com",
        "+959123456789@sms",  # an SMS contact
        "mother@example.org",
        "reportfishers@vessel",
        "no-at-sign",
    ],
)
def test_family_addresses_are_never_the_vessels(address: str) -> None:
    """An address with a real domain, an SMS contact or anything not written as the
    vessel's is left to the family contacts (None)."""
    assert vessel_address(address, UNIONS) is None
