"""A scripted day on board, driven through the crew's own HTTP API, and its summary.

Each demo crew member signs in with their crew number and PIN and writes home in their
language; one files a grievance report to the union, one sends an SOS. Then the script
follows every message's stages until it is delivered or failed (an SOS is done once the
shore has accepted it: raising the alarm ashore is the relay's alert service) and
counts the family mail in the Maildir. The grievance report goes through the vessel's
grievance lane, period after period, and has no message stages: the reporter's case page
(``GET /api/cases/{seq}``) says when every block of it has been acknowledged by the relay
(its ``state``), and that is when it is done on board.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httpx

from vessel_relay.demo.setup import CrewLogin

#: Two messages home per language (the crew member's own language, and English).
DAY: dict[str, tuple[str, ...]] = {
    "mya": ("မင်္ဂလာပါ အမေ၊ ကျွန်တော် နေကောင်းပါတယ်။", "ငါးဖမ်းတာ ကောင်းတယ်၊ လစာ ရပြီ။"),
    "tha": ("สวัสดีจ้ะ พี่สบายดี อีกสองสัปดาห์จะถึงฝั่ง", "ส่งเงินให้แล้วนะ ดูแลลูกด้วย"),
    "vie": ("Con vẫn khỏe, mẹ đừng lo nhé.", "Tháng sau con về, con nhớ nhà lắm."),
    "ind": ("Saya baik-baik saja, jangan khawatir.", "Gaji sudah diterima, nanti saya kirim."),
    "khm": ("សួស្តី ពុក ខ្ញុំសុខសប្បាយ", "ខ្ញុំនឹងត្រឡប់មកផ្ទះឆាប់ៗ"),
    "eng": ("I am safe. We reach port next week.", "Wages received, sending money soon."),
}
GRIEVANCE_TEXT = "The captain has kept our wages for three months and took our passports."

FINAL = frozenset({"delivered", "failed"})


@dataclass
class DaySummary:
    """What the scripted day sent and what became of it."""

    sent: dict[int, str] = field(default_factory=dict)  # message seq -> kind
    states: dict[int, str] = field(default_factory=dict)
    family_mail: int = 0
    family_mail_duplicates: int = 0
    link_bytes: int = 0
    sessions: int = 0
    timed_out: bool = False

    @property
    def delivered(self) -> int:
        return sum(1 for state in self.states.values() if state == "delivered")

    @property
    def failed(self) -> int:
        return sum(1 for state in self.states.values() if state == "failed")

    def done(self, seq: int) -> bool:
        """Whether a message has reached the end of its way on board."""
        state = self.states.get(seq, "")
        if self.sent[seq] in ("sos", "grievance"):
            return state in FINAL or state == "acknowledged"
        return state in FINAL

    @property
    def right(self) -> bool:
        """Every message done, every family message delivered, the report's every lane
        block acknowledged by the relay (or the report delivered), mail once."""
        messages = [s for s, kind in self.sent.items() if kind == "message"]
        reports = [s for s, kind in self.sent.items() if kind == "grievance"]
        return (
            not self.timed_out
            and all(self.done(seq) for seq in self.sent)
            and all(self.states[seq] == "delivered" for seq in messages)
            and all(self.states[s] in ("acknowledged", "delivered") for s in reports)
            and self.family_mail == len(messages)
            and self.family_mail_duplicates == 0
        )

    def lines(self) -> list[str]:
        """The summary, for the terminal."""
        kinds = sorted(set(self.sent.values()))
        out = [
            f"sent:       {len(self.sent)} ("
            + ", ".join(
                f"{sum(1 for k in self.sent.values() if k == kind)} {kind}" for kind in kinds
            )
            + ")",
            f"delivered:  {self.delivered}",
            f"failed:     {self.failed}",
            "other:      "
            + (
                ", ".join(f"#{s} {st}" for s, st in sorted(self.states.items()) if st not in FINAL)
                or "none"
            ),
            f"family mail in the Maildir: {self.family_mail}"
            f" (duplicates: {self.family_mail_duplicates})",
            f"link bytes: {self.link_bytes:,} (IP bytes as billed) in {self.sessions} sessions",
        ]
        if self.timed_out:
            out.append("timed out before every message was done")
        out.append("RESULT: " + ("right" if self.right else "WRONG"))
        return out


class CrewClient:
    """One crew member signed in to the agent's HTTP API."""

    def __init__(self, http: httpx.AsyncClient, login: CrewLogin) -> None:
        self.http = http
        self.login = login
        self.token = ""

    async def sign_in(self) -> None:
        response = await self.http.post(
            "/api/login", json={"crew": self.login.crew, "pin": self.login.pin}
        )
        response.raise_for_status()
        self.token = str(response.json()["token"])

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def post(self, path: str, body: dict[str, object]) -> int:
        response = await self.http.post(path, json=body, headers=self.headers)
        if response.status_code != 201:
            raise RuntimeError(f"{path} answered {response.status_code}: {response.text}")
        return int(response.json()["message_seq"])

    async def state(self, seq: int) -> str:
        response = await self.http.get(f"/api/messages/{seq}", headers=self.headers)
        response.raise_for_status()
        return str(response.json()["state"])

    async def case_state(self, seq: int) -> str:
        """How far a report of the grievance lane has got (``queued`` ... ``acknowledged``;
        ``unknown`` after the agent restarted)."""
        response = await self.http.get(f"/api/cases/{seq}", headers=self.headers)
        response.raise_for_status()
        return str(response.json().get("state") or "unknown")


async def run_day(
    base_url: str, crew: tuple[CrewLogin, ...], *, timeout_s: float, poll_s: float = 0.5
) -> tuple[DaySummary, dict[int, CrewClient]]:
    """Send the day's messages, a grievance and an SOS; wait until each is done."""
    summary = DaySummary()
    owner: dict[int, CrewClient] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as http:
        clients = [CrewClient(http, login) for login in crew]
        for client in clients:
            await client.sign_in()
        for client in clients:
            texts = DAY.get(client.login.language, DAY["eng"])
            for text in (*texts, DAY["eng"][0]):
                seq = await client.post(
                    "/api/messages", {"contact": client.login.contact, "text": text}
                )
                summary.sent[seq] = "message"
                owner[seq] = client
        reporter = clients[0]
        seq = await reporter.post(
            "/api/grievances",
            {
                "union": 1,
                "category": "withholding_of_wages",
                "text": GRIEVANCE_TEXT,
                "lang": "eng",
                "anonymous": False,
            },
        )
        summary.sent[seq], owner[seq] = "grievance", reporter
        caller = clients[-1]
        seq = await caller.post(
            "/api/sos", {"note": "Man overboard", "position": [1_350_000, 10_050_000]}
        )
        summary.sent[seq], owner[seq] = "sos", caller
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    for seq, client in owner.items():
                        if summary.done(seq):
                            continue
                        if summary.sent[seq] == "grievance":
                            summary.states[seq] = await client.case_state(seq)
                        else:
                            summary.states[seq] = await client.state(seq)
                    if all(summary.done(seq) for seq in summary.sent):
                        break
                    await asyncio.sleep(poll_s)
        except TimeoutError:
            summary.timed_out = True
    return summary, owner
