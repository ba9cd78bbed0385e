"""Daily slots (protocol.slots): one size for grievance, case message and cover; cover opens
for nobody; the floor is enforced; silence alerts."""

from __future__ import annotations

from pathlib import Path

import nacl.public
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import InvalidEnvelope, LimitExceeded
from protocol.slots import (
    DEFAULT_SLOT_BYTES,
    SECONDS_PER_DAY,
    SilenceKind,
    SlotHeader,
    SlotKind,
    check_slot_bytes,
    check_slot_period,
    open_slot,
    payload_capacity,
    seal_slot,
    silence_alerts,
    slot_header,
)

UNION = nacl.public.PrivateKey(bytes(range(32)))
UNION_PUBLIC = bytes(UNION.public_key)
DAY = 20_600


def _cover(header: SlotHeader, slot_bytes: int = DEFAULT_SLOT_BYTES) -> bytes:
    throwaway = nacl.public.PrivateKey.generate()
    return seal_slot(header, SlotKind.COVER, b"", bytes(throwaway.public_key), slot_bytes)


@settings(max_examples=40, deadline=None)
@given(
    payload=st.binary(max_size=payload_capacity()),
    kind=st.sampled_from([SlotKind.GRIEVANCE, SlotKind.CASE_MESSAGE]),
    slot_bytes=st.sampled_from([DEFAULT_SLOT_BYTES, 4096]),
)
def test_every_slot_has_one_size_and_only_the_union_opens_it(
    payload: bytes, kind: SlotKind, slot_bytes: int
) -> None:
    header = SlotHeader(crew=3, day=DAY)
    sealed = seal_slot(header, kind, payload, UNION_PUBLIC, slot_bytes)
    cover = _cover(header, slot_bytes)
    assert len(sealed) == len(cover) == slot_bytes
    assert sealed[:10] == cover[:10]  # the clear header is the same for both
    opened = open_slot(sealed, bytes(UNION))
    assert opened is not None
    assert (opened.header, opened.kind, opened.payload) == (header, kind, payload)
    assert open_slot(cover, bytes(UNION)) is None  # cover: sealed to a key nobody kept
    stranger = nacl.public.PrivateKey.generate()
    assert open_slot(sealed, bytes(stranger)) is None


def test_slot_size_may_be_raised_never_lowered() -> None:
    assert check_slot_bytes(DEFAULT_SLOT_BYTES) == DEFAULT_SLOT_BYTES
    assert check_slot_bytes(8192) == 8192
    for too_small in (0, 1024, DEFAULT_SLOT_BYTES - 1):
        with pytest.raises(InvalidEnvelope, match="never lowered"):
            check_slot_bytes(too_small)
    with pytest.raises(InvalidEnvelope, match="choose a smaller one"):
        check_slot_bytes(1 << 20)
    with pytest.raises(LimitExceeded, match="next day's slot"):
        seal_slot(SlotHeader(1, DAY), SlotKind.GRIEVANCE, bytes(2000), UNION_PUBLIC)


def test_header_is_read_without_keys() -> None:
    sealed = _cover(SlotHeader(crew=513, day=DAY))
    assert slot_header(sealed) == SlotHeader(513, DAY)
    assert slot_header(b"not a slot") is None


def test_silence_alerts() -> None:
    """Vessel silent past its expected gap; crew member silent while the vessel syncs."""
    now = (DAY + 3) * SECONDS_PER_DAY + 3600.0
    syncs = {1: now - 600.0, 2: now - 3 * SECONDS_PER_DAY, 3: None}
    slots = {(1, 10): DAY + 3, (1, 11): DAY + 2, (1, 12): DAY, (2, 20): DAY}
    alerts = silence_alerts(
        vessel_last_sync=syncs,
        last_slot_day=slots,
        now=now,
        expected_gap_s={1: 6 * 3600.0, 2: 24 * 3600.0, 3: 24 * 3600.0},
    )
    found = {(a.kind, a.vessel, a.crew) for a in alerts}
    assert found == {
        (SilenceKind.CREW_MEMBER_SILENT, 1, 12),  # 3 days behind a vessel that syncs
        (SilenceKind.VESSEL_SILENT, 2, None),  # (its crew are not judged: no sync)
        (SilenceKind.VESSEL_SILENT, 3, None),  # never synced
    }
    crew_alert = next(a for a in alerts if a.crew == 12)
    assert crew_alert.as_json() == {
        "kind": "crew member silent",
        "vessel": 1,
        "since": float(DAY * SECONDS_PER_DAY),
        "crew": 12,
    }


