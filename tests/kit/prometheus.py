"""A real Prometheus for tests: scrapes given targets on loopback, loads the shipped rules.

    with PrometheusServer(tmp_path, targets=["127.0.0.1:9101"], rule_files=[ALERTS]) as prom:
        await prom.wait_for_scrapes(3)
        prom.query('sum(rate(vessel_relay_batches_total[1m]))')   # the API's "data"

Debian's ``prometheus`` package (2.42) brings the server and ``promtool``; the server runs
with its own TSDB directory and a free port, and is stopped by its PID.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from tests.kit.ports import free_port
from tests.kit.wait import NeverHappened, eventually, eventually_blocking

INSTALL_HINT = "run scripts/install-system-deps (as root or with sudo) to install it"
#: The scrape job the shipped alert rules expect (deploy/prometheus/prometheus.yml).
JOB = "vessel-relay"


class PrometheusMissing(RuntimeError):
    """The `prometheus` or `promtool` binary is not installed."""


class PrometheusFailed(RuntimeError):
    """Prometheus exited, did not become ready, or refused a query; with its log."""


def find_binary(name: str) -> str:
    """Path of ``prometheus`` or ``promtool``, or :class:`PrometheusMissing`."""
    path = shutil.which(name)
    if path is None:
        raise PrometheusMissing(f"`{name}` is not installed: {INSTALL_HINT}")
    return path


class PrometheusServer:
    """One Prometheus on 127.0.0.1 scraping ``targets`` every ``scrape_interval_s``."""

    host = "127.0.0.1"

    def __init__(
        self,
        directory: Path,
        *,
        targets: Sequence[str],
        rule_files: Sequence[Path] = (),
        scrape_interval_s: int = 1,
        start_timeout_s: float = 30.0,
    ) -> None:
        self.directory = directory
        self.targets = list(targets)
        self.rule_files = list(rule_files)
        self.scrape_interval_s = scrape_interval_s
        self.start_timeout_s = start_timeout_s
        self.port = free_port(self.host)
        self.config_path = directory / "prometheus.yml"
        self.log_path = directory / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _write_config(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        targets = ", ".join(f'"{target}"' for target in self.targets)
        rules = "".join(f'  - "{path}"\n' for path in self.rule_files)
        self.config_path.write_text(
            "global:\n"
            f"  scrape_interval: {self.scrape_interval_s}s\n"
            f"  evaluation_interval: {self.scrape_interval_s}s\n"
            + (f"rule_files:\n{rules}" if rules else "")
            + "scrape_configs:\n"
            f"  - job_name: {JOB}\n"
            f"    static_configs:\n      - targets: [{targets}]\n",
            encoding="utf-8",
        )

    def start(self) -> None:
        """Start Prometheus and return once ``/-/ready`` answers 200."""
        self._write_config()
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                [
                    find_binary("prometheus"),
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.directory / 'tsdb'}",
                    f"--web.listen-address={self.host}:{self.port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._process = process

        def ready() -> bool:
            if process.poll() is not None:
                raise PrometheusFailed(
                    f"prometheus exited with status {process.returncode}; its log:\n{self.log()}"
                )
            try:
                return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            eventually_blocking(ready, self.start_timeout_s, 0.1)
        except NeverHappened:
            self.stop()
            raise PrometheusFailed(f"prometheus was not ready; its log:\n{self.log()}") from None

    def stop(self, timeout_s: float = 15.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/{path}``; its ``data``, or :class:`PrometheusFailed` with the error."""
        answer = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = answer.json()
        if body.get("status") != "success":
            raise PrometheusFailed(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> Any:
        """An instant query's ``data`` (``resultType`` and ``result``)."""
        return self.api("query", query=expr)

    async def wait_for_scrapes(self, count: int, timeout_s: float = 60.0) -> None:
        """Return once every target has been scraped successfully ``count`` times."""

        def scraped() -> bool:
            result = self.query(f"sum_over_time(up{{job='{JOB}'}}[5m])")["result"]
            return len(result) == len(self.targets) and all(
                float(series["value"][1]) >= count for series in result
            )

        await eventually(scraped, timeout_s, 0.5, what=f"{count} scrapes", explain=self.log)
