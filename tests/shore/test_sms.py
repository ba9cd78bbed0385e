"""SMS: segment arithmetic, and the adapter against the fake provider over real HTTP."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import regex
from hypothesis import given
from hypothesis import strategies as st

from protocol.envelopes import FailureReason
from shore.fake_sms import FakeSmsProvider
from shore.retry import Outcome
from shore.sms import (
    SmsConfig,
    SmsProvider,
    check_webhook_signature,
    plan_sms,
    text_units,
    webhook_signature,
)
from tests.kit.ports import free_port

BURMESE = "မင်္ဂလာပါ အမေ။ ကျွန်တော် ကျန်းမာပါတယ်။ ငါးဖမ်းတာ ကောင်းပါတယ်။ "
MOTHER = "+959250000001"


def grapheme_boundaries(text: str) -> set[int]:
    ends = itertools.accumulate(len(cluster) for cluster in regex.findall(r"\X", text))
    return {0, *ends}


def segment_boundaries(segments: tuple[str, ...]) -> list[int]:
    return list(itertools.accumulate(len(part) for part in segments))


# --- segment arithmetic ---------------------------------------------------------------------


def test_gsm7_text_of_160_septets_is_one_sms() -> None:
    """A plain Latin text of 160 characters fits one SMS."""
    plan = plan_sms("a" * 160)
    assert (plan.encoding, plan.units, plan.segment_count) == ("GSM-7", 160, 1)


def test_gsm7_text_of_161_septets_takes_two_parts_of_153() -> None:
    """One septet more needs concatenation: parts of at most 153 septets."""
    plan = plan_sms("a" * 161)
    assert plan.segment_count == 2
    assert [len(part) for part in plan.segments] == [153, 8]


def test_gsm7_extension_characters_count_two_and_stay_whole() -> None:
    """'€' and '{' take two septets; 80 euro signs do not fit one SMS and none is split."""
    assert text_units("€{}", "GSM-7") == 6
    plan = plan_sms("€" * 80)
    assert plan.encoding == "GSM-7"
    assert plan.units == 160
    assert plan.segment_count == 1
    longer = plan_sms("aa" + "€" * 80)  # 152 septets, and the next euro would need 154
    assert [text_units(part, "GSM-7") for part in longer.segments] == [152, 10]


def test_one_non_gsm_character_makes_the_whole_text_ucs2() -> None:
    """A single Thai letter moves the text to UCS-2: 71 units need two parts."""
    plan = plan_sms("a" * 70 + "ก")
    assert plan.encoding == "UCS-2"
    assert plan.segment_count == 2


def test_long_burmese_text_is_split_between_syllables() -> None:
    """A long Burmese message: UCS-2 parts of at most 67 units, never inside a syllable."""
    text = BURMESE * 5
    plan = plan_sms(text)
    assert plan.encoding == "UCS-2"
    assert plan.units == len(text)
    assert "".join(plan.segments) == text
    assert all(text_units(part, "UCS-2") <= 67 for part in plan.segments)
    assert set(segment_boundaries(plan.segments)) <= grapheme_boundaries(text)


def test_emoji_surrogate_pairs_are_never_split() -> None:
    """Emoji take two UTF-16 units each; a part never ends between the two halves."""
    text = "😀" * 40
    plan = plan_sms(text)
    assert plan.units == 80
    assert [text_units(part, "UCS-2") for part in plan.segments] == [66, 14]


@given(st.text(max_size=700))
def test_segments_always_rejoin_and_respect_the_limits(text: str) -> None:
    """Any text: the parts rejoin to it, each within its encoding's limit."""
    plan = plan_sms(text)
    assert "".join(plan.segments) == text
    single, per_part = (160, 153) if plan.encoding == "GSM-7" else (70, 67)
    if plan.segment_count == 1:
        assert plan.units <= single
    else:
        assert plan.units > single
        assert all(0 < text_units(p, plan.encoding) <= per_part for p in plan.segments)


# --- webhook signatures ---------------------------------------------------------------------


def test_webhook_signature_matches_the_providers_published_example() -> None:
    """The signature of the provider's documented example request is reproduced."""
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert webhook_signature(url, params, "12345") == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert check_webhook_signature(url, params, "12345", "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    assert not check_webhook_signature(url, {**params, "Digits": "9"}, "12345", "0/KCTR6DLpKm")
    assert not check_webhook_signature(url, params, "12345", None)


# --- the adapter against the fake provider --------------------------------------------------


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeSmsProvider]:
    provider = FakeSmsProvider(tmp_path / "sms.jsonl")
    await provider.start()
    try:
        yield provider
    finally:
        await provider.stop()


def config_for(fake: FakeSmsProvider, **changes: object) -> SmsConfig:
    values: dict[str, object] = {
        "account_sid": fake.account_sid,
        "auth_token": fake.auth_token,
        "from_number": "+6620000000",
        "base_url": fake.base_url,
        "timeout_s": 5.0,
    }
    values.update(changes)
    return SmsConfig(**values)  # type: ignore[arg-type]


async def test_text_reaches_the_provider(fake: FakeSmsProvider) -> None:
    """A short text is accepted (201, sid) and lands on the fake family phone."""
    async with SmsProvider(config_for(fake)) as sms:
        result = await sms.send(MOTHER, "Ko Aung: hello mother, all is well")
    assert result.outcome is Outcome.DELIVERED
    assert result.provider_id is not None
    assert result.provider_id.startswith("SM")
    [record] = fake.messages()
    assert record["to"] == MOTHER
    assert record["from"] == "+6620000000"
    assert record["body"] == "Ko Aung: hello mother, all is well"
    assert record["encoding"] == "GSM-7"
    assert record["num_segments"] == "1"


