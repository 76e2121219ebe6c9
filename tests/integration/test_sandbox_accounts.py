"""The sandbox's account lifecycle over real HTTP: the account object, revoking access (the data
goes, and only accounts.removed is sent), accounts.updated after scans (with the account object
when the subscription asks), connection errors and failed connects. Webhooks go to a recording
server on loopback."""

from __future__ import annotations

import json
from typing import Any

import pytest
import urllib3

from argyle_pipeline.receiving.signature import verify
from argyle_sandbox.server import SandboxServer
from argyle_sandbox.state import SINGLE_EVENT_ONLY
from tests.support.sandbox_fixtures import (  # noqa: F401
    SANDBOX_KEY_ID,
    SANDBOX_KEY_SECRET,
    Received,
    RecordingServer,
    recorder,
    sandbox,
)

SECRET = "sandbox-webhook-secret"
AUTH = urllib3.make_headers(basic_auth=f"{SANDBOX_KEY_ID}:{SANDBOX_KEY_SECRET}")
http = urllib3.PoolManager(retries=False)


def api(sb: SandboxServer, path: str, **fields: str) -> tuple[int, Any]:
    response = http.request("GET", sb.base_url + path, fields=fields or None, headers=AUTH)
    return response.status, json.loads(response.data)


def control(sb: SandboxServer, path: str, body: Any) -> tuple[int, Any]:
    response = http.request("POST", sb.root_url + path, body=json.dumps(body).encode())
    return response.status, json.loads(response.data)


def create_webhook(sb: SandboxServer, events: Any, config: dict[str, Any]) -> tuple[int, Any]:
    body = {"events": events, "name": "lifecycle", "url": "https://example.test/hook", "config": config}
    response = http.request("POST", sb.base_url + "/webhooks", body=json.dumps(body).encode(), headers=AUTH)
    return response.status, json.loads(response.data)


def webhooks(received: list[Received]) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in received]


def events(received: list[Received]) -> list[str]:
    return [w["event"] for w in webhooks(received)]


# --- revoking access ------------------------------------------------------------------------------


def test_revoke_deletes_the_account_and_its_activities_and_sends_only_accounts_removed(
    sandbox: SandboxServer, recorder: RecordingServer
) -> None:
    # Given a user with two connected accounts and a subscription to every event
    sandbox.subscribe(recorder.url, ["*"], SECRET)
    user, leaving = sandbox.connect_account(n_activities=120)
    _, staying = sandbox.connect_account(user, n_activities=30)
    sandbox.wait_for_deliveries(10)
    leaving_ids = [a["id"] for a in sandbox.truth(leaving)]
    first_page = api(sandbox, "/activities", account=leaving, limit="100")[1]  # a listing under way
    before = len(recorder.requests)

    # When the user revokes access to one of them
    status, answer = control(sandbox, "/_sandbox/revoke", {"account": leaving})
    sandbox.wait_for_deliveries(10)

    # Then exactly one webhook arrived, a signed accounts.removed naming the account and the user
    assert (status, answer) == (200, {"account": leaving, "user": user, "activities_removed": 120})
    [removed] = recorder.requests[before:]
    verify(removed.body, removed.headers["x-argyle-signature"], [SECRET])
    assert json.loads(removed.body)["event"] == "accounts.removed"
    assert json.loads(removed.body)["data"] == {"account": leaving, "user": user}
    assert "activities.removed" not in [d.event for d in sandbox.deliveries]
    # and the account and each of its activities are gone from the API, listings included
    assert api(sandbox, f"/accounts/{leaving}") == (404, {"detail": "Not found."})
    assert api(sandbox, "/activities", account=leaving, limit="200") == (
        200,
        {"count": 0, "next": None, "previous": None, "results": []},
    )
    assert {api(sandbox, f"/activities/{i}")[0] for i in leaving_ids} == {404}
    # and the listing under way ends at its next page
    next_page = json.loads(http.request("GET", first_page["next"], headers=AUTH).data)
    assert (next_page["count"], next_page["next"], next_page["results"]) == (0, None, [])
    # while the user's other account keeps everything
    status, everything = api(sandbox, "/activities", limit="200")
    assert status == 200 and everything["count"] == 30
    assert {a["account"] for a in everything["results"]} == {staying}
    assert api(sandbox, f"/accounts/{staying}")[0] == 200


