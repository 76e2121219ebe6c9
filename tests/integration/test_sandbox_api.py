"""The sandbox's HTTP API behaves like Argyle's v1 API for what this project touches."""

from __future__ import annotations

import json
from typing import Any

import pytest
import urllib3

from argyle_sandbox.server import SandboxServer
from tests.support.sandbox_fixtures import SANDBOX_KEY_ID, SANDBOX_KEY_SECRET, sandbox  # noqa: F401

AUTH = urllib3.make_headers(basic_auth=f"{SANDBOX_KEY_ID}:{SANDBOX_KEY_SECRET}")
http = urllib3.PoolManager(retries=False)


def call(
    sb: SandboxServer, method: str, path: str, *, body: Any = None, headers: dict[str, str] | None = None, **fields: str
) -> tuple[int, Any]:
    response = http.request(
        method,
        sb.root_url + path,
        fields=fields or None,
        body=json.dumps(body).encode() if body is not None else None,
        headers=AUTH if headers is None else headers,
    )
    return response.status, (json.loads(response.data) if response.data else None)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/activities"),
        ("GET", "/v1/activities/x"),
        ("GET", "/v1/webhooks"),
        ("POST", "/v1/webhooks"),
        ("GET", "/v1/webhooks/x"),
        ("DELETE", "/v1/webhooks/x"),
    ],
)
def test_every_api_route_needs_basic_auth(sandbox: SandboxServer, method: str, path: str) -> None:
    wrong = urllib3.make_headers(basic_auth=f"{SANDBOX_KEY_ID}:nope")

    for headers in ({}, wrong):
        response = http.request(method, sandbox.root_url + path, headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic")
        assert json.loads(response.data) == {"detail": "Invalid username/password."}


def test_listing_shape_default_limit_and_offset_next(sandbox: SandboxServer) -> None:
    _, account = sandbox.connect_account(n_activities=25)

    status, page = call(sandbox, "GET", "/v1/activities", account=account)

    assert status == 200
    assert set(page) == {"count", "next", "previous", "results"}
    assert page["count"] == 25 and len(page["results"]) == 10 and page["previous"] is None
    assert page["next"] == f"{sandbox.base_url}/activities?account={account}&limit=10&offset=10"
    starts = [a["start_date"] for a in page["results"]]
    assert starts == sorted(starts, reverse=True)


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"limit": "201"}, "limit", "Ensure this value is less than or equal to 200."),
        ({"limit": "0"}, "limit", "Ensure this value is greater than or equal to 1."),
        ({"limit": "ten"}, "limit", "A valid integer is required."),
        ({"from_start_date": "yesterday"}, "from_start_date", "Enter a valid date/time."),
        ({"offset": "-10"}, "offset", "Ensure this value is greater than or equal to 0."),
    ],
)
def test_bad_listing_parameters_are_400_naming_the_field(
    sandbox: SandboxServer, params: dict[str, str], field: str, message: str
) -> None:
    assert call(sandbox, "GET", "/v1/activities", **params) == (400, {field: [message]})


def test_limit_200_is_allowed(sandbox: SandboxServer) -> None:
    _, account = sandbox.connect_account(n_activities=250)

    status, page = call(sandbox, "GET", "/v1/activities", account=account, limit="200")

    assert status == 200 and len(page["results"]) == 200


def test_a_keyset_cursor_stays_valid_when_activities_are_removed(sandbox: SandboxServer) -> None:
    # Given a listing in keyset mode paused after its first page
    sandbox.settings.pagination = "keyset"
    _, account = sandbox.connect_account(n_activities=60)
    before = [a["id"] for a in sandbox.truth(account)]
    _, first = call(sandbox, "GET", "/v1/activities", account=account, limit="20")

    # When activities on the served page and on pages to come are removed meanwhile
    gone = before[5:8] + before[25:30]
    sandbox.periodic_scan(account, remove_ids=gone)
    rest: list[str] = []
    link = first["next"]
    while link:
        response = http.request("GET", link, headers=AUTH)
        page = json.loads(response.data)
        rest += [a["id"] for a in page["results"]]
        link = page["next"]

    # Then the rest continues exactly after the last served item: nothing repeated, nothing skipped
    assert rest == [i for i in before[20:] if i not in gone]


def test_an_offset_counts_positions_afresh_so_removals_before_it_skip_live_activities(sandbox: SandboxServer) -> None:
    # Given an offset listing paused after its first page
    _, account = sandbox.connect_account(n_activities=60)
    before = [a["id"] for a in sandbox.truth(account)]
    _, first = call(sandbox, "GET", "/v1/activities", account=account, limit="20")

    # When 3 activities of the served page are removed before the next page is asked for
    sandbox.periodic_scan(account, remove_ids=before[5:8])
    second = json.loads(http.request("GET", first["next"], headers=AUTH).data)

    # Then that page starts 3 later: the 3 live activities after the first page are never served
    assert [a["id"] for a in second["results"]] == before[23:43]
    assert second["count"] == 57


