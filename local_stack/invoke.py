"""`make invoke FN=ReceiverFunction EVENT=events/<file>`: the no-Docker `sam local invoke`.

Runs the function in this process against moto (in-process, or a running `make dev` with
--endpoint-url), with the environment template.yaml gives it, and prints its response and, for
the receiver, what reached the queue.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import boto3

from local_stack.dev_config import LOCAL_DEV_SECRET, REGION, SANDBOX_API_KEY_ID, SANDBOX_API_KEY_SECRET
from local_stack.lambda_runtime import LambdaContext, environment, function_environment, function_timeout, load_handler
from local_stack.template_resources import StackResources, create_stack_resources


def _queued_messages(resources: StackResources) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", region_name=REGION)
    messages = sqs.receive_message(QueueUrl=resources.queue_urls["EventsQueue"], MaxNumberOfMessages=10,
                                   MessageAttributeNames=["All"], AttributeNames=["All"]).get("Messages", [])
    return [{
        "body": m["Body"],
        "group_id": m["Attributes"].get("MessageGroupId"),
        "deduplication_id": m["Attributes"].get("MessageDeduplicationId"),
        "attributes": {k: v["StringValue"] for k, v in m.get("MessageAttributes", {}).items()},
    } for m in messages]


def invoke(function: str, event: dict[str, Any], *, argyle_api_url: str | None = None,
           quiet: bool = False) -> dict[str, Any]:
    """Create the template's resources in moto, run `function` on `event`; returns what happened."""
    credentials = json.dumps({"api_key_id": os.environ.get("ARGYLE_API_KEY_ID", SANDBOX_API_KEY_ID),
                              "api_key_secret": os.environ.get("ARGYLE_API_KEY_SECRET", SANDBOX_API_KEY_SECRET)})
    resources = create_stack_resources(
        boto3.Session(region_name=REGION), prefix="local",
        secret_values={"WebhookSecret": json.dumps({"current": LOCAL_DEV_SECRET, "previous": ""}),
                       "ArgyleCredentialsSecret": credentials})
    params = {"ArgyleApiUrl": argyle_api_url} if argyle_api_url else {}
    env = function_environment(function, resources, parameters=params)
    env.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    with environment(env):
        handler = load_handler(function)
        context = LambdaContext(function, timeout_seconds=function_timeout(function))
        if quiet:  # the function's own log lines, kept out of a summary table
            with contextlib.redirect_stdout(io.StringIO()):
                response = handler(event, context)
        else:
            response = handler(event, context)
        outcome: dict[str, Any] = {"response": response}
        if function == "ReceiverFunction":
            outcome["queued"] = _queued_messages(resources)
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("function", help="logical id in template.yaml, e.g. ReceiverFunction")
    parser.add_argument("event", type=Path, help="an event file, e.g. events/activities_added.json")
    parser.add_argument("--argyle-api-url", default=os.environ.get("ARGYLE_API_URL"),
                        help="Argyle-compatible API for SyncFunction (default: the template's)")
    args = parser.parse_args(argv)
    try:
        event = json.loads(args.event.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"cannot read event {args.event}: {exc}", file=sys.stderr)
        return 2
    for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                        "AWS_DEFAULT_REGION": REGION}.items():
        os.environ.setdefault(name, value)
    from moto import mock_aws

    with mock_aws():
        outcome = invoke(args.function, event, argyle_api_url=args.argyle_api_url)
    print(json.dumps(outcome, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
