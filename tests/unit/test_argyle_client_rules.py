"""ArgyleClient's rules without a network: retry timing, cursors from next links, odd answers.
A fake urllib3 pool stands in for the HTTP layer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from argyle_pipeline.argyle.client import (
    ArgyleClient,
    ArgyleClientError,
    ArgyleUnavailable,
    ForeignNextLink,
    RetryWait,
    UnexpectedResponse,
    backoff_delay,
    retry_after_seconds,
)
from argyle_pipeline.aws.secret_values import ArgyleCredentials

BASE = "https://api.argyle.test/v1"
CREDS = ArgyleCredentials("id", "secret")


@dataclass
class FakeResponse:
    status: int
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakePool:
    """Answers queued responses in order and records each request's URL and headers."""

    answers: list[FakeResponse]
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def request(self, method: str, url: str, **kwargs: Any) -> FakeResponse:
        self.requests.append((method, url, kwargs["headers"]))
        assert kwargs["redirect"] is False and kwargs["retries"] is False
        return self.answers.pop(0)


def page(results: list[dict[str, Any]], next_link: str | None = None) -> FakeResponse:
    return FakeResponse(200, json.dumps({"results": results, "next": next_link}).encode())


def client(*answers: FakeResponse, **kwargs: Any) -> tuple[ArgyleClient, FakePool, list[float]]:
    pool = FakePool(list(answers))
    sleeps: list[float] = []
    return ArgyleClient(BASE, CREDS, pool=pool, sleep=sleeps.append, **kwargs), pool, sleeps  # type: ignore[arg-type]


def activity(n: int) -> dict[str, Any]:
    return {"id": f"a{n}", "account": "acc"}


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)

    assert retry_after_seconds("12") == 12.0
    assert retry_after_seconds("Mon, 01 Jan 2024 12:00:30 GMT", now=lambda: now) == 30.0
    assert retry_after_seconds("Mon, 01 Jan 2024 11:00:00 GMT", now=lambda: now) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    assert backoff_delay(1, 0.5, 20, lambda: 1.0) == 0.5
    assert backoff_delay(4, 0.5, 20, lambda: 1.0) == 4.0
    assert backoff_delay(10, 0.5, 20, lambda: 1.0) == 20.0
    assert backoff_delay(3, 0.5, 20, lambda: 0.0) == 0.0


@pytest.mark.parametrize("kwargs", [{"page_limit": 0}, {"page_limit": 201}, {"max_attempts": 0}])
def test_impossible_settings_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        ArgyleClient(BASE, CREDS, **kwargs)


def test_a_base_url_must_be_http() -> None:
    with pytest.raises(ValueError):
        ArgyleClient("api.argyle.com/v1", CREDS)


@pytest.mark.parametrize("url", ["http://api.argyle.com/v1", "http://10.0.0.5:4010/v1", "http://127.0.0.1.example/v1"])
def test_plain_http_is_refused_except_on_loopback(url: str) -> None:
    # Basic auth credentials travel with every request: never in clear off this machine
    with pytest.raises(ValueError, match="must be https"):
        ArgyleClient(url, CREDS)


@pytest.mark.parametrize("url", ["https://api.argyle.com/v1", "http://127.0.0.1:4010/v1", "http://localhost:4010/v1",
                                 "http://[::1]:4010/v1"])
def test_https_or_a_local_api_is_accepted(url: str) -> None:
    assert ArgyleClient(url, CREDS).base_url == url


def test_next_lends_only_its_cursor_and_our_filters_stay() -> None:
    # Given a next link that also tries to change the account and the date range
    evil_next = f"{BASE}/activities?account=someone-else&from_start_date=1970-01-01&limit=5&cursor=abc&offset=200"
    argyle, pool, _ = client(page([activity(1)], evil_next), page([activity(2)]))

    pages = list(argyle.list_activity_pages("acc", "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"))

    assert pages[0].next_cursor == {"cursor": "abc", "offset": "200"}
    second_url = pool.requests[1][1]
    assert second_url.startswith(BASE + "/activities?")
    assert "account=acc" in second_url and "someone-else" not in second_url
    assert "from_start_date=2024-01-01T00%3A00%3A00Z" in second_url and "limit=200" in second_url
    assert "cursor=abc" in second_url


def test_a_foreign_next_link_is_rewritten_or_refused() -> None:
    foreign = "https://evil.test/v1/activities?cursor=xyz"
    rewritten, pool, _ = client(page([activity(1)], foreign), page([activity(2)]))
    assert [a.id for a in rewritten.list_activities("acc")] == ["a1", "a2"]
    assert all(url.startswith(BASE) for _, url, _ in pool.requests)

    refusing, pool, _ = client(page([activity(1)], foreign), on_foreign_next="refuse")
    with pytest.raises(ForeignNextLink):
        list(refusing.list_activities("acc"))
    assert len(pool.requests) == 1


