"""The sync function's poller in a process of its own, so that it can be killed mid-sync (as a
Lambda that crashes or times out) and started again: `python -m local_stack.sync_worker`.

It reads the stack's environment (AWS_ENDPOINT_URL, table names, ...) like the function does.
While an invocation runs, it keeps extending its messages' visibility (a heartbeat), so a short
visibility timeout is safe; once the process dies the heartbeat stops and SQS hands the messages
out again after `--visibility` seconds, as it would after a Lambda crash.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from typing import Any

import boto3

from local_stack.fifo_dedupe_window import SQS_WINDOW_SECONDS, FifoDedupeWindow
from local_stack.lambda_runtime import LambdaContext, load_handler, sync_sends_through
from local_stack.sqs_poller import SqsPoller


class HeartbeatInvoke:
    """Invokes the handler while a thread keeps the batch's messages invisible."""

    def __init__(self, sqs: Any, queue_url: str, handler: Any, timeout: int, visibility: int) -> None:
        self._sqs, self._queue_url, self._handler = sqs, queue_url, handler
        self._timeout, self._visibility = timeout, visibility

    def __call__(self, event: dict[str, Any]) -> Any:
        done = threading.Event()
        handles = [r["receiptHandle"] for r in event["Records"]]

        def beat() -> None:
            while not done.wait(self._visibility / 3):
                for handle in handles:
                    # A message already deleted needs no heartbeat.
                    with contextlib.suppress(Exception):
                        self._sqs.change_message_visibility(QueueUrl=self._queue_url, ReceiptHandle=handle,
                                                            VisibilityTimeout=self._visibility)

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            return self._handler(event, LambdaContext("SyncFunction", timeout_seconds=self._timeout))
        finally:
            done.set()
            thread.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--retry-delay", type=int, default=1)
    parser.add_argument("--visibility", type=int, default=6, help="seconds; extended while an invocation runs")
    parser.add_argument("--timeout", type=int, default=900, help="the function's timeout (its context)")
    parser.add_argument("--dedupe-window", type=float, default=SQS_WINDOW_SECONDS,
                        help="seconds of SQS FIFO's deduplication window, simulated on this process's sends")
    args = parser.parse_args(argv)
    queue_url = os.environ["EVENTS_QUEUE_URL"]
    sqs = boto3.client("sqs")
    window = FifoDedupeWindow(args.dedupe_window)  # this process's own window
    # One handler module per worker thread, as Lambda gives each concurrent invocation its own container.
    invokers = []
    for container in range(args.workers):
        handler = load_handler("SyncFunction", container=container)
        sync_sends_through(handler, window.attach(boto3.client("sqs")))
        invokers.append(HeartbeatInvoke(sqs, queue_url, handler, args.timeout, args.visibility))
    poller = SqsPoller(sqs, queue_url, invokers, batch_size=args.batch_size, workers=args.workers,
                       retry_delay=args.retry_delay, visibility=args.visibility)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    poller.start()
    print("sync worker polling", flush=True)
    stop.wait()
    poller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
