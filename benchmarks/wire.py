"""Wire bytes per message: what each codec costs per language, against baselines and a bound.

For every ``LANG.SPLIT.txt`` in ``--corpus`` (one message per line; ``LANG`` an ISO 639-3
code of :class:`protocol.languages.Language`), the messages become crew messages and go
through the real batch encoder (:func:`protocol.batch.encode_batch`, shipped codebook of
:func:`common.codebooks.default_codebook`, a fixed Ed25519 key). Per language, mean
bytes per message:

- ``raw``: UTF-8 bytes of the text.
- ``single``: a batch of one message, the whole MQTT PUBLISH payload (direction byte,
  CBOR header, frames, padding if the encoder pads, Ed25519 signature), codecs chosen by
  the encoder.
- ``batched``: batches of ``--batch-size`` consecutive messages, zstd-dictionary codec
  only; ``ctx``: the same with the context codec only; ``chosen``: the same with the
  encoder's own per-frame choice (stored, zstd or context).
- ``zstd19`` / ``brotli11``: each bare text compressed alone (standard zstd frame at level
  19 without dictionary; brotli quality 11).
- ``ideal``: the ideal code length (``-log2 p``, in bytes) of the texts under an order-5
  context model trained here on ``LANG.train.txt`` of the same corpus, and ``header``: the
  rest of a chosen batch that is not text (header, frame framing, signature, and the
  envelope skeleton coded alone with the context coder). ``bound = ideal + header``; the
  issue's target is ``chosen / bound <= 1.15`` for every language.

Speed (``enc_per_s`` / ``dec_per_s``): the context codec alone
(:func:`protocol.context_model.encode_frame` / ``decode_frame``) over the whole split in
batches, from a **cold start by fresh model load**: each direction loads the model from its
shipped bytes (empty caches) and the load time is included. CPU time of this process
(``time.process_time``, one core), best of three cold runs.

Memory: a fresh child process loads every context model of the codebook and codes the
split of every language (filling the coding caches as the agent would); the figure is
its RSS growth (VmRSS, Linux) and the peak of Python/numpy allocations (tracemalloc,
measured in a second child).

Lone messages (``lone_short_*``): each line of at most :data:`LONE_SHORT_CHARS`
characters as a batch of one, the way the compact frame sends it
(:func:`protocol.compact.encode_compact`: 8-byte tag under the link keys of
:data:`VESSEL_KEY` and :data:`SHORE_KEY`, padded to whole 50-byte SBD credits).
``lone_short_median`` is the median of those wire bytes, ``lone_short_median_unpadded``
the same before padding, ``lone_short_one_credit`` the share that fits one credit
(50 bytes) and ``lone_short_lines`` how many lines were that short (``None`` figures when
none were). Issue 25's target: ``lone_short_median <= 50`` for eng, ind, vie, mya and tha.

Only languages with at least 100 lines count toward the averages.

Usage::

    python benchmarks/wire.py --corpus corpus --batch-size 20          # a table
    python benchmarks/wire.py --corpus corpus --batch-size 20 --json   # JSON
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import brotli
import zstandard

from common.codebooks import default_codebook
from protocol import context_model
from protocol.batch import Direction, encode_batch
from protocol.cbor import dumps
from protocol.codebook import Codebook, Codec
from protocol.compact import PAD_QUANTUM, LinkKeys, encode_compact
from protocol.envelopes import CrewMessage, to_skeleton
from protocol.languages import Language
from protocol.signing import SigningKey
from protocol.skeleton import to_columns

#: Languages with fewer lines are shown but left out of the averages.
MIN_LINES_FOR_AVERAGE = 100
IDEAL_ORDER = 5
VESSEL_KEY = SigningKey.from_seed(bytes(range(32)))
SHORE_KEY = SigningKey.from_seed(bytes(range(32, 64)))
VESSEL_ID = 4242
LINK_KEYS = LinkKeys.for_vessel(VESSEL_ID, VESSEL_KEY, SHORE_KEY.verify_key)
#: Lines of at most this many characters count as short for the lone-message figures.
LONE_SHORT_CHARS = 40
BATCH_MINUTES = 29_400_000
ALL_CODECS = (Codec.STORED, Codec.ZSTD, Codec.CONTEXT)
#: Whether encode_batch pads batches (and so takes ``pad``); unpadded sizes are reported too.
PADS = "pad" in inspect.signature(encode_batch).parameters
#: Cold runs per language for the speed figures (the best counts).
COLD_RUNS = 3
DECODE_LIMITS = {"max_texts": 4096, "max_chars": 16_384, "max_skeleton_bytes": 0}


class CorpusError(Exception):
    """The corpus directory is missing or holds no ``LANG.SPLIT.txt`` file we can use."""


@dataclass
class LanguageResult:
    """Per-language figures (bytes are means per message)."""

    lines: int
    raw: float
    single: float
    batched: float
    ctx: float
    chosen: float
    zstd19: float
    brotli11: float
    extra: dict[str, float | int | bool | None] = field(default_factory=dict)

    def as_json(self) -> dict[str, float | int | bool | None]:
        """The JSON object of one language (contract keys first, then the extra keys)."""
        main: dict[str, float | int | bool | None] = {
            "lines": self.lines,
            "raw": round(self.raw, 2),
            "single": round(self.single, 2),
            "batched": round(self.batched, 2),
            "zstd19": round(self.zstd19, 2),
            "brotli11": round(self.brotli11, 2),
            "ctx": round(self.ctx, 2),
            "chosen": round(self.chosen, 2),
        }
        return {**main, **self.extra}


def read_lines(path: Path) -> list[str]:
    """The non-empty lines of a corpus file (one message per line)."""
    return [line for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def find_languages(corpus: Path, split: str) -> dict[Language, Path]:
    """The ``LANG.SPLIT.txt`` files of ``corpus`` whose ``LANG`` we know, by language."""
    if not corpus.is_dir():
        raise CorpusError(f"corpus directory {corpus} does not exist; pass --corpus DIR")
    found: dict[Language, Path] = {}
    for path in sorted(corpus.glob(f"*.{split}.txt")):
        code = path.name[: -len(f".{split}.txt")]
        try:
            language = Language.from_code(code)
        except ValueError:
            print(f"skipping {path.name}: {code!r} is not a known language", file=sys.stderr)
            continue
        found[language] = path
    if not found:
        raise CorpusError(f"{corpus} holds no LANG.{split}.txt file of a known language")
    return found


def messages(language: Language, texts: Sequence[str], first_seq: int) -> list[CrewMessage]:
    """Crew messages carrying ``texts``: a few crew members and contacts, minutes apart."""
    return [
        CrewMessage(
            message_seq=first_seq + index,
            crew=(first_seq + index) % 30,
            contact=(first_seq + index) % 3,
            written_minutes=BATCH_MINUTES - 7 * (len(texts) - index),
            lang=language,
            body=text,
        )
        for index, text in enumerate(texts)
    ]


def wire_bytes(
    envelopes: Sequence[CrewMessage],
    codebook: Codebook,
    codecs: Sequence[Codec],
    seq: int,
    *,
    pad: bool | None = None,
) -> bytes:
    """One signed uplink batch as encode_batch makes it (``pad=None``: its default).

    ``seq`` counts from 0 here; batches are numbered from 1 on the wire."""
    options: dict[str, bool] = {} if pad is None else {"pad": pad}
    encoder: Callable[..., bytes] = encode_batch  # ``pad`` only where the encoder pads
    return encoder(
        envelopes,
        direction=Direction.UPLINK,
        vessel_id=VESSEL_ID,
        batch_seq=seq + 1,
        batch_minutes=BATCH_MINUTES,
        signing_key=VESSEL_KEY,
        codebook=codebook,
        codecs=codecs,
        **options,
    )


def lone_short(
    language: Language, texts: Sequence[str], codebook: Codebook
) -> dict[str, float | int | None]:
    """Wire bytes of each short line alone in a compact frame: medians, share in one credit."""
    padded: list[int] = []
    unpadded: list[int] = []
    for index, text in enumerate(texts):
        if len(text) > LONE_SHORT_CHARS:
            continue
        envelopes = messages(language, [text], index)
        for sizes, quantum in ((padded, PAD_QUANTUM), (unpadded, None)):
            frame = encode_compact(
                envelopes,
                keys=LINK_KEYS,
                batch_seq=index + 1,
                batch_minutes=BATCH_MINUTES,
                codebook=codebook,
                pad_quantum=quantum,
            )
            sizes.append(len(frame))
    if not padded:
        return dict.fromkeys(
            ("lone_short_median", "lone_short_median_unpadded", "lone_short_one_credit"), None
        ) | {"lone_short_lines": 0}
    return {
        "lone_short_lines": len(padded),
        "lone_short_median": statistics.median(padded),
        "lone_short_median_unpadded": statistics.median(unpadded),
        "lone_short_one_credit": round(sum(n <= PAD_QUANTUM for n in padded) / len(padded), 3),
    }


def skeleton_bytes(envelopes: Sequence[CrewMessage]) -> bytes:
    """The envelope skeleton of a batch, as encode_batch builds it."""
    return dumps(to_columns([to_skeleton(envelope, BATCH_MINUTES) for envelope in envelopes]))


def frame_payload_bytes(batch: bytes) -> int:
    """Bytes of a batch's frame payloads (the rest is header, framing, padding, signature)."""
    from protocol.batch import read_batch_header

    return sum(len(frame.payload) for frame in read_batch_header(batch).frames)


