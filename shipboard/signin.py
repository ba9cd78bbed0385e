"""Sign-in: one check of crew number and PIN for every door of the agent.

The crew API (``/api/login``), the crew page (``/login``) and SMTP AUTH all call
:meth:`CrewSignIn.sign_in`, which asks the process's one
:class:`common.signins.SignInGuard` before it looks at the PIN. Wrong PINs therefore count
per crew number across all doors together: at most five are evaluated in five minutes,
then the crew number pauses (five minutes, growing while the guessing goes on), on every
door at once. The pause ends by itself; nobody on board has to lift it, and an SOS needs
no PIN at all (``shipboard.intake.Intake.sos_without_pin``).

The duress PIN counts as a right PIN: it resets the count like the PIN does, so that
nothing (answer, count, timing) tells the two apart.

A sign-in that succeeds records its ISO week for the crew member (``CrewRegister.
note_signed_in``; the statement's weekly access, issue 23), for either PIN alike. A disk
that cannot take that write does not stop the sign-in: it is logged and the week is
recorded at the next sign-in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from common.signins import SignInGuard, SignInThrottled
from shipboard.crew import SIGNED_OFF, WRONG_PIN, CrewRegister, PinOutcome, SignedIn
from shipboard.errors import NotSignedIn, OutboxUnavailable, SignInPaused

logger = logging.getLogger(__name__)

__all__ = ["CrewSignIn"]


class CrewSignIn:
    """Crew number and PIN, checked once for any door (see the module docstring).

    ``sign_in`` blocks (scrypt, SQLite): the async doors call it via ``asyncio.to_thread``.
    """

    def __init__(
        self,
        register: CrewRegister,
        guard: SignInGuard,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.register = register
        self.guard = guard
        self.clock = clock

    def sign_in(self, crew: int, pin: str) -> SignedIn:
        """The signed-in crew member (``duress`` set for the duress PIN).

        Raises :class:`SignInPaused` (nothing evaluated) when this crew number has had too
        many wrong PINs lately, :class:`NotSignedIn` for a wrong crew number or PIN or a
        signed-off crew member, and lets ``OutboxUnavailable`` through (not counted).
        """
        try:
            attempt = self.guard.begin(("crew", crew))
        except SignInThrottled as paused:
            logger.warning("crew member %d: sign-in paused (too many wrong PINs)", crew)
            raise SignInPaused(paused.retry_after_s) from None
        with attempt:  # an error below (storage) gives the reservation back uncounted
            checked = self.register.check_pin(crew, pin)
            if checked.outcome is PinOutcome.WRONG or checked.signed_in is None:
                attempt.failed()
                logger.info("crew member %d: wrong PIN", crew)
                raise NotSignedIn(WRONG_PIN)
            attempt.succeeded()
        if checked.signed_in.member.signed_off:
            raise NotSignedIn(SIGNED_OFF)
        try:
            self.register.note_signed_in(crew, self.clock())
        except OutboxUnavailable:
            logger.warning("crew member %d: the week of this sign-in could not be recorded", crew)
        return checked.signed_in
