"""The runbook's operations against the local stack: re-sync an account from scratch, replay an
archived webhook. Both go through `argyle-synced`, as an operator would run them."""

from __future__ import annotations

import contextlib
import io
import json

import boto3
import pytest

from argyle_ops.synced_cli import main as synced
from argyle_pipeline.aws.activity_store import ActivityStore
from argyle_pipeline.aws.event_queue import dedupe_key
from argyle_pipeline.aws.sync_state_store import SyncStateStore
from tests.support.e2e import pipeline, settle, stored_activities, truth

pytestmark = pytest.mark.e2e


def run_cli(stack, *args: str) -> tuple[int, dict]:
    outputs = stack.outputs()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = synced(["--activities-table", outputs["ActivitiesTableName"], "--sync-state-table",
                       outputs["SyncStateTableName"], "--queue-url", outputs["EventsQueueUrl"], *args])
    return code, json.loads(out.getvalue() or "{}")


def test_resync_from_scratch_repairs_a_damaged_copy() -> None:
    with pipeline(seed=31) as (sandbox, stack):
        user, account = sandbox.connect_account(n_activities=250)
        settle(sandbox, stack)
        table = stack.outputs()["ActivitiesTableName"]
        dynamodb = boto3.client("dynamodb")
        store = ActivityStore(table)
        ids = sorted(truth(sandbox, account))
        # Given a copy damaged three ways: rows lost, a row Argyle never had, a wrong removal
        for lost in ids[:5]:
            dynamodb.delete_item(TableName=table, Key={"account_id": {"S": account}, "activity_id": {"S": lost}})
        dynamodb.put_item(TableName=table, Item={"account_id": {"S": account}, "activity_id": {"S": "ghost"},
                                                 "version": {"N": "1"}, "activity": {"M": {"id": {"S": "ghost"}}}})
        store.remove(account, [ids[10]], "2024-01-01T00:00:00Z")
        assert stored_activities(stack, account) != truth(sandbox, account)
        # When an operator re-syncs the account
        code, answer = run_cli(stack, "resync", account, "--user", user)
        assert code == 0 and answer["queued"] == "resync"
        settle(sandbox, stack)
        # Then the copy is exactly Argyle's again, and the state says a re-sync removed one row
        assert stored_activities(stack, account) == truth(sandbox, account)
        state = SyncStateStore(stack.outputs()["SyncStateTableName"]).account_state(account)
        assert state is not None and state["resync_removed"] == 1 and "resynced_at" in state


def test_replay_processes_an_archived_webhook_again() -> None:
    with pipeline(seed=32) as (sandbox, stack):
        _, account = sandbox.connect_account(n_activities=120)
        settle(sandbox, stack)
        fully = next(d for d in sandbox.deliveries if d.event == "activities.fully_synced")
        key = dedupe_key(fully.body)
        # Given rows lost after the webhook was processed (a redelivery would be recognised and skipped)
        table = stack.outputs()["ActivitiesTableName"]
        lost = sorted(truth(sandbox, account))[:7]
        for activity_id in lost:
            boto3.client("dynamodb").delete_item(
                TableName=table, Key={"account_id": {"S": account}, "activity_id": {"S": activity_id}})
        # When the archived webhook is replayed
        code, answer = run_cli(stack, "replay", key)
        assert code == 0 and answer["event"] == "activities.fully_synced"
        assert answer["group"] == f"account:{account}"
        settle(sandbox, stack)
        # Then it was processed again and the copy is whole
        assert stored_activities(stack, account) == truth(sandbox, account)


def test_replay_of_an_unknown_key_says_so() -> None:
    with pipeline(seed=33) as (_sandbox, stack):
        outputs = stack.outputs()
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = synced(["--activities-table", outputs["ActivitiesTableName"], "--sync-state-table",
                           outputs["SyncStateTableName"], "--queue-url", outputs["EventsQueueUrl"],
                           "replay", "0" * 64])
        assert code == 1 and "no archived event" in err.getvalue()
        assert stack.queue_depth() == 0
