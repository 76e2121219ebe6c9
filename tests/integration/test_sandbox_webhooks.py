"""The sandbox's webhooks: what the docs promise, signed so the receiver's code accepts them, and
parsed by the project's models, delivered over real HTTP to a recording server on loopback."""

from __future__ import annotations

import json
from typing import Any

import pytest

from argyle_pipeline.argyle.client import ArgyleClient
from argyle_pipeline.argyle.webhook_events import (
    ActivitiesAdded,
    ActivitiesFullySynced,
    ActivitiesPartiallySynced,
    ActivitiesRemoved,
    ActivitiesUpdated,
    UsersFullySynced,
    parse_webhook,
)
from argyle_pipeline.receiving.signature import InvalidSignature, verify
from argyle_pipeline.timestamps import iso_z
from argyle_sandbox.server import SandboxServer
from tests.support.sandbox_fixtures import (  # noqa: F401
    SANDBOX_CREDENTIALS,
    Received,
    RecordingServer,
    recorder,
    sandbox,
)

SECRET = "sandbox-webhook-secret"


def events(received: list[Received]) -> list[str]:
    return [json.loads(r.body)["event"] for r in received]


def parsed(received: list[Received], event: str) -> Any:
    [model] = [parse_webhook(r.body)[1] for r in received if json.loads(r.body)["event"] == event]
    return model


def test_connecting_an_account_sends_the_initial_scan_webhooks_in_order(
    sandbox: SandboxServer, recorder: RecordingServer
) -> None:
    # Given a subscription to every event
    sandbox.subscribe(recorder.url + "/hook", ["*"], SECRET, name="everything")

    # When an account with three years of activities is connected
    user, account = sandbox.connect_account(n_activities=500, years=3)
    sandbox.wait_for_deliveries(10)

    # Then the documented sequence arrived, each signed for the receiver's verify()
    assert events(recorder.requests) == [
        "accounts.connected",
        "activities.partially_synced",
        "activities.fully_synced",
        "users.fully_synced",
    ]
    for request in recorder.requests:
        verify(request.body, request.headers["x-argyle-signature"], [SECRET])
        assert request.method == "POST" and request.path == "/hook"
        assert request.headers["content-type"] == "application/json"
    truth = sandbox.truth(account)
    full = parsed(recorder.requests, "activities.fully_synced")
    assert isinstance(full, ActivitiesFullySynced)
    assert (full.account, full.user, full.available_count) == (account, user, 500)
    assert full.original("available_from") == truth[-1]["start_date"]
    assert full.original("available_to") == truth[0]["start_date"]
    assert full.webhook_name == "everything"
    users = parsed(recorder.requests, "users.fully_synced")
    assert isinstance(users, UsersFullySynced) and users.user == user
    assert users.resource is not None and users.resource.employers_connected == [truth[0]["employer"]]


def test_partially_synced_follows_each_subscriptions_days_synced(
    sandbox: SandboxServer, recorder: RecordingServer
) -> None:
    sandbox.subscribe(recorder.url + "/week", ["activities.partially_synced"], SECRET, config={"days_synced": 7})
    sandbox.subscribe(recorder.url + "/default", ["activities.partially_synced"], SECRET)

    _, account = sandbox.connect_account(n_activities=2_000, years=2)
    sandbox.wait_for_deliveries(10)

    by_path = {r.path: parse_webhook(r.body)[1] for r in recorder.requests}
    week, month = by_path["/week"], by_path["/default"]
    assert isinstance(week, ActivitiesPartiallySynced) and isinstance(month, ActivitiesPartiallySynced)
    assert (week.days_synced, month.days_synced) == (7, 30)
    truth = sandbox.truth(account)
    for model, days in ((week, 7), (month, 30)):
        assert model.available_to is not None and model.available_from is not None
        newest = truth[0]["start_date"]
        in_window = [a for a in truth if model.original("available_from") <= a["start_date"] <= newest]
        assert model.available_count == len(in_window)
        assert (model.available_to - model.available_from).days < days
    assert week.available_count is not None and month.available_count is not None
    assert 0 < week.available_count < month.available_count < 2_000


def test_a_small_account_gets_only_fully_synced(sandbox: SandboxServer, recorder: RecordingServer) -> None:
    sandbox.subscribe(recorder.url, ["activities.partially_synced", "activities.fully_synced"], SECRET)

    sandbox.connect_account(n_activities=5, years=0.01)
    sandbox.wait_for_deliveries(10)

    assert events(recorder.requests) == ["activities.fully_synced"]


def test_an_empty_account_has_null_available_range(sandbox: SandboxServer, recorder: RecordingServer) -> None:
    sandbox.subscribe(recorder.url, ["activities.fully_synced"], SECRET)

    sandbox.connect_account(n_activities=0)
    sandbox.wait_for_deliveries(10)

    model = parsed(recorder.requests, "activities.fully_synced")
    assert model.available_count == 0 and model.available_from is None and model.available_to is None


