"""The emulated Iridium 9602/9603 SBD modem on a pty: it lives in
:mod:`vessel_relay.sbd_emulator` (the benchmarks run it too); the tests import it from here."""

from __future__ import annotations

from vessel_relay.sbd_emulator import ModemEmulator

__all__ = ["ModemEmulator"]
