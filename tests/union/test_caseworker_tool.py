"""The caseworker tool a union can trust: a second factor at sign-in, an append-only access
log, assignment, internal notes, and ``union.db`` encrypted at rest under a passphrase.

Reports are filed on board (real intake and outbox), stored by the relay and fetched over
its real union API (uvicorn on loopback); the union's web app is called in process.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import sqlite3
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pyotp
import pytest
from typer.testing import CliRunner

from common.codebooks import default_codebook
from common.passwords import hash_password
from protocol.languages import Language
from protocol.sealing import GrievanceCategory
from shipboard.crew import CrewRegister
from shore.union.access_log import AccessLogBroken, records, verify_records
from shore.union.client import RelayClient
from shore.union.inbox import UnionInbox
from shore.union.keys import load_union
from shore.union.totp import SecondFactorBook, enrol, read_second_factors, totp_path
from shore.union.vault import StoreLocked, WrongPassphrase
from shore.union.web import UnionWebSettings, create_app
from tests.union.test_union_inbox import NOW, World, _uplink, world
from vessel_relay.cli import app as cli_app

__all__ = ["world"]  # the fixture, imported for these tests

PASSWORD = "tide table 1983"
PASSPHRASE = "anchor lantern monsoon ledger"
#: Text that must never be found in union.db's files once the store is encrypted.
CANARY_REPORT = "CANARY-REPORT-7f3a captain took passports"
CANARY_REPLY = "CANARY-REPLY-91c2 we called the agency"
CANARY_NOTE = "CANARY-NOTE-55d0 reporter fears retaliation"
CANARY_NAME = "CANARY-NAME Aung Min"


def _file_report(world: World, text: str = CANARY_REPORT, *, name: str = CANARY_NAME) -> str:
    register = CrewRegister(world.outbox)
    document = f"SB-{zlib.crc32(name.encode()) % 10**7:07d}"
    member, pin = register.add(
        name=name, document=document, nationality="MM", language=Language.ENG, now=NOW
    )
    signed_in = register.sign_in(member.crew, pin)
    filed = world.intake.file_grievance(
        signed_in,
        union_id=7,
        category=GrievanceCategory.RETENTION_OF_DOCUMENTS,
        text=text,
        lang=Language.ENG,
        anonymous=False,
    )
    return filed.case_number


def _inbox(world: World) -> UnionInbox:
    identity = load_union(world.union_dir)
    return UnionInbox(identity, default_codebook(), client=RelayClient(identity))


async def _fetched(world: World, inbox: UnionInbox) -> None:
    await _uplink(world)
    result = await asyncio.to_thread(inbox.fetch)
    assert result.new_cases >= 1


def _files(database: Path) -> list[Path]:
    return [p for p in (database, Path(f"{database}-wal"), Path(f"{database}-shm")) if p.exists()]


def _found_on_disk(database: Path, *texts: str) -> list[str]:
    """Which of ``texts`` appear (UTF-8 or UTF-16) anywhere in union.db, its WAL or SHM."""
    blobs = b"".join(p.read_bytes() for p in _files(database))
    return [
        t
        for t in texts
        if t.encode("utf-8") in blobs
        or t.encode("utf-16-le") in blobs
        or t.encode("utf-16-be") in blobs
    ]


# the second factor -----------------------------------------------------------------------


def test_a_code_signs_in_once_and_only_for_an_enrolled_caseworker(tmp_path: Path) -> None:
    """Thida's code of now is accepted (and a step's drift either way); the same code is
    refused the second time; an old code, a malformed one and an unenrolled name fail."""
    now = [1_790_000_000.0]
    uri = enrol(tmp_path, "thida")
    assert uri.startswith("otpauth://totp/")
    assert (totp_path(tmp_path).stat().st_mode & 0o777) == 0o600
    secret = read_second_factors(totp_path(tmp_path))["thida"]
    totp = pyotp.TOTP(secret)
    book = SecondFactorBook.load(tmp_path, clock=lambda: now[0])
    code = totp.at(now[0])
    assert book.accept("thida", code, spend=False)  # right, not spent (a wrong password)
    assert book.accept("thida", code, spend=True)
    assert not book.accept("thida", code, spend=True)  # replay refused
    now[0] += 30
    assert book.accept("thida", totp.at(now[0] + 30), spend=True)  # phone 30 s ahead
    assert not book.accept("thida", totp.at(now[0]), spend=True)  # older than the last used
    assert not book.accept("thida", totp.at(now[0] - 300), spend=True)
    assert not book.accept("thida", "12345", spend=True)
    assert not book.accept("thida", "abcdef", spend=True)
    assert not book.accept("bo", totp.at(now[0] + 60), spend=True)
    again = enrol(tmp_path, "thida")  # a lost phone: a new secret, old codes stop working
    assert again != uri
    renewed = SecondFactorBook.load(tmp_path, clock=lambda: now[0] + 120)
    assert not renewed.accept("thida", totp.at(now[0] + 120), spend=True)


class _Clocked(pyotp.TOTP):
    """A caseworker's authenticator app on the test's clock: each code is of the next step
    (so no test ever offers a code twice)."""

    def __init__(self, secret: str, clock: list[float]) -> None:
        super().__init__(secret)
        self.clock = clock

    def now(self) -> str:
        self.clock[0] += 30
        return self.at(self.clock[0])


Web = tuple[httpx.AsyncClient, UnionInbox, _Clocked]


@pytest.fixture
async def web(world: World) -> AsyncIterator[Web]:
    enrol(world.union_dir, "thida")
    enrol(world.union_dir, "bo")
    secrets_by_name = read_second_factors(totp_path(world.union_dir))
    clock = [NOW]
    inbox = _inbox(world)
    settings = UnionWebSettings(
        {"thida": hash_password(PASSWORD), "bo": hash_password(PASSWORD)},
        second_factor=SecondFactorBook(secrets_by_name, clock=lambda: clock[0]),
    )
    app = create_app(inbox, settings)
    transport = httpx.ASGITransport(app=app, client=("10.0.0.5", 40000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://union.test") as client:
            yield client, inbox, _Clocked(secrets_by_name["thida"], clock)
    finally:
        _close(inbox)


def _close(inbox: UnionInbox) -> None:
    if inbox.client is not None:
        inbox.client.close()
    inbox.close()


async def _token(client: httpx.AsyncClient, path: str = "/login") -> str:
    page = await client.get(path)
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None, page.text
    return found[1]


async def _sign_in(client: httpx.AsyncClient, totp: _Clocked, name: str = "thida") -> None:
    answer = await client.post(
        "/login",
        data={
            "caseworker": name,
            "password": PASSWORD,
            "code": totp.now(),
            "csrf": await _token(client),
        },
    )
    assert answer.status_code == 303, answer.text


async def test_sign_in_needs_the_password_and_the_code(web: Web) -> None:
    """The right password without a code, or with a wrong code, is refused with the same
    sentence as a wrong password; wrong codes count under the sign-in guard, so the fifth
    pauses the name (429) even for the right password and code."""
    client, _, totp = web
    for code in ("", "000000", "123456"):
        answer = await client.post(
            "/login",
            data={
                "caseworker": "thida",
                "password": PASSWORD,
                "code": code,
                "csrf": await _token(client),
            },
        )
        assert answer.status_code == 401
        assert "Wrong caseworker, password or code" in answer.text
    assert (await client.get("/")).headers["location"] == "/login"
    for code in ("111111", "222222"):
        form = {"caseworker": "thida", "password": PASSWORD, "code": code}
        await client.post("/login", data=form | {"csrf": await _token(client)})
    paused = await client.post(
        "/login",
        data={
            "caseworker": "thida",
            "password": PASSWORD,
            "code": totp.now(),
            "csrf": await _token(client),
        },
    )
    assert paused.status_code == 429
    bo = read_second_factors(totp_path(web[1].identity.directory))["bo"]
    await _sign_in(client, _Clocked(bo, totp.clock), "bo")  # another caseworker: not paused
    assert (await client.get("/")).status_code == 200


# access log, assignment, internal notes ----------------------------------------------------


async def test_every_open_export_reply_stage_assignment_and_note_is_in_the_access_log(
    world: World, web: Web
) -> None:
    """Thida opens a case, assigns it to Bo, keeps an internal note, acknowledges it,
    replies and exports it; each is a row under her name on the case page and in the CSV
    and JSON downloads, in order. The note never leaves for the reporter nor appears in
    the export. The log refuses changes and its hash chain shows a row changed behind
    SQLite's back."""
    client, inbox, totp = web
    number = _file_report(world, "Wages not paid for three months.", name="Ko Ko")
    await _fetched(world, inbox)
    await _sign_in(client, totp)

    page = await client.get(f"/cases/{number}")
    assert page.status_code == 200
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    csrf = token[1]
    answer = await client.post(f"/cases/{number}/assign", data={"caseworker": "bo", "csrf": csrf})
    assert answer.status_code == 303
    refused = await client.post(
        f"/cases/{number}/assign", data={"caseworker": "mallory", "csrf": csrf}
    )
    assert refused.status_code == 303
    await client.post(
        f"/cases/{number}/notes", data={"text": "Reporter asked us not to call.", "csrf": csrf}
    )
    outgoing_before = inbox.pending_notes()
    await client.post(f"/cases/{number}/status", data={"stage": "acknowledged", "csrf": csrf})
    await client.post(f"/cases/{number}/reply", data={"text": "We are on it.", "csrf": csrf})
    export = await client.get(f"/cases/{number}/export")
    assert export.status_code == 200
    assert "Reporter asked us" not in export.text
    page = await client.get(f"/cases/{number}")
    assert "Assigned to: <strong>bo</strong>" in page.text
    assert "Reporter asked us not to call." in page.text  # for caseworkers, on the page
    assert "that caseworker does not exist" in page.text  # the refused assignment's sentence
    actions = re.findall(r'<tr data-action="([a-z]+)">', page.text)
    assert actions == ["open", "assign", "note", "status", "reply", "export", "open"]

    downloaded = await client.get(f"/cases/{number}/access.csv")
    assert downloaded.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(downloaded.text)))
    assert [r["action"] for r in rows] == [*actions, "export"]  # the download logs itself
    assert {r["caseworker"] for r in rows} == {"thida"}
    assert rows[1]["detail"] == "to bo"
    assert rows[3]["detail"] == "received -> acknowledged"
    as_json = json.loads((await client.get(f"/cases/{number}/access.json")).text)
    assert [r["action"] for r in as_json["records"]][:8] == [r["action"] for r in rows]

    # the note never went to the relay: only the stage change and the reply did
    with sqlite3.connect(inbox.identity.database) as db:
        queued = db.execute("SELECT COUNT(*) FROM outgoing").fetchone()[0]
    assert queued == outgoing_before + 2

    mine = await client.get("/?mine=1")
    assert number not in mine.text  # assigned to Bo, not to Thida
    assert [c.case_number for c in inbox.cases(assignee="bo")] == [number]

    log = records(sqlite3.connect(inbox.identity.database))
    verify_records(log)
    with sqlite3.connect(inbox.identity.database) as db:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM access_log WHERE seq = 2")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("UPDATE access_log SET caseworker = 'bo' WHERE seq = 1")
        db.execute("DROP TRIGGER access_log_no_update")
        db.execute("UPDATE access_log SET caseworker = 'bo' WHERE seq = 1")
    with pytest.raises(AccessLogBroken, match="row 1 was changed"):
        verify_records(records(sqlite3.connect(inbox.identity.database)))


