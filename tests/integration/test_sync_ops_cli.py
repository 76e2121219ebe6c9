"""argyle-synced and the DLQ redrive, against moto's HTTP server (as an operator runs them)."""

from __future__ import annotations

import json
from decimal import Decimal

import boto3
import pytest

from argyle_ops import redrive, synced_cli
from argyle_pipeline.argyle.activity import Activity
from argyle_pipeline.aws.activity_store import ActivityStore
from argyle_pipeline.aws.event_queue import QueuedEvent, dedupe_key
from argyle_pipeline.aws.sync_state_store import SyncStateStore
from local_stack.template_resources import StackResources
from tests.support.fake_argyle import make_activity

ACCOUNT, USER = "acc-cli", "user-cli"


@pytest.fixture
def tables(stack_on_server: StackResources, moto_server: str) -> list[str]:
    return ["--endpoint-url", moto_server, "--activities-table", stack_on_server.tables["ActivitiesTable"],
            "--sync-state-table", stack_on_server.tables["SyncStateTable"]]


@pytest.fixture
def populated(stack_on_server: StackResources) -> list[Activity]:
    client = boto3.client("dynamodb")
    store = ActivityStore(stack_on_server.tables["ActivitiesTable"], client)
    acts = [Activity.from_api(make_activity(ACCOUNT, n)) for n in range(4)]
    store.upsert_many(acts, "2025-01-01T00:00:00.000Z")
    store.remove(ACCOUNT, [acts[3].id], "2025-01-02T00:00:00Z")
    state = SyncStateStore(stack_on_server.tables["SyncStateTable"], client)
    state.record_availability(ACCOUNT, USER, available_from=acts[0].raw["start_date"],
                              available_to=acts[3].raw["start_date"], available_count=3,
                              event="activities.fully_synced", received_at_ms=1, updated_at="t")
    state.mark_fully_synced(ACCOUNT, USER, "2025-01-01T00:00:01.000Z")
    state.put_user(USER, {"id": USER, "employers_connected": ["SprintCar"]}, "t", 1)
    state.archive_event("k" * 64, "activities.fully_synced", b'{"event": "activities.fully_synced"}',
                        received_at_ms=1, processed_at="t", expires_at=2_000_000_000)
    return acts


def run_cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, object]:
    code = synced_cli.main(argv)
    captured = capsys.readouterr()
    text = captured.out if code == 0 else captured.err
    return code, json.loads(text, parse_float=Decimal)


def test_activities_prints_the_argyle_objects_exactly(tables: list[str], populated: list[Activity],
                                                      capsys: pytest.CaptureFixture[str]):
    code, printed = run_cli(capsys, [*tables, "activities", ACCOUNT])
    assert code == 0
    assert sorted(printed, key=lambda a: a["id"]) == sorted((a.raw for a in populated[:3]),  # type: ignore[arg-type]
                                                            key=lambda a: a["id"])
    assert printed[0]["income_rates"]["hour"] == Decimal("2.83")  # type: ignore[index]


def test_activities_by_start_date_range_and_with_tombstones(tables: list[str], populated: list[Activity],
                                                            capsys: pytest.CaptureFixture[str]):
    start, end = populated[1].raw["start_date"], populated[3].raw["start_date"]
    _, in_range = run_cli(capsys, [*tables, "activities", ACCOUNT, "--from", start, "--to", end])
    assert [a["id"] for a in in_range] == [populated[1].id, populated[2].id]  # type: ignore[union-attr,index]
    _, everything = run_cli(capsys, [*tables, "--compact", "activities", ACCOUNT, "--include-removed", "--items"])
    removed = [i for i in everything if "removed_at" in i]  # type: ignore[union-attr,operator]
    assert [i["activity_id"] for i in removed] == [populated[3].id]


def test_state_user_counts_and_event(tables: list[str], populated: list[Activity],
                                     capsys: pytest.CaptureFixture[str]):
    code, state = run_cli(capsys, [*tables, "state", ACCOUNT])
    assert code == 0 and state["status"] == "fully_synced" and state["available_count"] == 3  # type: ignore[index]
    _, user = run_cli(capsys, [*tables, "user", USER])
    assert user["resource"] == {"id": USER, "employers_connected": ["SprintCar"]}  # type: ignore[index]
    _, counts = run_cli(capsys, [*tables, "counts", ACCOUNT])
    assert counts == {"events": {"activities.fully_synced": 1}, "activities": {"live": 3, "removed": 1}}
    _, accounts = run_cli(capsys, [*tables, "accounts"])
    assert [a["account_id"] for a in accounts] == [ACCOUNT]  # type: ignore[union-attr,index]
    _, event = run_cli(capsys, [*tables, "event", "k" * 64])
    assert event["event"] == "activities.fully_synced" and event["body_bytes"] == 36  # type: ignore[index]



