"""The crew page's weight: bytes of a cold first load and of a warm load, per page and language.

The agent's web app (:func:`shipboard.http_api.create_app`, under uvicorn on 127.0.0.1 and
a free port) serves an outbox in a temporary directory with one crew member per page
language, each with a contact (their mother) and one message written home. Headless
Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright) at 360x740 signs each of
them in, then loads every page twice:

- **cold**: the browser's cache emptied first (CDP ``Network.clearBrowserCache``), as a
  phone that never opened the page (the sign-in cookie is kept);
- **warm**: the same page again straight after, as a phone that has it cached.

**Bytes are as transferred**: for every response the page loads (document, style sheet,
fonts, icons), Chromium's own count of the bytes it received for it, headers plus encoded
body (CDP ``Network.loadingFinished`` ``encodedDataLength``); a response served from the
browser's cache counts 0. A load ends when the page's ``load`` event has fired and its
fonts are ready (``document.fonts.ready``). ``requests`` is how many requests the cold
load made.

``--lighthouse`` also runs Lighthouse (``npx lighthouse``, npm ``lighthouse`` 12.2.3: later
releases need Node 22) on each page, mobile, simulated 3G (300 ms RTT, 700 kbit/s down,
CPU slowed 4x), with ``CHROME_PATH=/usr/bin/chromium``, and adds its performance score and
LCP (``{"lighthouse": {PAGE: {LANG: {"performance", "lcp_ms"}}}}``).

Usage::

    python benchmarks/crew_page.py                       # a table
    python benchmarks/crew_page.py --json                # {"pages": {PAGE: {LANG: {...}}}}
    python benchmarks/crew_page.py --lang mya --page home --lighthouse
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from playwright.sync_api import BrowserContext, CDPSession, Page, sync_playwright  # noqa: E402

from common.codebooks import default_codebook  # noqa: E402
from protocol.languages import Language  # noqa: E402
from shipboard.intake import Intake  # noqa: E402
from shipboard.outbox import Outbox  # noqa: E402
from shipboard.web.i18n import PAGE_LANGUAGES  # noqa: E402
from tests.kit.agent_web import agent_web_server  # noqa: E402
from vessel_relay.demo.defaults import demo_ship_config  # noqa: E402

#: Page name -> path. The issue's four first; then the sign-in page, quick messages, SOS.
PAGES: dict[str, str] = {
    "home": "/home",
    "write": "/write",
    "inbox": "/inbox",
    "report": "/report",
    "quick": "/quick",
    "sos": "/sos",
    "login": "/login",
}
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 360, "height": 740}
PIN = "24681357"
#: The issue's targets (bytes, 1 KB = 1,000 B): cold first load per language, warm load.
COLD_TARGETS = {Language.MYA: 70_000, Language.KHM: 50_000, Language.LAO: 50_000}
COLD_TARGETS |= {Language.THA: 50_000, Language.ENG: 25_000}
WARM_TARGET = 10_000
#: Lighthouse: the release that runs on Node 20, and simulated 3G.
LIGHTHOUSE = "lighthouse@12.2.3"
LIGHTHOUSE_3G = (
    "--throttling-method=simulate",
    "--throttling.rttMs=300",
    "--throttling.throughputKbps=700",
    "--throttling.cpuSlowdownMultiplier=4",
)
#: What each crew member has written home (so that "write" lists a message).
FIRST_MESSAGE = "All is well."


@dataclass(frozen=True, slots=True)
class Load:
    """One page load: bytes received (headers + encoded bodies) and requests made."""

    transferred_bytes: int
    requests: int


@contextmanager
def crew_site(langs: Sequence[Language]) -> Iterator[tuple[str, dict[Language, int]]]:
    """The agent's web app on loopback; yields its URL and each language's crew number."""
    with tempfile.TemporaryDirectory(prefix="crew-page-") as data:
        config = demo_ship_config(Path(data))
        outbox = Outbox.open(config.database_path, config.vessel.vessel_id)
        intake = Intake(config, outbox, default_codebook())
        crew: dict[Language, int] = {}
        for number, lang in enumerate(langs, start=1):
            member, _ = intake.register.add(
                name=f"Crew {number}",
                document=f"SB-{number}",
                nationality="MM",
                language=lang,
                now=intake.clock(),
            )
            intake.register.choose_pin(member.crew, PIN, None, intake.clock())
            contact = intake.register.add_contact(
                member.crew,
                channel="sms",
                address="+959123456789",
                name="Mother",
                language=lang,
                now=intake.clock(),
            )
            intake.send_message(member.crew, contact.contact, FIRST_MESSAGE, lang, None)
            crew[lang] = member.crew
        try:
            with agent_web_server(intake) as url:
                yield url, crew
        finally:
            outbox.close()


class Meter:
    """Counts what one tab receives, from Chromium's network events (CDP)."""

    def __init__(self, cdp: CDPSession) -> None:
        self.cdp = cdp
        self.received: dict[str, float] = {}
        self.requested: set[str] = set()
        self.from_cache: set[str] = set()
        cdp.on("Network.requestWillBeSent", self._sent)
        cdp.on("Network.requestServedFromCache", self._cached)
        cdp.on("Network.loadingFinished", self._finished)
        cdp.on("Network.loadingFailed", self._failed)
        cdp.send("Network.enable")

    def _sent(self, event: dict[str, Any]) -> None:
        self.requested.add(event["requestId"])

    def _cached(self, event: dict[str, Any]) -> None:
        self.from_cache.add(event["requestId"])

    def _finished(self, event: dict[str, Any]) -> None:
        self.received[event["requestId"]] = float(event["encodedDataLength"])

    def _failed(self, event: dict[str, Any]) -> None:
        self.received[event["requestId"]] = 0.0

    def reset(self) -> None:
        self.received.clear()
        self.requested.clear()
        self.from_cache.clear()

    def load(self, tab: Page, url: str) -> Load:
        """Load ``url`` and count what came over the network for it."""
        self.reset()
        tab.goto(url, wait_until="load")
        tab.evaluate("document.fonts.ready.then(() => true)")
        tab.wait_for_load_state("networkidle")
        network = self.requested - self.from_cache
        return Load(
            transferred_bytes=round(sum(self.received.get(r, 0.0) for r in self.requested)),
            requests=len(network),
        )


