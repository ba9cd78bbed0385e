"""The relay's smarthost as ``[delivery]`` configures it (``smtp_tls``, ``smtp_username``,
``smtp_password_file``, ``smtp_ca_file``, ``smtp_connections``): through the relay's own
wiring (``shore.relay.smtp_config``, ``_delivery_services``) to real aiosmtpd smarthosts on
loopback that require STARTTLS and AUTH or speak implicit TLS, with test CAs."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from common.keyfiles import KeyFileError, write_secret
from protocol.envelopes import FailureReason
from shore.config import ConfigError, RelayConfig, parse_config
from shore.mail import MailSender, compose_family_mail
from shore.relay import _delivery_services, smtp_config
from shore.retry import Outcome
from shore.vocabulary import Destination
from tests.kit.ports import free_port
from tests.kit.tls import make_test_ca
from tests.shore.test_delivery import FakeStore, Row
from tests.shore.test_mail import BOOK, IDENTITY, NOW, SinkHandler, SmtpSink, family_mail

LOGIN = "relay@relay.example.org"
PASSWORD = "correct horse battery staple"


@dataclass
class Pki:
    """The smarthost's CA (its certificate names 127.0.0.1 and localhost) and another CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    other_ca: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    (tmp_path / "ca").mkdir()
    (tmp_path / "other").mkdir()
    ca = make_test_ca(tmp_path / "ca")
    other = make_test_ca(tmp_path / "other")
    return Pki(ca, tmp_path / "ca" / "server.pem", tmp_path / "ca" / "server-key.pem", other)


