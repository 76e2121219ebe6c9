"""ArgyleClient against the Argyle sandbox over real HTTP on loopback."""

from __future__ import annotations

import gc
import tracemalloc
from decimal import Decimal

import pytest

from argyle_pipeline.argyle.client import (
    AccountNotFound,
    ActivityNotFound,
    ArgyleAuthError,
    ArgyleClient,
    ArgyleClientError,
    ArgyleNotFound,
    ArgyleUnavailable,
    ForeignNextLink,
    PageLimitExceeded,
    WebhookNotFound,
)
from argyle_pipeline.aws.secret_values import ArgyleCredentials
from argyle_sandbox.server import SandboxServer
from tests.support.network import free_port
from tests.support.sandbox_fixtures import (  # noqa: F401
    SANDBOX_CREDENTIALS,
    RecordedSleeps,
    RecordingServer,
    recorder,
    sandbox,
    sandbox_client,
    sleeps,
)


def ids(activities: list) -> list[str]:
    return [a.id if hasattr(a, "id") else a["id"] for a in activities]


# --- listing ------------------------------------------------------------------------------------


def test_lists_every_activity_across_many_pages_with_flat_memory(sandbox: SandboxServer) -> None:
    # Given an account of 5,000 activities: 25 pages of 200
    _, account = sandbox.connect_account(n_activities=5_000)
    client = ArgyleClient(sandbox.base_url, SANDBOX_CREDENTIALS)

    def peak_while_listing(max_pages: int) -> tuple[int, int, set[str]]:
        seen: set[str] = set()
        gc.collect()
        tracemalloc.start()
        pages = 0
        for page in client.list_activity_pages(account, None, None):
            seen.update(a.id for a in page.activities)
            pages += 1
            if pages == max_pages:
                break
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return peak, pages, seen

    # When it is listed in full, and (for comparison) only its first 4 pages
    full_peak, full_pages, seen = peak_while_listing(10_000)
    short_peak, _, _ = peak_while_listing(4)

    # Then every activity came once, on 25 pages, and 6 times the pages did not need much more
    # memory than 4 (the set of ids we keep ourselves is the only thing that grows)
    assert full_pages == 25
    assert seen == set(ids(sandbox.truth(account)))
    assert len(seen) == 5_000
    assert full_peak < short_peak * 2, (full_peak, short_peak)


def test_order_matches_the_truth_and_money_stays_exact(sandbox: SandboxServer) -> None:
    _, account = sandbox.connect_account(n_activities=450)
    client = ArgyleClient(sandbox.base_url, SANDBOX_CREDENTIALS)

    listed = list(client.list_activities(account))

    truth = sandbox.truth(account)
    assert [a.raw for a in listed] == truth
    first = listed[0]
    assert isinstance(first.raw["income"]["total"], str)
    rates = [a.raw["income_rates"]["hour"] for a in listed if a.raw["income_rates"]["hour"] is not None]
    assert rates and all(isinstance(r, Decimal) for r in rates)
    assert first.income is not None and isinstance(first.income.total, Decimal)


def test_date_filters_are_inclusive_at_both_ends(sandbox: SandboxServer) -> None:
    # Given an account and two of its start dates
    _, account = sandbox.connect_account(n_activities=600)
    truth = sandbox.truth(account)
    newest_in_range, oldest_in_range = truth[100], truth[400]
    low, high = oldest_in_range["start_date"], newest_in_range["start_date"]
    client = ArgyleClient(sandbox.base_url, SANDBOX_CREDENTIALS, page_limit=50)

    # When the range between them is listed
    listed = list(client.list_activities(account, from_start_date=low, to_start_date=high))

    # Then both ends are included, and exactly what lies between
    expected = [a["id"] for a in truth if a["start_date"] is not None and low <= a["start_date"] <= high]
    assert ids(listed) == expected
    assert newest_in_range["id"] in ids(listed) and oldest_in_range["id"] in ids(listed)