async def test_cli_actions_are_logged_under_the_machine_user(world: World) -> None:
    """`union show`, `union assign`, `union note` and `union access-log` work from the
    command line; the access log names ``cli:<user>``; an unknown caseworker is refused."""
    number = _file_report(world, "No rest for 20 hours a day.", name="Mya")
    inbox = _inbox(world)
    try:
        await _fetched(world, inbox)
    finally:
        _close(inbox)
    runner = CliRunner()
    union = ["--dir", str(world.union_dir)]
    added = runner.invoke(cli_app, ["union", "user", "add", "thida", *union], input=PASSWORD + "\n")
    assert added.exit_code == 0, added.output
    assigned = runner.invoke(cli_app, ["union", "assign", *union, number, "thida"])
    assert assigned.exit_code == 0, assigned.output
    unknown = runner.invoke(cli_app, ["union", "assign", *union, number, "mallory"])
    assert unknown.exit_code == 1
    assert "no caseworker 'mallory'" in unknown.output
    noted = runner.invoke(cli_app, ["union", "note", *union, number, "Call the embassy."])
    assert noted.exit_code == 0, noted.output
    shown = runner.invoke(cli_app, ["union", "show", *union, number])
    assert "assigned to: thida" in shown.output
    assert "Call the embassy." in shown.output
    exported = runner.invoke(cli_app, ["union", "access-log", *union, "--format", "json"])
    assert exported.exit_code == 0, exported.output
    rows = json.loads(exported.output)["records"]
    assert [r["action"] for r in rows] == ["assign", "note", "open"]
    assert all(r["caseworker"].startswith("cli:") for r in rows)


