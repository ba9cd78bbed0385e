"""Scenarios of the vessel-shore exchange on the fake link and clock (tests/kit)."""
