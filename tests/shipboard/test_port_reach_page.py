"""The crew page says when the vessel is in reach of its port link (4G or Wi-Fi in port):
the messages waiting then leave at once, not by satellite."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from protocol.codebook import Codebook
from protocol.languages import Language
from shipboard.config import ShipConfig
from shipboard.http_api import create_app
from shipboard.intake import Intake
from shipboard.link import LinkStatistics
from shipboard.outbox import Outbox
from shipboard.web.i18n import Translations

from .conftest import NOW, Crew

IN_REACH = "The ship is in reach of a port network: your messages go out now."


@pytest.fixture
async def page(
    outbox: Outbox, ship_config: ShipConfig, codebook: Codebook, crew: Crew
) -> AsyncIterator[tuple[httpx.AsyncClient, LinkStatistics]]:
    """The crew page of an agent whose link loop keeps ``statistics``, with Aung Min (who
    reads Burmese) signed in."""
    intake = Intake(ship_config, outbox, codebook, clock=lambda: NOW)
    statistics = LinkStatistics()
    app = create_app(intake, in_port=lambda: statistics.in_port)
    intake.register.choose_pin(crew.member.crew, "24681357", "13572468", NOW)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://vessel"
    ) as client:
        form = await client.get("/login")
        match = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert match, form.text[:300]
        signed = await client.post(
            "/login",
            data={"crew": str(crew.member.crew), "pin": "24681357", "csrf": match.group(1)},
        )
        assert signed.headers["location"] == "/home"
        yield client, statistics


async def test_the_home_page_says_in_burmese_when_the_ship_is_in_port_reach(
    page: tuple[httpx.AsyncClient, LinkStatistics],
) -> None:
    """At sea the home page says nothing about port. The ship comes into reach of the
    harbour's 4G: Aung Min's home page now says, in Burmese, that his messages go out
    now; once the ship leaves, the line is gone."""
    client, statistics = page
    burmese = Translations().gettext(Language.MYA, IN_REACH)
    assert burmese != IN_REACH
    assert "ဆိပ်ကမ်း" in burmese  # "port"
    at_sea = await client.get("/home")
    assert at_sea.status_code == 200
    assert burmese not in at_sea.text
    assert IN_REACH not in at_sea.text
    statistics.in_port = True
    in_port = await client.get("/home")
    assert burmese in in_port.text
    statistics.in_port = False
    assert burmese not in (await client.get("/home")).text