@pytest.mark.parametrize(("pagination", "cursor_params"), [("offset", {"offset"}), ("keyset", {"cursor"})])
def test_a_next_cursor_resumes_the_listing_in_another_client(sandbox: SandboxServer, pagination: str,
                                                             cursor_params: set[str]) -> None:
    sandbox.settings.pagination = pagination
    _, account = sandbox.connect_account(n_activities=500)
    first_client = ArgyleClient(sandbox.base_url, SANDBOX_CREDENTIALS)
    first_page = next(first_client.list_activity_pages(account))
    # Only the cursor parameters of `next` are kept (the filters and limit are the client's own)
    assert first_page.next_cursor is not None and set(first_page.next_cursor) == cursor_params
    assert first_page.count == 500

    # When a new client resumes from the checkpointed cursor
    rest = list(
        ArgyleClient(sandbox.base_url, SANDBOX_CREDENTIALS).list_activities(account, cursor=first_page.next_cursor)
    )

    assert ids(first_page.activities) + ids(rest) == ids(sandbox.truth(account))


def test_more_pages_than_the_cap_fail_loudly_with_a_resumable_cursor(sandbox: SandboxServer) -> None:
    _, account = sandbox.connect_account(n_activities=1_000)
    client = ArgyleClient(sandbox.base_url, SANDBOX_CREDENTIALS, max_pages=2)
    got: list[str] = []

    with pytest.raises(PageLimitExceeded) as caught:
        for page in client.list_activity_pages(account):
            got.extend(a.id for a in page.activities)

    assert len(got) == 400
    assert caught.value.next_cursor is not None
    rest = ArgyleClient(sandbox.base_url, SANDBOX_CREDENTIALS).list_activities(account, cursor=caught.value.next_cursor)
    assert got + ids(list(rest)) == ids(sandbox.truth(account))


# --- retries ------------------------------------------------------------------------------------


def test_429_is_retried_after_the_servers_retry_after(
    sandbox: SandboxServer, sandbox_client: ArgyleClient, sleeps: RecordedSleeps
) -> None:
    # Given an API that throttles the next two requests, asking to wait 7 seconds
    _, account = sandbox.connect_account(n_activities=30)
    sandbox.faults.rate_limit_next = 2
    sandbox.faults.retry_after = "7"

    # When the account is listed
    listed = list(sandbox_client.list_activities(account))

    # Then it waited exactly what the server asked, twice, and got everything
    assert sleeps == [7.0, 7.0]
    assert len(listed) == 30
    assert sandbox_client.calls == 3 and sandbox_client.retries == 2


def test_500_then_success_backs_off_with_jitter(
    sandbox: SandboxServer, sandbox_client: ArgyleClient, sleeps: RecordedSleeps
) -> None:
    _, account = sandbox.connect_account(n_activities=5)
    activity_id = sandbox.truth(account)[0]["id"]
    sandbox.faults.fail_next = 2

    activity = sandbox_client.get_activity(activity_id)

    assert activity.id == activity_id
    assert len(sleeps) == 2
    # Full jitter: each delay within [0, base * 2**(attempt-1)]
    assert 0 <= sleeps[0] <= sandbox_client.backoff_base
    assert 0 <= sleeps[1] <= sandbox_client.backoff_base * 2
    assert sandbox_client.retries == 2


def test_retries_are_bounded_then_unavailable(
    sandbox: SandboxServer, sandbox_client: ArgyleClient, sleeps: RecordedSleeps
) -> None:
    sandbox.faults.fail_next = 100
    sandbox.faults.fail_status = 503

    with pytest.raises(ArgyleUnavailable) as caught:
        list(sandbox_client.list_activities("any-account"))

    assert caught.value.status == 503
    assert sandbox_client.calls == sandbox_client.max_attempts == 4
    assert len(sleeps) == 3


