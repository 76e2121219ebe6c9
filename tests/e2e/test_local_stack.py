"""End to end over real HTTP: sandbox -> receiver (HTTP) -> SQS (moto server) -> sync -> DynamoDB."""

from __future__ import annotations

import json
import time

import boto3
import pytest

from argyle_pipeline.aws.activity_store import ActivityStore
from argyle_pipeline.receiving.signature import sign
from tests.support.e2e import WEBHOOK_SECRET, pipeline, post, settle, stored_activities, truth

pytestmark = pytest.mark.e2e


def test_connect_scan_converge_exactly() -> None:
    with pipeline(seed=21) as (sandbox, stack):
        # Given a user who connects two accounts
        user, first = sandbox.connect_account(n_activities=400)
        _, second = sandbox.connect_account(user_id=user, n_activities=150)
        settle(sandbox, stack)
        # When periodic scans add, update and remove activities
        for account in (first, second):
            sandbox.periodic_scan(account, add=30, update=12, remove=7)
        settle(sandbox, stack)
        # Then the stored copy is exactly Argyle's truth, and the sync state says so
        for account in (first, second):
            assert stored_activities(stack, account) == truth(sandbox, account)
        from argyle_pipeline.aws.sync_state_store import SyncStateStore

        state_store = SyncStateStore(stack.outputs()["SyncStateTableName"])
        state = state_store.account_state(first)
        assert state is not None and state["status"] == "fully_synced"
        assert state_store.user(user) is not None


def test_faults_duplicates_and_reordering_still_converge_exactly() -> None:
    with pipeline(seed=22) as (sandbox, stack):
        sandbox.faults.update({"rate_limit_every": 5, "retry_after": "0", "fail_every": 7,
                               "duplicate_deliveries": 2, "reorder_deliveries": True})
        _user, account = sandbox.connect_account(n_activities=600)
        settle(sandbox, stack)
        for _ in range(2):
            sandbox.periodic_scan(account, add=20, update=15, remove=10)
        settle(sandbox, stack)
        assert stored_activities(stack, account) == truth(sandbox, account)
        assert stack.counters.accepted >= 3 * 5  # every webhook delivered three times, all accepted


def test_forged_unsigned_and_malformed_requests_store_nothing() -> None:
    with pipeline(seed=23) as (_sandbox, stack):
        body = json.dumps({"event": "activities.removed", "data": {"account": "a", "removed_activities": ["x"]}})
        raw = body.encode()
        assert post(stack.webhook_url, raw, {"x-argyle-signature": sign(raw, "attacker")})[0] == 401
        assert post(stack.webhook_url, raw)[0] == 401
        not_json = b"{not json"
        status, answer = post(stack.webhook_url, not_json, {"x-argyle-signature": sign(not_json, WEBHOOK_SECRET)})
        assert status == 400 and "JSON" in answer["error"]
        no_event = b'{"data": {}}'
        assert post(stack.webhook_url, no_event, {"x-argyle-signature": sign(no_event, WEBHOOK_SECRET)})[0] == 400
        assert stack.wait_until_drained(timeout=10, settle=0.5)
        table = stack.outputs()["ActivitiesTableName"]
        assert boto3.client("dynamodb").scan(TableName=table, Select="COUNT")["Count"] == 0
        assert stack.queue_depth() == 0 and stack.queue_depth("EventsDLQ") == 0


