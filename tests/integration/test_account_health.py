"""Every account's health, end to end on moto's server and the Argyle sandbox over HTTP: an account
whose sync fails, one that stopped receiving webhooks, and a webhook subscription deleted in the
sandbox each show in `argyle-synced health` / `argyle-webhooks doctor` and raise the matching
metric of the reconcile schedule's check; a healthy account does not."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

import reconcile_handler
import sync_handler
from argyle_ops import synced_cli, webhooks_cli
from argyle_pipeline.argyle.client import ArgyleClient
from argyle_pipeline.argyle.webhook_events import ACCOUNT_STATUS_EVENT, SYNC_EVENTS
from argyle_pipeline.aws.secret_values import ArgyleCredentials
from argyle_pipeline.aws.sync_state_store import SyncStateStore
from argyle_sandbox.server import SandboxServer
from local_stack.template_resources import StackResources
from tests.support.lambda_events import FakeLambdaContext
from tests.support.sandbox_fixtures import SANDBOX_KEY_ID, SANDBOX_KEY_SECRET
from tests.support.sync_harness import SyncHarness, fully_synced_body

# Never reached: the sandbox has no subscription delivering there before the test deletes one.
STACK_URL = "http://127.0.0.1:9/webhooks/argyle"


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(seed=17, api_key_id=SANDBOX_KEY_ID, api_key_secret=SANDBOX_KEY_SECRET) as server:
        yield server


@pytest.fixture
def harness(stack_on_server: StackResources, sandbox: SandboxServer,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncHarness]:
    yield SyncHarness(stack_on_server, monkeypatch, base_url=sandbox.base_url, api_key_id=SANDBOX_KEY_ID,
                      api_key_secret=SANDBOX_KEY_SECRET)
    sync_handler.set_runtime(None)


def emf_metrics(text: str) -> dict[str, list[float]]:
    """Every metric value printed as Embedded Metric Format lines, by name."""
    found: dict[str, list[float]] = {}
    for line in text.splitlines():
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        doc = json.loads(line)
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                value = doc[metric["Name"]]
                found.setdefault(metric["Name"], []).extend(value if isinstance(value, list) else [value])
    return found


def run_reconcile_schedule(capsys: pytest.CaptureFixture[str]) -> dict[str, list[float]]:
    capsys.readouterr()
    reconcile_handler.lambda_handler({}, FakeLambdaContext())
    return emf_metrics(capsys.readouterr().out)


def health_rows(harness: SyncHarness, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = synced_cli.main(["--activities-table", harness.stack.tables["ActivitiesTable"], "--sync-state-table",
                            harness.stack.tables["SyncStateTable"], "health", *extra])
    out = capsys.readouterr().out
    return code, json.loads(out) if "--json" in extra else out


def test_failing_and_silent_accounts_show_in_health_and_raise_their_metrics_healthy_ones_do_not(
        harness: SyncHarness, sandbox: SandboxServer, capsys: pytest.CaptureFixture[str]) -> None:
    _, healthy = sandbox.connect_account(n_activities=15)
    _, failing = sandbox.connect_account(n_activities=15)
    _, silent = sandbox.connect_account(n_activities=15)
    state = SyncStateStore(harness.stack.tables["SyncStateTable"], boto3.client("dynamodb"))
    # Given an account whose last successful sync was 30 hours ago and nothing since (its webhooks
    # stopped), recorded by the store's own write as the sync makes it
    long_ago = (datetime.now(UTC) - timedelta(hours=30)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    state.record_sync(silent, None, long_ago, event="activities.fully_synced", covered_from=None, covered_to=None,
                      exact=True)
    # And a healthy account synced now from its fully_synced webhook
    capsys.readouterr()
    harness.receive_webhook(fully_synced_body(sandbox, healthy))
    assert harness.drain().failed == 0
    sync_metrics = emf_metrics(capsys.readouterr().out)
    # And an account whose fully_synced fails (Argyle answers 500 every time)
    sandbox.faults.update({"fail_every": 1})
    harness.receive_webhook(fully_synced_body(sandbox, failing))
    messages = harness.sqs.receive_message(QueueUrl=harness.queue_url, MaxNumberOfMessages=10,
                                           AttributeNames=["All"], MessageAttributeNames=["All"])["Messages"]
    assert len(harness.invoke(messages, FakeLambdaContext())) == 1
    sandbox.faults.update({"fail_every": 0})

    # Then the healthy account's freshness was published: accepted -> its whole listing applied
    assert len(sync_metrics["ExactLagMs"]) == 1 and sync_metrics["ExactLagMs"][0] >= 0
    # And its state says what was synced, when, and that the copy was exact then
    healthy_state = state.account_state(healthy)
    assert healthy_state is not None
    assert healthy_state["last_sync"]["event"] == "activities.fully_synced"
    assert healthy_state["data_as_of"] == healthy_state["last_sync"]["at"]
    # And the failure is in the failing account's state: when, why (one line), which attempt
    failure = (state.account_state(failing) or {})["last_failure"]
    assert failure["attempts"] == 1 and failure["event"] == "activities.fully_synced"
    assert "ArgyleUnavailable" in failure["reason"] and "\n" not in failure["reason"]

    # When the reconcile schedule runs its health check
    metrics = run_reconcile_schedule(capsys)
    # Then one account is stale and one failing; the healthy one counts in neither
    assert metrics["AccountsStale"] == [1] and metrics["AccountsFailing"] == [1]
    assert metrics["AccountsBehindScan"] == [0]

    # And `argyle-synced health --json` lists them worst first, the healthy one last with no problem
    code, rows = health_rows(harness, capsys, "--json")
    assert code == 0
    by_account = {row["account"]: row["problems"] for row in rows}
    assert by_account[failing] == ["failing"] and by_account[silent] == ["stale"] and by_account[healthy] == []
    assert [row["account"] for row in rows] == [failing, silent, healthy]
    # And the table for a person says the same
    code, table = health_rows(harness, capsys)
    lines = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert code == 0 and "failing" in lines[failing] and "ArgyleUnavailable" in lines[failing]
    assert "stale" in lines[silent] and lines[healthy].split()[1] == "ok"
    # And one account's health alone; an unknown account is exit 1
    assert health_rows(harness, capsys, healthy, "--json")[1][0]["problems"] == []
    assert synced_cli.main(["--activities-table", "a", "--sync-state-table", harness.stack.tables["SyncStateTable"],
                            "health", "no-such-account"]) == synced_cli.NOT_FOUND


def test_a_subscription_deleted_in_the_sandbox_raises_the_metric_and_doctor_says_the_fix(
        harness: SyncHarness, sandbox: SandboxServer, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the stack's URL subscribed as subscribe-stack does: the sync's events, and accounts.updated
    client = ArgyleClient(sandbox.base_url, ArgyleCredentials(SANDBOX_KEY_ID, SANDBOX_KEY_SECRET))
    client.create_webhook(events=list(SYNC_EVENTS), url=STACK_URL, name="sync", secret="s")
    status = client.create_webhook(events=[ACCOUNT_STATUS_EVENT], url=STACK_URL, name="status", secret="s",
                                   config={"include_resource": True})
    client.create_webhook(events=["*"], url="https://someone-else.example/hook", name="other", secret="s")
    monkeypatch.setenv("WEBHOOK_URL", STACK_URL)
    monkeypatch.setenv("ARGYLE_CREDENTIALS_SECRET_ID", harness.stack.secrets["ArgyleCredentialsSecret"])
    # When the schedule checks them, every event is delivered
    assert run_reconcile_schedule(capsys)["WebhookEventsUnsubscribed"] == [0]
    doctor_args = ["--api-url", sandbox.base_url, "doctor", "--webhook-url", STACK_URL]
    monkeypatch.setenv("ARGYLE_API_KEY_ID", SANDBOX_KEY_ID)
    monkeypatch.setenv("ARGYLE_API_KEY_SECRET", SANDBOX_KEY_SECRET)
    out = io.StringIO()
    assert webhooks_cli.main(doctor_args, out=out, err=io.StringIO()) == webhooks_cli.EXIT_OK
    assert "ok: Argyle delivers all" in out.getvalue()

    # When the account-status subscription is deleted at Argyle (another URL's "*" does not count)
    client.delete_webhook(status.id)
    # Then the schedule's metric counts the one event no longer delivered
    assert run_reconcile_schedule(capsys)["WebhookEventsUnsubscribed"] == [1]
    # And doctor names it, with the fix, and exits 7
    out = io.StringIO()
    assert webhooks_cli.main(doctor_args, out=out, err=io.StringIO()) == webhooks_cli.EXIT_UNSUBSCRIBED
    assert f"MISSING: Argyle delivers none of these to this URL: {ACCOUNT_STATUS_EVENT}" in out.getvalue()
    assert "fix: argyle-webhooks subscribe-stack" in out.getvalue()
    out = io.StringIO()
    webhooks_cli.main(["--json", *doctor_args], out=out, err=io.StringIO())
    assert json.loads(out.getvalue())["missing_events"] == [ACCOUNT_STATUS_EVENT]