def test_revoking_an_unknown_or_revoked_account_is_404_and_sends_nothing(
    sandbox: SandboxServer, recorder: RecordingServer
) -> None:
    _, account = sandbox.connect_account(n_activities=5)
    sandbox.subscribe(recorder.url, ["*"], SECRET)
    assert control(sandbox, "/_sandbox/revoke", {"account": account})[0] == 200

    assert control(sandbox, "/_sandbox/revoke", {"account": account}) == (
        404,
        {"detail": f"account {account} was revoked"},
    )
    assert control(sandbox, "/_sandbox/revoke", {"account": "nope"}) == (404, {"detail": "account nope is unknown"})
    assert control(sandbox, "/_sandbox/revoke", {}) == (400, {"account": ["This field is required."]})
    with pytest.raises(KeyError, match="was revoked"):
        sandbox.revoke(account)
    # and a revoked account can no longer be scanned, nor its truth asked
    assert control(sandbox, "/_sandbox/scan", {"account": account, "add": 1})[0] == 404
    with pytest.raises(KeyError, match="was revoked"):
        sandbox.truth(account)
    sandbox.wait_for_deliveries(10)
    assert events(recorder.requests) == ["accounts.removed"]


def test_reconnecting_the_user_makes_a_new_account_and_the_revoked_id_never_comes_back(
    sandbox: SandboxServer,
) -> None:
    user, first = sandbox.connect_account(n_activities=10)
    sandbox.revoke(first)

    again_user, second = sandbox.connect_account(user, n_activities=10)

    assert again_user == user and second != first
    assert sandbox.state.users[user].accounts == [second]
    assert api(sandbox, f"/accounts/{second}")[1]["user"] == user
    assert api(sandbox, f"/accounts/{first}")[0] == 404
    assert {a["account"] for a in api(sandbox, "/activities", limit="200")[1]["results"]} == {second}


# --- accounts.updated and the account object ------------------------------------------------------


def test_accounts_updated_follows_each_scan_with_the_resource_only_where_the_config_asks(
    sandbox: SandboxServer, recorder: RecordingServer
) -> None:
    # Given two subscriptions to accounts.updated, one of them with include_resource
    sandbox.subscribe(recorder.url + "/with", ["accounts.updated"], SECRET, config={"include_resource": True})
    sandbox.subscribe(recorder.url + "/without", ["accounts.updated"], SECRET)

    # When an account is connected (its first scan) and then scanned again
    user, account = sandbox.connect_account(n_activities=50)
    sandbox.wait_for_deliveries(10)
    after_first_scan = sandbox.account(account)
    sandbox.periodic_scan(account, add=2, remove=1)
    sandbox.wait_for_deliveries(10)

    # Then each subscription got one accounts.updated per scan
    by_path: dict[str, list[dict[str, Any]]] = {"/with": [], "/without": []}
    for request in recorder.requests:
        verify(request.body, request.headers["x-argyle-signature"], [SECRET])
        by_path[request.path].append(json.loads(request.body))
    assert [w["event"] for w in by_path["/with"]] == ["accounts.updated"] * 2
    # without include_resource the data is just {account, user}
    assert [w["data"] for w in by_path["/without"]] == [{"account": account, "user": user}] * 2
    # with it, data.resource is the account object as each scan left it
    first, second = (w["data"] for w in by_path["/with"])
    assert (first["account"], first["user"]) == (second["account"], second["user"]) == (account, user)
    assert first["resource"] == after_first_scan
    assert second["resource"] == sandbox.account(account) == api(sandbox, f"/accounts/{account}")[1]
    assert first["resource"]["scanned_at"] is not None
    assert second["resource"]["scanned_at"] > first["resource"]["scanned_at"]
    assert [r["resource"]["availability"]["activities"]["available_count"] for r in (first, second)] == [50, 51]
    assert second["resource"]["connection"] == {
        "status": "connected",
        "error_code": None,
        "error_message": None,
        "updated_at": first["resource"]["created_at"],
    }


def test_accounts_connected_carries_the_object_before_the_first_scan(
    sandbox: SandboxServer, recorder: RecordingServer
) -> None:
    sandbox.subscribe(recorder.url, ["accounts.connected"], SECRET, config={"include_resource": True})

    _, account = sandbox.connect_account(n_activities=8)
    sandbox.wait_for_deliveries(10)

    [connected] = webhooks(recorder.requests)
    resource = connected["data"]["resource"]
    assert resource["id"] == account and resource["connection"]["status"] == "connected"
    assert resource["scanned_at"] is None and resource["availability"]["activities"]["available_count"] == 0


