"""Reconciliation's AWS side against moto's server: the keys-only index it reads, the account ids
the scheduler reads, the batch sends it makes (with the partial failures SQS has and moto has not),
the scheduled function, `argyle-synced reconcile`, and a drifted account repaired through the sync
function with the Argyle sandbox over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest

import reconcile_handler
import sync_handler
from argyle_ops import synced_cli
from argyle_pipeline.argyle.activity import Activity
from argyle_pipeline.aws.activity_store import ActivityStore
from argyle_pipeline.aws.event_queue import EventQueue
from argyle_pipeline.aws.sync_state_store import ACCOUNT_SHARDS, SyncStateStore, account_shard
from argyle_pipeline.sync.messages import ReconcileJob
from argyle_pipeline.sync.reconcile_schedule import ReconcileSchedule, reconcile_message
from argyle_sandbox.server import SandboxServer
from local_stack.template_resources import StackResources
from tests.support.fake_argyle import make_activity
from tests.support.lambda_events import FakeLambdaContext
from tests.support.moto_tables import live_activities
from tests.support.sandbox_fixtures import SANDBOX_KEY_ID, SANDBOX_KEY_SECRET
from tests.support.sync_harness import SyncHarness, fully_synced_body

ACCOUNT = "acc-reconcile"


def _queued(stack: StackResources) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    found: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(QueueUrl=stack.queue_urls["EventsQueue"], MaxNumberOfMessages=10,
                                    AttributeNames=["All"], VisibilityTimeout=60).get("Messages", [])
        if not batch:
            return found
        found.extend(batch)


def test_the_store_reports_created_and_changed_writes_and_reads_keys_from_the_small_index(
        stack_on_server: StackResources) -> None:
    store = ActivityStore(stack_on_server.tables["ActivitiesTable"], boto3.client("dynamodb"))
    docs = [make_activity(ACCOUNT, n) for n in range(5)]
    undated = {**make_activity(ACCOUNT, 9), "start_date": None}
    # When five activities and an undated one are written, then one of them again with a newer version
    first = store.upsert_many([Activity.from_api(d) for d in [*docs, undated]], "t1")
    newer = {**docs[2], "updated_at": "2030-01-01T00:00:00Z"}
    again = store.upsert_many([Activity.from_api(newer), Activity.from_api(docs[3])], "t2")
    single = store.upsert_one(Activity.from_api({**docs[4], "updated_at": "2031-01-01T00:00:00Z"}), "t3")
    store.remove(ACCOUNT, [docs[0]["id"]], "t4")
    # Then the results say what was new, what was changed and what was rewritten unchanged
    assert (first.created, first.changed) == (6, 0)
    assert (again.written, again.created, again.changed) == (2, 0, 1)
    assert (single.created, single.changed) == (0, 1)
    # And the keys-only index lists the live ones (not the tombstone), sorted by start, undated last
    keys = store.stored_keys(ACCOUNT)
    assert [k.activity_id for k in keys] == [d["id"] for d in docs[1:]] + [undated["id"]]
    assert keys[0].start_key.endswith(".000000Z") and keys[-1].start_key == "~"


def test_account_ids_come_from_the_sharded_index_without_reading_the_archive(
        stack_on_server: StackResources) -> None:
    state = SyncStateStore(stack_on_server.tables["SyncStateTable"], boto3.client("dynamodb"))
    accounts = [f"acc-{n:03d}" for n in range(40)]
    for account in accounts:
        state.mark_fully_synced(account, "user-1", "t")
    state.archive_event("k" * 64, "activities.added", b"{}", received_at_ms=1, processed_at="t", expires_at=2**31)
    assert len({account_shard(a) for a in accounts}) > ACCOUNT_SHARDS // 2  # they spread
    assert sorted(state.account_ids()) == accounts


def test_a_reconcile_is_recorded_and_drift_sums_over_time(stack_on_server: StackResources) -> None:
    state = SyncStateStore(stack_on_server.tables["SyncStateTable"], boto3.client("dynamodb"))
    state.record_reconcile(ACCOUNT, "u", "2026-01-01T00:00:00Z", scope="recent",
                           drift={"missing": 2, "extra": 0, "stale": 1}, argyle_calls=9)
    state.record_reconcile(ACCOUNT, "u", "2026-01-02T00:00:00Z", scope="full",
                           drift={"missing": 1, "extra": 3, "stale": 0}, argyle_calls=60)
    found = state.account_state(ACCOUNT)
    assert found is not None
    assert found["last_reconcile"] == {"scope": "full", "at": "2026-01-02T00:00:00Z", "argyle_calls": 60,
                                       "drift": {"missing": 1, "extra": 3, "stale": 0}}
    assert found["reconciled_full_at"] == "2026-01-02T00:00:00Z"
    assert (found["drift_missing_total"], found["drift_extra_total"], found["drift_stale_total"]) == (3, 3, 1)


def test_a_batch_send_resends_the_entries_sqs_failed_and_loses_none(stack_on_server: StackResources) -> None:
    # Given an SQS client that, like SQS under load, fails two entries of the first batch (moto never does)
    sqs = boto3.client("sqs")
    state = {"calls": 0}

    def drop_two(params: dict[str, Any], **_: Any) -> None:
        state["calls"] += 1
        if state["calls"] == 1:
            state["dropped"] = [e["Id"] for e in params["Entries"][:2]]
            params["Entries"] = params["Entries"][2:]

    def report_them(parsed: dict[str, Any], **_: Any) -> None:
        if state["calls"] == 1:
            parsed["Failed"] = [{"Id": i, "SenderFault": False, "Code": "InternalError"} for i in state["dropped"]]

    sqs.meta.events.register("provide-client-params.sqs.SendMessageBatch", drop_two)
    sqs.meta.events.register("after-call.sqs.SendMessageBatch", report_them)
    jobs = [ReconcileJob(account=f"acc-{n}", request_id="request-1") for n in range(23)]
    # When 23 reconcile requests are sent
    sent = EventQueue(stack_on_server.queue_urls["EventsQueue"], sqs).send_many(
        [reconcile_message(j, "corr", 1) for j in jobs], sleep=lambda _s: None)
    # Then every one is on the queue exactly once, in its account's group
    messages = _queued(stack_on_server)
    assert sent == 23 and state["calls"] == 4
    assert sorted(m["Attributes"]["MessageGroupId"] for m in messages) == sorted(f"account:acc-{n}" for n in range(23))


# The refused invocation flushes no metric, and Powertools warns about it.
@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
def test_the_scheduled_function_queues_one_reconcile_per_account_and_a_rerun_adds_nothing(
        stack_on_server: StackResources, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in stack_on_server.environment().items():
        monkeypatch.setenv(name, value)
    state = SyncStateStore(stack_on_server.tables["SyncStateTable"], boto3.client("dynamodb"))
    for n in range(12):
        state.mark_fully_synced(f"acc-{n}", "u", "t")
    # When the schedule fires twice in one period (EventBridge retries, say)
    first = reconcile_handler.lambda_handler({}, FakeLambdaContext())
    second = reconcile_handler.lambda_handler({}, FakeLambdaContext())
    # Then each account has one reconcile queued, in its own group, mostly "recent" with a share of "full"
    assert first == second and first["recent"] + first["full"] == 12 and first["in_error"] == 0
    messages = _queued(stack_on_server)
    assert len(messages) == 12
    assert {m["Attributes"]["MessageGroupId"] for m in messages} == {f"account:acc-{n}" for n in range(12)}
    # And an on-demand invocation with a request id of its own queues a full pass of each
    for m in messages:
        boto3.client("sqs").delete_message(QueueUrl=stack_on_server.queue_urls["EventsQueue"],
                                           ReceiptHandle=m["ReceiptHandle"])
    assert reconcile_handler.lambda_handler({"request_id": "on-demand-1", "scope": "full"},
                                            FakeLambdaContext()) == {"recent": 0, "full": 12, "in_error": 0}
    with pytest.raises(ValueError, match="scope must be"):
        reconcile_handler.lambda_handler({"scope": "everything"}, FakeLambdaContext())


def test_full_passes_spread_over_the_week() -> None:
    schedule = ReconcileSchedule(interval_seconds=86_400, full_every_days=7)
    accounts = [f"acc-{n}" for n in range(700)]
    per_day = [sum(schedule.scope(a, day) == "full" for a in accounts) for day in range(7)]
    # every account once a week, and no day with more than twice its share
    assert sum(per_day) == 700 and max(per_day) <= 200
    assert all(sum(schedule.scope(a, day) == "full" for day in range(7)) == 1 for a in accounts)


def test_argyle_synced_reconcile_queues_known_accounts_and_refuses_unknown_ones(
        stack_on_server: StackResources, moto_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    state = SyncStateStore(stack_on_server.tables["SyncStateTable"], boto3.client("dynamodb"))
    state.mark_fully_synced(ACCOUNT, "user-1", "t")
    state.mark_fully_synced("acc-other", "user-2", "t")
    base = ["--endpoint-url", moto_server, "--activities-table", stack_on_server.tables["ActivitiesTable"],
            "--sync-state-table", stack_on_server.tables["SyncStateTable"],
            "--queue-url", stack_on_server.queue_urls["EventsQueue"]]

    def run(*argv: str) -> tuple[int, Any]:
        code = synced_cli.main([*base, *argv])
        out = capsys.readouterr()
        return code, json.loads(out.out, parse_float=Decimal) if code == 0 else out.err  # an error is one line

    assert run("reconcile", "no-such-account") == (synced_cli.NOT_FOUND, (
        "argyle-synced: error: the sync has never seen account no-such-account: check the id "
        "(`argyle-synced accounts` lists the known ones)\n"))
    assert run("reconcile") == (synced_cli.USAGE, "argyle-synced: error: give an ACCOUNT or --all (not both)\n")
    code, one = run("reconcile", ACCOUNT, "--scope", "full")
    assert code == 0 and one["accounts"] == 1 and one["scope"] == "full"
    code, every = run("reconcile", "--all")
    assert code == 0 and every["accounts"] == 2
    bodies = [json.loads(m["Body"])["data"] for m in _queued(stack_on_server)]
    assert sorted((b["account"], b["scope"]) for b in bodies) == [
        ("acc-other", "recent"), (ACCOUNT, "full"), (ACCOUNT, "recent")]


# --- a drifted account, repaired through the sync function --------------------------------------

@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(seed=31, api_key_id=SANDBOX_KEY_ID, api_key_secret=SANDBOX_KEY_SECRET) as server:
        yield server


def test_drift_from_missed_webhooks_is_found_repaired_recorded_and_counted(
        stack_in_process: StackResources, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    harness = SyncHarness(stack_in_process, monkeypatch, base_url=sandbox.base_url, api_key_id=SANDBOX_KEY_ID,
                          api_key_secret=SANDBOX_KEY_SECRET)
    try:
        # Given a synced account of 900 activities
        user, account = sandbox.connect_account(n_activities=900)
        harness.receive_webhook(fully_synced_body(sandbox, account))
        harness.drain()
        table = stack_in_process.tables["ActivitiesTable"]
        assert live_activities(table, account) == {a["id"]: a for a in sandbox.truth(account)}
        # And a scan whose webhooks never reached us: 3 added, 2 removed
        with sandbox.state.lock:
            acct = sandbox.state.account(account)
            first, last = sandbox.state.date_span(acct)
            sandbox.state.add_activities(acct, 3, first or 0, last or 0)
            sandbox.state.remove_activities(acct, sandbox.state.pick(acct, 2))
        capfd.readouterr()
        caplog.clear()
        # When the account is reconciled through the queue
        EventQueue(harness.queue_url, harness.sqs).send(reconcile_message(
            ReconcileJob(account=account, user=user, request_id="request-drift", scope="counts"), "corr", 1))
        report = harness.drain()
        # Then the copy is exact again, the reconcile recorded in the account's state
        assert live_activities(table, account) == {a["id"]: a for a in sandbox.truth(account)}
        assert report.failed == 0
        state = SyncStateStore(stack_in_process.tables["SyncStateTable"], boto3.client("dynamodb"))
        found = state.account_state(account)
        assert found is not None and found["last_reconcile"]["drift"] == {"missing": 3, "extra": 2, "stale": 0}
        # And its log says so in one line per kind, with the DriftDetected metric by kind
        drift_lines = [r for r in caplog.records if r.getMessage() == "drift found and repaired"]
        assert sorted((r.kind, r.count) for r in drift_lines) == [("extra", 2), ("missing", 3)]
        emf = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith('{"_aws"')]
        detected = {d["kind"]: d["DriftDetected"] for d in emf if "DriftDetected" in d}
        assert detected == {"missing": [3.0], "extra": [2.0]}
    finally:
        sync_handler.set_runtime(None)
