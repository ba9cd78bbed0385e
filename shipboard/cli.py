"""Commands of the shipboard side, mounted under ``vessel-relay ship``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import typer

from common.exits import UsageError, fail
from common.keyfiles import KeyFileError, keygen_command, new_signing_key
from common.logs import LogFormat, LogLevel
from protocol.evidence import fingerprint
from protocol.languages import Language
from protocol.union_card import UnionCard, UnionCardInvalid, same_fingerprint
from shipboard.config import (
    ShipConfig,
    add_union,
    load_config,
    ship_document,
    union_fingerprint,
    union_table,
    write_new_config,
)
from shipboard.crew import CrewMember, CrewRegister
from shipboard.errors import ConfigError, ShipboardError
from shipboard.outbox import Outbox

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="The agent's TOML file (made by 'ship init').")
]

crew_app = typer.Typer(
    help="Register crew members (name, document, language).", no_args_is_help=True
)
contact_app = typer.Typer(help="Family contacts of crew members.", no_args_is_help=True)
union_app = typer.Typer(
    help="The unions that receive the crew's grievance reports.", no_args_is_help=True
)

_fail = fail  # one exit-code rule for every command (common.exits)


def _open(config_path: Path) -> tuple[ShipConfig, Outbox]:
    try:
        # The owner registers crew before a union is added; the agent itself needs one.
        config = load_config(config_path, require_union=False)
        outbox = Outbox.open(config.database_path, config.vessel.vessel_id)
    except ShipboardError as exc:
        raise _fail(exc) from exc
    outbox.use_time_zone(config.time_zone)  # quota months as on board ([time] zone)
    return config, outbox


def _language(code: str) -> Language:
    try:
        return Language.from_code(code)
    except ValueError as exc:
        raise _fail(UsageError(str(exc))) from exc


def _show(member: CrewMember) -> str:
    state = "signed off" if member.signed_off else "on board"
    return (
        f"{member.crew:>4}  {member.name}  document {member.document}  "
        f"{member.nationality}  {member.language.code}  ({state})"
    )


def _print_credentials(member: CrewMember, pin: str) -> None:
    typer.echo(f"crew number: {member.crew}")
    typer.echo(f"PIN:         {pin}")
    typer.echo("Give these to the crew member only; the PIN is shown once and not kept.")


def crew_add(
    name: Annotated[str, typer.Argument(help="The crew member's full name.")],
    document: Annotated[str, typer.Option(help="Seabook or work-permit number.")],
    nationality: Annotated[str, typer.Option(help="Nationality, e.g. MM, KH, TH.")],
    language: Annotated[str, typer.Option(help="Language code, e.g. mya, khm, tha.")] = "eng",
    config: ConfigOption = Path("ship.toml"),
) -> None:
    """Register a crew member and print their crew number and PIN (shown once).

    Example: vessel-relay ship crew add "Aung Min" --document SB-0012345 --nationality MM
    --language mya
    """
    lang = _language(language)
    _, outbox = _open(config)
    try:
        member, pin = CrewRegister(outbox).add(
            name=name, document=document, nationality=nationality, language=lang, now=time.time()
        )
    except ShipboardError as exc:
        raise _fail(exc) from exc
    finally:
        outbox.close()
    typer.echo(_show(member))
    _print_credentials(member, pin)


def crew_update(
    crew: Annotated[int, typer.Argument(help="The crew number.")],
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    document: Annotated[str | None, typer.Option(help="New Seabook/permit number.")] = None,
    nationality: Annotated[str | None, typer.Option(help="New nationality.")] = None,
    language: Annotated[str | None, typer.Option(help="New language code.")] = None,
    new_pin: Annotated[bool, typer.Option("--new-pin", help="Make and print a new PIN.")] = False,
    config: ConfigOption = Path("ship.toml"),
) -> None:
    """Change a crew member's details, or give them a new PIN.

    Example: vessel-relay ship crew update 3 --language khm --new-pin
    """
    lang = _language(language) if language else None
    _, outbox = _open(config)
    try:
        member, pin = CrewRegister(outbox).update(
            crew,
            name=name,
            document=document,
            nationality=nationality,
            language=lang,
            reset_pin=new_pin,
        )
    except ShipboardError as exc:
        raise _fail(exc) from exc
    finally:
        outbox.close()
    typer.echo(_show(member))
    if pin is not None:
        _print_credentials(member, pin)


def crew_sign_off(
    crew: Annotated[int, typer.Argument(help="The crew number.")],
    config: ConfigOption = Path("ship.toml"),
) -> None:
    """Sign a crew member off the vessel (messages already saved still go).

    Example: vessel-relay ship crew sign-off 3
    """
    _, outbox = _open(config)
    try:
        member = CrewRegister(outbox).sign_off(crew, time.time())
    except ShipboardError as exc:
        raise _fail(exc) from exc
    finally:
        outbox.close()
    typer.echo(_show(member))


def crew_list(
    all_crew: Annotated[bool, typer.Option("--all", help="Include signed-off crew.")] = False,
    config: ConfigOption = Path("ship.toml"),
) -> None:
    """List the crew members on board.

    Example: vessel-relay ship crew list --all
    """
    _, outbox = _open(config)
    try:
        members = CrewRegister(outbox).members(include_signed_off=all_crew)
    finally:
        outbox.close()
    if not members:
        typer.echo("no crew members registered; add one with 'vessel-relay ship crew add'")
    for member in members:
        typer.echo(_show(member))


def contact_add(
    crew: Annotated[int, typer.Argument(help="The crew number.")],
    address: Annotated[str, typer.Argument(help="E-mail address, or phone number with +.")],
    name: Annotated[str | None, typer.Option(help="Who this is, e.g. Mother.")] = None,
    sms: Annotated[bool, typer.Option("--sms", help="The address is a phone number.")] = False,
    language: Annotated[str | None, typer.Option(help="The contact's language code.")] = None,
    config: ConfigOption = Path("ship.toml"),
) -> None:
    """Add a family contact for a crew member (sent to the shore with the next batch).

    Example: vessel-relay ship contact add 3 +959123456789 --sms --name Mother
    """
    lang = _language(language) if language else None
    _, outbox = _open(config)
    try:
        contact = CrewRegister(outbox).add_contact(
            crew,
            channel="sms" if sms else "email",
            address=address,
            name=name,
            language=lang,
            now=time.time(),
        )
    except ShipboardError as exc:
        raise _fail(exc) from exc
    finally:
        outbox.close()
    typer.echo(f"contact {contact.contact} added for crew member {crew}")


def contact_list(
    crew: Annotated[int, typer.Argument(help="The crew number.")],
    config: ConfigOption = Path("ship.toml"),
) -> None:
    """List a crew member's family contacts.

    Example: vessel-relay ship contact list 3
    """
    _, outbox = _open(config)
    try:
        contacts = CrewRegister(outbox).contacts(crew)
    finally:
        outbox.close()
    for contact in contacts:
        typer.echo(
            f"{contact.contact:>4}  {contact.channel}  {contact.address}  {contact.name or ''}"
        )


def _union_from_options(
    card_path: Path | None,
    expected_fingerprint: str | None,
    name: str | None,
    key_hex: str | None,
    union_id: int,
    languages: list[str] | None,
    *,
    option: str,
) -> dict[str, object] | None:
    """The ``[[unions]]`` table the options describe (a card file, or a name and a key).

    ``option`` is the options' prefix in messages ("--union-" for ship init, "--" for
    ship union add). A card whose fingerprint differs from ``expected_fingerprint`` is
    refused.
    """
    if card_path is not None and (name is not None or key_hex is not None):
        raise UsageError(f"give {option}card, or a name and {option}key, not both")
    if card_path is None and (name is None) != (key_hex is None):
        raise UsageError(
            f"a union needs both its name and {option}key (its X25519 report key, 64 hex "
            f"digits), or its card: {option}card FILE (written by 'vessel-relay union init')"
        )
    if card_path is None and key_hex is None:
        if expected_fingerprint is not None:
            raise UsageError(
                f"{option}fingerprint checks a union's key: give {option}card (or {option}key)"
            )
        return None
    codes = tuple(_language(code).code for code in languages or ())
    if name is not None and key_hex is not None:
        try:
            key = bytes.fromhex(key_hex.strip())
        except ValueError:
            key = b""
        if len(key) != 32:
            raise UsageError(f"{option}key must be 64 hex digits, not {key_hex[:20]!r}")
        if expected_fingerprint is not None and not same_fingerprint(expected_fingerprint, key):
            raise ConfigError(
                f"the key's fingerprint is not {expected_fingerprint!r}: check the key with the "
                "union"
            )
        return union_table(union_id, name, key, codes or ("eng",))
    if card_path is None:
        return None
    try:
        card = UnionCard.from_json(card_path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read the union card {card_path}: {exc.strerror}") from exc
    except UnionCardInvalid as exc:
        raise ConfigError(f"{card_path}: {exc}") from exc
    if expected_fingerprint is not None and not same_fingerprint(
        expected_fingerprint, card.report_key
    ):
        raise ConfigError(
            f"{card_path}: the union's report key fingerprint is {card.report_fingerprint}, "
            f"not {expected_fingerprint!r}: this is not the card the union gave you (or it was "
            "changed); ask the union for its card again"
        )
    card_codes = tuple(language.code for language in card.languages)
    return union_table(card.union_id, card.name, card.report_key, codes or card_codes or ("eng",))


def _show_union(table: dict[str, object], checked: bool) -> None:
    key = bytes.fromhex(str(table["public_key"]))
    typer.echo(f"union {table['id']}: {table['name']}")
    typer.echo(f"  report key fingerprint: {fingerprint(key)}")
    if checked:
        typer.echo("  (matches the fingerprint you gave)")
    else:
        typer.echo("  compare it with the fingerprint on the union's own printed card")


def init(
    data: Annotated[Path, typer.Option("--data", help="Directory for config, keys and outbox.")],
    vessel_id: Annotated[int, typer.Option(help="Vessel id from the shore registry.")] = 1,
    name: Annotated[
        str | None, typer.Option(help="The vessel's name (default: 'Vessel ID').")
    ] = None,
    broker: Annotated[
        str | None, typer.Option(help="The shore's broker URL, mqtt:// or mqtts:// (required).")
    ] = None,
    shore_key: Annotated[
        str | None,
        typer.Option(help="The shore's Ed25519 public key, hex, from 'shore init' (required)."),
    ] = None,
    union_card: Annotated[
        Path | None,
        typer.Option(help="The crew's union, from its card file (written by 'union init')."),
    ] = None,
    union_fingerprint_option: Annotated[
        str | None,
        typer.Option(
            "--union-fingerprint",
            help="The union's report key fingerprint, as on its printed card: must match.",
        ),
    ] = None,
    union: Annotated[
        str | None, typer.Option("--union", help="The union's name (with --union-key).")
    ] = None,
    union_key: Annotated[
        str | None, typer.Option(help="The union's X25519 report key, 64 hex digits.")
    ] = None,
    union_id: Annotated[int, typer.Option(help="The union's id (with --union-key).")] = 1,
    union_language: Annotated[
        list[str] | None, typer.Option(help="A language the union reads (repeatable).")
    ] = None,
) -> None:
    """Make a config file, a vessel signing key and an intake TLS certificate in DIR.

    --broker and --shore-key are required (ask the relay operator; 'vessel-relay shore
    init' prints the key). The crew's union comes from its card (--union-card, checked
    with --union-fingerprint) or from --union NAME --union-key HEX; without one, add it
    later with 'vessel-relay ship union add': the agent does not run without a union.
    To try the whole system on this machine instead, run 'vessel-relay demo'.

    Example: vessel-relay ship init --data /var/lib/vessel-relay --vessel-id 42 --name
    "Sea Star 7" --broker mqtts://relay.example.org:8883 --shore-key 3b6a...
    --union-card fishers-union-card.json --union-fingerprint "1a2b 3c4d ..."
    """
    data = data.resolve()
    config_path = data / "ship.toml"
    try:
        if config_path.exists():
            raise UsageError(f"{config_path} already exists; edit it, or move it away")
        if broker is None or shore_key is None:
            missing = " and ".join(
                option
                for option, value in (("--broker", broker), ("--shore-key", shore_key))
                if value is None
            )
            raise UsageError(
                f"ship init needs {missing}: the shore relay's broker URL and its public key "
                "(printed by 'vessel-relay shore init' on the relay). To try vessel-relay on "
                "this machine without a relay, run 'vessel-relay demo'"
            )
        table = _union_from_options(
            union_card,
            union_fingerprint_option,
            union,
            union_key,
            union_id,
            union_language,
            option="--union-",
        )
        document = ship_document(
            data,
            vessel_id=vessel_id,
            name=name if name is not None else f"Vessel {vessel_id}",
            broker=broker,
            shore_public_key=shore_key.strip().lower(),
            unions=(table,) if table is not None else (),
        )
        data.mkdir(parents=True, exist_ok=True)
        write_new_config(config_path, document)
    except (UsageError, ShipboardError, OSError) as exc:
        raise _fail(exc) from exc
    try:
        config = load_config(config_path, require_union=False)
        key = new_signing_key(config.vessel.signing_key_path)
    except (ShipboardError, KeyFileError) as exc:
        config_path.unlink()
        raise _fail(exc) from exc
    from shipboard.tls import ensure_certificate

    ensure_certificate(*config.tls_paths())
    typer.echo(f"config:             {config_path}")
    typer.echo(f"vessel signing key: {config.vessel.signing_key_path}")
    typer.echo(f"vessel public key:  {key.verify_key.hex()}  (register it with the shore)")
    typer.echo(f"intake certificate: {config.tls_paths()[0]}")
    if table is not None:
        _show_union(table, checked=union_fingerprint_option is not None)
    else:
        typer.echo(
            "union: none yet. Grievance reports need one, and the agent does not start "
            "without it: vessel-relay ship union add --card union-card.json "
            f"-c {config_path}"
        )


def union_add(
    card: Annotated[
        Path | None,
        typer.Option(help="The union's card file (written by 'vessel-relay union init')."),
    ] = None,
    fingerprint: Annotated[
        str | None,
        typer.Option(help="The union's report key fingerprint from its printed card: must match."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="The union's name (with --key).")] = None,
    key: Annotated[
        str | None, typer.Option(help="The union's X25519 report key, 64 hex digits.")
    ] = None,
    union_id: Annotated[int, typer.Option("--id", help="The union's id (with --key).")] = 1,
    language: Annotated[
        list[str] | None, typer.Option(help="A language the union reads (repeatable).")
    ] = None,
    config: ConfigOption = Path("ship.toml"),
) -> None:
    """Add a union that receives grievance reports to the vessel's config.

    The file is checked and replaced atomically; restart the agent to use the union.

    Example: vessel-relay ship union add --card fishers-union-card.json --fingerprint
    "1a2b 3c4d ..." -c /var/lib/vessel-relay/ship.toml
    """
    try:
        table = _union_from_options(card, fingerprint, name, key, union_id, language, option="--")
        if table is None:
            raise UsageError("give the union's card (--card FILE) or --name and --key")
        add_union(config, table)
    except (UsageError, ShipboardError) as exc:
        raise _fail(exc) from exc
    _show_union(table, checked=fingerprint is not None)
    typer.echo(f"added to {config}; restart the agent to use it")


def union_list(config: ConfigOption = Path("ship.toml")) -> None:
    """List the unions the crew can send grievance reports to, with their fingerprints.

    Example: vessel-relay ship union list -c /var/lib/vessel-relay/ship.toml
    """
    try:
        loaded = load_config(config, require_union=False)
    except ShipboardError as exc:
        raise _fail(exc) from exc
    if not loaded.unions:
        typer.echo("no union yet; add one with 'vessel-relay ship union add --card FILE'")
    for known in loaded.unions:
        languages = ", ".join(language.code for language in known.languages)
        typer.echo(
            f"{known.union_id:>5}  {known.name}  ({languages})  fingerprint "
            f"{union_fingerprint(known)}"
        )


def run(
    config: ConfigOption = Path("ship.toml"),
    no_link: Annotated[bool, typer.Option("--no-link", help="Intake only, no link.")] = False,
    log_format: Annotated[
        LogFormat, typer.Option(help="Log lines as text or json (JSON lines).")
    ] = "text",
    log_level: Annotated[
        LogLevel, typer.Option(help="debug, info, warning or error.", case_sensitive=False)
    ] = "info",
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus /metrics on this port (127.0.0.1).")
    ] = None,
) -> None:
    """Run the shipboard agent: SMTP and HTTP intake, and the satellite link.

    Stops cleanly on SIGTERM or Ctrl-C.

    Example: vessel-relay ship run --config /var/lib/vessel-relay/ship.toml
    """
    from common.logs import LogSetupError, configure_logging
    from shipboard.agent import data_paths, supervise

    try:
        configure_logging(log_format, log_level)
    except LogSetupError as exc:
        raise _fail(UsageError(str(exc))) from exc
    try:
        loaded = load_config(config)  # never allows demo keys; needs a union
    except ShipboardError as exc:
        raise _fail(exc) from exc
    typer.echo(f"SMTP intake: {loaded.intake.smtp_host}:{loaded.intake.smtp_port} (STARTTLS)")
    typer.echo(f"HTTP API:    http://{loaded.intake.http_host}:{loaded.intake.http_port}/api/")
    typer.echo(f"Crew page:   http://{loaded.intake.http_host}:{loaded.intake.http_port}/")
    for what, path in data_paths(loaded).items():
        typer.echo(f"{what}: {path}")
    try:
        asyncio.run(supervise(loaded, with_link=not no_link, metrics_port=metrics_port))
    except (ShipboardError, KeyFileError, OSError) as exc:
        raise _fail(exc) from exc


def i18n_check(
    lang: Annotated[
        str | None, typer.Option("--lang", help="Only this language (ISO 639-3, e.g. mya).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="Only the counts.")] = False,
) -> None:
    """List the crew page's sentences not yet checked by a native speaker, per language.

    Fuzzy (machine-made) translations and missing ones are listed; quick-message phrases
    (protocol.phrases) are listed too. Exits 0: unchecked text is a to-do, not an error.

    Example: vessel-relay ship i18n-check --lang mya
    """
    from protocol.phrases import PHRASE_CODES, is_checked, phrase
    from shipboard.web.i18n import PAGE_LANGUAGES, unchecked

    wanted = _language(lang) if lang else None
    for language, msgids in unchecked().items():
        if wanted is not None and language is not wanted:
            continue
        phrases = [c for c in PHRASE_CODES if not is_checked(c, language)]
        typer.echo(
            f"{language.code}: {len(msgids)} page sentences and {len(phrases)} quick "
            "messages not checked by a native speaker"
        )
        if quiet:
            continue
        for msgid in msgids:
            typer.echo(f"  page: {msgid}")
        for code in phrases:
            typer.echo(f"  quick {code}: {phrase(code, language)}")
    if wanted is not None and wanted not in PAGE_LANGUAGES:
        typer.echo(f"{wanted.code}: the page has no catalogue for this language yet")


def register(app: typer.Typer) -> None:
    """Add this side's commands to its group."""
    app.command("keygen")(keygen_command("vessel", "ship"))
    app.command("init")(init)
    app.command("run")(run)
    app.command("i18n-check")(i18n_check)
    from shipboard.report import report_command  # compliance reports (issue 9)

    app.command("report")(report_command)
    crew_app.command("add")(crew_add)
    crew_app.command("update")(crew_update)
    crew_app.command("sign-off")(crew_sign_off)
    crew_app.command("list")(crew_list)
    contact_app.command("add")(contact_add)
    contact_app.command("list")(contact_list)
    union_app.command("add")(union_add)
    union_app.command("list")(union_list)
    app.add_typer(crew_app, name="crew")
    app.add_typer(contact_app, name="contact")
    app.add_typer(union_app, name="union")
