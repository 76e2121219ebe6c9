"""Purging on moto's server: the stores' purge paths (the archive found by account through the
Lookups index, the user's links) and `argyle-synced purge` (dry run, receipt), as an operator runs
them, with the queued purge processed by the sync function."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest

import sync_handler
from argyle_ops import synced_cli
from argyle_pipeline.argyle.activity import Activity
from argyle_pipeline.aws.activity_store import ActivityStore
from argyle_pipeline.aws.sync_state_store import SyncStateStore
from local_stack.template_resources import StackResources
from tests.support.fake_argyle import make_activity
from tests.support.sync_harness import SyncHarness

ACCOUNT, OTHER, USER = "acc-purge", "acc-keep", "user-purge"


@pytest.fixture
def stores(stack_on_server: StackResources) -> tuple[ActivityStore, SyncStateStore]:
    client = boto3.client("dynamodb")
    return (ActivityStore(stack_on_server.tables["ActivitiesTable"], client),
            SyncStateStore(stack_on_server.tables["SyncStateTable"], client))


def _populate(stores: tuple[ActivityStore, SyncStateStore], account: str, n: int) -> None:
    activities, state = stores
    acts = [Activity.from_api(make_activity(account, i)) for i in range(n)]
    activities.upsert_many(acts, "t")
    activities.remove(account, [acts[0].id], "t")
    state.mark_fully_synced(account, USER, "t")
    state.put_user(USER, {"id": USER, "address": "1 Main St"}, "t", 1)
    for i in range(3):
        state.archive_event(f"{account}-{i}".ljust(64, "0"), "activities.added", b"{}", received_at_ms=1,
                            processed_at="t", expires_at=2**31, group_id=f"account:{account}")
    state.archive_event(f"user-{account}".ljust(64, "0"), "users.fully_synced", b"{}", received_at_ms=1,
                        processed_at="t", expires_at=2**31, group_id=f"user:{USER}")


def test_the_stores_find_everything_of_an_account_by_account(stores: tuple[ActivityStore, SyncStateStore]) -> None:
    activities, state = stores
    _populate(stores, ACCOUNT, 5)
    _populate(stores, OTHER, 2)
    # The account's items (live and tombstone), its archived bodies, and the user's links
    assert len(activities.item_ids(ACCOUNT)) == 5
    assert len(state.archived_keys(f"account:{ACCOUNT}")) == 3
    assert sorted(state.user_accounts(USER)) == [OTHER, ACCOUNT]
    # When a purge starts, the account leaves the reconcile schedule's index at once
    state.begin_purge(ACCOUNT, removed_received_at_ms=5, reason="erasure", at="t")
    assert sorted(state.account_ids()) == [OTHER]
    assert state.purge_marker(ACCOUNT) == {"status": "purging", "removed_received_at_ms": 5, "purge_reason": "erasure"}
    # And what it deletes is gone
    assert activities.delete_many(ACCOUNT, activities.item_ids(ACCOUNT)) == 5
    assert state.delete_keys(state.archived_keys(f"account:{ACCOUNT}")) == 3
    assert activities.item_ids(ACCOUNT) == [] and state.archived_keys(f"account:{ACCOUNT}") == []
    assert len(activities.item_ids(OTHER)) == 2


@pytest.fixture
def harness(stack_on_server: StackResources, monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncHarness]:
    # An erasure needs no Argyle call: the API URL points nowhere on purpose
    yield SyncHarness(stack_on_server, monkeypatch, base_url="http://127.0.0.1:9", api_key_id="k",
                      api_key_secret="s")
    sync_handler.set_runtime(None)


def test_argyle_synced_purge_dry_run_then_receipt(stack_on_server: StackResources, moto_server: str,
                                                  stores: tuple[ActivityStore, SyncStateStore],
                                                  harness: SyncHarness, capsys: pytest.CaptureFixture[str]) -> None:
    activities, state = stores
    _populate(stores, ACCOUNT, 6)
    base = ["--endpoint-url", moto_server, "--activities-table", stack_on_server.tables["ActivitiesTable"],
            "--sync-state-table", stack_on_server.tables["SyncStateTable"],
            "--queue-url", stack_on_server.queue_urls["EventsQueue"]]

    def run(*argv: str) -> tuple[int, Any]:
        code = synced_cli.main([*base, *argv])
        out = capsys.readouterr()
        return code, json.loads(out.out, parse_float=Decimal) if code == 0 else out.err  # an error is one line

    # A dry run says what would go and changes nothing
    code, plan = run("purge", ACCOUNT, "--dry-run")
    assert code == 0 and plan["would_delete"] == [{"account": ACCOUNT, "activities": {"live": 5, "removed": 1},
                                                   "archived_events": 3, "sync_state": 1}]
    assert plan["user_profiles"] == 1 and len(activities.item_ids(ACCOUNT)) == 6
    # The purge, queued and processed by the sync function while the CLI waits, prints a receipt
    drained = []
    code, receipt = synced_cli.queue_purge(
        state, activities, harness.queue, account=ACCOUNT, user=None, dry_run=False, wait_seconds=30,
        sleep=lambda _s: drained.append(harness.drain()))
    assert code == 0 and receipt["receipt"] == "purge" and drained
    assert receipt["accounts"][0]["deleted"] == {"activities": 6, "archived_events": 4, "user_profiles": 1}
    # And the account is nothing but its marker, its event counters gone too; a second request finds nothing to purge
    assert activities.item_ids(ACCOUNT) == [] and state.user(USER) is None
    leftovers = [item for item in boto3.client("dynamodb").scan(TableName=state.table_name)["Items"]
                 if ACCOUNT in json.dumps(item) or USER in json.dumps(item)]
    assert [item["pk"]["S"] for item in leftovers] == [f"ACCOUNT#{ACCOUNT}"]
    marker = state.account_state(ACCOUNT)
    assert marker is not None and marker["status"] == "purged" and "user_id" not in marker
    assert run("purge", ACCOUNT)[0] == synced_cli.NOT_FOUND
    assert run("purge", ACCOUNT, "--user", USER)[0] == synced_cli.USAGE


def test_account_status_is_recorded_newest_first_and_an_error_clears_when_connected_again(
        stores: tuple[ActivityStore, SyncStateStore]) -> None:
    _, state = stores
    # accounts.connected (no resource), then accounts.updated with an error, then an older delivery
    assert state.record_account_status(ACCOUNT, USER, event="accounts.connected", received_at_ms=1, updated_at="t",
                                       connection_status="connected")
    assert state.record_account_status(ACCOUNT, USER, event="accounts.updated", received_at_ms=3, updated_at="t",
                                       connection_status="error", error_code="auth_required",
                                       scanned_at="2024-05-01T00:00:00Z")
    assert not state.record_account_status(ACCOUNT, USER, event="accounts.updated", received_at_ms=2,
                                           updated_at="t", connection_status="connected")
    found = state.account_state(ACCOUNT)
    assert found is not None and (found["connection_status"], found["error_code"]) == ("error", "auth_required")
    assert dict(state.account_summaries())[ACCOUNT]["connection_status"] == "error"
    # Connected again: the old error code goes
    state.record_account_status(ACCOUNT, USER, event="accounts.updated", received_at_ms=4, updated_at="t",
                                connection_status="connected")
    found = state.account_state(ACCOUNT)
    assert found is not None and found["connection_status"] == "connected" and "error_code" not in found
    assert found["scanned_at"] == "2024-05-01T00:00:00Z"


def test_a_purge_resends_the_deletes_dynamodb_leaves_unprocessed(stack_on_server: StackResources) -> None:
    # Given a DynamoDB client that, as DynamoDB under load does (moto never), leaves part of the
    # first BatchWriteItem unprocessed
    client = boto3.client("dynamodb")
    calls = {"n": 0, "dropped": []}

    def drop_some(params: dict[str, Any], **_: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            (table, requests), = params["RequestItems"].items()
            calls["dropped"] = requests[:3]
            params["RequestItems"] = {table: requests[3:]}

    def report_them(parsed: dict[str, Any], **_: Any) -> None:
        if calls["n"] == 1:
            parsed["UnprocessedItems"] = {stack_on_server.tables["SyncStateTable"]: calls["dropped"]}

    client.meta.events.register("provide-client-params.dynamodb.BatchWriteItem", drop_some)
    client.meta.events.register("after-call.dynamodb.BatchWriteItem", report_them)
    state = SyncStateStore(stack_on_server.tables["SyncStateTable"], client)
    for i in range(8):
        state.archive_event(f"{ACCOUNT}-{i}".ljust(64, "0"), "activities.added", b"{}", received_at_ms=1,
                            processed_at="t", expires_at=2**31, group_id=f"account:{ACCOUNT}")
    # When the account's archive is deleted
    deleted = state.delete_keys(state.archived_keys(f"account:{ACCOUNT}"))
    # Then the unprocessed three were sent again and nothing of the archive is left
    assert deleted == 8 and calls["n"] == 2
    assert state.archived_keys(f"account:{ACCOUNT}") == []
