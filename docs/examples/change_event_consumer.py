"""An example consumer of the stack's change events (docs/change-events.md): reads the SQS queue an
EventBridge rule delivers them to, deduplicates on `event_id`, and prints when an account is ready
for underwriting (exact again after the changes it saw). Replace `ready()` with your own job.

    python docs/examples/change_event_consumer.py --queue-url https://sqs.../underwriting [--endpoint-url ...]
"""

from __future__ import annotations

import argparse
import json
from collections import OrderedDict
from typing import Any

import boto3


def ready(account: str, data_as_of: str, changed: int) -> None:
    print(f"account {account} is exact as of {data_as_of} ({changed} activities changed since last time): "
          "start its underwriting job")


def handle(event: dict[str, Any], seen: OrderedDict[str, None], changed: dict[str, int]) -> None:
    detail = event["detail"]
    if detail["event_id"] in seen:  # delivery is at least once
        return
    seen[detail["event_id"]] = None
    if len(seen) > 100_000:
        seen.popitem(last=False)
    account = detail["account"]
    if event["detail-type"] == "activities.changed":
        if detail["part"] == 1:  # every part repeats the message's counts
            changed[account] = changed.get(account, 0) + sum(detail["counts"].values())
    elif event["detail-type"] == "account.synced":
        ready(account, detail["data_as_of"], changed.pop(account, 0))
    elif event["detail-type"] == "account.purged":
        changed.pop(account, None)
        print(f"account {account} was erased: drop what you derived from it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--endpoint-url")
    args = parser.parse_args()
    sqs = boto3.client("sqs", endpoint_url=args.endpoint_url)
    seen: OrderedDict[str, None] = OrderedDict()
    changed: dict[str, int] = {}
    while True:
        for message in sqs.receive_message(QueueUrl=args.queue_url, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=20).get("Messages", []):
            handle(json.loads(message["Body"]), seen, changed)
            sqs.delete_message(QueueUrl=args.queue_url, ReceiptHandle=message["ReceiptHandle"])


if __name__ == "__main__":
    main()