def test_a_retry_after_longer_than_allowed_gives_up_at_once(
    sandbox: SandboxServer, sandbox_client: ArgyleClient, sleeps: RecordedSleeps
) -> None:
    sandbox.faults.rate_limit_next = 1
    sandbox.faults.retry_after = "3600"

    with pytest.raises(ArgyleUnavailable) as caught:
        sandbox_client.get_activity("whatever")

    assert caught.value.retry_after == 3600
    assert sleeps == [] and sandbox_client.calls == 1


def test_connection_refused_is_retried_then_unavailable(sleeps: RecordedSleeps) -> None:
    client = ArgyleClient(f"http://127.0.0.1:{free_port()}/v1", SANDBOX_CREDENTIALS, sleep=sleeps, max_attempts=3)

    with pytest.raises(ArgyleUnavailable):
        client.get_activity("a")

    assert client.calls == 3 and len(sleeps) == 2


def test_a_slow_answer_times_out_and_is_retried(sandbox: SandboxServer, sleeps: RecordedSleeps) -> None:
    sandbox.faults.delay_seconds = 1.0
    client = ArgyleClient(sandbox.base_url, SANDBOX_CREDENTIALS, sleep=sleeps, timeout=0.2, max_attempts=2)

    with pytest.raises(ArgyleUnavailable, match="ReadTimeoutError"):
        client.get_activity("a")

    assert client.calls == 2


def test_a_post_is_not_retried_after_a_500(
    sandbox: SandboxServer, sandbox_client: ArgyleClient, sleeps: RecordedSleeps
) -> None:
    # Argyle may have created the subscription before failing: a retry could make a second one
    sandbox.faults.fail_next = 1

    with pytest.raises(ArgyleUnavailable):
        sandbox_client.create_webhook(events=["*"], url="http://127.0.0.1:1/hook", name="x")

    assert sandbox_client.calls == 1 and sleeps == []


# --- next links on another host -------------------------------------------------------------------


def test_a_next_link_on_another_host_is_rewritten_to_ours_and_never_called(
    sandbox: SandboxServer, recorder: RecordingServer
) -> None:
    # Given an API whose next links name another (recording) host
    _, account = sandbox.connect_account(n_activities=450)
    sandbox.faults.foreign_next_host = recorder.url
    client = ArgyleClient(sandbox.base_url, SANDBOX_CREDENTIALS)

    # When the account is listed (3 pages)
    listed = list(client.list_activities(account))

    # Then only the cursor was taken: all came from our host, and the other host saw nothing at all
    assert ids(listed) == ids(sandbox.truth(account))
    assert client.calls == 3
    assert recorder.requests == []


def test_a_next_link_on_another_host_can_be_refused(sandbox: SandboxServer, recorder: RecordingServer) -> None:
    _, account = sandbox.connect_account(n_activities=250)
    sandbox.faults.foreign_next_host = recorder.url
    client = ArgyleClient(sandbox.base_url, SANDBOX_CREDENTIALS, on_foreign_next="refuse")

    with pytest.raises(ForeignNextLink, match=r"another host \(127\.0\.0\.1:"):
        list(client.list_activities(account))

    assert recorder.requests == []
    assert not any("authorization" in r.headers for r in recorder.requests)


# --- errors that are not retried ----------------------------------------------------------------


def test_wrong_credentials_raise_an_auth_error_without_retrying(sandbox: SandboxServer, sleeps: RecordedSleeps) -> None:
    client = ArgyleClient(sandbox.base_url, ArgyleCredentials("test-key-id", "wrong"), sleep=sleeps)

    with pytest.raises(ArgyleAuthError, match="401") as caught:
        list(client.list_activities("a"))

    assert caught.value.status == 401
    assert "rejected the API key id/secret" in str(caught.value)
    assert client.calls == 1 and sleeps == []


def test_credentials_come_from_the_provider_on_each_request(sandbox: SandboxServer) -> None:
    handed_out: list[int] = []

    def provider() -> ArgyleCredentials:
        handed_out.append(1)
        return SANDBOX_CREDENTIALS

    client = ArgyleClient(sandbox.base_url, provider)
    client.list_webhooks()
    client.list_webhooks()

    assert len(handed_out) == 2


