"""Postfix's smtp-sink on loopback, started for a test or a benchmark.

smtp-sink is a small SMTP test server written in C that offers ``PIPELINING`` (aiosmtpd
does not) and spends little CPU, so the relay's SMTP side can be measured and tested
against a real server without a mail system. ``scripts/install-smtp-sink`` puts it in
``.tools/`` (or set ``VESSEL_RELAY_SMTP_SINK`` to another smtp-sink)::

    with SmtpSink.started(dump_dir) as sink:   # 127.0.0.1:sink.port
        ...
        sink.mails()                           # every mail taken, as dumped

Options that make it refuse or drop commands (``-f``, ``-r``, ``-q``; see smtp-sink(1))
go in ``options``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.kit.ports import accepts_connections, free_port

REPOSITORY = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPOSITORY / "scripts" / "install-smtp-sink"


class SmtpSinkMissing(RuntimeError):
    """smtp-sink is not installed and could not be fetched."""


def smtp_sink_path(*, install: bool = True) -> Path:
    """The smtp-sink to run: ``VESSEL_RELAY_SMTP_SINK``, else ``.tools/bin/smtp-sink``
    (fetched by ``scripts/install-smtp-sink`` when missing and ``install``)."""
    named = os.environ.get("VESSEL_RELAY_SMTP_SINK")
    if named:
        return Path(named)
    wrapper = REPOSITORY / ".tools" / "bin" / "smtp-sink"
    if not wrapper.exists() and install:
        done = subprocess.run(
            ["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise SmtpSinkMissing(
                f"scripts/install-smtp-sink failed ({done.returncode}): {done.stderr.strip()}"
            )
    if not wrapper.exists():
        raise SmtpSinkMissing(f"{wrapper} is missing: run scripts/install-smtp-sink")
    return wrapper


class SmtpSink:
    """One smtp-sink process on 127.0.0.1; mails are dumped one file each into ``dump_dir``
    (None: not kept)."""

    def __init__(
        self,
        dump_dir: Path | None = None,
        options: Sequence[str] = (),
        *,
        backlog: int = 256,
    ) -> None:
        self.dump_dir = dump_dir
        self.options = list(options)
        self.backlog = backlog
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    @contextlib.contextmanager
    def started(
        cls, dump_dir: Path | None = None, options: Sequence[str] = ()
    ) -> Iterator[SmtpSink]:
        """A running sink, stopped on leaving."""
        sink = cls(dump_dir, options)
        sink.start()
        try:
            yield sink
        finally:
            sink.stop()

    @property
    def pid(self) -> int:
        """The sink's process id (for its CPU time)."""
        if self.process is None:
            raise RuntimeError("the sink is not running")
        return self.process.pid

    def start(self, timeout_s: float = 10.0) -> None:
        """Start on a free port; retries with another port if one was taken meanwhile."""
        binary = smtp_sink_path()
        command = [str(binary)]
        if os.geteuid() == 0:
            command += ["-u", pwd.getpwuid(os.getuid()).pw_name]
        if self.dump_dir is not None:
            self.dump_dir.mkdir(parents=True, exist_ok=True)
            command += ["-d", f"{self.dump_dir}/%H%M%S."]
        command += self.options
        for _attempt in range(5):
            self.port = free_port()
            process = subprocess.Popen(
                [*command, f"127.0.0.1:{self.port}", str(self.backlog)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    break
                if accepts_connections("127.0.0.1", self.port):
                    self.process = process
                    return
                time.sleep(0.02)
            if process.poll() is None:
                process.kill()
            _out, err = process.communicate()
            last = err.decode(errors="replace").strip()
        raise RuntimeError(f"smtp-sink did not start: {last}")

    def stop(self) -> None:
        """Stop the sink (its dumped mails stay)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()

    def mails(self) -> list[bytes]:
        """Every mail dumped so far (smtp-sink's headers about the session, then the mail)."""
        if self.dump_dir is None:
            raise RuntimeError("this sink keeps no mails (no dump_dir)")
        return [path.read_bytes() for path in sorted(self.dump_dir.iterdir()) if path.is_file()]
