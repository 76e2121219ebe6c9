"""The sandbox's webhooks: what the docs promise, signed so the receiver's code accepts them, and
parsed by the project's models, delivered over real HTTP to a recording server on loopback."""

from __future__ import annotations

import json
from typing import Any

import pytest
import urllib3

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
        "accounts.updated",
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
def test_account_events_parse_to_their_model(
    sandbox: SandboxServer, recorder: RecordingServer, body_event: str
) -> None:
    sandbox.subscribe(recorder.url, [body_event], SECRET)

    _, account = sandbox.connect_account(n_activities=3)
    sandbox.wait_for_deliveries(10)

    parsed = [parse_webhook(r.body) for r in recorder.requests]
    assert [(name, getattr(model, "account", None)) for name, model in parsed] == [(body_event, account)]


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


# --- deliveries that never arrive, and removals that lie -----------------------------------------


def control(sb: SandboxServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    response = urllib3.request(method, sb.root_url + path, body=None if body is None else json.dumps(body).encode())
    return response.status, json.loads(response.data)


def test_a_dropped_delivery_is_recorded_and_never_reaches_the_receiver(
    sandbox: SandboxServer, recorder: RecordingServer
) -> None:
    # Given a synced account, a subscription, and the next activities.removed forgotten by Argyle
    _, account = sandbox.connect_account(n_activities=100)
    sandbox.subscribe(recorder.url, ["activities.added", "activities.removed"], SECRET)
    drop_one_removal = {"drop_next_deliveries": 1, "drop_events": ["activities.removed"]}
    assert control(sandbox, "POST", "/_sandbox/faults", drop_one_removal)[0] == 200

    # When two scans each add and remove
    first = sandbox.periodic_scan(account, add=2, remove=3)
    second = sandbox.periodic_scan(account, add=1, remove=1)
    sandbox.wait_for_deliveries(10)

    # Then the receiver never saw the first removal, only the rest
    got = [parse_webhook(r.body)[1] for r in recorder.requests]
    assert events(recorder.requests) == ["activities.added", "activities.added", "activities.removed"]
    assert isinstance(got[2], ActivitiesRemoved) and got[2].removed_activities == second.removed
    # and the sandbox says which one it dropped, with a clear status, over HTTP too
    status, dropped = control(sandbox, "GET", "/_sandbox/deliveries?status=dropped")
    assert status == 200 and len(dropped) == 1
    assert dropped[0]["event"] == "activities.removed" and dropped[0]["attempts"] == 0
    assert json.loads(dropped[0]["body"])["data"]["removed_activities"] == first.removed
    assert [d.status for d in sandbox.deliveries] == ["delivered", "dropped", "delivered", "delivered"]
    assert control(sandbox, "GET", "/_sandbox/deliveries?status=lost")[0] == 400


def test_every_nth_delivery_of_the_chosen_events_is_dropped(sandbox: SandboxServer, recorder: RecordingServer) -> None:
    # Given every 2nd activities.added forgotten (counted among activities.added only)
    _, account = sandbox.connect_account(n_activities=50)
    sandbox.subscribe(recorder.url, ["activities.added", "activities.updated"], SECRET)
    sandbox.faults.update({"drop_every_delivery": 2, "drop_events": ["activities.added"]})

    # When four scans each add one and update one
    added = [sandbox.periodic_scan(account, add=1, update=1).added for _ in range(4)]
    sandbox.wait_for_deliveries(10)

    # Then the 2nd and 4th additions never arrived; every update did
    arrived = [parse_webhook(r.body)[1] for r in recorder.requests]
    assert events(recorder.requests).count("activities.updated") == 4
    added_ranges = [(w.added_from, w.added_to) for w in arrived if isinstance(w, ActivitiesAdded)]
    assert len(added_ranges) == 2
    dropped = [d for d in sandbox.deliveries if d.status == "dropped"]
    assert [d.event for d in dropped] == ["activities.added"] * 2
    starts = {a["id"]: a["start_date"] for a in sandbox.truth(account)}
    dropped_starts = [json.loads(d.body)["data"]["added_from"] for d in dropped]
    assert dropped_starts == [starts[added[1][0]], starts[added[3][0]]]


def test_a_dropped_webhook_is_not_sent_even_when_deliveries_are_duplicated(
    sandbox: SandboxServer, recorder: RecordingServer
) -> None:
    sandbox.subscribe(recorder.url, ["activities.fully_synced"], SECRET)
    sandbox.faults.update({"drop_next_deliveries": 1, "duplicate_deliveries": 2})

    sandbox.connect_account(n_activities=5)
    sandbox.connect_account(n_activities=5)
    sandbox.wait_for_deliveries(10)

    assert len(recorder.requests) == 3 and len({r.body for r in recorder.requests}) == 1
    assert [d.status for d in sandbox.deliveries] == ["dropped"] + ["delivered"] * 3


def test_a_lying_removal_arrives_signed_while_the_activities_stay_live(
    sandbox: SandboxServer, recorder: RecordingServer
) -> None:
    # Given a synced account and a subscription to removals
    _, account = sandbox.connect_account(n_activities=200)
    sandbox.subscribe(recorder.url, ["activities.removed"], SECRET)

    # When a lying removal of 10 is sent over the control route
    status, answer = control(sandbox, "POST", "/_sandbox/lying_removal", {"account": account, "n": 10})
    sandbox.wait_for_deliveries(10)

    # Then a validly signed activities.removed names exactly those 10
    assert status == 200 and answer["account"] == account and len(set(answer["removed_activities"])) == 10
    [request] = recorder.requests
    verify(request.body, request.headers["x-argyle-signature"], [SECRET])
    removed = parse_webhook(request.body)[1]
    assert isinstance(removed, ActivitiesRemoved) and removed.removed_count == 10
    assert removed.removed_activities == answer["removed_activities"]
    # and every one of them still answers 200 at Argyle, with the account's size unchanged
    client = ArgyleClient(sandbox.base_url, SANDBOX_CREDENTIALS)
    assert [client.get_activity(i).id for i in answer["removed_activities"]] == answer["removed_activities"]
    assert len(sandbox.truth(account)) == 200 and removed.available_count == 200


def test_a_lying_removal_from_python_names_given_ids_and_refuses_bad_input(sandbox: SandboxServer) -> None:
    _, account = sandbox.connect_account(n_activities=5)
    some = [a["id"] for a in sandbox.truth(account)][:2]

    assert sandbox.lying_removal(account, ids=some) == some
    assert len(sandbox.truth(account)) == 5
    with pytest.raises(ValueError, match="between 1 and the account's 5 activities, got 6"):
        sandbox.lying_removal(account, 6)
    assert control(sandbox, "POST", "/_sandbox/lying_removal", {"account": account, "ids": ["nope"]})[0] == 400
    assert control(sandbox, "POST", "/_sandbox/lying_removal", {"account": "unknown", "n": 1})[0] == 404
    assert control(sandbox, "POST", "/_sandbox/lying_removal", {"n": 1}) == (
        400,
        {"account": ["This field is required."]},
    )