def test_an_unknown_activity_is_a_typed_not_found(sandbox_client: ArgyleClient, sleeps: RecordedSleeps) -> None:
    with pytest.raises(ActivityNotFound) as caught:
        sandbox_client.get_activity("00000000-0000-0000-0000-000000000000")

    assert caught.value.status == 404
    assert isinstance(caught.value, ArgyleClientError)
    assert sandbox_client.calls == 1 and sleeps == []


# --- accounts -------------------------------------------------------------------------------------


def test_get_account_is_retried_like_every_get_and_a_revoked_account_is_a_typed_not_found(
    sandbox: SandboxServer, sandbox_client: ArgyleClient, sleeps: RecordedSleeps
) -> None:
    # Given a connected account, behind an API that throttles the next request
    user, account = sandbox.connect_account(n_activities=40)
    sandbox.faults.rate_limit_next = 1
    sandbox.faults.retry_after = "3"

    # When the client asks for the account
    fetched = sandbox_client.get_account(account)

    # Then it waited as asked and got the account object the sandbox holds
    assert sleeps == [3.0] and sandbox_client.calls == 2
    assert fetched == sandbox.account(account)
    assert (fetched["id"], fetched["user"], fetched["connection"]["status"]) == (account, user, "connected")
    assert fetched["availability"]["activities"]["available_count"] == 40

    # When the user revokes access, Then the account is a typed 404, not retried
    sandbox.revoke(account)
    with pytest.raises(AccountNotFound, match=f"account {account} not found") as caught:
        sandbox_client.get_account(account)
    assert isinstance(caught.value, ArgyleNotFound) and caught.value.status == 404
    assert caught.value.body == {"detail": "Not found."}
    assert sandbox_client.calls == 3 and sleeps == [3.0]
    with pytest.raises(AccountNotFound):
        sandbox_client.get_account("00000000-0000-0000-0000-000000000000")


# --- webhook subscriptions ------------------------------------------------------------------------


def test_webhook_subscription_lifecycle(sandbox: SandboxServer, sandbox_client: ArgyleClient) -> None:
    created = sandbox_client.create_webhook(
        events=["activities.partially_synced"],
        url="https://example.test/hook",
        name="partial",
        secret="s3cret",
        config={"days_synced": 7},
    )

    fetched = sandbox_client.get_webhook(created.id)
    listed = sandbox_client.list_webhooks()
    sandbox_client.delete_webhook(created.id)

    assert fetched.events == ["activities.partially_synced"] and fetched.config == {"days_synced": 7}
    assert fetched.created_at is not None and fetched.created_at.tzinfo is not None
    assert [w.id for w in listed] == [created.id]
    assert "s3cret" not in repr(fetched)
    with pytest.raises(WebhookNotFound):
        sandbox_client.get_webhook(created.id)
    with pytest.raises(WebhookNotFound):
        sandbox_client.delete_webhook(created.id)


def test_listing_webhooks_follows_pages_and_accepts_a_bare_array(
    sandbox: SandboxServer, sandbox_client: ArgyleClient
) -> None:
    made = [sandbox.subscribe(f"https://example.test/{i}", ["*"], name=f"hook {i}").id for i in range(230)]

    paged = sandbox_client.list_webhooks()
    sandbox.faults.bare_webhook_list = True
    bare = sandbox_client.list_webhooks()

    assert [w.id for w in paged] == made  # 200 + 30, in created order
    assert sandbox_client.calls == 3
    assert [w.id for w in bare] == made[:200]  # a bare array has no next page


def test_a_missing_field_is_a_client_error_naming_it(sandbox_client: ArgyleClient) -> None:
    with pytest.raises(ArgyleClientError, match="url: This field is required") as caught:
        sandbox_client.create_webhook(events=["*"], url="", name="x")

    assert caught.value.status == 400
    assert caught.value.body == {"url": ["This field is required."]}