def test_undated_activities_only_appear_without_date_filters(sandbox: SandboxServer) -> None:
    _, account = sandbox.connect_account(n_activities=10, undated=3)

    _, everything = call(sandbox, "GET", "/v1/activities", account=account, limit="50")
    _, ranged = call(
        sandbox, "GET", "/v1/activities", account=account, limit="50", from_start_date="2000-01-01T00:00:00Z"
    )

    assert everything["count"] == 13 and [a["start_date"] for a in everything["results"][-3:]] == [None] * 3
    assert ranged["count"] == 10


def test_a_bare_date_as_upper_bound_covers_the_whole_day(sandbox: SandboxServer) -> None:
    _, account = sandbox.connect_account(n_activities=200)
    newest = sandbox.truth(account)[0]

    _, page = call(
        sandbox,
        "GET",
        "/v1/activities",
        account=account,
        limit="200",
        from_start_date=newest["start_date"][:10],
        to_start_date=newest["start_date"][:10],
    )

    assert newest["id"] in [a["id"] for a in page["results"]]


def test_get_activity_and_truth_agree(sandbox: SandboxServer) -> None:
    _, account = sandbox.connect_account(n_activities=15)
    truth_over_http = call(sandbox, "GET", "/_sandbox/truth", account=account, headers={})[1]

    status, one = call(sandbox, "GET", f"/v1/activities/{truth_over_http[3]['id']}")

    assert status == 200 and one == truth_over_http[3]
    assert call(sandbox, "GET", "/v1/activities/unknown") == (404, {"detail": "Not found."})


def test_the_same_seed_gives_the_same_data_and_another_seed_does_not() -> None:
    def snapshot(seed: int) -> list[dict[str, Any]]:
        with SandboxServer(seed=seed) as sb:
            _, account = sb.connect_account(n_activities=50)
            sb.periodic_scan(account, add=3, update=4, remove=2)
            return sb.truth(account)

    assert snapshot(5) == snapshot(5)
    assert snapshot(5) != snapshot(6)


def test_documents_have_the_documented_shapes(sandbox: SandboxServer) -> None:
    _, account = sandbox.connect_account(n_activities=300, years=4)
    docs = call(sandbox, "GET", "/_sandbox/truth", account=account)[1]

    years = {a["start_date"][:4] for a in docs}
    assert len(years) >= 4  # spread over years
    for doc in docs:
        assert all(isinstance(v, str | None) for v in doc["income"].values())
        assert all(isinstance(v, float | int | None) for v in doc["income_rates"].values())
        assert set(doc["all_datetimes"]) == set(doc["all_timestamps"])
        assert {"is_pool", "is_rush", "is_surge", "position", "service_type"} <= set(doc["circumstances"])
        assert doc["created_at"].endswith("Z") and doc["updated_at"].endswith("Z")
        assert doc["status"] in {"scheduled", "in_progress", "completed", "cancelled"}
        assert doc["type"] in {"delivery", "rideshare", "hourly", "services"}
    assert any(
        d["income_rates"]["hour"] is not None and not float(d["income_rates"]["hour"]).is_integer() for d in docs
    )


# --- /v1/webhooks -------------------------------------------------------------------------------


def test_create_requires_events_name_and_url(sandbox: SandboxServer) -> None:
    status, errors = call(sandbox, "POST", "/v1/webhooks", body={"secret": "s"})

    assert status == 400
    assert errors == {
        "events": ["This field is required."],
        "name": ["This field is required."],
        "url": ["This field is required."],
    }


def test_create_get_list_delete(sandbox: SandboxServer) -> None:
    status, made = call(
        sandbox,
        "POST",
        "/v1/webhooks",
        body={"events": "*", "name": "all", "url": "https://example.test/h", "config": {"days_synced": 7}},
    )
    assert status == 201
    assert made["events"] == ["*"] and made["config"] == {"days_synced": 7} and made["secret"] is None

    assert call(sandbox, "GET", f"/v1/webhooks/{made['id']}") == (200, made)
    assert call(sandbox, "GET", "/v1/webhooks", limit="201")[0] == 400
    assert call(sandbox, "GET", "/v1/webhooks", ordering="name")[0] == 400
    listed = call(sandbox, "GET", "/v1/webhooks", ordering="-created_at")[1]
    assert [w["id"] for w in listed["results"]] == [made["id"]]
    assert call(sandbox, "GET", "/v1/webhooks", from_created_at_date="2999-01-01")[1]["results"] == []

    assert call(sandbox, "DELETE", f"/v1/webhooks/{made['id']}") == (204, None)
    assert call(sandbox, "DELETE", f"/v1/webhooks/{made['id']}")[0] == 404
    assert call(sandbox, "GET", f"/v1/webhooks/{made['id']}")[0] == 404


def test_faults_can_be_switched_over_http(sandbox: SandboxServer) -> None:
    status, faults = call(sandbox, "POST", "/_sandbox/faults", body={"fail_next": 1}, headers={})
    assert status == 200 and faults["fail_next"] == 1

    assert call(sandbox, "GET", "/v1/webhooks")[0] == 500
    assert call(sandbox, "GET", "/v1/webhooks")[0] == 200
    assert call(sandbox, "POST", "/_sandbox/faults", body={"no_such_fault": 1}, headers={})[0] == 400
