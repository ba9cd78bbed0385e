"""The SBD MO webhook takes only the provider's posts: RockBLOCK's RS256 JWT verified with
its public key, claims matching the form; or the URL's secret for providers without JWT.

The provider's key is an RSA key made for the test run (``tests.kit.sbd_world``); forged
posts are built here as an attacker would build them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from common.serving import AsgiServer
from protocol.fragments import SBD_MO_BYTES, PayloadKind, fragment
from shore.config import ConfigError, parse_config
from shore.fake_rockblock import FakeRockBlock
from shore.relay import make_sbd
from shore.sbd import MO_WEBHOOK_PATH, MoWebhook, SbdConfig, StoredReassembly
from shore.sbd_auth import (
    ProviderJwt,
    ProviderKeyError,
    RefusalReason,
    WebhookAuth,
    load_provider_key,
)
from tests.kit.sbd_world import IMEI, provider_key

VESSEL = 42
OTHER_IMEI = "300234010753371"
SECRET = "a-webhook-secret-of-some-length"
NOW = 1_765_000_000.0
PAYLOAD = b"a signed batch, opaque to the webhook"


class Kept:
    """What the webhook handed on (the relay's ingest, here a list)."""

    def __init__(self) -> None:
        self.payloads: list[tuple[int, PayloadKind, bytes]] = []

    async def __call__(self, vessel_id: int, kind: PayloadKind, payload: bytes) -> None:
        self.payloads.append((vessel_id, kind, payload))


def webhook(auth: WebhookAuth | None = None, now: list[float] | None = None) -> MoWebhook:
    clock = now if now is not None else [NOW]
    config = SbdConfig(
        {IMEI: VESSEL},
        webhook_secret=SECRET if auth in (WebhookAuth.SECRET, WebhookAuth.BOTH) else "",
        provider_jwt=None
        if auth is WebhookAuth.SECRET
        else ProviderJwt(provider_key().public_key()),
        auth=auth,
    )
    return MoWebhook(config, Kept(), clock=lambda: clock[0])


def kept(hook: MoWebhook) -> list[tuple[int, PayloadKind, bytes]]:
    assert isinstance(hook.on_payload, Kept)
    return hook.on_payload.payloads


def form_for(data: bytes, *, imei: str = IMEI, momsn: int = 7) -> dict[str, str]:
    return {
        "imei": imei,
        "momsn": str(momsn),
        "transmit_time": "26-12-07 10:00:00",
        "iridium_latitude": "13.7563",
        "iridium_longitude": "100.5018",
        "iridium_cep": "3",
        "device_type": "ROCKBLOCK",
        "serial": "16949",
        "data": data.hex(),
    }


def rockblock_jwt(
    form: Mapping[str, str],
    *,
    key: rsa.RSAPrivateKey | None = None,
    iat: float = NOW,
    **claims: object,
) -> str:
    """A token as RockBLOCK signs it (header ``{"alg": "RS256"}``, the form's fields)."""
    body: dict[str, object] = {"iss": "Rock 7", "iat": int(iat), **form, **claims}
    return jwt.encode(body, key or provider_key(), algorithm="RS256", headers={"typ": None})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made_jwt(
    header: Mapping[str, object], claims: Mapping[str, object], mac_key: bytes
) -> str:
    """A token built by hand, HMAC-SHA256 over it with ``mac_key`` (empty: no signature)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if not mac_key:
        return signing_input + "."
    mac = hmac.new(mac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


async def post(hook: MoWebhook, form: Mapping[str, str], query: str = "") -> httpx.Response:
    transport = httpx.ASGITransport(app=hook.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://relay") as client:
        return await client.post(MO_WEBHOOK_PATH + query, data=dict(form))


async def test_the_providers_signed_post_is_taken() -> None:
    """The fake RockBLOCK posts a vessel's message with its JWT, as RockBLOCK does; the
    relay's webhook verifies the token with the provider's public key and hands the
    message on."""
    hook = webhook()
    hook.clock = time.time  # the fake provider signs by the real clock
    server = AsgiServer(hook.app, "127.0.0.1", 0, name="SBD webhook")
    await server.start()
    try:
        async with FakeRockBlock(
            f"http://127.0.0.1:{server.port}{MO_WEBHOOK_PATH}", {IMEI}, signing_key=provider_key()
        ) as provider:
            provider.gateway_session(IMEI, bytes([PayloadKind.BATCH]) + PAYLOAD)
            await provider.wait_posted(1)
    finally:
        await server.stop()
    assert kept(hook) == [(VESSEL, PayloadKind.BATCH, PAYLOAD)]
    assert hook.statistics.forged == 0


def forged_signature(form: dict[str, str]) -> str:
    return rockblock_jwt(form, key=rsa.generate_private_key(public_exponent=65537, key_size=2048))


def hs256_with_the_public_key(form: dict[str, str]) -> str:
    pem = (
        provider_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return hand_made_jwt({"alg": "HS256"}, {"iss": "Rock 7", "iat": int(NOW), **form}, pem)


def alg_none(form: dict[str, str]) -> str:
    return hand_made_jwt({"alg": "none"}, {"iss": "Rock 7", "iat": int(NOW), **form}, b"")


def rs256_header_alg_none_claims(form: dict[str, str]) -> str:
    token = rockblock_jwt(form)
    _header, claims, _ = token.split(".")
    return f"{b64(json.dumps({'alg': 'none'}).encode())}.{claims}."


def data_swapped(form: dict[str, str]) -> str:
    return rockblock_jwt({**form, "data": (bytes([1]) + b"what the vessel sent").hex()})


def imei_swapped(form: dict[str, str]) -> str:
    return rockblock_jwt({**form, "imei": OTHER_IMEI})


def momsn_swapped(form: dict[str, str]) -> str:
    return rockblock_jwt({**form, "momsn": "8"})


def too_old(form: dict[str, str]) -> str:
    return rockblock_jwt(form, iat=NOW - 3 * 86_400 - 1)


def signed_ahead(form: dict[str, str]) -> str:
    return rockblock_jwt(form, iat=NOW + 3600)


def past_its_exp(form: dict[str, str]) -> str:
    return rockblock_jwt(form, exp=int(NOW) - 3600)


def other_issuer(form: dict[str, str]) -> str:
    return rockblock_jwt(form, iss="Someone Else")


def without_data_claim(form: dict[str, str]) -> str:
    return rockblock_jwt({k: v for k, v in form.items() if k != "data"})


def absent(form: dict[str, str]) -> str:
    return ""


def not_a_token(form: dict[str, str]) -> str:
    return "not.a.token"


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (forged_signature, RefusalReason.JWT_SIGNATURE),
        (hs256_with_the_public_key, RefusalReason.JWT_ALGORITHM),
        (alg_none, RefusalReason.JWT_ALGORITHM),
        (rs256_header_alg_none_claims, RefusalReason.JWT_ALGORITHM),
        (data_swapped, RefusalReason.JWT_CLAIMS),
        (imei_swapped, RefusalReason.JWT_CLAIMS),
        (momsn_swapped, RefusalReason.JWT_CLAIMS),
        (too_old, RefusalReason.JWT_EXPIRED),
        (signed_ahead, RefusalReason.JWT_FUTURE),
        (past_its_exp, RefusalReason.JWT_EXPIRED),
        (other_issuer, RefusalReason.JWT_ISSUER),
        (without_data_claim, RefusalReason.JWT_CLAIMS),
        (absent, RefusalReason.JWT_ABSENT),
        (not_a_token, RefusalReason.JWT_MALFORMED),
    ],
)
async def test_a_post_that_is_not_the_providers_is_refused_and_nothing_is_kept(
    make_token: object, reason: RefusalReason, caplog: pytest.LogCaptureFixture
) -> None:
    """Someone who found the webhook posts a message in a vessel's name: with a token of
    their own key, the classic HS256-with-the-public-key confusion, ``alg: none``, a real
    token over other bytes or another modem, an old one, or none. Each is refused with
    403, logged with its reason and no content, and nothing reaches the ingest."""
    assert callable(make_token)
    hook = webhook()
    form = form_for(bytes([PayloadKind.BATCH]) + PAYLOAD)
    form["JWT"] = make_token(form)
    with caplog.at_level(logging.WARNING, logger="shore.sbd"):
        response = await post(hook, form)
    assert response.status_code == 403
    assert kept(hook) == []
    assert hook.statistics.forged == 1
    assert hook.statistics.mo_messages == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "shore.sbd"]
    assert lines == [f"SBD webhook post refused: reason={reason.value} vessel={VESSEL} momsn=7"]
    assert PAYLOAD.hex() not in caplog.text
    assert IMEI not in caplog.text


async def test_a_forged_fragment_never_joins_the_vessels_payload() -> None:
    """A stranger posts one fragment of a payload with a bad token, and the provider posts
    the others: the payload is never completed from the stranger's piece; once the
    provider posts that fragment too, it is."""
    hook = webhook()
    payload = bytes(range(256)) * 3
    messages = fragment(payload, PayloadKind.BATCH, SBD_MO_BYTES)
    assert len(messages) == 3
    forged = form_for(messages[0], momsn=1)
    forged["JWT"] = forged_signature(forged)
    assert (await post(hook, forged)).status_code == 403
    for momsn, message in enumerate(messages[1:], start=2):
        form = form_for(message, momsn=momsn)
        form["JWT"] = rockblock_jwt(form)
        assert (await post(hook, form)).status_code == 200
    assert kept(hook) == []
    genuine = form_for(messages[0], momsn=1)
    genuine["JWT"] = rockblock_jwt(genuine)
    assert (await post(hook, genuine)).status_code == 200
    assert kept(hook) == [(VESSEL, PayloadKind.BATCH, payload)]


async def test_a_token_ages_out_by_the_relays_clock() -> None:
    """A post signed three days and a minute before the relay's clock is refused; the
    same token an hour after signing is taken."""
    now = [NOW + 3600]
    hook = webhook(now=now)
    form = form_for(bytes([PayloadKind.BATCH]) + PAYLOAD)
    form["JWT"] = rockblock_jwt(form)
    assert (await post(hook, form)).status_code == 200
    now[0] = NOW + 3 * 86_400 + 60
    assert (await post(hook, form)).status_code == 403
    assert len(kept(hook)) == 1


async def test_a_provider_without_jwt_uses_the_urls_secret() -> None:
    """With webhook_auth = "secret" (a provider that signs nothing), a post with the right
    secret in the URL is taken without any JWT; a wrong or missing secret is refused."""
    hook = webhook(WebhookAuth.SECRET)
    form = form_for(bytes([PayloadKind.BATCH]) + PAYLOAD)
    assert (await post(hook, form, f"?secret={SECRET}")).status_code == 200
    assert (await post(hook, form, "?secret=not-the-secret-at-all")).status_code == 403
    assert (await post(hook, form)).status_code == 403
    assert kept(hook) == [(VESSEL, PayloadKind.BATCH, PAYLOAD)]
    assert hook.statistics.forged == 2


async def test_both_asks_for_the_secret_and_the_jwt() -> None:
    """With webhook_auth = "both", a post needs the URL's secret and a valid JWT."""
    hook = webhook(WebhookAuth.BOTH)
    form = form_for(bytes([PayloadKind.BATCH]) + PAYLOAD)
    assert (await post(hook, form, f"?secret={SECRET}")).status_code == 403  # no JWT
    form["JWT"] = rockblock_jwt(form)
    assert (await post(hook, form)).status_code == 403  # no secret
    assert (await post(hook, form, f"?secret={SECRET}")).status_code == 200
    assert len(kept(hook)) == 1


async def test_a_valid_token_for_a_modem_no_vessel_has_is_dropped() -> None:
    """The provider signs a post from a modem on the account that no vessel is configured
    with: verified, but dropped (200, a retry would not help), nothing handed on."""
    hook = webhook()
    form = form_for(bytes([PayloadKind.BATCH]) + PAYLOAD, imei=OTHER_IMEI)
    form["JWT"] = rockblock_jwt(form)
    response = await post(hook, form)
    assert (response.status_code, response.text) == (200, "unknown imei: dropped")
    assert kept(hook) == []
    assert hook.statistics.unknown_imei == 1


def test_the_sbd_config_asks_for_what_its_mode_needs() -> None:
    """JWT mode without a key, or the secret mode without a long secret, cannot be built;
    with a key and no mode the webhook asks for the JWT."""
    with pytest.raises(ValueError, match="provider_public_key_file"):
        SbdConfig({IMEI: VESSEL}, auth=WebhookAuth.JWT)
    with pytest.raises(ValueError, match="at least 16"):
        SbdConfig({IMEI: VESSEL}, webhook_secret="short")
    config = SbdConfig({IMEI: VESSEL}, provider_jwt=ProviderJwt(provider_key().public_key()))
    assert config.webhook_auth is WebhookAuth.JWT
    assert SbdConfig({IMEI: VESSEL}, webhook_secret=SECRET).webhook_auth is WebhookAuth.SECRET


def test_relay_toml_checks_the_webhook_auth() -> None:
    """[sbd] webhook_auth takes jwt, secret or both; jwt and both need the provider's key."""
    with pytest.raises(ConfigError, match=r'\[sbd\] webhook_auth = \'token\': expected "jwt"'):
        parse_config({"sbd": {"webhook_auth": "token"}}, "relay.toml")
    with pytest.raises(ConfigError, match="needs provider_public_key_file"):
        parse_config({"sbd": {"webhook_auth": "both"}}, "relay.toml")
    config = parse_config(
        {"sbd": {"webhook_auth": "jwt", "provider_public_key_file": "rockblock.pem"}}, "x"
    )
    assert config.sbd.provider_jwt_issuer == "Rock 7"


def test_the_provider_key_file_must_be_an_rsa_public_key(tmp_path: Path) -> None:
    """The relay refuses a provider key file that is missing, not PEM, not RSA, or too
    short, saying which; Rock Seven's kind of key (RSA 2048, PEM) loads."""
    path = tmp_path / "rockblock.pem"
    with pytest.raises(ProviderKeyError, match="cannot read"):
        load_provider_key(path)
    path.write_text("not a key")
    with pytest.raises(ProviderKeyError, match="not a PEM public key"):
        load_provider_key(path)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, spki)
    )
    with pytest.raises(ProviderKeyError, match="RS256 needs an RSA key"):
        load_provider_key(path)
    path.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=1024)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, spki)
    )
    with pytest.raises(ProviderKeyError, match="1024-bit"):
        load_provider_key(path)
    path.write_bytes(provider_key().public_key().public_bytes(serialization.Encoding.PEM, spki))
    assert load_provider_key(path).key_size == 2048