# at rest ----------------------------------------------------------------------------------


async def test_union_db_on_disk_holds_no_report_text_once_encrypted(world: World) -> None:
    """A union that ran unencrypted encrypts its store: the report, the reporter's name, a
    reply and a note already stored vanish from union.db, its WAL and its free pages. New
    reports, replies and notes are never written in clear. The app refuses to show a
    report until the passphrase is entered; a wrong one is refused."""
    first = _file_report(world, CANARY_REPORT)
    inbox = _inbox(world)
    try:
        await _fetched(world, inbox)
        await asyncio.to_thread(inbox.reply, first, CANARY_REPLY)
        inbox.add_note(first, CANARY_NOTE)
        database = inbox.identity.database
        assert _found_on_disk(database, CANARY_REPORT, CANARY_NOTE)  # the defect, before
        assert inbox.encrypt_store(PASSPHRASE) >= 4
        assert _found_on_disk(database, CANARY_REPORT, CANARY_REPLY, CANARY_NOTE, CANARY_NAME) == []

        second = _file_report(world, CANARY_REPORT + " again", name=CANARY_NAME + " too")
        await _fetched(world, inbox)
        await asyncio.to_thread(inbox.reply, second, CANARY_REPLY + " again")
        inbox.add_note(second, CANARY_NOTE + " again")
        assert inbox.show(second).entries[0].fields["text"] == CANARY_REPORT + " again"
        with sqlite3.connect(database) as db:  # a reader elsewhere: the WAL as it stands
            db.execute("SELECT COUNT(*) FROM cases").fetchone()
        assert _found_on_disk(database, CANARY_REPORT, CANARY_REPLY, CANARY_NOTE, CANARY_NAME) == []
    finally:
        _close(inbox)

    again = _inbox(world)
    try:
        assert again.encrypted
        assert again.locked
        with pytest.raises(StoreLocked):
            again.show(first)
        with pytest.raises(StoreLocked):
            again.notes(first)
        with pytest.raises(WrongPassphrase):
            again.unlock("not the passphrase at all")
        assert again.locked
        again.unlock(PASSPHRASE)
        view = again.show(first)
        assert view.entries[0].fields["text"] == CANARY_REPORT
        assert view.crew_name == CANARY_NAME
        assert [n.text for n in again.notes(first)] == [CANARY_NOTE]
    finally:
        _close(again)


