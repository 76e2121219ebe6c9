"""`make invoke FN=<function> EVENT=events/<file>`: the no-Docker `sam local invoke`.

Runs the function in this process against moto (in-process), with the environment template.yaml
gives it, and prints its response: for the receiver, what reached the queue; for the sync, what it
stored. The sync needs an Argyle API: by default an in-process Argyle sandbox that holds the
event's account (as `make demo` uses); `--argyle-api-url` (or ARGYLE_API_URL) names another, with
ARGYLE_API_KEY_ID / ARGYLE_API_KEY_SECRET for its keys. The API version (the template's
ArgyleApiVersion) is ARGYLE_API_VERSION, else the version of the event's data events (a gigs.*
sample: v2), else the one the URL names, else the template's default (v2).

Exit codes: 0 the function ran (its answer is printed, whatever it is), 2 usage (an unknown
function, an event file that cannot be read or does not fit the function).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3

from argyle_pipeline.argyle.api_versions import (
    DEFAULT_STACK_VERSION,
    V1,
    ApiVersion,
    UnknownApiVersion,
    api_version,
    api_version_of_url,
    data_event_version,
)
from local_stack.dev_config import LOCAL_DEV_SECRET, REGION, SANDBOX_API_KEY_ID, SANDBOX_API_KEY_SECRET
from local_stack.lambda_runtime import LambdaContext, environment, function_environment, function_timeout, load_handler
from local_stack.template_resources import StackResources, create_stack_resources, load_template

PROG = "make invoke"
EXIT_USAGE = 2
# Activities the sandbox holds for the event's account, spread over the event's available range.
SANDBOX_ACTIVITIES = 60


class UsageError(Exception):
    pass


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


def _stored(resources: StackResources, event: dict[str, Any]) -> dict[str, Any]:
    from argyle_pipeline.aws.activity_store import ActivityStore

    store = ActivityStore(resources.tables["ActivitiesTable"], boto3.client("dynamodb", region_name=REGION))
    return {account: store.count(account) for account in _accounts(event)}


def _webhooks(event: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The webhook bodies in an SQS event (the sync's input)."""
    for record in event.get("Records") or []:
        try:
            body = json.loads(record.get("body") or "")
        except ValueError:
            continue
        if isinstance(body, dict) and isinstance(body.get("data"), dict):
            yield body


def _accounts(event: dict[str, Any]) -> list[str]:
    return sorted({str(b["data"]["account"]) for b in _webhooks(event) if b["data"].get("account")})


def check_event(function: str, event: Any, path: Path) -> None:
    if not isinstance(event, dict):
        raise UsageError(f"{path} is not a JSON object")
    if function == "SyncFunction" and not isinstance(event.get("Records"), list):
        raise UsageError(f"{path} is not an SQS event (no Records): SyncFunction takes the events/sqs_*.json samples")
    if function == "ReceiverFunction" and "Records" in event:
        raise UsageError(f"{path} is an SQS event: ReceiverFunction takes an API Gateway event, e.g. "
                         "events/activities_added.json")


@contextlib.contextmanager
def sandbox_for(event: dict[str, Any], key_id: str, key_secret: str, api: ApiVersion = V1) -> Iterator[Any]:
    """An Argyle sandbox of API `api` on loopback holding each account the event names (the
    sample's id), with activities across the event's available range, so the sync has something
    to store."""
    from argyle_sandbox.server import SandboxServer

    with SandboxServer(seed=1, api_key_id=key_id, api_key_secret=key_secret, api=api) as sandbox:
        state = sandbox.state
        for body in _webhooks(event):
            data = body["data"]
            account_id = data.get("account")
            if not account_id or account_id in state.accounts:
                continue
            user = state.create_user(data.get("user") or None)
            account = state.create_account(user, account_id=str(account_id))
            first = _epoch(data.get("available_from")) or state.now - 365 * 86_400
            last = max(first, _epoch(data.get("available_to")) or state.now - 60)
            state.add_activities(account, SANDBOX_ACTIVITIES, first, last)
            account.fully_synced = True
        yield sandbox


def event_api_version(event: dict[str, Any], api_url: str | None) -> ApiVersion:
    """ARGYLE_API_VERSION; else the version of the event's data events; else the URL's; else v2."""
    named = os.environ.get("ARGYLE_API_VERSION", "").strip()
    if named:
        try:
            return api_version(named)
        except UnknownApiVersion as exc:
            raise UsageError(str(exc)) from None
    for body in _webhooks(event):
        found = data_event_version(str(body.get("event", "")))
        if found is not None:
            return found
    return api_version_of_url(api_url) or DEFAULT_STACK_VERSION


def _epoch(value: Any) -> int | None:
    try:
        return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()) if value else None
    except ValueError:
        return None


def invoke(function: str, event: dict[str, Any], *, argyle_api_url: str | None = None,
           api: ApiVersion | None = None, quiet: bool = False) -> dict[str, Any]:
    """Create the template's resources in moto, run `function` on `event`; returns what happened."""
    credentials = json.dumps({"api_key_id": os.environ.get("ARGYLE_API_KEY_ID", SANDBOX_API_KEY_ID),
                              "api_key_secret": os.environ.get("ARGYLE_API_KEY_SECRET", SANDBOX_API_KEY_SECRET)})
    resources = create_stack_resources(
        boto3.Session(region_name=REGION), prefix="local",
        secret_values={"WebhookSecret": json.dumps({"current": LOCAL_DEV_SECRET, "previous": ""}),
                       "ArgyleCredentialsSecret": credentials})
    params = {"ArgyleApiUrl": argyle_api_url} if argyle_api_url else {}
    if api is not None:
        params["ArgyleApiVersion"] = api.name
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
        if function == "SyncFunction":
            outcome["argyle_api"] = env.get("ARGYLE_API_URL")
            outcome["stored"] = _stored(resources, event)
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("function", help="logical id in template.yaml, e.g. ReceiverFunction")
    parser.add_argument("event", type=Path, help="an event file, e.g. events/activities_added.json")
    parser.add_argument("--argyle-api-url", default=os.environ.get("ARGYLE_API_URL"),
                        help="Argyle-compatible API for SyncFunction (default: an in-process sandbox)")
    args = parser.parse_args(argv)
    functions = [n for n, r in load_template()["Resources"].items() if r["Type"] == "AWS::Serverless::Function"]
    try:
        if args.function not in functions:
            raise UsageError(f"no function {args.function!r} in template.yaml; functions: {', '.join(functions)}")
        try:
            event = json.loads(args.event.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read event {args.event}: {exc}") from None
        check_event(args.function, event, args.event)
        api = event_api_version(event, args.argyle_api_url)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                        "AWS_DEFAULT_REGION": REGION}.items():
        os.environ.setdefault(name, value)
    from moto import mock_aws

    with contextlib.ExitStack() as stack:
        api_url = args.argyle_api_url
        if args.function == "SyncFunction" and not api_url:
            sandbox = stack.enter_context(sandbox_for(
                event, os.environ.get("ARGYLE_API_KEY_ID", SANDBOX_API_KEY_ID),
                os.environ.get("ARGYLE_API_KEY_SECRET", SANDBOX_API_KEY_SECRET), api))
            api_url = sandbox.base_url
            print(f"{PROG}: Argyle API: an in-process sandbox at {api_url} holding the event's account(s) "
                  f"({SANDBOX_ACTIVITIES} activities each); --argyle-api-url names another", file=sys.stderr)
        stack.enter_context(mock_aws())
        outcome = invoke(args.function, event, argyle_api_url=api_url, api=api)
    print(json.dumps(outcome, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
