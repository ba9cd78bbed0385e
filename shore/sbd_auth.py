"""SBD webhook authentication: is this MO post the provider's, and is it what it signed?

RockBLOCK's web service adds to every MO post a ``JWT`` form field: a JSON Web Token
signed RS256 with Rock Seven's published RSA key, whose claims repeat the post's fields
as text (``imei``, ``momsn``, ``data`` in hex, ``transmit_time``, ``iridium_latitude``,
``serial``, ...) with ``iss`` = ``"Rock 7"`` and ``iat`` (seconds since 1970) when it was
signed. :class:`ProviderJwt` checks such a token with PyJWT, RS256 **only** (a token that
says ``none`` or ``HS256`` is refused before any key is used, and the key is an RSA
public key object, never bytes an HMAC could take), then that its issuer is the
provider's, that it is not older than ``max_age_s`` (nor signed in the future, nor past an
``exp`` it carries; times by the caller's clock), and that the claims name the same
modem, message number and bytes as the form (``data`` compared as bytes, so hex case does
not matter). Other fields are not compared: the relay does not use them, and a provider
may format a position differently in the form and in the token.

A provider without JWT authenticates with a secret in the webhook URL (``?secret=``,
compared in constant time). :class:`WebhookAuth` says which the relay asks for: ``jwt``,
``secret`` or ``both``; :func:`choose_auth` picks ``jwt`` when a provider key is
configured and ``secret`` otherwise.

Every refusal is a :class:`WebhookForged` with a stable :class:`RefusalReason` (for the
log line and the counters) and a sentence for the provider's delivery log, never content.

Neither check is what makes a message authentic: a batch still needs its vessel's
signature and passes the replay window after reassembly. They keep strangers from
filling the reassembly store and from posting in a vessel's name at all.
"""

from __future__ import annotations

import binascii
import enum
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

__all__ = [
    "JWT_ALGORITHM",
    "ROCKBLOCK_ISSUER",
    "ProviderJwt",
    "ProviderKeyError",
    "RefusalReason",
    "WebhookAuth",
    "WebhookForged",
    "choose_auth",
    "load_provider_key",
]

#: The only signature algorithm taken (RockBLOCK's).
JWT_ALGORITHM = "RS256"
#: The issuer RockBLOCK puts in its tokens.
ROCKBLOCK_ISSUER = "Rock 7"
#: Smallest RSA key taken as a provider's key.
MIN_RSA_BITS = 2048
#: A token signed this far ahead of the relay's clock is still taken (clock skew).
CLOCK_SKEW_S = 300.0


class WebhookAuth(enum.Enum):
    """What the MO webhook asks of a post."""

    #: The provider's JWT (RS256, its public key), claims matching the form.
    JWT = "jwt"
    #: The secret in the webhook URL (providers without JWT).
    SECRET = "secret"
    #: Both.
    BOTH = "both"

    @property
    def needs_jwt(self) -> bool:
        """Whether a post must carry a valid JWT."""
        return self is not WebhookAuth.SECRET

    @property
    def needs_secret(self) -> bool:
        """Whether a post's URL must carry the secret."""
        return self is not WebhookAuth.JWT


def choose_auth(configured: str, *, has_key: bool) -> WebhookAuth:
    """``[sbd] webhook_auth`` as a mode: ``""`` means ``jwt`` when a provider key is
    configured, else ``secret``; ValueError naming the choices for anything else."""
    if not configured:
        return WebhookAuth.JWT if has_key else WebhookAuth.SECRET
    try:
        return WebhookAuth(configured)
    except ValueError:
        raise ValueError(
            f'[sbd] webhook_auth = {configured!r}: expected "jwt", "secret" or "both" (or '
            "leave it out: jwt when provider_public_key_file is set, else secret)"
        ) from None


class RefusalReason(enum.Enum):
    """Why a webhook post was refused (stable: logs and counters use it)."""

    SECRET = "secret"
    JWT_ABSENT = "jwt-absent"
    JWT_MALFORMED = "jwt-malformed"
    JWT_ALGORITHM = "jwt-algorithm"
    JWT_SIGNATURE = "jwt-signature"
    JWT_ISSUER = "jwt-issuer"
    JWT_EXPIRED = "jwt-expired"
    JWT_FUTURE = "jwt-future"
    JWT_CLAIMS = "jwt-claims"


class WebhookForged(Exception):
    """A post the webhook does not take as the provider's; ``reason`` says which check."""

    def __init__(self, reason: RefusalReason, sentence: str) -> None:
        super().__init__(sentence)
        self.reason = reason
        self.sentence = sentence


class ProviderKeyError(ValueError):
    """The provider's public key file cannot be used; the message says what to do."""