async def test_the_relay_reads_the_provider_key_and_no_secret_in_jwt_mode(
    tmp_path: Path,
) -> None:
    """A relay with [sbd] provider_public_key_file and no secret file starts its webhook
    in JWT mode; a key file that is no RSA public key stops it with a message naming the
    file (exit 78 as any configuration error)."""
    password = tmp_path / "sbd.password"
    password.write_text("provider-password")
    password.chmod(0o600)
    pem = tmp_path / "rockblock.pem"
    pem.write_bytes(
        provider_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    document = {
        "relay": {"data_dir": str(tmp_path)},
        "sbd": {
            "enabled": True,
            "provider_public_key_file": "rockblock.pem",
            "vessels": [f"{IMEI}={VESSEL}"],
        },
    }
    made = make_sbd(parse_config(document, "relay.toml"), ingestor=None, store=None)  # type: ignore[arg-type]
    assert made is not None
    webhook, _, sender = made
    await sender.aclose()
    assert webhook.config.webhook_auth is WebhookAuth.JWT
    assert isinstance(webhook.reassembly, StoredReassembly)
    pem.write_text("-----BEGIN PUBLIC KEY-----\nnot one\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ConfigError, match=r"rockblock\.pem is not a PEM public key"):
        make_sbd(parse_config(document, "relay.toml"), ingestor=None, store=None)  # type: ignore[arg-type]