def test_a_relative_next_link_is_fine() -> None:
    argyle, _, _ = client(page([activity(1)], "/v1/activities?cursor=2"), page([activity(2)]))

    assert [a.id for a in argyle.list_activities("acc")] == ["a1", "a2"]


def test_a_next_link_that_repeats_the_page_is_a_loop_not_an_endless_sync() -> None:
    same = f"{BASE}/activities?cursor=c1"
    argyle, _, _ = client(page([activity(1)], same), page([activity(2)], same))

    with pytest.raises(UnexpectedResponse, match="loop"):
        list(argyle.list_activities("acc"))


@pytest.mark.parametrize("body", [b"<html>oops</html>", b'{"no_results": []}', b'{"results": [1, 2]}'])
def test_an_undocumented_answer_is_unexpected(body: bytes) -> None:
    argyle, _, _ = client(FakeResponse(200, body))

    with pytest.raises(UnexpectedResponse):
        list(argyle.list_activities("acc"))


def test_a_bare_array_of_webhooks_is_accepted() -> None:
    hooks = [{"id": "w1", "events": ["*"], "url": "https://x.test", "secret": None}]
    argyle, _, _ = client(FakeResponse(200, json.dumps(hooks).encode()))

    assert [w.id for w in argyle.list_webhooks()] == ["w1"]


def test_429_is_retried_and_basic_auth_is_sent_on_every_try() -> None:
    argyle, pool, sleeps = client(
        FakeResponse(429, b"{}", {"Retry-After": "0"}), FakeResponse(200, json.dumps(activity(1)).encode())
    )

    assert argyle.get_activity("a1").id == "a1"
    assert sleeps == [0.0]
    assert all(headers["authorization"] == "Basic aWQ6c2VjcmV0" for _, _, headers in pool.requests)


def test_other_4xx_are_not_retried_and_carry_the_body() -> None:
    argyle, pool, sleeps = client(FakeResponse(422, b'{"limit": ["too big"]}'))

    with pytest.raises(ArgyleClientError, match="limit: too big") as caught:
        argyle.get_activity("x")

    assert caught.value.status == 422 and len(pool.requests) == 1 and sleeps == []


def test_a_redirect_is_not_followed() -> None:
    argyle, pool, _ = client(FakeResponse(302, b"", {"Location": "https://evil.test/"}))

    with pytest.raises(ArgyleClientError):
        argyle.get_activity("x")
    assert len(pool.requests) == 1


def test_counters_count_every_attempt() -> None:
    argyle, _, sleeps = client(FakeResponse(503, b""), FakeResponse(503, b""), max_attempts=2)

    with pytest.raises(ArgyleUnavailable):
        argyle.get_activity("x")

    assert (argyle.calls, argyle.retries, len(sleeps)) == (2, 1, 1)


def test_each_wait_is_told_before_it_is_slept_with_its_cause() -> None:
    # Given Argyle answering 429 with Retry-After, then 503, then the activity
    waits: list[RetryWait] = []
    argyle, _, sleeps = client(FakeResponse(429, b"{}", {"Retry-After": "3"}), FakeResponse(503, b""),
                               FakeResponse(200, json.dumps(activity(1)).encode()), on_retry=waits.append,
                               rand=lambda: 1.0)
    # When the call succeeds on its third attempt
    assert argyle.get_activity("a1").id == "a1"
    # Then the caller heard of both waits, each as long as what was slept
    assert waits == [RetryWait("GET", "/activities/a1", 429, 3.0, True, 1),
                     RetryWait("GET", "/activities/a1", 503, 1.0, False, 2)]
    assert sleeps == [3.0, 1.0]


def test_get_account_asks_our_host_for_one_quoted_id_and_refuses_a_body_that_is_not_an_object() -> None:
    account = {"id": "acc/1", "connection": {"status": "error", "error_code": "auth_required"}, "score": 1.5}
    argyle, pool, _ = client(FakeResponse(200, json.dumps(account).encode()), FakeResponse(200, b"[]"))

    fetched = argyle.get_account("acc/1")

    assert pool.requests[0][:2] == ("GET", f"{BASE}/accounts/acc%2F1")
    assert fetched == {**account, "score": Decimal("1.5")}  # numbers as Decimal, like every answer
    with pytest.raises(UnexpectedResponse, match="account response is not a JSON object"):
        argyle.get_account("acc-2")