def load_provider_key(path: Path) -> RSAPublicKey:
    """The provider's RSA public key from a PEM file (``-----BEGIN PUBLIC KEY-----``, as
    Rock Seven publishes it); :class:`ProviderKeyError` saying what is wrong."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ProviderKeyError(
            f"cannot read the SBD provider's public key {path}: {exc.strerror}"
        ) from exc
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ProviderKeyError(
            f"{path} is not a PEM public key (expected -----BEGIN PUBLIC KEY-----, the "
            "provider's published RSA key)"
        ) from exc
    if not isinstance(key, RSAPublicKey):
        raise ProviderKeyError(f"{path} holds a {type(key).__name__}; RS256 needs an RSA key")
    if key.key_size < MIN_RSA_BITS:
        raise ProviderKeyError(
            f"{path} holds a {key.key_size}-bit RSA key; at least {MIN_RSA_BITS} bits expected"
        )
    return key


@dataclass(frozen=True, slots=True)
class ProviderJwt:
    """Checks the provider's JWT on an MO post (module docstring)."""

    public_key: RSAPublicKey
    issuer: str = ROCKBLOCK_ISSUER
    #: A token signed longer ago than this is refused (a provider's late retry re-signs).
    max_age_s: float = 3 * 86_400.0

    def __post_init__(self) -> None:
        if self.max_age_s <= 0:
            raise ValueError("[sbd] jwt_max_age_s must be positive")
        if not self.issuer:
            raise ValueError('[sbd] provider_jwt_issuer must not be empty (RockBLOCK: "Rock 7")')

    def check(self, form: Mapping[str, str], now: float) -> None:
        """Return when the form's ``JWT`` is the provider's and its claims match the form;
        raise :class:`WebhookForged` otherwise."""
        token = form.get("JWT", "")
        if not token:
            raise WebhookForged(RefusalReason.JWT_ABSENT, "the post carries no JWT")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise WebhookForged(RefusalReason.JWT_MALFORMED, "the JWT is not a JWT") from None
        if header.get("alg") != JWT_ALGORITHM:
            raise WebhookForged(
                RefusalReason.JWT_ALGORITHM, f"the JWT is not signed {JWT_ALGORITHM}"
            )
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.public_key,
                algorithms=[JWT_ALGORITHM],
                issuer=self.issuer,
                # Times are checked below, by the relay's clock (tests step it).
                options={
                    "require": ["iss", "iat", "imei", "momsn", "data"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidAlgorithmError:
            raise WebhookForged(
                RefusalReason.JWT_ALGORITHM, f"the JWT is not signed {JWT_ALGORITHM}"
            ) from None
        except jwt.InvalidSignatureError:
            raise WebhookForged(
                RefusalReason.JWT_SIGNATURE, "the JWT's signature is not the provider's"
            ) from None
        except jwt.InvalidIssuerError:
            raise WebhookForged(
                RefusalReason.JWT_ISSUER, "the JWT is not issued by the provider"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise WebhookForged(
                RefusalReason.JWT_CLAIMS, f"the JWT lacks its {exc.claim!r} claim"
            ) from None
        except jwt.InvalidTokenError:
            raise WebhookForged(
                RefusalReason.JWT_MALFORMED, "the JWT cannot be read or verified"
            ) from None
        self._check_times(claims, now)
        _check_claims(claims, form)

    def _check_times(self, claims: Mapping[str, Any], now: float) -> None:
        issued = _number(claims.get("iat"))
        if issued is None:
            raise WebhookForged(RefusalReason.JWT_MALFORMED, "the JWT's iat is not a time")
        if issued > now + CLOCK_SKEW_S:
            raise WebhookForged(RefusalReason.JWT_FUTURE, "the JWT is signed in the future")
        if now - issued > self.max_age_s:
            raise WebhookForged(RefusalReason.JWT_EXPIRED, "the JWT is too old")
        for claim, late in (("exp", True), ("nbf", False)):
            if claim not in claims:
                continue
            when = _number(claims[claim])
            if when is None:
                raise WebhookForged(RefusalReason.JWT_MALFORMED, f"the JWT's {claim} is not a time")
            if (late and now >= when + CLOCK_SKEW_S) or (not late and now < when - CLOCK_SKEW_S):
                raise WebhookForged(
                    RefusalReason.JWT_EXPIRED if late else RefusalReason.JWT_FUTURE,
                    f"the JWT is not valid now ({claim})",
                )


def check_secret(given: str, expected: str) -> None:
    """Return when the URL's secret is the configured one (constant time); raise
    :class:`WebhookForged` otherwise."""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise WebhookForged(RefusalReason.SECRET, "forbidden")


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _check_claims(claims: Mapping[str, Any], form: Mapping[str, str]) -> None:
    """The token names the same modem, message number and bytes as the form."""
    if str(claims["imei"]) != form.get("imei", ""):
        raise WebhookForged(RefusalReason.JWT_CLAIMS, "the JWT names another modem (imei)")
    if _momsn(claims["momsn"]) != _momsn(form.get("momsn", "")) or _momsn(claims["momsn"]) is None:
        raise WebhookForged(
            RefusalReason.JWT_CLAIMS, "the JWT names another message number (momsn)"
        )
    signed, posted = _hex(claims["data"]), _hex(form.get("data", ""))
    if signed is None or posted is None or not hmac.compare_digest(signed, posted):
        raise WebhookForged(RefusalReason.JWT_CLAIMS, "the JWT signs other bytes (data)")


def _momsn(value: object) -> int | None:
    text = str(value)
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 6 else None


def _hex(value: object) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return binascii.unhexlify(value)
    except (binascii.Error, ValueError):
        return None