def test_event_body_prints_the_exact_bytes(tables: list[str], populated: list[Activity],
                                           capsysbinary: pytest.CaptureFixture[bytes]):
    assert synced_cli.main([*tables, "event", "k" * 64, "--body"]) == 0
    assert capsysbinary.readouterr().out == b'{"event": "activities.fully_synced"}'


def test_what_is_not_there_exits_1_with_one_line(tables: list[str], stack_on_server: StackResources,
                                                 capsys: pytest.CaptureFixture[str]):
    assert synced_cli.main([*tables, "state", "nobody"]) == 1
    assert capsys.readouterr().err == ("argyle-synced: error: the sync has no state and no activities for account "
                                       "nobody: check the id (`argyle-synced accounts` lists the known ones)\n")
    assert synced_cli.main([*tables, "user", "nobody"]) == 1
    assert capsys.readouterr().err.startswith("argyle-synced: error: no record for user nobody")


def queued(body: bytes, group: str) -> QueuedEvent:
    return QueuedEvent(body=body, event_name="activities.added", group_id=group, dedupe_key=dedupe_key(body),
                       correlation_id="corr", received_at_ms=123)


def test_redrive_moves_dlq_messages_back_with_group_and_attributes(stack_on_server: StackResources, moto_server: str,
                                                                   capsys: pytest.CaptureFixture[str]):
    # Given three failed messages in the DLQ, two of them in one account's group
    sqs = boto3.client("sqs")
    queue_url, dlq_url = stack_on_server.queue_urls["EventsQueue"], stack_on_server.queue_urls["EventsDLQ"]
    events = [queued(b'{"n": 1}', "account:a"), queued(b'{"n": 2}', "account:b"), queued(b'{"n": 3}', "account:a")]
    for event in events:
        body, _ = event.encoded()
        sqs.send_message(QueueUrl=dlq_url, MessageBody=body, MessageGroupId=event.group_id,
                         MessageDeduplicationId=event.dedupe_key, MessageAttributes=event.attributes())
    # When the redrive runs
    code = redrive.main(["--queue-url", queue_url, "--dlq-url", dlq_url, "--endpoint-url", moto_server])
    # Then all three are back on the queue, in group order, with their attributes; the DLQ is empty
    assert code == 0 and "moved 3 message(s)" in capsys.readouterr().out
    moved = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"],
                                  MessageAttributeNames=["All"]).get("Messages", [])
        if not got:
            break
        for message in got:
            moved.append(message)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    assert [m["Body"] for m in moved if m["Attributes"]["MessageGroupId"] == "account:a"] == ['{"n": 1}', '{"n": 3}']
    assert sorted(m["Body"] for m in moved) == ['{"n": 1}', '{"n": 2}', '{"n": 3}']
    for message in moved:
        attributes = message["MessageAttributes"]
        assert attributes["received_at_ms"]["StringValue"] == "123"
        assert attributes["dedupe_key"]["StringValue"] == dedupe_key(message["Body"].encode())
        assert attributes["body_encoding"]["StringValue"] == "raw"
    assert sqs.receive_message(QueueUrl=dlq_url).get("Messages", []) == []


def test_redrive_dry_run_only_counts(stack_on_server: StackResources, moto_server: str,
                                     capsys: pytest.CaptureFixture[str]):
    sqs = boto3.client("sqs")
    dlq_url = stack_on_server.queue_urls["EventsDLQ"]
    sqs.send_message(QueueUrl=dlq_url, MessageBody="{}", MessageGroupId="g", MessageDeduplicationId="d")
    assert redrive.main(["--queue-url", stack_on_server.queue_urls["EventsQueue"], "--dlq-url", dlq_url,
                         "--endpoint-url", moto_server, "--dry-run"]) == 0
    assert capsys.readouterr().out.strip() == "1 message(s) in the DLQ"
    assert len(sqs.receive_message(QueueUrl=dlq_url).get("Messages", [])) == 1
