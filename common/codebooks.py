"""The dictionaries and models shipped with the package, loaded into a Codebook.

``protocol/data/manifest.json`` lists each entry (id, codec, language, file, sha256);
``vessel-relay dict train-defaults`` rebuilds them from the public corpus.
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import resources
from pathlib import Path

from protocol.codebook import Codebook, CodebookEntry, Codec
from protocol.languages import Language

MANIFEST = "manifest.json"


class CodebookFileError(Exception):
    """A dictionary file or manifest is missing or does not match its hash."""


def load_codebook(directory: Path) -> Codebook:
    """Load every entry listed in ``directory/manifest.json``, checking hashes."""
    manifest_path = directory / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CodebookFileError(
            f"{manifest_path} is missing; run 'vessel-relay dict train-defaults'"
        ) from None
    entries = []
    for item in manifest["entries"]:
        path = directory / item["file"]
        content = path.read_bytes()
        digest = hashlib.sha256(content).hexdigest()
        if digest != item["sha256"]:
            raise CodebookFileError(
                f"{path} has hash {digest[:12]}, but the manifest says {item['sha256'][:12]}"
            )
        entries.append(
            CodebookEntry(
                dictionary_id=int(item["id"]),
                codec=Codec[item["codec"].upper()],
                language=Language.from_code(item["language"]),
                content=content,
            )
        )
    return Codebook(entries)


def shipped_directory() -> Path:
    """Where the package's own dictionaries live."""
    return Path(str(resources.files("protocol") / "data"))


@functools.cache
def default_codebook() -> Codebook:
    """The shipped codebook (loaded once per process)."""
    return load_codebook(shipped_directory())