def test_poison_message_reaches_the_dlq_and_redrive_brings_it_back() -> None:
    # Sync reads credentials with no caching here, so the fix is seen at once
    with pipeline(seed=24, extra_env={"SECRET_MAX_AGE_SECONDS": "0"}) as (sandbox, stack):
        secretsmanager = boto3.client("secretsmanager")
        creds_secret = stack.outputs()["ArgyleCredentialsSecretArn"]
        good = secretsmanager.get_secret_value(SecretId=creds_secret)["SecretString"]
        # Given Argyle rejects the stack's API keys (a cause only a human can fix)
        secretsmanager.put_secret_value(SecretId=creds_secret,
                                        SecretString=json.dumps({"api_key_id": "x", "api_key_secret": "wrong"}))
        _, account = sandbox.connect_account(n_activities=120)
        sandbox.wait_for_deliveries(timeout=60)
        # When the sync keeps failing, the messages end in the DLQ after maxReceiveCount attempts
        deadline = time.monotonic() + 90
        while stack.queue_depth("EventsDLQ") == 0 or stack.queue_depth() > 0:
            assert time.monotonic() < deadline, "poison messages did not reach the DLQ"
            time.sleep(0.5)
        assert stored_activities(stack, account) == {}
        # Then once the credentials are fixed, redrive moves them back and the copy converges
        secretsmanager.put_secret_value(SecretId=creds_secret, SecretString=good)
        from argyle_ops.redrive import main as redrive

        outputs = stack.outputs()
        assert redrive(["--dlq-url", outputs["EventsDlqUrl"], "--queue-url", outputs["EventsQueueUrl"]]) == 0
        assert stack.wait_until_drained(timeout=90)
        assert stack.queue_depth("EventsDLQ") == 0
        assert stored_activities(stack, account) == truth(sandbox, account)


def test_killing_the_worker_mid_sync_loses_nothing_and_duplicates_nothing() -> None:
    # The worker is a process of its own; its context says 10 s, so a sync continues in a new
    # message after ~5 s and a killed invocation's in-progress mark expires within 10 s. Retries
    # come 4 s apart (a failed record's delay, and a crashed batch's), so the message is retried
    # after that mark expires and well before the DLQ.
    config = {"sync_in_subprocess": True, "sync_timeout": 10, "retry_delay": 4, "retry_delays": (4,),
              "worker_visibility": 3,
              "extra_env": {"CONTINUATION_MARGIN_SECONDS": "5"}}
    with pipeline(seed=25, **config) as (sandbox, stack):
        _, account = sandbox.connect_account(n_activities=2500)
        sandbox.wait_for_deliveries(timeout=60)
        # When the worker is killed once some, but not all, activities are stored
        store = ActivityStore(stack.outputs()["ActivitiesTableName"])
        deadline = time.monotonic() + 120
        while not (0 < store.count(account)["live"] < 2500):
            assert time.monotonic() < deadline, "the sync never got under way"
            time.sleep(0.05)
        stack.kill_sync_worker()
        partial = store.count(account)["live"]
        # And started again
        stack.start_sync_worker()
        assert stack.wait_until_drained(timeout=180, settle=2)
        # Then every activity is there exactly as Argyle has it, nothing lost and nothing in the DLQ
        assert partial < 2500
        assert stored_activities(stack, account) == truth(sandbox, account)
        assert stack.queue_depth("EventsDLQ") == 0


def test_the_demo_finds_and_repairs_drift_and_ends_exact(capsys: pytest.CaptureFixture[str]) -> None:
    # Given the demo's story on two small accounts: listings Argyle shifts mid-way, an activities.added
    # Argyle never sends, a worker revoking access, a signed removal of activities Argyle still has,
    # then a reconcile
    from local_stack.demo import full_demo

    # When it runs
    code = full_demo(seed=3, accounts_plan=[[300], [200]], scans=1)
    out = capsys.readouterr().out
    # Then the copy is exact, and the summary says what went wrong at Argyle and what was repaired
    assert code == 0, out
    rows = dict(line.strip("| ").split(" | ", 1) for line in out.splitlines() if line.startswith("| "))
    rows = {k.strip(): v.strip(" |") for k, v in rows.items()}
    assert rows["copy exact"] == "yes" and rows["webhooks Argyle never sent"] == "1"
    assert rows["lying removals kept"] == "5 of 5"
    assert rows["revoked account purged"].startswith("yes (activities ")
    missing = int(rows["drift repaired by reconcile"].split(" missing")[0])
    assert missing > 0
    # And the stack told the user's systems: changes, accounts exact again, the revoked one purged
    published = dict(reversed(part.split(" ", 1)) for part in rows["change events (EventBridge)"].split(", "))
    assert int(published["activities.changed"]) > 0 and int(published["account.synced"]) > 0
    assert published["account.purged"] == "1"