def test_include_resource_is_refused_unless_the_subscription_has_exactly_one_event(sandbox: SandboxServer) -> None:
    # A subscription to several events, or to "*", may not ask for the resource
    for many in (["accounts.updated", "accounts.connected"], "*", ["*"]):
        assert create_webhook(sandbox, many, {"include_resource": True}) == (400, {"config": [SINGLE_EVENT_ONLY]})
    assert create_webhook(sandbox, ["accounts.updated"], {"include_resource": "yes"}) == (
        400,
        {"config": ["include_resource must be true or false."]},
    )
    with pytest.raises(ValueError, match="exactly one event"):
        sandbox.subscribe("https://example.test/py", ["*"], config={"include_resource": True})
    # One event may; include_resource false needs no rule; nothing refused was created
    status, one = create_webhook(sandbox, ["accounts.updated"], {"include_resource": True})
    assert status == 201 and one["config"] == {"include_resource": True}
    assert create_webhook(sandbox, ["a.b", "c.d"], {"include_resource": False})[0] == 201
    assert api(sandbox, "/webhooks")[1]["count"] == 2

    # When the sandbox answers as Argyle's own create example does, the option is dropped instead
    assert control(sandbox, "/_sandbox/settings", {"include_resource_rule": "drop"})[0] == 200
    status, dropped = create_webhook(sandbox, ["a.b", "c.d"], {"include_resource": True, "days_synced": 7})
    assert status == 201 and dropped["config"] == {"days_synced": 7}


# --- connection errors and failed connects --------------------------------------------------------


def test_account_error_puts_the_connection_in_error_and_sends_accounts_updated_while_the_data_stays(
    sandbox: SandboxServer, recorder: RecordingServer
) -> None:
    # Given a connected account and a subscription to accounts.updated with the resource
    user, account = sandbox.connect_account(n_activities=40)
    sandbox.subscribe(recorder.url, ["accounts.updated"], SECRET, config={"include_resource": True})

    # When its connection breaks
    status, answer = control(sandbox, "/_sandbox/account_error", {"account": account, "error_code": "auth_required"})
    sandbox.wait_for_deliveries(10)

    # Then the account object says so, in the answer, the webhook and the API alike
    assert status == 200
    connection = answer["connection"]
    assert (connection["status"], connection["error_code"]) == ("error", "auth_required")
    assert connection["error_message"] and connection["updated_at"] > answer["created_at"]
    [updated] = webhooks(recorder.requests)
    assert updated["event"] == "accounts.updated" and updated["data"]["user"] == user
    assert updated["data"]["resource"] == answer == api(sandbox, f"/accounts/{account}")[1]
    # and the data stays (an error is not a removal), but Argyle cannot scan it any more
    assert api(sandbox, "/activities", account=account)[1]["count"] == 40
    assert control(sandbox, "/_sandbox/scan", {"account": account, "add": 1}) == (
        400,
        {"detail": f"account {account} is in error (auth_required): Argyle cannot scan it"},
    )


def test_account_error_refuses_bad_input(sandbox: SandboxServer) -> None:
    _, account = sandbox.connect_account(n_activities=3)

    status, errors = control(sandbox, "/_sandbox/account_error", {"account": account, "error_code": "Bad Code"})
    assert status == 400 and list(errors) == ["error_code"] and "snake_case" in errors["error_code"][0]
    assert control(sandbox, "/_sandbox/account_error", {"account": account})[0] == 400
    assert control(sandbox, "/_sandbox/account_error", {"error_code": "auth_required"}) == (
        400,
        {"account": ["This field is required."]},
    )
    assert control(sandbox, "/_sandbox/account_error", {"account": "nope", "error_code": "auth_required"})[0] == 404
    assert sandbox.account(account)["connection"]["status"] == "connected"  # nothing changed


def test_a_failed_connect_sends_only_accounts_failed_and_leaves_an_account_in_error_without_data(
    sandbox: SandboxServer, recorder: RecordingServer
) -> None:
    sandbox.subscribe(recorder.url, ["*"], SECRET)

    status, made = control(sandbox, "/_sandbox/connect", {"n_activities": 50, "fail_with": "mfa_timeout"})
    sandbox.wait_for_deliveries(10)

    assert status == 201
    assert webhooks(recorder.requests) == [
        {"event": "accounts.failed", "name": "sandbox subscription", "data": made},
    ]
    account = api(sandbox, f"/accounts/{made['account']}")[1]
    assert (account["connection"]["status"], account["connection"]["error_code"]) == ("error", "mfa_timeout")
    assert account["availability"]["activities"]["available_count"] == 0
    assert api(sandbox, "/activities", account=made["account"])[1]["count"] == 0
    assert control(sandbox, "/_sandbox/connect", {"fail_with": "No"})[0] == 400

    # When the same user then connects an account that works, the failed one does not hold it back
    sandbox.connect_account(made["user"], n_activities=5)
    sandbox.wait_for_deliveries(10)
    assert events(recorder.requests)[-1] == "users.fully_synced"