def load_context_model(codebook: Codebook, language: Language) -> context_model.ContextModel:
    """A fresh (cold) context model of ``language`` from the codebook's bytes."""
    entry = codebook.newest(language, Codec.CONTEXT)
    if entry is None:
        raise CorpusError(f"the codebook has no context model for {language.code}")
    return context_model.ContextModel.from_bytes(entry.content)


def chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    """Consecutive runs of ``size`` items (the last may be shorter)."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def cold_speed(
    codebook: Codebook, language: Language, texts: Sequence[str], batch_size: int
) -> dict[str, float]:
    """Context-codec messages per CPU second, each direction from a fresh model load.

    Best of :data:`COLD_RUNS` cold runs (each with its own fresh load), to keep other
    processes' load on a shared machine out of the figure.
    """
    clock: Callable[[], float] = time.process_time
    batches = chunks(texts, batch_size)
    best_load = best_encode = best_decode = float("inf")
    for _ in range(COLD_RUNS):
        # As in a fresh process: what earlier languages left (trained models, caches of
        # the shared codebook) is set aside so that the collector does not walk it.
        gc.collect()
        gc.freeze()
        start = clock()
        model = load_context_model(codebook, language)
        loaded = clock()
        payloads = [context_model.encode_frame(model, b"", batch) for batch in batches]
        encoded = clock()
        model = load_context_model(codebook, language)
        for payload in payloads:
            context_model.decode_frame(model, payload, **DECODE_LIMITS)
        decoded = clock()
        gc.unfreeze()
        best_load = min(best_load, loaded - start)
        best_encode = min(best_encode, encoded - start)
        best_decode = min(best_decode, decoded - encoded)
    count = len(texts)
    return {
        "load_ms": round(1000 * best_load, 1),
        "enc_per_s": round(count / max(best_encode, 1e-9)),
        "dec_per_s": round(count / max(best_decode, 1e-9)),
    }


def measure_language(
    language: Language,
    texts: list[str],
    codebook: Codebook,
    batch_size: int,
    train: list[str] | None,
) -> LanguageResult:
    """All figures of one language."""
    count = len(texts)
    raw = sum(len(text.encode("utf-8")) for text in texts)
    singles = unpadded_singles = 0
    for index, text in enumerate(texts):
        envelopes = messages(language, [text], index)
        singles += len(wire_bytes(envelopes, codebook, ALL_CODECS, index))
        if PADS:
            unpadded_singles += len(wire_bytes(envelopes, codebook, ALL_CODECS, index, pad=False))
    totals = {"batched": 0, "ctx": 0, "chosen": 0, "chosen_unpadded": 0, "header": 0}
    ideal_bits = 0.0
    ideal_model = context_model.train_context_model(train, order=IDEAL_ORDER) if train else None
    shipped = load_context_model(codebook, language)
    for seq, batch in enumerate(chunks(texts, batch_size)):
        envelopes = messages(language, batch, seq * batch_size)
        totals["batched"] += len(wire_bytes(envelopes, codebook, (Codec.ZSTD,), seq))
        totals["ctx"] += len(wire_bytes(envelopes, codebook, (Codec.CONTEXT,), seq))
        chosen = wire_bytes(envelopes, codebook, ALL_CODECS, seq)
        totals["chosen"] += len(chosen)
        unpadded = wire_bytes(envelopes, codebook, ALL_CODECS, seq, pad=False) if PADS else chosen
        totals["chosen_unpadded"] += len(unpadded)
        skeleton_alone = context_model.encode_frame(shipped, skeleton_bytes(envelopes), [])
        totals["header"] += len(unpadded) - frame_payload_bytes(unpadded) + len(skeleton_alone)
        if ideal_model is not None:
            ideal_bits += context_model.ideal_code_length_bits(ideal_model, batch)
    zstd19 = zstandard.ZstdCompressor(level=19)
    zstd_total = sum(len(zstd19.compress(text.encode("utf-8"))) for text in texts)
    brotli_total = sum(len(brotli.compress(text.encode("utf-8"), quality=11)) for text in texts)

    per = {key: value / count for key, value in totals.items()}
    extra: dict[str, float | int | bool | None] = {}
    if PADS:
        extra["single_unpadded"] = round(unpadded_singles / count, 2)
        extra["chosen_unpadded"] = round(per["chosen_unpadded"], 2)
    extra["header"] = round(per["header"], 2)
    if ideal_model is not None:
        ideal = ideal_bits / 8 / count
        bound = ideal + per["header"]
        extra["ideal"] = round(ideal, 2)
        extra["bound"] = round(bound, 2)
        extra["chosen_over_bound"] = round(per["chosen_unpadded"] / bound, 3)
        entry = codebook.newest(language, Codec.CONTEXT)
        extra["ideal_model_is_shipped"] = bool(
            entry is not None and entry.content == ideal_model.to_bytes()
        )
    else:
        extra.update(ideal=None, bound=None, chosen_over_bound=None)
    extra["chosen_over_raw"] = round(per["chosen_unpadded"] / (raw / count), 3)
    extra["ctx_over_batched"] = round(per["ctx"] / per["batched"], 3)
    extra["chosen_over_batched"] = round(per["chosen"] / per["batched"], 3)
    extra.update(lone_short(language, texts, codebook))
    extra.update(cold_speed(codebook, language, texts, batch_size))
    entry = codebook.newest(language, Codec.CONTEXT)
    extra["model_file_bytes"] = len(entry.content) if entry else 0
    extra["model_contexts"] = shipped.context_count
    return LanguageResult(
        lines=count,
        raw=raw / count,
        single=singles / count,
        batched=per["batched"],
        ctx=per["ctx"],
        chosen=per["chosen"],
        zstd19=zstd_total / count,
        brotli11=brotli_total / count,
        extra=extra,
    )


# --- memory (in a fresh child process) ---------------------------------------------------


def _rss_kib() -> int | None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def memory_probe(corpus: Path, split: str, batch_size: int, how: str) -> dict[str, float | None]:
    """Load every context model and code the split with each; report the memory it took."""
    codebook = default_codebook()
    texts = {lang: read_lines(path) for lang, path in find_languages(corpus, split).items()}
    if how == "tracemalloc":
        tracemalloc.start()
    before = _rss_kib()
    models = {
        entry.language: context_model.ContextModel.from_bytes(entry.content)
        for entry in codebook.entries()
        if entry.codec is Codec.CONTEXT
    }
    for language, model in models.items():
        for batch in chunks(texts.get(language, []), batch_size):
            payload = context_model.encode_frame(model, b"", batch)
            context_model.decode_frame(model, payload, **DECODE_LIMITS)
    after = _rss_kib()
    result: dict[str, float | None] = {"models": len(models)}
    if how == "tracemalloc":
        current, peak = tracemalloc.get_traced_memory()
        result.update(traced_mb=round(current / 2**20, 1), traced_peak_mb=round(peak / 2**20, 1))
    elif before is not None and after is not None:
        result["rss_growth_mb"] = round((after - before) / 1024, 1)
    return result


def measure_memory(corpus: Path, split: str, batch_size: int) -> dict[str, float | None]:
    """Run :func:`memory_probe` in fresh processes (RSS, then tracemalloc)."""
    result: dict[str, float | None] = {}
    for how in ("rss", "tracemalloc"):
        command = [sys.executable, __file__, "--corpus", str(corpus), "--split", split]
        command += ["--batch-size", str(batch_size), "--memory-probe", how]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        result.update(json.loads(done.stdout))
    return result


# --- report ------------------------------------------------------------------------------


def averages(results: dict[Language, LanguageResult]) -> dict[str, float | None]:
    """Means over languages with at least MIN_LINES_FOR_AVERAGE lines."""
    counted = [r for r in results.values() if r.lines >= MIN_LINES_FOR_AVERAGE]

    def mean(key: str) -> float | None:
        values = [r.extra[key] for r in counted]
        numbers = [float(v) for v in values if isinstance(v, int | float)]
        return round(statistics.fmean(numbers), 3) if numbers else None

    def worst(key: str) -> float | None:
        numbers = [float(v) for r in counted if isinstance(v := r.extra[key], int | float)]
        return round(max(numbers), 3) if numbers else None

    def slowest(key: str) -> float | None:
        numbers = [float(v) for r in counted if isinstance(v := r.extra[key], int | float)]
        return min(numbers) if numbers else None

    return {
        "languages_counted": len(counted),
        "lone_short_median_max": worst("lone_short_median"),
        "chosen_over_raw_mean": mean("chosen_over_raw"),
        "chosen_over_raw_max": worst("chosen_over_raw"),
        "chosen_over_bound_max": worst("chosen_over_bound"),
        "ctx_over_batched_mean": mean("ctx_over_batched"),
        "chosen_over_batched_mean": mean("chosen_over_batched"),
        "enc_per_s_min": slowest("enc_per_s"),
        "dec_per_s_min": slowest("dec_per_s"),
    }


def run(
    corpus: Path, split: str, batch_size: int, languages: Sequence[str] | None, memory: bool
) -> dict[str, object]:
    """Measure every language of the corpus split; the JSON report."""
    if batch_size < 1:
        raise CorpusError(f"--batch-size must be at least 1, not {batch_size}")
    codebook = default_codebook()
    files = find_languages(corpus, split)
    if languages:
        wanted = {Language.from_code(code) for code in languages}
        files = {lang: path for lang, path in files.items() if lang in wanted}
    results: dict[Language, LanguageResult] = {}
    for language, path in files.items():
        texts = read_lines(path)
        if not texts:
            continue
        train_path = corpus / f"{language.code}.train.txt"
        train = read_lines(train_path) if train_path.is_file() else None
        results[language] = measure_language(language, texts, codebook, batch_size, train)
    report: dict[str, object] = {
        "languages": {lang.code: result.as_json() for lang, result in results.items()},
        "batch_size": batch_size,
        "split": split,
        "padded": PADS,
        "speed": "context codec, cold start by fresh model load (included), CPU time, best of 3",
        "averages": averages(results),
    }
    if memory:
        report["memory"] = measure_memory(corpus, split, batch_size)
    return report


def _fmt(value: object, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def table(report: dict[str, object]) -> str:
    """The report as a Markdown table and a few lines of summary."""
    languages = report["languages"]
    assert isinstance(languages, dict)
    columns = [
        ("lang", None),
        ("lines", "lines"),
        ("raw", "raw"),
        ("single", "single"),
        ("batched", "batched"),
        ("ctx", "ctx"),
        ("chosen", "chosen"),
        ("zstd19", "zstd19"),
        ("brotli11", "brotli11"),
        ("ideal", "ideal"),
        ("header", "header"),
        ("lone<=40", "lone_short_median"),
        ("chosen/raw", "chosen_over_raw"),
        ("chosen/bound", "chosen_over_bound"),
        ("ctx/zstd", "ctx_over_batched"),
        ("enc/s", "enc_per_s"),
        ("dec/s", "dec_per_s"),
    ]
    lines = [
        "| " + " | ".join(name for name, _ in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for code, row in languages.items():
        cells = [code]
        for name, key in columns[1:]:
            digits = 3 if "/" in name else 1
            cells.append(_fmt(row.get(key), digits))
        lines.append("| " + " | ".join(cells) + " |")
    out = "\n".join(lines)
    out += (
        f"\n\nbatch size {report['batch_size']}, split {report['split']}; bytes per message; "
        "batched/ctx/chosen/single: whole signed batches"
        + (" (padded as encode_batch pads; ratios use unpadded sizes)" if report["padded"] else "")
        + f"; speed: {report['speed']}"
    )
    averages_ = report["averages"]
    assert isinstance(averages_, dict)
    out += "\n" + "; ".join(f"{key} {_fmt(value, 3)}" for key, value in averages_.items())
    memory = report.get("memory")
    if isinstance(memory, dict):
        out += "\nmemory, all context models loaded and used: " + ", ".join(
            f"{key} {_fmt(value)}" for key, value in memory.items()
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, measure, print a table or JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True, help="directory of LANG.SPLIT.txt")
    parser.add_argument("--batch-size", type=int, required=True, help="messages per batch")
    parser.add_argument("--split", default="dev", help="which split to measure (default: dev)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--languages", nargs="*", help="only these ISO 639-3 codes")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument("--memory-probe", choices=("rss", "tracemalloc"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.memory_probe:
            probe = memory_probe(args.corpus, args.split, args.batch_size, args.memory_probe)
            print(json.dumps(probe))
            return 0
        report = run(
            args.corpus, args.split, args.batch_size, args.languages, memory=not args.no_memory
        )
    except (CorpusError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=1) if args.json else table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