def test_lane_silence_alerts() -> None:
    """Vessels on the grievance lane are judged by their lane blocks: one that syncs more
    than the allowed gap after its latest lane block is "lane silent" (since that block);
    one whose lane keeps pace is not; a silent vessel is "vessel silent" whatever its lane;
    and old slots of a vessel now on the lane raise no "crew member silent"."""
    now = (DAY + 3) * SECONDS_PER_DAY + 3600.0
    gap = 36 * 3600.0
    syncs = {1: now - 600.0, 2: now - 600.0, 3: now - 3 * SECONDS_PER_DAY, 4: now - 60.0}
    lanes = {1: now - 600.0 - gap - 1, 2: now - 600.0 - gap, 3: now - 5 * SECONDS_PER_DAY}
    alerts = silence_alerts(
        vessel_last_sync=syncs,
        last_slot_day={(1, 10): DAY - 5, (4, 40): DAY - 5},
        now=now,
        expected_gap_s=dict.fromkeys(syncs, 24 * 3600.0),
        last_lane_block=lanes,
        lane_gap_s=gap,
    )
    assert [(a.kind, a.vessel, a.since, a.crew) for a in alerts] == [
        (SilenceKind.LANE_SILENT, 1, lanes[1], None),
        (SilenceKind.VESSEL_SILENT, 3, syncs[3], None),
        (SilenceKind.CREW_MEMBER_SILENT, 4, float((DAY - 5) * SECONDS_PER_DAY), 40),
    ]
    assert alerts[0].as_json() == {"kind": "lane silent", "vessel": 1, "since": lanes[1]}


def test_slot_period_divides_a_day_and_the_config_checks_it(tmp_path: Path) -> None:
    """``[grievances] slot_period_s`` (the slots' period, now the grievance lane's): a
    divisor of a day from 10 s, the lane's six hours by default and at most (a longer
    period would delay every report); the lane on by default."""
    from shipboard.config import parse_config
    from shipboard.errors import ConfigError
    from vessel_relay.demo.defaults import demo_ship_config, demo_ship_document

    assert check_slot_period(SECONDS_PER_DAY) == SECONDS_PER_DAY
    assert check_slot_period(20) == 20
    for bad in (7, 7000, 2 * SECONDS_PER_DAY):
        with pytest.raises(InvalidEnvelope):
            check_slot_period(bad)
    quota = demo_ship_config(tmp_path).quota
    assert quota.daily_slots
    assert quota.slot_period_s == SECONDS_PER_DAY // 4
    document = demo_ship_document(tmp_path)
    for refused in (7000, SECONDS_PER_DAY):
        document["grievances"]["slot_period_s"] = refused
        with pytest.raises(ConfigError, match="slot_period_s"):
            parse_config(document, source="ship.toml", base=tmp_path, allow_demo_keys=True)
    document["grievances"]["slot_period_s"] = 60
    assert (
        parse_config(
            document, source="ship.toml", base=tmp_path, allow_demo_keys=True
        ).quota.slot_period_s
        == 60
    )


def test_the_ship_config_refuses_daily_slots_off(tmp_path: Path) -> None:
    """``daily_slots = false`` would let an owner see who files a grievance and when: refused
    at config load, naming the key; tests keep the switch in code (``QuotaConfig``)."""
    import dataclasses

    from shipboard.config import parse_config
    from shipboard.errors import ConfigError
    from vessel_relay.demo.defaults import demo_ship_config, demo_ship_document

    document = demo_ship_document(tmp_path)
    document["grievances"]["daily_slots"] = False
    with pytest.raises(ConfigError, match=r"grievances\.daily_slots = false is refused"):
        parse_config(document, source="ship.toml", base=tmp_path, allow_demo_keys=True)
    document["grievances"]["daily_slots"] = True
    assert parse_config(
        document, source="ship.toml", base=tmp_path, allow_demo_keys=True
    ).quota.daily_slots
    quota = dataclasses.replace(demo_ship_config(tmp_path).quota, daily_slots=False)
    assert not quota.daily_slots