async def test_long_burmese_text_goes_as_one_request_with_proper_segments(
    fake: FakeSmsProvider,
) -> None:
    """A 300-character Burmese text: one request, five UCS-2 segments split between syllables."""
    text = (BURMESE * 6)[:300]
    async with SmsProvider(config_for(fake)) as sms:
        result = await sms.send(MOTHER, text)
        assert sms.statistics().segments == 5
    assert result.outcome is Outcome.DELIVERED
    assert "UCS-2 5 segments" in result.detail
    [record] = fake.messages()
    assert record["body"] == text
    assert record["encoding"] == "UCS-2"
    assert record["num_segments"] == "5"
    assert all(text_units(part, "UCS-2") <= 67 for part in record["segments"])
    assert set(segment_boundaries(tuple(record["segments"]))) <= grapheme_boundaries(text)


async def test_text_over_the_request_limit_goes_in_several_requests(fake: FakeSmsProvider) -> None:
    """A text longer than the provider takes at once is sent as whole-segment chunks."""
    text = (BURMESE * 40)[:2000]
    async with SmsProvider(config_for(fake)) as sms:
        result = await sms.send(MOTHER, text)
    assert result.outcome is Outcome.DELIVERED
    records = fake.messages()
    assert len(records) == 2
    assert "".join(r["body"] for r in records) == text
    assert all(text_units(r["body"], "UCS-2") <= 1600 for r in records)


async def test_invalid_number_fails_for_good(fake: FakeSmsProvider) -> None:
    """The provider calls the number invalid (400, code 21211): ADDRESS_INVALID, no retry."""
    fake.invalid_numbers.add(MOTHER)
    async with SmsProvider(config_for(fake)) as sms:
        result = await sms.send(MOTHER, "hello")
    assert result.outcome is Outcome.PERMANENT
    assert result.reason is FailureReason.ADDRESS_INVALID
    assert "21211" in result.detail
    assert MOTHER not in result.detail
    assert fake.messages() == []


async def test_number_that_is_not_e164_fails_without_a_request(fake: FakeSmsProvider) -> None:
    """A number without country code never reaches the provider."""
    async with SmsProvider(config_for(fake)) as sms:
        result = await sms.send("09250000001", "hello")
    assert result.reason is FailureReason.ADDRESS_INVALID
    assert fake.answers == []


async def test_rate_limit_asks_to_retry_after(fake: FakeSmsProvider) -> None:
    """429 with Retry-After: 7 is transient and carries the wait; the next try succeeds."""
    fake.fail_next(429, 20429, message="Too Many Requests", retry_after_s=7)
    async with SmsProvider(config_for(fake)) as sms:
        first = await sms.send(MOTHER, "hello")
        second = await sms.send(MOTHER, "hello")
    assert first.outcome is Outcome.TRANSIENT
    assert first.retry_after_s == 7.0
    assert second.outcome is Outcome.DELIVERED
    assert [status for status, _ in fake.answers] == [429, 201]


async def test_provider_error_is_transient(fake: FakeSmsProvider) -> None:
    """A 500 from the provider is worth another try."""
    fake.fail_next(500)
    async with SmsProvider(config_for(fake)) as sms:
        result = await sms.send(MOTHER, "hello")
    assert result.outcome is Outcome.TRANSIENT
    assert result.reason is FailureReason.PROVIDER_ERROR


async def test_wrong_credentials_wait_for_the_operator(fake: FakeSmsProvider) -> None:
    """A wrong auth token (401, code 20003) is transient: the family must not lose the text."""
    async with SmsProvider(config_for(fake, auth_token="wrong")) as sms:
        result = await sms.send(MOTHER, "hello")
    assert result.outcome is Outcome.TRANSIENT
    assert "20003" in result.detail


async def test_provider_unreachable_is_transient(fake: FakeSmsProvider) -> None:
    """Nobody listens at the provider's address: transient."""
    await fake.stop()
    async with SmsProvider(config_for(fake)) as sms:
        result = await sms.send(MOTHER, "hello")
    assert result.outcome is Outcome.TRANSIENT


async def test_fake_provider_answers_malformed_requests_without_crashing(
    fake: FakeSmsProvider,
) -> None:
    """Garbage bytes get an HTTP error; the fake keeps serving."""
    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        missing = await client.get("/nothing")
        assert missing.status_code == 404
        unauthorised = await client.post(
            f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json", data={"To": MOTHER}
        )
        assert unauthorised.status_code == 401
        assert unauthorised.json()["code"] == 20003


async def test_provider_silent_after_the_request_counts_the_next_try_as_a_repeat() -> None:
    """The provider takes the whole request and never answers: the text may be on the
    mother's phone already, so the failure is transient and marked ``maybe_sent`` (the
    worker counts the next attempt as a repeat). A provider nobody answers at all is an
    ordinary connection failure."""
    requests = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        requests.set()
        await reader.read()  # until the relay gives up and closes
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = SmsConfig("AC1", "token", "+6620000000", f"http://127.0.0.1:{port}", timeout_s=0.5)
    try:
        async with SmsProvider(config) as sms:
            result = await sms.send(MOTHER, "Ko Aung: hello mother")
    finally:
        server.close()
        await server.wait_closed()
    assert requests.is_set()
    assert (result.outcome, result.reason, result.maybe_sent) == (
        Outcome.TRANSIENT,
        FailureReason.PROVIDER_ERROR,
        True,
    )
    closed = SmsConfig("AC1", "token", "+6620000000", f"http://127.0.0.1:{free_port()}")
    async with SmsProvider(closed) as sms:
        refused = await sms.send(MOTHER, "Ko Aung: hello mother")
    assert (refused.outcome, refused.maybe_sent) == (Outcome.TRANSIENT, False)