async def test_the_web_app_shows_no_report_until_unlocked(world: World, web: Web) -> None:
    """With an encrypted store the app starts locked: a signed-in caseworker is sent to
    /unlock from every page; a wrong passphrase is refused; the right one opens the cases."""
    client, inbox, totp = web
    number = _file_report(world, "Beaten by the bosun.", name="Min")
    await _fetched(world, inbox)
    inbox.encrypt_store(PASSPHRASE)
    inbox.lock()  # as after a restart: the key is only ever in memory
    assert inbox.locked
    await _sign_in(client, totp)
    for path in ("/", f"/cases/{number}", f"/cases/{number}/export", "/access.csv"):
        answer = await client.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/unlock"
    csrf = await _token(client, "/unlock")
    wrong = await client.post("/unlock", data={"passphrase": "guess guess guess", "csrf": csrf})
    assert wrong.status_code == 401
    right = await client.post("/unlock", data={"passphrase": PASSPHRASE, "csrf": csrf})
    assert right.status_code == 303
    page = await client.get(f"/cases/{number}")
    assert "Beaten by the bosun." in page.text


async def test_cli_asks_for_the_passphrase_of_an_encrypted_store(world: World) -> None:
    """`union encrypt` asks for the passphrase twice; afterwards `union show` needs it (a
    wrong one is refused with a sentence, exit 1)."""
    number = _file_report(world, "Passport kept by the captain.", name="Soe")
    inbox = _inbox(world)
    try:
        await _fetched(world, inbox)
    finally:
        _close(inbox)
    runner = CliRunner()
    union = ["--dir", str(world.union_dir)]
    done = runner.invoke(cli_app, ["union", "encrypt", *union], input=f"{PASSPHRASE}\n")
    assert done.exit_code == 0, done.output
    assert "is encrypted" in done.output
    wrong = runner.invoke(cli_app, ["union", "show", *union, number], input="nope nope nope\n")
    assert wrong.exit_code == 1
    assert "does not open this union's store" in wrong.output
    shown = runner.invoke(cli_app, ["union", "show", *union, number], input=f"{PASSPHRASE}\n")
    assert shown.exit_code == 0, shown.output
    assert "Passport kept by the captain." in shown.output


async def test_the_statistics_page_and_its_downloads(world: World, web: Web) -> None:
    """A caseworker opens the statistics page: with two cases every count is suppressed
    (shown as "<5"); the signed JSON download verifies offline, the CSV has its header."""
    from protocol.grievance_stats import verify_statistics

    client, inbox, totp = web
    _file_report(world, "Wages late.", name="One")
    _file_report(world, "Passport kept.", name="Two")
    await _fetched(world, inbox)
    await _sign_in(client, totp)
    page = await client.get("/statistics?from=2026-01&to=2026-12")
    assert page.status_code == 200
    assert "Grievance statistics" in page.text
    assert "&lt;5" in page.text
    signed = await client.get("/statistics.json?from=2026-01&to=2026-12")
    body = verify_statistics(json.loads(signed.text), inbox.identity.signing_key.verify_key.key)
    assert body["total"]["reports"] is None  # 2 reports: under the threshold
    csv_file = await client.get("/statistics.csv?from=2026-01&to=2026-12")
    assert csv_file.text.startswith("table,group,measure,value\n")
    bad = await client.get("/statistics?from=2026-13&to=2026-12")
    assert bad.status_code == 200
    assert "is not a month" in bad.text
