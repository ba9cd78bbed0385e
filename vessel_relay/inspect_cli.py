"""``vessel-relay inspect``: decode a batch file or a compact SBD frame; print its envelopes."""

from __future__ import annotations

import dataclasses
import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from common.codebooks import default_codebook
from common.exits import UsageError, fail
from common.keyfiles import KeyFileError, read_secret
from protocol.batch import Batch, decode_batch, read_batch_header
from protocol.compact import LinkKeys, decode_compact, is_compact, read_compact_header
from protocol.envelopes import Envelope
from protocol.errors import ProtocolError
from protocol.signing import SigningKey, VerifyKey


def _jsonable(value: object) -> object:
    if isinstance(value, Enum):
        return value.name.lower()
    if isinstance(value, bytes):
        return {"bytes": len(value), "hex": value[:16].hex() + ("..." if len(value) > 16 else "")}
    if isinstance(value, tuple):
        return [_jsonable(item) for item in value]
    return value


def envelope_dict(envelope: Envelope) -> dict[str, object]:
    """An envelope as a JSON-able dict, kind first (sealed bytes shown by size only)."""
    out: dict[str, object] = {"kind": envelope.KIND.name.lower()}
    for item in dataclasses.fields(envelope):  # type: ignore[arg-type]
        value = getattr(envelope, item.name)
        if value is not None:
            out[item.name] = _jsonable(value)
    return out


def _key(value: str) -> VerifyKey:
    path = Path(value)
    text = path.read_text(encoding="utf-8") if path.exists() else value
    return VerifyKey.from_hex(text.strip())


def inspect(
    file: Annotated[Path, typer.Argument(help="A batch file (the bytes of one MQTT payload).")],
    vessel_key: Annotated[
        str | None, typer.Option(help="Vessel public key (hex, or a file holding it).")
    ] = None,
    shore_key: Annotated[
        str | None, typer.Option(help="Shore public key (hex, or a file), for downlink.")
    ] = None,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Skip the signature check (debugging only).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    shore_secret_key: Annotated[
        Path | None,
        typer.Option(
            help="The relay's shore key file (private): opens a compact SBD frame, with "
            "--vessel-key."
        ),
    ] = None,
) -> None:
    """Decode a batch file and print its header and envelopes.

    A compact frame (what an SBD link sends) is encrypted under keys that only the vessel
    and the relay can derive: give --vessel-key and the relay's --shore-secret-key.

    Example: vessel-relay inspect batch.bin --vessel-key 3b6a...e1
    """
    try:
        data = file.read_bytes()
    except OSError as exc:
        typer.echo(f"error: cannot read {file}: {exc.strerror}", err=True)
        raise typer.Exit(1) from exc
    if is_compact(data):
        _inspect_compact(data, vessel_key, shore_secret_key, as_json)
        return
    try:
        header = read_batch_header(data)
        key_text = vessel_key if header.direction.name == "UPLINK" else shore_key
        if key_text is None and not no_verify:
            needed = "--vessel-key" if header.direction.name == "UPLINK" else "--shore-key"
            raise fail(UsageError(f"{header.where} is signed; give {needed} or --no-verify"))
        key = _key(key_text) if key_text is not None else None
        batch = decode_batch(
            data, codebook=default_codebook(), verify_key=key, insecure_skip_verify=no_verify
        )
    except ProtocolError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    summary = _summary(batch, data, verified=key is not None)
    if as_json:
        typer.echo(json.dumps(summary, ensure_ascii=False, indent=1))
        return
    typer.echo(
        f"{header.where}: {len(data)} bytes, {len(batch.envelopes)} envelopes, "
        f"{'signature verified' if key else 'SIGNATURE NOT CHECKED'}"
    )
    _print_body(summary)


def _inspect_compact(
    data: bytes, vessel_key: str | None, shore_secret_key: Path | None, as_json: bool
) -> None:
    try:
        header = read_compact_header(data)
        if vessel_key is None or shore_secret_key is None:
            raise fail(
                UsageError(
                    f"{header.where} is encrypted; give --vessel-key and the relay's "
                    "--shore-secret-key"
                )
            )
        try:
            shore = SigningKey(read_secret(shore_secret_key))
        except KeyFileError as exc:
            raise fail(UsageError(str(exc))) from exc
        keys = LinkKeys.for_shore(header.vessel_id, shore, _key(vessel_key))
        batch = decode_compact(data, keys=keys, codebook=default_codebook())
    except ProtocolError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    summary = {**_summary(batch, data, verified=True), "compact": True}
    if as_json:
        typer.echo(json.dumps(summary, ensure_ascii=False, indent=1))
        return
    typer.echo(
        f"compact batch {batch.batch_seq} from vessel {batch.vessel_id}: {len(data)} bytes, "
        f"{len(batch.envelopes)} envelopes, tag verified"
    )
    _print_body(summary)


def _summary(batch: Batch, data: bytes, *, verified: bool) -> dict[str, object]:
    return {
        "direction": batch.direction.name.lower(),
        "vessel_id": batch.vessel_id,
        "batch_seq": batch.batch_seq,
        "batch_minutes": batch.batch_minutes,
        "bytes": len(data),
        "verified": verified,
        "frames": [
            {"codec": f.codec.name.lower(), "dictionary": f.dictionary_id, "bytes": len(f.payload)}
            for f in batch.frames
        ],
        "envelopes": [envelope_dict(envelope) for envelope in batch.envelopes],
    }


def _print_body(summary: dict[str, object]) -> None:
    for frame in summary["frames"]:  # type: ignore[attr-defined]
        typer.echo(f"  frame {frame['codec']} dictionary {frame['dictionary']}: {frame['bytes']} B")
    for envelope in summary["envelopes"]:  # type: ignore[attr-defined]
        typer.echo("  " + json.dumps(envelope, ensure_ascii=False))
