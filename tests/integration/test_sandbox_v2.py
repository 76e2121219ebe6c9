"""The sandbox's API v2 over real HTTP, read by the project's client and models: /v2/gigs in
keyset pages whose cursor carries its filters, v2 gig objects, gigs.* webhooks and v2's
users.fully_synced (sent again when another account of the user finishes)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import urllib3

from argyle_pipeline.argyle.api_versions import V2
from argyle_pipeline.argyle.client import ArgyleClient
from argyle_pipeline.argyle.webhook_events import ActivitiesRemoved, ActivitiesUpdated, parse_webhook
from argyle_pipeline.timestamps import parse_timestamp
from argyle_sandbox.server import SandboxServer
from tests.support.sandbox_fixtures import (  # noqa: F401
    SANDBOX_CREDENTIALS,
    SANDBOX_KEY_ID,
    SANDBOX_KEY_SECRET,
    RecordingServer,
    recorder,
)

SECRET = "sandbox-webhook-secret"


@pytest.fixture
def sandbox_v2() -> Iterator[SandboxServer]:
    with SandboxServer(seed=3, api_key_id=SANDBOX_KEY_ID, api_key_secret=SANDBOX_KEY_SECRET, api="v2",
                       delivery_backoff=0.01, delivery_timeout=2.0) as server:
        yield server


def get(url: str) -> tuple[int, Any]:
    headers = urllib3.make_headers(basic_auth=f"{SANDBOX_KEY_ID}:{SANDBOX_KEY_SECRET}")
    response = urllib3.request("GET", url, headers=headers, retries=False)
    return response.status, json.loads(response.data) if response.data else None


def test_gigs_list_in_keyset_pages_without_a_count_and_next_carries_only_the_cursor(sandbox_v2: SandboxServer) -> None:
    # Given a v2 account of 30 gigs
    _, account = sandbox_v2.connect_account(n_activities=30, years=1)
    truth = sandbox_v2.truth(account)
    starts = sorted(g["start_datetime"] for g in truth)
    low, high = starts[5], starts[24]

    # When the first page of a filtered listing is read over HTTP
    status, first = get(f"{sandbox_v2.base_url}/gigs?account={account}&limit=7"
                        f"&from_start_datetime={low}&to_start_datetime={high}")

    # Then it is v2's shape: no count, gigs, and a next link that names only the cursor and limit
    assert status == 200 and "count" not in first and len(first["results"]) == 7
    assert {"start_datetime", "task_count", "task_details"} <= set(first["results"][0])
    assert "start_date" not in first["results"][0] and "customer_price" in first["results"][0]["income"]
    assert sorted(k for k, _ in parse_qsl(urlsplit(first["next"]).query)) == ["cursor", "limit"]

    # And following next as given (no filters in the URL) stays inside the listing's filters
    listed, url = list(first["results"]), first["next"]
    while url:
        status, page = get(url)
        assert status == 200
        listed += page["results"]
        url = page["next"]
    in_range = [g["id"] for g in truth if low <= g["start_datetime"] <= high]
    assert sorted(g["id"] for g in listed) == sorted(in_range) and len(in_range) == 20


def test_a_cursor_sent_with_other_filters_is_refused(sandbox_v2: SandboxServer) -> None:
    _, account = sandbox_v2.connect_account(n_activities=12, years=1)
    _, first = get(f"{sandbox_v2.base_url}/gigs?account={account}&limit=5")
    cursor = dict(parse_qsl(urlsplit(first["next"]).query))["cursor"]

    status, body = get(f"{sandbox_v2.base_url}/gigs?account=another-account&limit=5&cursor={cursor}")

    assert status == 400 and "cursor" in body


def test_a_v2_sandbox_does_not_serve_v1_routes(sandbox_v2: SandboxServer) -> None:
    status, _ = get(f"{sandbox_v2.root_url}/v1/activities?limit=5")
    assert status == 404


def test_the_v2_client_lists_and_reads_gigs_exactly(sandbox_v2: SandboxServer) -> None:
    # Given an account with undated gigs too
    _, account = sandbox_v2.connect_account(n_activities=45, years=2, undated=2)
    client = ArgyleClient(sandbox_v2.base_url, SANDBOX_CREDENTIALS, api=V2, page_limit=10)
    truth = {g["id"]: g for g in sandbox_v2.truth(account)}

    # When the whole account is listed, and one gig is read
    pages = list(client.list_activity_pages(account))
    one = client.get_activity(next(iter(truth)))

    # Then every gig came once, as sent, read as an activity with its start
    listed = [a for p in pages for a in p.activities]
    assert len(pages) == 5 and all(p.count is None for p in pages)
    assert {a.id: a.raw for a in listed} == truth
    dated = [a for a in listed if a.raw["start_datetime"] is not None]
    assert len(dated) == 45 and all(a.start_date == parse_timestamp(a.raw["start_datetime"]) for a in dated)
    assert one.raw == truth[one.id] and one.api_version is V2
    assert client.count_activities(account) is None  # v2 has no count: the reconciler lists instead


def test_v2_scans_send_gig_webhooks_and_users_fully_synced_again_per_account(
        sandbox_v2: SandboxServer, recorder: RecordingServer) -> None:
    # Given a subscription to everything
    sandbox_v2.subscribe(recorder.url + "/hook", ["*"], SECRET)

    # When a user connects two accounts, and a scan changes the first
    user, first = sandbox_v2.connect_account(n_activities=20, years=1)
    _, second = sandbox_v2.connect_account(user_id=user, n_activities=5, years=1)
    scan = sandbox_v2.periodic_scan(first, add=2, update=2, remove=1)
    sandbox_v2.wait_for_deliveries(10)
    bodies = [json.loads(r.body) for r in recorder.requests]
    names = [b["event"] for b in bodies]

    # Then the data-set events are gigs.*, never activities.*
    assert {"gigs.fully_synced", "gigs.added", "gigs.updated", "gigs.removed"} <= set(names)
    assert not [n for n in names if n.startswith("activities.")]
    # And users.fully_synced came after each account, the second time with both accounts
    users = [b["data"]["resource"] for b in bodies if b["event"] == "users.fully_synced"]
    assert [u["accounts_connected"] for u in users] == [[first], sorted([first, second])]
    assert {"items_connected", "external_id"} <= set(users[-1]) and "data_providers_connected" not in users[-1]
    # And the id lists are v2's, read by the project's models
    [updated] = [parse_webhook(r.body)[1] for r in recorder.requests if b"gigs.updated" in r.body]
    [removed] = [parse_webhook(r.body)[1] for r in recorder.requests if b"gigs.removed" in r.body]
    assert isinstance(updated, ActivitiesUpdated) and sorted(updated.updated_activities) == sorted(scan.updated)
    assert isinstance(removed, ActivitiesRemoved) and removed.removed_activities == scan.removed