@dataclass
class Logins:
    """The AUTH attempts a smarthost saw: (login, accepted, over TLS)."""

    seen: list[tuple[str, bool, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        accepted = auth_data.login == LOGIN.encode() and auth_data.password == PASSWORD.encode()
        over_tls = server.transport.get_extra_info("ssl_object") is not None
        with self.lock:
            self.seen.append((auth_data.login.decode(), accepted, over_tls))
        # handled=False: aiosmtpd answers a refusal itself (535 5.7.8)
        return AuthResult(success=accepted, handled=False)

    def list(self) -> list[tuple[str, bool, bool]]:
        with self.lock:
            return list(self.seen)


class Smarthost:
    """A provider-like aiosmtpd smarthost on 127.0.0.1: ``"starttls"`` requires STARTTLS
    and then AUTH (port 587 style); ``"implicit"`` speaks TLS from the first byte and takes
    AUTH (port 465 style). Its certificate is signed by ``pki.ca``."""

    def __init__(self, pki: Pki, mode: str, handler: Any = None) -> None:
        self.handler = handler or SinkHandler()
        self.logins = Logins()
        self.port = free_port()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki.server_cert, pki.server_key)
        if mode == "starttls":
            self.controller = Controller(
                self.handler,
                hostname="127.0.0.1",
                port=self.port,
                tls_context=context,
                require_starttls=True,
                auth_required=True,
                auth_require_tls=True,
                authenticator=self.logins,
            )
        else:
            # aiosmtpd counts only STARTTLS as TLS for auth_require_tls; the Logins record
            # shows the login came over the implicit TLS session.
            self.controller = Controller(
                self.handler,
                hostname="127.0.0.1",
                port=self.port,
                ssl_context=context,
                auth_require_tls=False,
                authenticator=self.logins,
            )

    def __enter__(self) -> Smarthost:
        self.controller.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.controller.stop()


def relay_config(data_dir: Path, port: int, **delivery: Any) -> RelayConfig:
    """A relay configuration whose ``[delivery]`` sends to 127.0.0.1:``port``, checked as
    ``shore run`` checks a file."""
    document: dict[str, Any] = {
        "relay": {"data_dir": str(data_dir)},
        "delivery": {
            "enabled": True,
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_timeout_s": 10.0,
            **delivery,
        },
    }
    return parse_config(document, "relay.toml")


def write_password(data_dir: Path, password: str = PASSWORD, mode: int = 0o600) -> str:
    path = data_dir / "smtp.password"
    path.write_text(password + "\n", encoding="utf-8")
    path.chmod(mode)
    return path.name


def provider_login(data_dir: Path, pki: Pki, password: str = PASSWORD) -> dict[str, Any]:
    """The ``[delivery]`` keys of a provider smarthost on port 587 with a private CA."""
    return {
        "smtp_tls": "starttls",
        "smtp_username": LOGIN,
        "smtp_password_file": write_password(data_dir, password),
        "smtp_ca_file": str(pki.ca),
    }


async def send_one(config: RelayConfig) -> Any:
    """One family mail through a :class:`MailSender` built by the relay's own wiring."""
    sender = MailSender(smtp_config(config))
    try:
        return await sender.send(compose_family_mail(family_mail(), IDENTITY, BOOK, NOW))
    finally:
        await sender.aclose()


async def run_delivery(config: RelayConfig, store: FakeStore) -> MailSender:
    """One pass of the first delivery worker ``shore run`` would start; its sender (closed)."""
    write_secret(config.path(config.delivery.reply_key), os.urandom(32))
    workers, server, mail = _delivery_services(config, store)  # type: ignore[arg-type]
    assert server is None
    assert mail is not None
    try:
        assert await workers[0].deliver_due() == 1
    finally:
        await mail.aclose()
    return mail


async def test_a_family_mail_goes_through_a_provider_smarthost_with_starttls_and_login(
    tmp_path: Path, pki: Pki
) -> None:
    """An operator points [delivery] at a provider on port 587 (STARTTLS required, AUTH
    required only over TLS, a certificate from the CA in smtp_ca_file): the relay's delivery
    worker logs in over TLS and the mother's mail is delivered, with its receipt."""
    with Smarthost(pki, "starttls") as smarthost:
        config = relay_config(tmp_path, smarthost.port, **provider_login(tmp_path, pki))
        store = FakeStore()
        store.add(Row(1, 42, 1831, Destination.EMAIL, accepted_at=time.time()))
        await run_delivery(config, store)
        assert store.finished == {1: ("delivered", None)}
        [mail] = smarthost.handler.messages()
        assert mail["Message-ID"] == "<42.1831@relay.example.org>"
        assert smarthost.logins.list() == [(LOGIN, True, True)]


async def test_a_wrong_smarthost_password_keeps_the_message_queued(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """The password file holds a stale password: the smarthost answers 535, nothing is sent,
    the family is not told of a failure (it is the relay's set-up), and the message waits
    for a retry while the log names the smarthost's refusal."""
    caplog.set_level(logging.INFO, logger="shore.delivery")
    with Smarthost(pki, "starttls") as smarthost:
        login = provider_login(tmp_path, pki, password="last year's password")
        config = relay_config(tmp_path, smarthost.port, **login)
        store = FakeStore()
        store.add(Row(1, 42, 1831, Destination.EMAIL, accepted_at=time.time()))
        mail = await run_delivery(config, store)
        assert smarthost.handler.messages() == []
        # aiosmtplib tries each mechanism offered (PLAIN, then LOGIN): all refused, over TLS
        assert set(smarthost.logins.list()) == {(LOGIN, False, True)}
    assert store.finished == {}
    assert store.calls == ["record 1", "reschedule 1"]
    assert store.receipts == []
    assert mail.statistics().transient_failures == 1
    assert "smtp 535 (relay)" in caplog.text
    assert PASSWORD not in caplog.text
    assert "last year" not in caplog.text


@pytest.mark.parametrize("trust", ["other CA", "system CAs"])
async def test_a_smarthost_certificate_not_from_the_configured_ca_is_refused(
    tmp_path: Path, pki: Pki, trust: str
) -> None:
    """A smarthost (or someone in the middle) shows a certificate the relay does not trust,
    from another CA or (without smtp_ca_file) from none of the system's: the TLS handshake
    fails, the password is never sent, no mail leaves, and the attempt is a transient
    failure (the message stays queued for when the operator fixes it)."""
    with Smarthost(pki, "starttls") as smarthost:
        login = provider_login(tmp_path, pki)
        login["smtp_ca_file"] = str(pki.other_ca) if trust == "other CA" else ""
        result = await send_one(relay_config(tmp_path, smarthost.port, **login))
        assert result.outcome is Outcome.TRANSIENT
        assert result.reason is FailureReason.PROVIDER_ERROR
        assert result.detail == "smtp certificate not trusted (relay)"
        assert smarthost.handler.messages() == []
        assert smarthost.logins.list() == []


async def test_implicit_tls_reaches_a_port_465_smarthost(tmp_path: Path, pki: Pki) -> None:
    """smtp_tls = "implicit": the relay speaks TLS from the first byte to a port-465-style
    smarthost, logs in inside that TLS session and delivers."""
    with Smarthost(pki, "implicit") as smarthost:
        login = provider_login(tmp_path, pki) | {"smtp_tls": "implicit"}
        result = await send_one(relay_config(tmp_path, smarthost.port, **login))
        assert result.outcome is Outcome.DELIVERED, result.detail
        assert len(smarthost.handler.messages()) == 1
        assert smarthost.logins.list() == [(LOGIN, True, True)]


async def test_implicit_tls_refuses_a_smarthost_from_another_ca(tmp_path: Path, pki: Pki) -> None:
    """smtp_tls = "implicit" against a smarthost whose certificate another CA signed: no
    login, no mail, a transient failure."""
    with Smarthost(pki, "implicit") as smarthost:
        login = provider_login(tmp_path, pki) | {
            "smtp_tls": "implicit",
            "smtp_ca_file": str(pki.other_ca),
        }
        result = await send_one(relay_config(tmp_path, smarthost.port, **login))
        assert result.outcome is Outcome.TRANSIENT
        assert result.detail == "smtp certificate not trusted (relay)"
        assert smarthost.handler.messages() == []
        assert smarthost.logins.list() == []


async def test_required_starttls_never_sends_in_clear_to_a_smarthost_without_it(
    tmp_path: Path,
) -> None:
    """smtp_tls = "starttls" and the smarthost (or someone stripping it) does not offer
    STARTTLS: nothing is sent in clear; a transient failure saying STARTTLS is missing."""
    async with SmtpSink() as sink:
        result = await send_one(relay_config(tmp_path, sink.port, smtp_tls="starttls"))
        assert result.outcome is Outcome.TRANSIENT
        assert result.detail == "smtp starttls missing (relay)"
        assert sink.handler.messages() == []


async def test_when_offered_uses_starttls_with_the_configured_ca(tmp_path: Path, pki: Pki) -> None:
    """The default smtp_tls = "when-offered" to a private smarthost offering STARTTLS with
    a certificate from smtp_ca_file: upgraded to TLS and delivered (no login)."""

    @dataclass
    class TlsSeen(SinkHandler):
        over_tls: list[bool] = field(default_factory=list)

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            self.over_tls.append(session.ssl is not None)
            return await super().handle_DATA(server, session, envelope)

    handler = TlsSeen()
    port = free_port()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    controller = Controller(handler, hostname="127.0.0.1", port=port, tls_context=context)
    controller.start()
    try:
        result = await send_one(relay_config(tmp_path, port, smtp_ca_file=str(pki.ca)))
    finally:
        controller.stop()
    assert result.outcome is Outcome.DELIVERED, result.detail
    assert handler.over_tls == [True]


@dataclass
class Gate(SinkHandler):
    """Holds every DATA until ``wanted`` are in progress at once (then lets all through);
    records the most seen at once."""

    wanted: int = 0
    in_progress: int = 0
    most: int = 0
    opened: asyncio.Event | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.opened is None:
            self.opened = asyncio.Event()  # on the smarthost's own loop
        self.in_progress += 1
        self.most = max(self.most, self.in_progress)
        if self.in_progress >= self.wanted:
            self.opened.set()
        try:
            await asyncio.wait_for(self.opened.wait(), 15)
        except TimeoutError:
            return "451 4.3.0 the gate never opened"
        finally:
            self.in_progress -= 1
        return await super().handle_DATA(server, session, envelope)


async def test_smtp_connections_sets_how_many_mails_are_in_flight(tmp_path: Path) -> None:
    """smtp_connections = 12 (above the default 8, for a remote smarthost): twelve family
    mails are at the smarthost at once over twelve kept sessions; with the default, the
    relay keeps eight."""
    assert smtp_config(relay_config(tmp_path, 25)).connections == 8
    gate = Gate(wanted=12)
    async with SmtpSink(gate) as sink:
        config = relay_config(tmp_path, sink.port, smtp_tls="none", smtp_connections=12)
        built = smtp_config(config)
        assert built.connections == 12
        assert (built.starttls, built.use_tls, built.tls_context) == (False, False, None)
        sender = sink.sender(built)
        mails = [
            compose_family_mail(family_mail(message_seq=seq), IDENTITY, BOOK, NOW)
            for seq in range(1, 13)
        ]
        results = await asyncio.gather(*(sender.send(mail) for mail in mails))
        assert [r.outcome for r in results] == [Outcome.DELIVERED] * 12
        assert gate.most == 12
        assert sender.pool_statistics().opened == 12


# --- configuration ---------------------------------------------------------------------------


def test_a_provider_smarthost_configuration_is_taken_as_written(tmp_path: Path) -> None:
    """The keys of deploy/README.md's port-587 example parse, and the relay's SmtpConfig
    carries them: STARTTLS required, the login, the password from its file, the pool size."""
    config = relay_config(
        tmp_path,
        587,
        smtp_tls="starttls",
        smtp_username=LOGIN,
        smtp_password_file=write_password(tmp_path),
        smtp_connections=32,
        smtp_pipelining=False,
        smtp_timeout_s=30,
    )
    built = smtp_config(config)
    assert (built.host, built.port, built.starttls, built.use_tls) == (
        "127.0.0.1",
        587,
        True,
        False,
    )
    assert (built.username, built.password) == (LOGIN, PASSWORD)
    assert (built.connections, built.timeout_s, built.pipelining) == (32, 30.0, False)
    assert built.tls_context is not None
    assert built.tls_context.verify_mode is ssl.CERT_REQUIRED
    assert built.tls_context.check_hostname
    assert PASSWORD not in repr(built)
    defaults = smtp_config(parse_config({}))
    assert (defaults.starttls, defaults.use_tls, defaults.username, defaults.password) == (
        None,
        False,
        None,
        None,
    )
    assert defaults.pipelining


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"smtp_tls": "tls"}, "smtp_tls = 'tls': expected \"starttls\" (port 587)"),
        (
            {"smtp_tls": "starttls", "smtp_username": LOGIN},
            "smtp_username needs smtp_password_file",
        ),
        (
            {"smtp_tls": "starttls", "smtp_password_file": "smtp.password"},
            "smtp_password_file needs smtp_username",
        ),
        (
            {"smtp_username": LOGIN, "smtp_password_file": "smtp.password"},
            'smtp_username with smtp_tls = "when-offered": the password could cross the '
            "network in clear",
        ),
        (
            {"smtp_tls": "none", "smtp_username": LOGIN, "smtp_password_file": "smtp.password"},
            'write smtp_tls = "starttls" (port 587) or "implicit" (port 465)',
        ),
        ({"smtp_tls": "none", "smtp_ca_file": "ca.pem"}, "smtp_ca_file is only used with TLS"),
        ({"smtp_connections": 0}, "smtp_connections = 0: expected 1 to 256"),
        ({"smtp_connections": 257}, "smtp_connections = 257: expected 1 to 256"),
        ({"smtp_timeout_s": 0}, "smtp_timeout_s must be more than 0 seconds"),
        ({"smtp_port": 70000}, "smtp_port = 70000: expected 1 to 65535"),
        ({"smtp_connections": "8"}, "smtp_connections = '8': expected a int"),
        ({"smtp_pipelining": "yes"}, "smtp_pipelining = 'yes': expected a bool"),
    ],
)
def test_an_unsafe_or_wrong_smarthost_configuration_is_refused(
    keys: dict[str, Any], expected: str
) -> None:
    """Each smarthost mistake is refused before the relay starts, naming the file, the
    [delivery] key and what to write."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"delivery": keys}, "relay.toml")
    assert str(caught.value).startswith("relay.toml: [delivery] ")
    assert expected in str(caught.value)


def test_a_smarthost_password_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    """Like the other secrets, a password file others can read stops the relay at start,
    saying which key and the chmod to run; so does a missing or empty one."""
    keys = {"smtp_tls": "starttls", "smtp_username": LOGIN, "smtp_password_file": "smtp.password"}
    config = relay_config(tmp_path, 587, **keys)
    with pytest.raises(KeyFileError, match=r"\[delivery\] smtp_password_file: .*cannot read"):
        smtp_config(config)
    write_password(tmp_path, mode=0o644)
    with pytest.raises(KeyFileError) as caught:
        smtp_config(config)
    assert "relay.toml: [delivery] smtp_password_file" in str(caught.value)
    assert "readable by others; run: chmod 600" in str(caught.value)
    write_password(tmp_path, password="")
    with pytest.raises(KeyFileError, match="empty; write the smarthost password in it"):
        smtp_config(config)


def test_a_smarthost_ca_file_that_is_not_a_certificate_is_refused(tmp_path: Path) -> None:
    """smtp_ca_file names a missing file or one that holds no PEM certificate: the relay
    stops at start saying what to give, rather than failing every delivery."""
    config = relay_config(tmp_path, 587, smtp_tls="starttls", smtp_ca_file="smarthost-ca.pem")
    with pytest.raises(KeyFileError, match=r"\[delivery\] smtp_ca_file: cannot use .*"):
        smtp_config(config)
    (tmp_path / "smarthost-ca.pem").write_text("not a certificate\n")
    with pytest.raises(KeyFileError) as caught:
        smtp_config(config)
    assert "give the PEM certificate of the CA that signed the smarthost's" in str(caught.value)


async def test_a_login_to_a_smarthost_offering_no_auth_is_named_for_the_operator() -> None:
    """A login is configured but the smarthost offers no AUTH (here: none without TLS):
    nothing is sent and the log says the smarthost offers no AUTH, not just "connection"."""
    async with SmtpSink() as sink:
        config = replace(sink.config, username=LOGIN, password=PASSWORD)
        result = await sink.sender(config).send(
            compose_family_mail(family_mail(), IDENTITY, BOOK, NOW)
        )
        assert result.outcome is Outcome.TRANSIENT
        assert result.detail == "smtp auth not offered (relay)"
        assert sink.handler.messages() == []