def sign_in(tab: Page, base: str, crew: int) -> None:
    tab.goto(f"{base}/login")
    tab.fill("input[name=crew]", str(crew))
    tab.fill("input[name=pin]", PIN)
    tab.click("form[action='/login'] button")
    tab.wait_for_url("**/home")


def measure(
    pages: Sequence[str], langs: Sequence[Language], lighthouse: bool = False
) -> dict[str, Any]:
    """The report: ``{"pages": {PAGE: {LANG: {"cold_bytes", "warm_bytes", "requests"}}}}``
    (and ``"lighthouse"`` when asked)."""
    report: dict[str, dict[str, dict[str, Any]]] = {"pages": {name: {} for name in pages}}
    audits: dict[str, dict[str, dict[str, float]]] = {name: {} for name in pages}
    with crew_site(langs) as (base, crew), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for lang in langs:
                context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
                try:
                    tab = context.new_page()
                    meter = Meter(context.new_cdp_session(tab))
                    for name in pages:
                        if name == "login":  # signed out, the language chosen on the page
                            context.clear_cookies()
                            tab.goto(f"{base}/lang/{lang.code}?next=/home")
                        else:
                            if not _signed_in(context):
                                sign_in(tab, base, crew[lang])
                        meter.cdp.send("Network.clearBrowserCache")
                        cold = meter.load(tab, base + PAGES[name])
                        warm = meter.load(tab, base + PAGES[name])
                        report["pages"][name][lang.code] = {
                            "cold_bytes": cold.transferred_bytes,
                            "warm_bytes": warm.transferred_bytes,
                            "requests": cold.requests,
                        }
                        if lighthouse:
                            audits[name][lang.code] = run_lighthouse(
                                base + PAGES[name], _cookie_header(context)
                            )
                finally:
                    context.close()
        finally:
            browser.close()
    result: dict[str, Any] = dict(report)
    if lighthouse:
        result["lighthouse"] = audits
    return result