def test_periodic_scan_sends_added_updated_removed_that_lead_to_the_changes(
    sandbox: SandboxServer, recorder: RecordingServer
) -> None:
    # Given a synced account and a subscription to the periodic-scan events
    _, account = sandbox.connect_account(n_activities=300)
    before = {a["id"]: a for a in sandbox.truth(account)}
    sandbox.subscribe(recorder.url, ["activities.added", "activities.updated", "activities.removed"], SECRET)

    # When a scan adds 4, updates 3 and removes 2
    result = sandbox.periodic_scan(account, add=4, update=3, remove=2)
    sandbox.wait_for_deliveries(10)

    # Then each webhook says what changed, and following it reaches the new state
    assert events(recorder.requests) == ["activities.added", "activities.updated", "activities.removed"]
    added = parsed(recorder.requests, "activities.added")
    updated = parsed(recorder.requests, "activities.updated")
    removed = parsed(recorder.requests, "activities.removed")
    assert isinstance(added, ActivitiesAdded) and added.added_count == 4 and added.available_count == 302
    assert isinstance(updated, ActivitiesUpdated) and sorted(updated.updated_activities) == sorted(result.updated)
    assert isinstance(removed, ActivitiesRemoved) and sorted(removed.removed_activities) == sorted(result.removed)
    assert removed.removed_count == 2

    client = ArgyleClient(sandbox.base_url, SANDBOX_CREDENTIALS)
    assert added.added_from is not None and added.added_to is not None
    new = client.list_activities(account, iso_z(added.added_from), iso_z(added.added_to))
    assert sorted(a.id for a in new) == sorted(result.added)
    assert updated.updated_from is not None and updated.updated_to is not None
    in_range = {a.id for a in client.list_activities(account, iso_z(updated.updated_from), iso_z(updated.updated_to))}
    assert set(result.updated) <= in_range
    after = {a["id"]: a for a in sandbox.truth(account)}
    for activity_id in result.updated:
        assert after[activity_id]["updated_at"] > before[activity_id]["updated_at"]
        assert after[activity_id]["metadata"]["revision"] == 1
    assert not set(result.removed) & set(after)


@pytest.mark.parametrize("body_event", ["accounts.connected"])
def test_events_not_modelled_still_parse_to_their_name(
    sandbox: SandboxServer, recorder: RecordingServer, body_event: str
) -> None:
    sandbox.subscribe(recorder.url, [body_event], SECRET)

    sandbox.connect_account(n_activities=3)
    sandbox.wait_for_deliveries(10)

    assert [parse_webhook(r.body) for r in recorder.requests] == [(body_event, None)]


def test_a_subscription_without_secret_gets_no_signature_and_a_wrong_secret_fails(
    sandbox: SandboxServer, recorder: RecordingServer
) -> None:
    sandbox.subscribe(recorder.url + "/unsigned", ["activities.fully_synced"], None)
    sandbox.subscribe(recorder.url + "/signed", ["activities.fully_synced"], SECRET)

    sandbox.connect_account(n_activities=3)
    sandbox.wait_for_deliveries(10)

    by_path = {r.path: r for r in recorder.requests}
    assert "x-argyle-signature" not in by_path["/unsigned"].headers
    with pytest.raises(InvalidSignature):
        verify(by_path["/signed"].body, by_path["/signed"].headers["x-argyle-signature"], ["another secret"])


def test_non_2xx_deliveries_are_retried_then_given_up(sandbox: SandboxServer) -> None:
    flaky = RecordingServer(statuses=[500, 503, 200]).start()
    down = RecordingServer(statuses=[500]).start()
    try:
        sandbox.subscribe(flaky.url, ["activities.fully_synced"], SECRET)
        sandbox.subscribe(down.url, ["activities.fully_synced"], SECRET)

        sandbox.connect_account(n_activities=3)
        sandbox.wait_for_deliveries(10)

        by_url = {d.url: d for d in sandbox.deliveries}
        assert by_url[flaky.url].outcomes == [500, 503, 200] and by_url[flaky.url].delivered
        assert len({r.body for r in flaky.requests}) == 1  # the same body each time
        assert len(down.requests) == sandbox.outbox.max_attempts == 5
        assert by_url[down.url].gave_up and not by_url[down.url].delivered
    finally:
        flaky.stop()
        down.stop()


def test_duplicate_and_reordered_deliveries(sandbox: SandboxServer, recorder: RecordingServer) -> None:
    sandbox.subscribe(recorder.url, ["activities.partially_synced", "activities.fully_synced"], SECRET)
    sandbox.faults.duplicate_deliveries = 1
    sandbox.faults.reorder_deliveries = True

    sandbox.connect_account(n_activities=1_000, years=2)
    sandbox.wait_for_deliveries(10)

    assert events(recorder.requests) == [
        "activities.fully_synced",
        "activities.fully_synced",
        "activities.partially_synced",
        "activities.partially_synced",
    ]
    assert recorder.requests[0].body == recorder.requests[1].body


def test_wait_for_deliveries_times_out_when_the_receiver_hangs(sandbox: SandboxServer) -> None:
    # Given a URL nobody answers on (port 9 "discard" is closed on loopback): attempts fail fast,
    # but the backoff keeps the delivery pending for longer than we wait
    sandbox.outbox.backoff = 30
    sandbox.subscribe("http://127.0.0.1:9/", ["activities.fully_synced"], SECRET)
    sandbox.connect_account(n_activities=1)

    with pytest.raises(TimeoutError, match="pending"):
        sandbox.wait_for_deliveries(0.3)
