"""Move messages from the events DLQ back to the events queue, once the cause of their failures
is fixed (`make redrive ARGS="--stack-name argyle-activity-sync"`, or `python -m argyle_ops.redrive`).

SQS's StartMessageMoveTask does not support FIFO queues, so this receives, sends and deletes.
Each message keeps its body, attributes and MessageGroupId, so it rejoins its account's group;
messages of one group are sent in the order the DLQ returns them, and a group whose send fails is
left alone for the rest of the run, so that its order is kept.

The deduplication id is new (derived from the event's dedupe_key and the DLQ message id): the
original id may still be inside SQS's 5-minute deduplication window, and SQS would then accept
the send and silently drop the message, which this tool would then delete from the DLQ. A copy
that does get through twice is stopped by the sync's idempotency table.

Exit codes: 0 every message moved, 1 some not moved, 2 usage (including no region), 6 AWS
(credentials, endpoint, stack or queue): one line on stderr says what is wrong and what to do.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from argyle_ops.operator_errors import EXIT_USAGE, OperatorError, configured_region, run_command
from argyle_ops.stack_outputs import boto3_client, stack_outputs

PROG = "make redrive"


@dataclass
class RedriveResult:
    moved: int = 0
    failed: int = 0
    held_groups: set[str] = field(default_factory=set)


def redrive_dedupe_id(message: dict[str, Any]) -> str:
    attributes = message.get("MessageAttributes") or {}
    origin = (attributes.get("dedupe_key") or {}).get("StringValue") \
        or hashlib.sha256(message["Body"].encode("utf-8")).hexdigest()
    return hashlib.sha256(f"{origin}:redrive:{message['MessageId']}".encode()).hexdigest()


def _send_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    # Only what send_message accepts back (receive also returns empty list fields).
    out: dict[str, Any] = {}
    for name, value in attributes.items():
        kept = {"DataType": value["DataType"]}
        for key in ("StringValue", "BinaryValue"):
            if key in value:
                kept[key] = value[key]
        out[name] = kept
    return out


def redrive(sqs: Any, dlq_url: str, queue_url: str, *, limit: int | None = None,
            visibility_timeout: int = 120) -> RedriveResult:
    result = RedriveResult()
    while limit is None or result.moved + result.failed < limit:
        wanted = 10 if limit is None else max(1, min(10, limit - result.moved - result.failed))
        messages = sqs.receive_message(
            QueueUrl=dlq_url, MaxNumberOfMessages=wanted, AttributeNames=["All"],
            MessageAttributeNames=["All"], VisibilityTimeout=visibility_timeout, WaitTimeSeconds=1,
        ).get("Messages", [])
        if not messages:
            break
        for message in messages:
            group = (message.get("Attributes") or {}).get("MessageGroupId")
            if group in result.held_groups:
                # An earlier message of this group could not be sent: keep the group's order. The
                # message stays in flight in the DLQ until its visibility timeout, then is there again.
                result.failed += 1
                continue
            kwargs: dict[str, Any] = {
                "QueueUrl": queue_url,
                "MessageBody": message["Body"],
                "MessageAttributes": _send_attributes(message.get("MessageAttributes") or {}),
            }
            if group:
                kwargs["MessageGroupId"] = group
                kwargs["MessageDeduplicationId"] = redrive_dedupe_id(message)
            try:
                sqs.send_message(**kwargs)
            except Exception as exc:
                print(f"could not send {message['MessageId']}: {type(exc).__name__}: {exc}", file=sys.stderr)
                result.failed += 1
                if group:
                    result.held_groups.add(group)
                continue
            sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
            result.moved += 1
    # Messages not moved stay invisible in the DLQ for `visibility_timeout`; a FIFO queue returns
    # nothing more of their groups meanwhile, so the loop ends instead of spinning on them.
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m argyle_ops.redrive", description=__doc__.split("\n\n")[0],
                                     epilog="exit codes: 0 all moved, 1 some not moved, 2 usage, 6 AWS error")
    parser.add_argument("--stack-name", help="read EventsQueueUrl and EventsDlqUrl from this stack's outputs")
    parser.add_argument("--queue-url", help="the events queue (default: the stack's EventsQueueUrl)")
    parser.add_argument("--dlq-url", help="the dead-letter queue (default: the stack's EventsDlqUrl)")
    parser.add_argument("--endpoint-url", help="AWS endpoint (the local stack's moto server)")
    parser.add_argument("--region", help="AWS region")
    parser.add_argument("--max", type=int, default=None, help="move at most this many messages")
    parser.add_argument("--dry-run", action="store_true", help="only print how many messages the DLQ holds")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names: dict[str, str] = {}
    return run_command(PROG, lambda: _command(args, names), region=lambda: configured_region(args.region),
                       endpoint_url=args.endpoint_url, names=names)


def _command(args: argparse.Namespace, names: dict[str, str]) -> int:
    queue_url, dlq_url = args.queue_url, args.dlq_url
    if args.stack_name and not (queue_url and dlq_url):
        names["stack"] = repr(args.stack_name)
        outputs = stack_outputs(args.stack_name, boto3_client("cloudformation", region=args.region,
                                                              endpoint_url=args.endpoint_url))
        queue_url = queue_url or outputs.get("EventsQueueUrl")
        dlq_url = dlq_url or outputs.get("EventsDlqUrl")
    if not (queue_url and dlq_url):
        raise OperatorError('give --stack-name, or both --queue-url and --dlq-url: make redrive ARGS="--stack-name '
                            '<stack>"', EXIT_USAGE)
    names["queue"] = f"{dlq_url} or {queue_url}"
    sqs = boto3_client("sqs", region=args.region, endpoint_url=args.endpoint_url)
    waiting = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"])
    count = int(waiting["Attributes"].get("ApproximateNumberOfMessages", 0))
    if args.dry_run:
        print(f"{count} message(s) in the DLQ")
        return 0
    result = redrive(sqs, dlq_url, queue_url, limit=args.max)
    print(f"moved {result.moved} message(s) from the DLQ to the queue; {result.failed} not moved")
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
