"""Voice notes: wire bytes, speed and intelligibility of each Codec2 mode on crew languages.

Speech: the benchmark synthesises it with espeak-ng (Debian ``espeak-ng``) from the
corpus's messages (``--corpus``, ``LANG.dev.txt``; ``--per-language`` utterances of
``--messages`` consecutive messages each) in every crew language espeak-ng speaks:
English, Burmese, Shan, Thai, Vietnamese, Indonesian. (espeak-ng 1.51 has no Khmer, Lao
or Tagalog voice; those languages are listed as skipped.) Each WAV goes through the
vessel's own path (:mod:`common.speech`: PyAV resampling to 8 kHz mono, the silence
gate), and that 8 kHz speech is the source every mode is scored against.

Per Codec2 mode (:class:`protocol.voice.VoiceMode`, libcodec2 through ``pycodec2``):

- ``wire_bytes_per_10s``: the most a voice note of 10 s adds to a signed, unpadded
  uplink batch (:func:`protocol.batch.encode_batch`) beside a receipt, whatever is said:
  the Codec2 frames, the envelope's map and the framing, with the batch's frame
  *stored* (the encoder keeps a frame stored unless zstd makes it smaller, so no 10 s
  note costs more). A batch's own header and signature (about 85 bytes) are shared by
  everything in the batch and not counted. The table adds ``as sent``: the mean over
  this speech cut into 10 s pieces with the encoder's own choice of frame codec (zstd
  squeezes the pauses and the unused bits of 1300 and 700C frames), and ``raw``: the
  Codec2 frames alone.
- ``estoi``: extended short-time objective intelligibility (``pystoi``, ``extended=True``)
  of the decoded speech against the source, mean over all utterances, after aligning the
  decoded speech to the source by cross-correlation (Codec2 delays speech by a few ms).
- ``encode_x_realtime`` / ``decode_x_realtime``: seconds of speech coded per second of
  this process's CPU time (``time.process_time``, one core), over all utterances.

``default_mode`` is the mode with the best ESTOI among those that send 10 s in at most
1,600 bytes (:data:`BYTES_PER_10S_TARGET`).

Mode 450 is not in ``pycodec2`` (so a vessel cannot send it, and it is not in the JSON):
when Debian's ``c2enc``/``c2dec`` (package ``codec2``) are installed, the table adds it as
a reference row, coded by those tools through files (its speeds include starting them,
so they understate the codec), its bytes the frames plus the envelope's share measured
for 700C.

Usage::

    python benchmarks/voice.py --corpus corpus                 # a table
    python benchmarks/voice.py --corpus corpus --json          # JSON (contract below)

JSON contract: ``{"default_mode": M, "modes": {M: {"wire_bytes_per_10s", "estoi",
"encode_x_realtime", "decode_x_realtime"}, ...}}`` (``M`` as Codec2 names the mode:
``"1200"``, ``"700C"``); the table adds ESTOI per language.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pystoi import stoi
from scipy import signal

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common.codebooks import default_codebook  # noqa: E402
from common.speech import (  # noqa: E402
    CodedSpeech,
    Samples,
    decode_codec2,
    decode_recording,
    encode_codec2,
    trim_silence,
)
from protocol.batch import Direction, encode_batch  # noqa: E402
from protocol.codebook import Codec  # noqa: E402
from protocol.envelopes import BatchAck, Envelope, VoiceNote  # noqa: E402
from protocol.signing import SigningKey  # noqa: E402
from protocol.voice import SAMPLE_RATE_HZ, VoiceMode  # noqa: E402

#: The issue's target: ten seconds home in at most this many bytes on the wire.
BYTES_PER_10S_TARGET = 1600
#: Crew languages (ISO 639-3, as the corpus names them) and espeak-ng's voice for each;
#: ``None``: espeak-ng has no voice for it.
VOICES: dict[str, str | None] = {
    "eng": "en-us",
    "mya": "my",
    "shn": "shn",
    "tha": "th",
    "vie": "vi",
    "ind": "id",
    "khm": None,
    "lao": None,
    "tgl": None,
}
#: How far (ms) the decoded speech may lag or lead the source when aligning.
MAX_LAG_MS = 60
VESSEL_KEY = SigningKey(bytes(range(32)))
BATCH_MINUTES = 29_400_000
STORED_ONLY = (Codec.STORED,)
ALL_CODECS = (Codec.STORED, Codec.ZSTD, Codec.CONTEXT)


class BenchmarkError(Exception):
    """The corpus or espeak-ng is missing, or no language could be synthesised."""


@dataclass
class ModeResult:
    """Figures of one Codec2 mode."""

    mode: VoiceMode
    #: What 10 s cost at most on the wire (see the module docstring).
    wire_bytes_per_10s: int = 0
    #: What each 10 s piece of this speech cost, frame codec chosen by the encoder.
    sent_bytes: list[int] = field(default_factory=list)
    encode_s: float = 0.0
    decode_s: float = 0.0
    speech_s: float = 0.0
    estoi_by_language: dict[str, list[float]] = field(default_factory=dict)

    @property
    def estoi(self) -> float:
        """Mean ESTOI over every utterance of every language."""
        scores = [score for values in self.estoi_by_language.values() for score in values]
        return statistics.fmean(scores)

    def as_json(self) -> dict[str, float | int]:
        """The contract's keys, in the contract's order."""
        return {
            "wire_bytes_per_10s": self.wire_bytes_per_10s,
            "estoi": round(self.estoi, 4),
            "encode_x_realtime": round(self.speech_s / self.encode_s, 1),
            "decode_x_realtime": round(self.speech_s / self.decode_s, 1),
        }


def synthesise(text: str, voice: str) -> bytes:
    """A WAV of ``text`` spoken by espeak-ng's ``voice``."""
    done = subprocess.run(
        ["espeak-ng", "-v", voice, "--stdout", text],
        capture_output=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0 or not done.stdout:
        raise BenchmarkError(f"espeak-ng -v {voice} failed: {done.stderr.decode()[-300:]}")
    return done.stdout


def utterances(
    corpus: Path, per_language: int, messages: int, failed: dict[str, int] | None = None
) -> dict[str, list[Samples]]:
    """Per language, ``per_language`` utterances at 8 kHz, each ``messages`` messages long.

    A chunk of messages that espeak-ng fails to say (1.51 overflows a buffer on some
    Burmese lines) is skipped for the next one and counted in ``failed``.
    """
    if shutil.which("espeak-ng") is None:
        raise BenchmarkError("espeak-ng is not installed: run scripts/install-system-deps")
    found: dict[str, list[Samples]] = {}
    for code, voice in VOICES.items():
        path = corpus / f"{code}.dev.txt"
        if voice is None or not path.is_file():
            continue
        lines = [line for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
        spoken: list[Samples] = []
        for start in range(0, len(lines) - messages + 1, messages):
            if len(spoken) == per_language:
                break
            try:
                wav = synthesise(" ".join(lines[start : start + messages]), voice)
            except BenchmarkError:
                if failed is not None:
                    failed[code] = failed.get(code, 0) + 1
                continue
            spoken.append(trim_silence(decode_recording(wav, limit_s=600)))
        if spoken:
            found[code] = spoken
    if not found:
        raise BenchmarkError(f"no language in {corpus} has a voice and enough lines")
    return found


def align(source: Samples, decoded: Samples) -> tuple[Samples, Samples]:
    """Both signals cut to the same length, the decoded one shifted onto the source."""
    max_lag = SAMPLE_RATE_HZ * MAX_LAG_MS // 1000
    x = source.astype(np.float64)
    y = decoded.astype(np.float64)
    correlation = signal.correlate(y, x, mode="full", method="fft")
    centre = len(x) - 1
    window = correlation[centre - max_lag : centre + max_lag + 1]
    lag = int(np.argmax(window)) - max_lag
    if lag > 0:
        y = y[lag:]
    elif lag < 0:
        x = x[-lag:]
    length = min(len(x), len(y))
    return x[:length].astype(np.int16), y[:length].astype(np.int16)


def ten_second_pieces(speech: dict[str, list[Samples]]) -> list[Samples]:
    """All the speech end to end, cut into whole pieces of 10 s (at least one)."""
    ten_s = SAMPLE_RATE_HZ * 10
    stream = np.concatenate([u for values in speech.values() for u in values])
    if len(stream) < ten_s:
        stream = np.resize(stream, ten_s).astype(np.int16)
    return [stream[start : start + ten_s] for start in range(0, len(stream) - ten_s + 1, ten_s)]


def wire_bytes_per_10s(mode: VoiceMode, piece: Samples, codecs: Sequence[Codec]) -> int:
    """Bytes a voice note of this 10 s piece adds to a signed batch beside a receipt."""
    coded = encode_codec2(piece, mode)
    assert coded.duration_ms == 10_000
    note = VoiceNote(
        message_seq=1,
        crew=1,
        contact=1,
        mode=mode,
        duration_ms=coded.duration_ms,
        frames=coded.frames,
        written_minutes=BATCH_MINUTES,
    )
    ack = BatchAck(up_to=1, written_minutes=BATCH_MINUTES)
    codebook = default_codebook()

    def size(envelopes: Sequence[Envelope]) -> int:
        return len(
            encode_batch(
                envelopes,
                direction=Direction.UPLINK,
                vessel_id=42,
                batch_seq=1,
                batch_minutes=BATCH_MINUTES,
                signing_key=VESSEL_KEY,
                codebook=codebook,
                codecs=codecs,
                pad=False,
            )
        )

    return size([ack, note]) - size([ack])


def measure(speech: dict[str, list[Samples]], modes: Sequence[VoiceMode]) -> list[ModeResult]:
    """Code and score every utterance in every mode."""
    results = []
    pieces = ten_second_pieces(speech)
    for mode in modes:
        result = ModeResult(
            mode,
            wire_bytes_per_10s=max(wire_bytes_per_10s(mode, p, STORED_ONLY) for p in pieces),
            sent_bytes=[wire_bytes_per_10s(mode, p, ALL_CODECS) for p in pieces],
        )
        for code, spoken in speech.items():
            scores = result.estoi_by_language.setdefault(code, [])
            for source in spoken:
                started = time.process_time()
                coded = encode_codec2(source, mode)
                encoded = time.process_time()
                decoded = decode_codec2(CodedSpeech(mode, coded.duration_ms, coded.frames))
                result.encode_s += encoded - started
                result.decode_s += time.process_time() - encoded
                result.speech_s += len(source) / SAMPLE_RATE_HZ
                clean, heard = align(source, decoded)
                scores.append(float(stoi(clean, heard, SAMPLE_RATE_HZ, extended=True)))
        results.append(result)
    return results


def choose_default(results: Sequence[ModeResult]) -> ModeResult:
    """The best ESTOI among the modes that send 10 s in at most the target's bytes."""
    fitting = [r for r in results if r.wire_bytes_per_10s <= BYTES_PER_10S_TARGET]
    if not fitting:
        raise BenchmarkError(f"no mode sends 10 s in {BYTES_PER_10S_TARGET} bytes or fewer")
    return max(fitting, key=lambda r: r.estoi)


def report(results: Sequence[ModeResult]) -> dict[str, object]:
    """The JSON report (the contract of the module docstring)."""
    return {
        "default_mode": choose_default(results).mode.label,
        "modes": {r.mode.label: r.as_json() for r in results},
    }


@dataclass
class Reference450:
    """Mode 450 through Debian's ``c2enc``/``c2dec`` (a table row only, see the docstring)."""

    frames_bytes_per_10s: int = 750  # 250 frames of 18 bits, each in 3 bytes
    encode_s: float = 0.0
    decode_s: float = 0.0
    speech_s: float = 0.0
    estoi_by_language: dict[str, list[float]] = field(default_factory=dict)


def measure_450(speech: dict[str, list[Samples]]) -> Reference450 | None:
    """Mode 450 by Debian's tools, or None when they are not installed."""
    if shutil.which("c2enc") is None or shutil.which("c2dec") is None:
        return None
    found = Reference450()
    with tempfile.TemporaryDirectory() as folder:
        raw, bits, out = (Path(folder) / name for name in ("in.raw", "out.bit", "out.raw"))
        for code, spoken in speech.items():
            scores = found.estoi_by_language.setdefault(code, [])
            for source in spoken:
                raw.write_bytes(source.astype("<i2").tobytes())
                started = time.perf_counter()
                subprocess.run(["c2enc", "450", str(raw), str(bits)], check=True, timeout=60)
                encoded = time.perf_counter()
                subprocess.run(["c2dec", "450", str(bits), str(out)], check=True, timeout=60)
                found.encode_s += encoded - started
                found.decode_s += time.perf_counter() - encoded
                found.speech_s += len(source) / SAMPLE_RATE_HZ
                heard = np.frombuffer(out.read_bytes(), dtype="<i2").astype(np.int16)
                clean, aligned = align(source, heard)
                scores.append(float(stoi(clean, aligned, SAMPLE_RATE_HZ, extended=True)))
    return found


def table(
    results: Sequence[ModeResult],
    speech: dict[str, list[Samples]],
    failed: dict[str, int],
    reference: Reference450 | None = None,
) -> str:
    """The report as a Markdown table, ESTOI per language after the contract's columns."""
    languages = list(speech)
    default = choose_default(results)
    head = ["mode", "bytes/10 s", "as sent", "raw", "ESTOI", "enc ×RT", "dec ×RT", *languages]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        figures = r.as_json()
        cells = [
            r.mode.label + (" (default)" if r is default else ""),
            f"{figures['wire_bytes_per_10s']:,}",
            f"{statistics.fmean(r.sent_bytes):,.0f}",
            f"{250 * r.mode.bytes_per_frame * 40 // r.mode.frame_ms:,}",
            f"{figures['estoi']:.3f}",
            f"{figures['encode_x_realtime']:,.0f}",
            f"{figures['decode_x_realtime']:,.0f}",
            *(f"{statistics.fmean(r.estoi_by_language[code]):.3f}" for code in languages),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    by_label = {r.mode.label: r for r in results}
    if reference is not None and "700C" in by_label:
        r700 = by_label["700C"]
        envelope = r700.wire_bytes_per_10s - 250 * r700.mode.bytes_per_frame
        scores = [v for values in reference.estoi_by_language.values() for v in values]
        cells = [
            "450 (c2enc; not sendable)",
            f"{reference.frames_bytes_per_10s + envelope:,}",
            "",
            f"{reference.frames_bytes_per_10s:,}",
            f"{statistics.fmean(scores):.3f}",
            f"{reference.speech_s / reference.encode_s:,.0f}",
            f"{reference.speech_s / reference.decode_s:,.0f}",
            *(f"{statistics.fmean(reference.estoi_by_language[code]):.3f}" for code in languages),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    counts = ", ".join(f"{code} {len(values)}" for code, values in speech.items())
    seconds = sum(len(u) for values in speech.values() for u in values) / SAMPLE_RATE_HZ
    skipped = ", ".join(code for code, voice in VOICES.items() if voice is None)
    lines += [
        "",
        f"Utterances: {counts} ({seconds:.0f} s of speech). No espeak-ng voice: {skipped}."
        + (
            " espeak-ng failed on (skipped): "
            + ", ".join(f"{code} {count}" for code, count in failed.items())
            + "."
            if failed
            else ""
        ),
        f"Default: {default.mode.label}, the best ESTOI within {BYTES_PER_10S_TARGET:,} "
        "bytes per 10 s.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print a table or JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpus", help="corpus directory")
    parser.add_argument(
        "--per-language", type=int, default=12, help="utterances per language (default 12)"
    )
    parser.add_argument(
        "--messages", type=int, default=3, help="corpus messages per utterance (default 3)"
    )
    parser.add_argument(
        "--modes",
        default=",".join(mode.label for mode in VoiceMode),
        help="Codec2 modes to measure, comma-separated (default: all)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--table-too", action="store_true", help="with --json: the table on stderr as well"
    )
    parser.add_argument(
        "--no-450", action="store_true", help="leave out the table's mode-450 reference row"
    )
    args = parser.parse_args(argv)
    try:
        modes = [VoiceMode.from_label(label) for label in args.modes.split(",")]
        if args.per_language < 1 or args.messages < 1:
            raise BenchmarkError("--per-language and --messages must be at least 1")
        failed: dict[str, int] = {}
        speech = utterances(args.corpus, args.per_language, args.messages, failed)
        results = measure(speech, modes)
        wants_table = args.table_too or not args.json
        reference = measure_450(speech) if wants_table and not args.no_450 else None
        if args.json:
            output = json.dumps(report(results), indent=2)
        else:
            output = table(results, speech, failed, reference)
        if args.table_too and args.json:
            print(table(results, speech, failed, reference), file=sys.stderr)
    except (BenchmarkError, ValueError) as exc:
        print(f"voice benchmark: {exc}", file=sys.stderr)
        return 1
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