def _signed_in(context: BrowserContext) -> bool:
    return any(cookie.get("name") == "vr_session" for cookie in context.cookies())


def _cookie_header(context: BrowserContext) -> str:
    return "; ".join(f"{c.get('name')}={c.get('value')}" for c in context.cookies())


def run_lighthouse(url: str, cookie: str) -> dict[str, float]:
    """Lighthouse's mobile performance score and LCP for ``url`` on simulated 3G."""
    npx = shutil.which("npx")
    if npx is None:
        raise RuntimeError("--lighthouse needs npx (Node.js 20 and npm)")
    with tempfile.TemporaryDirectory(prefix="lighthouse-") as scratch:
        out = Path(scratch) / "report.json"
        command = [
            npx,
            "--yes",
            LIGHTHOUSE,
            url,
            "--only-categories=performance",
            "--form-factor=mobile",
            *LIGHTHOUSE_3G,
            "--output=json",
            f"--output-path={out}",
            "--quiet",
            "--chrome-flags=--headless=new --no-sandbox --disable-gpu",
            f"--extra-headers={json.dumps({'Cookie': cookie})}",
        ]
        environment = dict(os.environ, CHROME_PATH=CHROMIUM)
        done = subprocess.run(
            command, env=environment, capture_output=True, text=True, timeout=300, check=False
        )
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"lighthouse failed on {url}: {done.stderr.strip()[-500:]}")
        lhr = json.loads(out.read_text())
    return {
        "performance": float(lhr["categories"]["performance"]["score"]),
        "lcp_ms": round(float(lhr["audits"]["largest-contentful-paint"]["numericValue"])),
    }


def print_table(report: dict[str, Any]) -> None:
    """The report as a table: one row per page, cold / warm bytes per language."""
    pages: dict[str, dict[str, dict[str, int]]] = report["pages"]
    langs = list(next(iter(pages.values())).keys()) if pages else []
    print("cold / warm bytes as transferred (headers + encoded bodies), requests (cold)")
    print(f"{'page':8}" + "".join(f"{code:>20}" for code in langs))
    for name, by_lang in pages.items():
        cells = [
            f"{r['cold_bytes']:,}/{r['warm_bytes']:,} ({r['requests']})" for r in by_lang.values()
        ]
        print(f"{name:8}" + "".join(f"{cell:>20}" for cell in cells))
    over = [
        f"{name}/{code}"
        for name, by_lang in pages.items()
        for code, r in by_lang.items()
        if r["cold_bytes"] > COLD_TARGETS.get(Language.from_code(code), 50_000)
        or r["warm_bytes"] > WARM_TARGET
    ]
    print(
        "targets (cold: mya 70 KB, khm/lao/tha 50 KB, eng 25 KB; warm 10 KB): "
        + ("all met" if not over else "over in " + ", ".join(over))
    )
    for name, by_lang in report.get("lighthouse", {}).items():
        for code, figures in by_lang.items():
            print(
                f"lighthouse {name:8} {code}: performance {figures['performance']:.2f}, "
                f"LCP {figures['lcp_ms']:,} ms"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--page",
        action="append",
        choices=sorted(PAGES),
        help="only this page (may be repeated; default: every page)",
    )
    parser.add_argument(
        "--lang",
        action="append",
        choices=[lang.code for lang in PAGE_LANGUAGES],
        help="only this language, by ISO 639-3 code (may be repeated; default: all)",
    )
    parser.add_argument(
        "--lighthouse",
        action="store_true",
        help=f"also run Lighthouse ({LIGHTHOUSE} via npx), mobile, simulated 3G",
    )
    args = parser.parse_args(argv)
    pages = args.page or list(PAGES)
    langs = [Language.from_code(code) for code in args.lang] if args.lang else PAGE_LANGUAGES
    report = measure(pages, list(langs), lighthouse=args.lighthouse)
    if args.json:
        json.dump(report, sys.stdout)
        print()
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
