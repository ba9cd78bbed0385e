"""``vessel-relay dict``: train, list and rebuild compression dictionaries and models."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Literal

import typer

from common.codebooks import MANIFEST, CodebookFileError, load_codebook, shipped_directory
from protocol.codebook import Codec
from protocol.errors import ProtocolError
from protocol.languages import TRAINED_LANGUAGES, Language
from protocol.training import parse_size, train_zstd_dictionary

app = typer.Typer(help="Train and list compression dictionaries and models.", no_args_is_help=True)

#: Dictionary ids of the shipped defaults: zstd = language id, context model = 16 + id.
CONTEXT_ID_OFFSET = 16


def write_atomically(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` via a temporary file, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fchmod(handle.fileno(), 0o644)
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read_lines(files: list[Path]) -> list[str]:
    """Every non-empty line of the given UTF-8 files."""
    lines: list[str] = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise typer.BadParameter(f"cannot read {file}: {exc}") from exc
        lines.extend(line for line in text.splitlines() if line.strip())
    return lines


@app.command("train")
def train(
    files: Annotated[list[Path], typer.Argument(help="Text files, one message per line.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write it.")],
    size: Annotated[str, typer.Option(help="Largest dictionary size, e.g. 16K.")] = "16K",
    dictionary_id: Annotated[int, typer.Option("--id", help="Dictionary id (1-65535).")] = 1,
    codec: Annotated[
        Literal["zstd", "context"],
        typer.Option(help="zstd (a dictionary) or context (a character model)."),
    ] = "zstd",
) -> None:
    """Train a zstd dictionary (or a context model) from messages, one per line.

    Example: vessel-relay dict train corpus/mya.train.txt --size 16K -o mya.dict
    """
    lines = read_lines(files)
    typer.echo(f"read {len(lines)} lines from {len(files)} file(s)", err=True)
    try:
        content = _train(codec, lines, parse_size(size), dictionary_id, label=str(output))
    except ProtocolError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    write_atomically(output, content)
    typer.echo(f"wrote {output} ({len(content)} bytes)")


def _train(codec: str, lines: list[str], size: int, dictionary_id: int, *, label: str) -> bytes:
    if codec == "zstd":
        with typer.progressbar(length=1, label=f"training {label}", file=None) as bar:
            content = train_zstd_dictionary(lines, size=size, dictionary_id=dictionary_id)
            bar.update(1)
        return content
    if codec == "context":
        from protocol.context_model import train_context_model

        with typer.progressbar(length=len(lines), label=f"training {label}") as bar:
            done = 0

            def progress(count: int, total: int) -> None:
                nonlocal done
                bar.update(count - done)
                done = count

            model = train_context_model(lines, progress=progress)
        return model.to_bytes()
    raise typer.BadParameter(f"codec {codec!r} is not zstd or context")


@app.command("train-defaults")
def train_defaults(
    corpus: Annotated[Path, typer.Option(help="Folder with LANG.train.txt files.")],
    out: Annotated[Path, typer.Option(help="Folder to write dictionaries and manifest to.")] = (
        Path("protocol/data")
    ),
    size: Annotated[str, typer.Option(help="zstd dictionary size.")] = "16K",
    context: Annotated[bool, typer.Option(help="Also train context models.")] = True,
) -> None:
    """Rebuild the shipped dictionaries and models from a corpus's train split.

    Example: vessel-relay dict train-defaults --corpus corpus --out protocol/data
    """
    entries: list[dict[str, object]] = []
    languages = [lang for lang in TRAINED_LANGUAGES if (corpus / f"{lang.code}.train.txt").exists()]
    if not languages:
        typer.echo(f"error: no LANG.train.txt files in {corpus}", err=True)
        raise typer.Exit(1)
    plans = [(Codec.ZSTD, lang) for lang in languages]
    if context:
        plans += [(Codec.CONTEXT, lang) for lang in languages]
    for codec, language in plans:
        lines = read_lines([corpus / f"{language.code}.train.txt"])
        dictionary_id = int(language) + (CONTEXT_ID_OFFSET if codec is Codec.CONTEXT else 0)
        name = f"{codec.name.lower()}-{language.code}.bin"
        try:
            content = _train(codec.name.lower(), lines, parse_size(size), dictionary_id, label=name)
        except ProtocolError as exc:
            typer.echo(f"error: {language.code}: {exc}", err=True)
            raise typer.Exit(1) from exc
        write_atomically(out / name, content)
        entries.append(_manifest_entry(dictionary_id, codec, language, name, content))
    manifest = {"source": str(corpus.name), "entries": entries}
    write_atomically(out / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    typer.echo(f"wrote {len(entries)} entries and {out / MANIFEST}")


def _manifest_entry(
    dictionary_id: int, codec: Codec, language: Language, name: str, content: bytes
) -> dict[str, object]:
    import hashlib

    return {
        "id": dictionary_id,
        "codec": codec.name.lower(),
        "language": language.code,
        "file": name,
        "bytes": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }


@app.command("list")
def list_dictionaries(
    directory: Annotated[
        Path | None, typer.Option(help="Folder with a manifest (default: the shipped one).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the dictionaries and models a codebook holds, with their hashes.

    Example: vessel-relay dict list --json
    """
    try:
        codebook = load_codebook(directory or shipped_directory())
    except CodebookFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    manifest = codebook.manifest()
    if as_json:
        typer.echo(json.dumps(manifest, indent=1))
        return
    for item in manifest:
        typer.echo(
            f"{item['id']:>5}  {item['codec']:<8} {item['language']:<4} "
            f"{item['bytes']:>8} B  {str(item['sha256'])[:16]}"
        )
