"""Lambda's SQS event source, emulated: poll the queue, invoke the function with batches shaped as
Lambda sends them, delete what succeeded, leave what failed (ReportBatchItemFailures).

A record the function reports failed comes back when the function said: the sync sets its
visibility to its retry delay (RETRY_DELAYS_SECONDS), exactly as in AWS. One local deviation: when
an invocation raises (a crash), its records come back after `retry_delay` seconds instead of the
queue's visibility timeout (5,400 s in template.yaml). The redrive policy is the queue's own: after
maxReceiveCount receives, SQS (moto) moves a record to the DLQ.

Lambda runs concurrent invocations in separate containers; give one invoke per worker (each its
own loaded handler module) so that module state, such as the batch processor, is not shared.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Invoke = Callable[[dict[str, Any]], dict[str, Any] | None]
# (records, ids reported failed, seconds the invocation took, whether it raised)
Report = Callable[[list[dict[str, Any]], set[str], float, bool], None]


def lambda_sqs_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    attributes = message.get("Attributes", {})
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {k: v for k, v in attributes.items() if k in {
            "ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp",
            "MessageGroupId", "MessageDeduplicationId", "SequenceNumber"}},
        "messageAttributes": {
            name: {"stringValue": attr.get("StringValue"), "stringListValues": [], "binaryListValues": [],
                   "dataType": attr["DataType"]}
            for name, attr in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(message["Body"].encode()).hexdigest(),  # noqa: S324
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


@dataclass
class PollerStats:
    batches: int = 0
    records: int = 0
    failed_records: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class SqsPoller:
    def __init__(self, sqs: Any, queue_url: str, invoke: Invoke | Sequence[Invoke], *, batch_size: int = 10,
                 workers: int = 2,
                 retry_delay: int = 1, region: str = "us-east-1", report: Report | None = None,
                 visibility: int | None = None) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        self._invokers = list(invoke) if isinstance(invoke, Sequence) else [invoke]
        self._batch_size = batch_size
        self._retry_delay = retry_delay
        self._visibility = visibility
        self._region = region
        self._report = report
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._idle = [threading.Event() for _ in range(workers)]
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"sqs-poller-{i}", daemon=True)
                         for i in range(workers)]
        self.stats = PollerStats()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def pause(self) -> None:
        """Stop taking new batches (the ones in flight finish), as when the function is throttled."""
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def poll_once(self, worker: int = 0) -> int:
        """Receive one batch and invoke the function on it; returns the number of records."""
        import time

        receive: dict[str, Any] = {"QueueUrl": self._queue_url, "MaxNumberOfMessages": self._batch_size,
                                   "WaitTimeSeconds": 1, "AttributeNames": ["All"], "MessageAttributeNames": ["All"]}
        if self._visibility is not None:
            receive["VisibilityTimeout"] = self._visibility
        messages = self._sqs.receive_message(**receive).get("Messages", [])
        if not messages:
            return 0
        records = [lambda_sqs_record(m, self._queue_arn, self._region) for m in messages]
        started = time.monotonic()
        try:
            response = self._invokers[worker % len(self._invokers)]({"Records": records}) or {}
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
            crashed = False
        except Exception:  # the whole batch failed, as when a Lambda invocation errors
            failed = {r["messageId"] for r in records}
            crashed = True
        elapsed = time.monotonic() - started
        done = [r for r in records if r["messageId"] not in failed]
        for start in range(0, len(done), 10):
            chunk = done[start:start + 10]
            self._sqs.delete_message_batch(QueueUrl=self._queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": r["receiptHandle"]} for i, r in enumerate(chunk)])
        if crashed:
            self._retry_crashed(records)
        with self.stats.lock:
            self.stats.batches += 1
            self.stats.records += len(records)
            self.stats.failed_records += len(failed)
        if self._report:
            self._report(records, failed, elapsed, crashed)
        return len(records)

    def _retry_crashed(self, records: list[dict[str, Any]]) -> None:
        """Each group's first record waits `retry_delay`; the ones behind it are visible at once
        and still wait, since a FIFO queue hands out nothing of a group with a record in flight
        (and moto, unlike SQS, can hand out the later one first if both wait)."""
        seen: set[str] = set()
        for record in records:
            group = record["attributes"].get("MessageGroupId", "")
            delay = 0 if group in seen else self._retry_delay
            seen.add(group)
            self._sqs.change_message_visibility(QueueUrl=self._queue_url, ReceiptHandle=record["receiptHandle"],
                                                VisibilityTimeout=delay)

    def _run(self, worker: int) -> None:
        while not self._stop.is_set():
            if self._paused.is_set():
                self._idle[worker].set()
                self._stop.wait(0.1)
                continue
            try:
                got = self.poll_once(worker)
            except Exception:  # the queue endpoint went away (shutting down) or a transient error
                got = 0
                self._stop.wait(0.5)
            if got:
                self._idle[worker].clear()
            else:
                self._idle[worker].set()
