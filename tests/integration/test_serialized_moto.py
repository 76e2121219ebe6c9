"""The local stack's moto under concurrent calls: moto's threaded server alone answers some
concurrent TransactWriteItems with HTTP 500 (`dictionary changed size during iteration`, as
`make load` showed); with its requests serialized (local_stack/serialized_moto.py, which
LocalStack.start applies) every call succeeds, while SQS long polls still run beside them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

from local_stack.serialized_moto import SerializedApp, serialize_requests
from tests.support.network import free_port

THREADS, TRANSACTIONS = 8, 25
NO_RETRIES = Config(retries={"mode": "standard", "max_attempts": 1})  # a 500 must surface, not be retried away


@pytest.fixture
def serialized_moto() -> Iterator[tuple[str, SerializedApp]]:
    """A moto server of its own (its state is per process, so tables get names of their own)."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", serialize_requests(server._server)
    finally:
        server.stop()


def test_concurrent_transactions_all_succeed_one_at_a_time(serialized_moto: tuple[str, SerializedApp]) -> None:
    url, app = serialized_moto
    table = f"concurrency-{free_port()}"
    boto3.client("dynamodb", endpoint_url=url).create_table(
        TableName=table, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    errors: list[str] = []
    start = threading.Barrier(THREADS)

    def write(worker: int) -> None:
        client = boto3.client("dynamodb", endpoint_url=url, config=NO_RETRIES)
        start.wait()
        for n in range(TRANSACTIONS):
            try:
                client.transact_write_items(TransactItems=[
                    {"Put": {"TableName": table, "Item": {"pk": {"S": f"{worker}-{n}"}}}},
                    {"Update": {"TableName": table, "Key": {"pk": {"S": "shared"}},
                                "UpdateExpression": "ADD #c :one", "ExpressionAttributeNames": {"#c": "c"},
                                "ExpressionAttributeValues": {":one": {"N": "1"}}}}])
            except Exception as exc:  # any failure is the finding
                errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")

    # Given 8 threads writing transactions on one shared item and items of their own, at once
    threads = [threading.Thread(target=write, args=(w,)) for w in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    # Then every transaction succeeded, and exactly once
    assert errors == []
    item = boto3.client("dynamodb", endpoint_url=url).get_item(TableName=table, Key={"pk": {"S": "shared"}})["Item"]
    assert item["c"] == {"N": str(THREADS * TRANSACTIONS)}
    # And the calls did arrive together, and went into moto one at a time
    assert app.waited > 0
    assert app.max_in_app == 1


def test_a_long_poll_does_not_hold_up_other_calls(serialized_moto: tuple[str, SerializedApp]) -> None:
    url, app = serialized_moto
    queue = boto3.client("sqs", endpoint_url=url).create_queue(QueueName=f"poll-{free_port()}")["QueueUrl"]
    # Given a ReceiveMessage waiting up to 2 s on an empty queue, inside moto
    polled = threading.Thread(target=lambda: boto3.client("sqs", endpoint_url=url).receive_message(
        QueueUrl=queue, WaitTimeSeconds=2))
    polled.start()
    deadline = time.monotonic() + 1.5
    while app.polls_in_flight == 0:
        assert time.monotonic() < deadline, "the long poll never reached moto"
        time.sleep(0.01)
    # When another call is made meanwhile
    tables = boto3.client("dynamodb", endpoint_url=url, config=NO_RETRIES).list_tables()
    # Then it is answered while the poll still waits
    assert "TableNames" in tables
    assert app.polls_in_flight == 1
    polled.join(timeout=10)
    assert app.polls_in_flight == 0
