"""Fixtures for shipboard tests: a temporary outbox, crew, keys and a test shore
(:class:`tests.kit.model_shore.ModelShore`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.codebooks import default_codebook
from protocol.codebook import Codebook
from protocol.languages import Language
from protocol.signing import SigningKey
from shipboard.config import ShipConfig
from shipboard.crew import Contact, CrewMember, CrewRegister
from shipboard.outbox import Outbox
from tests.kit.model_shore import NOW as NOW
from tests.kit.model_shore import VESSEL_ID as VESSEL_ID
from tests.kit.model_shore import ModelShore
from vessel_relay.demo.defaults import demo_ship_config


@pytest.fixture(scope="session")
def codebook() -> Codebook:
    return default_codebook()


@pytest.fixture
def vessel_key() -> SigningKey:
    return SigningKey.from_seed(bytes(range(32)))


@pytest.fixture
def shore_key() -> SigningKey:
    return SigningKey.from_seed(bytes(range(1, 33)))


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox.open(tmp_path / "outbox.sqlite3", VESSEL_ID)
    try:
        yield box
    finally:
        box.close()


@pytest.fixture
def register(outbox: Outbox) -> CrewRegister:
    return CrewRegister(outbox)


@dataclass
class Crew:
    member: CrewMember
    pin: str
    mother: Contact
    brother: Contact


@pytest.fixture
def crew(register: CrewRegister) -> Crew:
    member, pin = register.add(
        name="Aung Min", document="SB-0012345", nationality="MM", language=Language.MYA, now=NOW
    )
    mother = register.add_contact(
        member.crew,
        channel="email",
        address="mother@example.org",
        name="Mother",
        language=Language.MYA,
        now=NOW,
    )
    brother = register.add_contact(
        member.crew, channel="sms", address="+959123456789", name="Brother", language=None, now=NOW
    )
    return Crew(member, pin, mother, brother)


@pytest.fixture
def ship_config(tmp_path: Path) -> ShipConfig:
    return demo_ship_config(tmp_path)


@pytest.fixture
def shore(codebook: Codebook, vessel_key: SigningKey, shore_key: SigningKey) -> ModelShore:
    return ModelShore.for_keys(codebook, vessel_key, shore_key)
