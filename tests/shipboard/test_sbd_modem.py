"""The SBD modem driver against an emulated 9602 on a pty: AT commands as the modem speaks them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shipboard.sbd_modem import (
    Buffers,
    SbdLinkDown,
    SbdModem,
    SessionResult,
    checksum,
)
from shore.fake_rockblock import FakeRockBlock
from tests.kit.sbd_modem import ModemEmulator

IMEI = "300234010753370"


@pytest.fixture
def provider() -> FakeRockBlock:
    return FakeRockBlock(None, {IMEI})


@pytest.fixture
def emulator(provider: FakeRockBlock) -> Iterator[ModemEmulator]:
    with ModemEmulator(provider, IMEI, write_timeout_s=1.0) as emulated:
        yield emulated


@pytest.fixture
def modem(emulator: ModemEmulator) -> Iterator[SbdModem]:
    driver = SbdModem(emulator.device, command_timeout_s=3.0, session_timeout_s=3.0)
    driver.open()
    yield driver
    driver.close()


def test_checksum_is_the_low_16_bits_high_byte_first() -> None:
    """The SBD checksum of a message whose bytes sum past 65535 keeps the low 16 bits."""
    assert checksum(b"hello") == (532).to_bytes(2, "big")
    assert checksum(b"\xff" * 300) == ((255 * 300) & 0xFFFF).to_bytes(2, "big")


def test_open_sets_the_modem_up(modem: SbdModem, emulator: ModemEmulator) -> None:
    """At start the agent turns echo and flow control off, ring alerts on, and reads the IMEI."""
    assert modem.imei == IMEI
    assert emulator.commands[:5] == ["AT", "ATE0", "AT&K0", "AT+SBDMTA=1", "AT+CGSN"]
    assert emulator.ring_alerts


def test_an_mo_message_reaches_the_gateway(
    modem: SbdModem, emulator: ModemEmulator, provider: FakeRockBlock
) -> None:
    """A 340-byte message (every byte value) is written, sent in one session, and cleared."""
    data = bytes(range(256)) + bytes(84)
    modem.write_mo(data)
    result = modem.session()
    assert result.mo_sent
    assert result.momsn == 0
    assert [record.data for record in provider.mo] == [data]
    modem.clear(Buffers.MO)
    assert emulator.mo is None


def test_a_failed_session_keeps_the_mo_buffer(
    modem: SbdModem, emulator: ModemEmulator, provider: FakeRockBlock
) -> None:
    """No network service, then busy: nothing reaches the gateway; the third try sends it."""
    emulator.fail_sessions(32, 35)
    modem.write_mo(b"sos")
    assert modem.session().mo_status == 32
    assert modem.session().mo_status == 35
    assert provider.mo == []
    assert modem.session().mo_sent
    assert [record.data for record in provider.mo] == [b"sos"]


def test_an_mt_message_is_read_with_its_checksum(modem: SbdModem, provider: FakeRockBlock) -> None:
    """The shore queues two MT messages: a ring alert comes, each session brings one."""
    provider.queue_mt(IMEI, b"first")
    provider.queue_mt(IMEI, b"\x00second\xff")
    assert modem.wait_ring(3.0)
    result = modem.session(answering_ring=True)
    assert (result.mt_status, result.mt_length, result.mt_queued) == (1, 5, 1)
    assert modem.read_mt() == b"first"
    result = modem.session()
    assert (result.mt_received, result.mt_queued) == (True, 0)
    assert modem.read_mt() == b"\x00second\xff"
    modem.clear(Buffers.MT)
    assert modem.read_mt() == b""


def test_wrong_sizes_are_refused(modem: SbdModem) -> None:
    """The driver refuses an empty or 341-byte message before the modem sees it."""
    with pytest.raises(ValueError, match="1 to 340"):
        modem.write_mo(b"")
    with pytest.raises(ValueError, match="1 to 340"):
        modem.write_mo(bytes(341))


def test_the_modem_answers_size_and_checksum_errors(emulator: ModemEmulator) -> None:
    """A garbled write (bad checksum) and a too-long size come back as the modem's codes."""
    import serial

    port = serial.Serial(emulator.device, 19_200, timeout=2.0)
    try:
        port.write(b"ATE0\r")
        port.read_until(b"OK\r\n")
        port.write(b"AT+SBDWB=341\r")
        assert port.read_until(b"OK\r\n").split() == [b"3", b"OK"]
        port.write(b"AT+SBDWB=2\r")
        assert port.read_until(b"READY\r\n").endswith(b"READY\r\n")
        port.write(b"hi\x00\x00")
        assert port.read_until(b"OK\r\n").split() == [b"2", b"OK"]
        port.write(b"AT+FOO\r")
        assert port.read_until(b"ERROR\r\n").split() == [b"ERROR"]
    finally:
        port.close()


def test_a_session_cut_after_the_gateway_is_a_timeout(
    modem: SbdModem, emulator: ModemEmulator, provider: FakeRockBlock
) -> None:
    """The antenna cable is pulled once the satellite took the message: the driver gives up
    (a LinkDown), the message is at the gateway, and the next open works again."""
    emulator.cut_after_gateway()
    modem.session_timeout_s = 0.5  # the real modem's is about a minute
    modem.write_mo(b"batch")
    with pytest.raises(SbdLinkDown, match="did not answer"):
        modem.session()
    assert len(provider.mo) == 1
    modem.close()
    again = SbdModem(emulator.device, command_timeout_s=3.0)
    again.open()
    assert again.session().mo_sent
    again.close()


def test_garbled_session_results_are_link_errors() -> None:
    """An +SBDIX line the driver cannot read is a LinkDown, not a crash."""
    assert SessionResult.parse("+SBDIX: 0, 5, 1, 2, 40, 3") == SessionResult(0, 5, 1, 2, 40, 3)
    for line in (
        "+SBDIX: 0, 5",
        "+SBDIX: a,b,c,d,e,f",
        "+SBDI: 0,0,0,0,0,0",
        "+SBDIX: -1,0,0,0,0,0",
    ):
        with pytest.raises(SbdLinkDown):
            SessionResult.parse(line)


def test_a_missing_port_is_reported() -> None:
    """A modem that is not plugged in: the error names the port and says what to check."""
    with pytest.raises(SbdLinkDown, match="cable"):
        SbdModem("/dev/nonexistent-sbd-modem").open()
