"""Escalation packages: a case passed to the union's second organisation, sealed to it.

When a case is not acknowledged within its deadline, the union's app (on the union's own
machine) makes a package for the second organisation named for the case's vessel or flag
state: the case number, vessel, the stages so far and their times, and, **only if the
reporter agreed at filing** (``GrievancePlaintext.consent_to_escalate``), the report as
written (category, language, text, and the reporter's name and document if they gave
them). Without consent it is a notice without content: no text, no category, no name.

The package is JSON signed with the first union's Ed25519 key (context
:data:`_CONTEXT`), then sealed (X25519 sealed box) to the second organisation's report key
from its union card: the relay carries it (``/union/v1/escalations``) and cannot read it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.public

from protocol.errors import ProtocolError
from protocol.signing import SigningKey, VerifyKey

__all__ = ["EscalationInvalid", "OpenedEscalation", "open_package", "seal_package"]

FORMAT = "vessel-relay escalation v1"
_CONTEXT = b"vessel-relay escalation v1\x00"


class EscalationInvalid(Exception):
    """A package that does not open with this union's key, or is not signed as it says."""


@dataclass(frozen=True, slots=True)
class OpenedEscalation:
    """A package opened and its signature checked."""

    body: dict[str, Any]
    signer_key: bytes

    @property
    def has_report(self) -> bool:
        return self.body.get("report") is not None


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def seal_package(body: dict[str, Any], author: SigningKey, to_box_public: bytes) -> bytes:
    """Sign ``body`` as the first union and seal it to the second organisation."""
    signed = {
        "body": body | {"format": FORMAT},
        "signing_key": author.verify_key.key.hex(),
    }
    signed["signature"] = author.sign(_CONTEXT + _canonical(signed["body"])).hex()
    try:
        box = nacl.public.SealedBox(nacl.public.PublicKey(to_box_public))
    except (nacl.exceptions.TypeError, nacl.exceptions.ValueError) as exc:
        raise EscalationInvalid(
            f"the second organisation's report key is not valid: {exc}"
        ) from exc
    return bytes(box.encrypt(_canonical(signed)))


def open_package(package: bytes, box_private: bytes) -> OpenedEscalation:
    """Open a package sealed to this union and check who signed it."""
    try:
        box = nacl.public.SealedBox(nacl.public.PrivateKey(box_private))
        signed = json.loads(box.decrypt(package))
        body = signed["body"]
        key = bytes.fromhex(signed["signing_key"])
        signature = bytes.fromhex(signed["signature"])
    except (nacl.exceptions.CryptoError, ValueError, KeyError, TypeError) as exc:
        raise EscalationInvalid(
            f"the escalation does not open with this union's key ({exc})"
        ) from exc
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise EscalationInvalid("not an escalation package")
    try:
        VerifyKey(key).verify(_CONTEXT + _canonical(body), signature, what="escalation")
    except (ProtocolError, ValueError) as exc:  # a wrong signature or a malformed key
        raise EscalationInvalid(f"the escalation's signature does not verify ({exc})") from exc
    return OpenedEscalation(body, key)
