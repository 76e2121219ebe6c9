"""`argyle-webhooks`: manage Argyle webhook subscriptions, and subscribe a deployed stack.

    argyle-webhooks list
    argyle-webhooks create --events activities.added activities.removed --url https://... [--secret S]
    argyle-webhooks get ID
    argyle-webhooks delete ID
    argyle-webhooks subscribe-stack --stack-name argyle-activity-sync [--revoke-previous | --previous-valid-hours N]
    argyle-webhooks doctor --stack-name argyle-activity-sync | --webhook-url URL

Configuration: --api-url or ARGYLE_API_URL (default production); credentials from
ARGYLE_API_KEY_ID / ARGYLE_API_KEY_SECRET, or --credentials-secret-id (a Secrets Manager secret
{"api_key_id", "api_key_secret"}). --json prints JSON for scripts. Secrets are never printed.

Exit codes: 0 ok, 1 Argyle API error (4xx not listed below, unexpected answer), 2 usage error,
3 not found, 4 authentication (wrong or other-environment keys), 5 Argyle unavailable (retries
exhausted), 6 AWS error (no credentials, unreachable endpoint, stack, outputs or secret unreadable or
unwritable), 7 doctor found events Argyle no longer delivers to the stack; no AWS region is a usage
error (2). Every error is one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit

from argyle_ops.operator_errors import (
    EXIT_ARGYLE_AUTH,
    EXIT_ARGYLE_ERROR,
    EXIT_ARGYLE_NOT_FOUND,
    EXIT_ARGYLE_UNAVAILABLE,
    OperatorError,
    configured_region,
    explain_aws_error,
    run_command,
)
from argyle_ops.stack_outputs import boto3_client
from argyle_ops.stack_outputs import stack_outputs as read_stack_outputs
from argyle_pipeline.argyle.client import (
    DEFAULT_BASE_URL,
    ArgyleClient,
    WebhookSubscription,
)
from argyle_pipeline.argyle.webhook_events import ACCOUNT_STATUS_EVENT, SYNC_EVENTS
from argyle_pipeline.aws.secret_values import (
    DEFAULT_PREVIOUS_VALID_SECONDS,
    ArgyleCredentials,
    SecretMalformed,
    parse_argyle_credentials,
    rotated_webhook_secret_value,
)
from argyle_pipeline.sync.subscription_check import check_subscriptions

# The operator tools' shared codes (argyle_ops/operator_errors.py), under this CLI's names.
EXIT_OK = 0
EXIT_API_ERROR = EXIT_ARGYLE_ERROR
EXIT_USAGE = 2
EXIT_NOT_FOUND = EXIT_ARGYLE_NOT_FOUND
EXIT_AUTH = EXIT_ARGYLE_AUTH
EXIT_UNAVAILABLE = EXIT_ARGYLE_UNAVAILABLE
EXIT_AWS = 6
EXIT_UNSUBSCRIBED = 7

PROG = "argyle-webhooks"
DEFAULT_NAME = "argyle-activity-sync"


class UsageError(Exception):
    pass


class AwsError(Exception):
    pass


# --- arguments ------------------------------------------------------------------------------------


def _common(suppress: bool) -> argparse.ArgumentParser:
    """Options accepted before or after the command. After it, they only apply when given, so
    `argyle-webhooks --json list` and `argyle-webhooks list --json` both work."""
    default = argparse.SUPPRESS if suppress else None
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--api-url", default=default, help=f"Argyle v1 base URL (env ARGYLE_API_URL; default {DEFAULT_BASE_URL})"
    )
    parser.add_argument(
        "--credentials-secret-id",
        default=default,
        help="Secrets Manager secret holding {api_key_id, api_key_secret} "
        "(default: env ARGYLE_API_KEY_ID / ARGYLE_API_KEY_SECRET)",
    )
    parser.add_argument(
        "--endpoint-url", default=default, help="AWS endpoint (e.g. moto's); env AWS_ENDPOINT_URL works too"
    )
    parser.add_argument("--region", default=default, help="AWS region (default: the usual AWS configuration)")
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="print JSON instead of a table",
    )
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[_common(False)],
        description="Manage Argyle webhook subscriptions.",
        epilog="exit codes: 0 ok, 1 API error, 2 usage, 3 not found, 4 auth, 5 unavailable, 6 AWS error, "
        "7 doctor: events not delivered to the stack",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common(True)

    create = commands.add_parser("create", parents=[common], help="subscribe a URL to events")
    create.add_argument(
        "--events",
        nargs="+",
        required=True,
        metavar="EVENT",
        help="event names (space or comma separated); '*' for all",
    )
    create.add_argument("--url", required=True, help="where Argyle delivers the webhooks")
    create.add_argument("--name", default=DEFAULT_NAME, help=f"subscription name (default {DEFAULT_NAME})")
    create.add_argument("--secret", help="signing secret (default: none; prefer subscribe-stack)")
    create.add_argument(
        "--days-synced",
        type=_positive_int,
        metavar="N",
        help="days for activities.partially_synced (Argyle's default 30)",
    )
    create.add_argument("--include-resource", action="store_true", help="config.include_resource = true")

    commands.add_parser("list", parents=[common], help="list every subscription")
    for name, text in (("get", "show one subscription"), ("delete", "delete one subscription")):
        sub = commands.add_parser(name, parents=[common], help=text)
        sub.add_argument("id", help="subscription id")

    stack = commands.add_parser(
        "subscribe-stack",
        parents=[common],
        help="subscribe the stack's webhook URL to every event the sync handles, with a new secret",
        description="Generates a new secret, stores it in the stack's webhook secret (the old one stays "
        "accepted as 'previous' for --previous-valid-hours, or not at all with --revoke-previous), "
        "subscribes the webhook URL with it, then deletes older subscriptions of the same URL.",
    )
    stack.add_argument("--stack-name", help="read WebhookUrl / WebhookSecretArn from this stack's outputs")
    stack.add_argument("--webhook-url", help="the receiver's URL (instead of the stack output)")
    stack.add_argument("--secret-id", help="the webhook secret's id or ARN (instead of the stack output)")
    stack.add_argument("--name", default=DEFAULT_NAME, help=f"subscription name (default {DEFAULT_NAME})")
    stack.add_argument(
        "--events", nargs="+", metavar="EVENT", help="override the events (default: all the sync handles)"
    )
    stack.add_argument(
        "--days-synced",
        type=_positive_int,
        metavar="N",
        help="days for activities.partially_synced (Argyle's default 30)",
    )
    stack.add_argument(
        "--keep-existing",
        action="store_true",
        help="keep older subscriptions of the same URL (they would deliver twice)",
    )
    previous = stack.add_mutually_exclusive_group()
    previous.add_argument(
        "--revoke-previous",
        action="store_true",
        help="after a leak: the old secret stops verifying at once instead of staying accepted as "
        "'previous' (deliveries Argyle signed with it are refused; the reconciler repairs them)",
    )
    previous.add_argument(
        "--previous-valid-hours",
        type=_positive_int,
        default=DEFAULT_PREVIOUS_VALID_SECONDS // 3600,
        metavar="N",
        help="hours the old secret stays accepted as 'previous' (default %(default)s)",
    )
    doctor = commands.add_parser(
        "doctor",
        parents=[common],
        help="check that Argyle delivers every event the sync needs to the stack's URL, and say the fix",
        description="The scheduled check's report (metric WebhookEventsUnsubscribed), for a person: the "
        "stack URL's active and disabled subscriptions, the events none delivers, and the command that fixes it.",
    )
    doctor.add_argument("--stack-name", help="read WebhookUrl from this stack's outputs")
    doctor.add_argument("--webhook-url", help="the receiver's URL (instead of the stack output)")
    return parser


def _events(values: Sequence[str]) -> list[str]:
    events = [e.strip() for value in values for e in value.split(",") if e.strip()]
    if not events:
        raise UsageError("--events needs at least one event name")
    return events


def _check_url(url: str, option: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"{option} must be an http(s) URL, got {url!r}")
    return url


# --- AWS ------------------------------------------------------------------------------------------


def _aws_client(service: str, args: argparse.Namespace) -> Any:
    return boto3_client(service, region=args.region, endpoint_url=args.endpoint_url)


def _aws_call(what: str, call: Any, *, args: argparse.Namespace, names: dict[str, str] | None = None,
              **kwargs: Any) -> Any:
    """`call(**kwargs)`; an AWS error becomes one line that starts with `what`."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        explained = explain_aws_error(exc, region=configured_region(args.region), endpoint_url=args.endpoint_url,
                                      names=names)
        raise OperatorError(f"{what}: {explained}", explained.code) from exc


def stack_outputs(stack_name: str, args: argparse.Namespace) -> dict[str, str]:
    return read_stack_outputs(stack_name, _aws_client("cloudformation", args))


def _read_secret(secret_id: str, args: argparse.Namespace, *, missing_ok: bool = False) -> str | None:
    from botocore.exceptions import ClientError

    client = _aws_client("secretsmanager", args)
    try:
        value = client.get_secret_value(SecretId=secret_id)
    except ClientError as exc:
        if missing_ok and exc.response.get("Error", {}).get("Code", "") == "ResourceNotFoundException":
            return None
        raise
    return value.get("SecretString")


def credentials(args: argparse.Namespace, fallback_secret_id: str | None = None) -> ArgyleCredentials:
    secret_id = args.credentials_secret_id or None
    key_id = os.environ.get("ARGYLE_API_KEY_ID", "")
    key_secret = os.environ.get("ARGYLE_API_KEY_SECRET", "")
    if not secret_id and key_id and key_secret:
        return ArgyleCredentials(key_id, key_secret)
    secret_id = secret_id or fallback_secret_id
    if not secret_id:
        raise UsageError(
            "no Argyle API credentials: set ARGYLE_API_KEY_ID and ARGYLE_API_KEY_SECRET, "
            "or pass --credentials-secret-id"
        )
    value = _aws_call(f"cannot read secret {secret_id}", lambda: _read_secret(secret_id, args), args=args,
                      names={"secret": secret_id})
    try:
        return parse_argyle_credentials(value or "")
    except SecretMalformed as exc:
        raise AwsError(f"secret {secret_id}: {exc}") from exc


def make_client(args: argparse.Namespace, creds: ArgyleCredentials) -> ArgyleClient:
    api_url = args.api_url or os.environ.get("ARGYLE_API_URL") or DEFAULT_BASE_URL
    try:
        # A person is waiting: fewer, shorter retries than the sync uses.
        return ArgyleClient(api_url, creds, max_attempts=3, backoff_cap=5.0, timeout=30.0)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


# --- output ---------------------------------------------------------------------------------------


def _public(sub: WebhookSubscription) -> dict[str, Any]:
    """The subscription as printed: the secret only as whether there is one."""
    doc = sub.model_dump(mode="json", exclude={"secret"})
    doc["has_secret"] = bool(sub.secret)
    return doc


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def _row(sub: WebhookSubscription) -> list[str]:
    created = sub.created_at.strftime("%Y-%m-%d %H:%M:%S") if sub.created_at else ""
    return [sub.id, sub.name or "", ",".join(sub.events), sub.url or "", created]


def _details(sub: WebhookSubscription) -> str:
    doc = _public(sub)
    fields = ["id", "name", "events", "url", "config", "has_secret", "created_at", "updated_at"]
    width = max(len(f) for f in fields)
    out = []
    for name in fields:
        value = doc.get(name)
        text = (
            ", ".join(value)
            if isinstance(value, list)
            else json.dumps(value)
            if isinstance(value, dict)
            else ""
            if value is None
            else str(value)
        )
        out.append(f"{name.ljust(width)}  {text}")
    return "\n".join(out)


# --- commands -------------------------------------------------------------------------------------


def run(args: argparse.Namespace, out: TextIO) -> int:
    if args.command == "subscribe-stack":
        return subscribe_stack(args, out)
    if args.command == "doctor":
        return doctor(args, out)
    client = make_client(args, credentials(args))
    if args.command == "create":
        config: dict[str, Any] = {}
        if args.days_synced:
            config["days_synced"] = args.days_synced
        if args.include_resource:
            config["include_resource"] = True
        sub = client.create_webhook(
            events=_events(args.events),
            url=_check_url(args.url, "--url"),
            name=args.name,
            secret=args.secret or None,
            config=config or None,
        )
        print(json.dumps(_public(sub)) if args.json else _details(sub), file=out)
    elif args.command == "list":
        subs = client.list_webhooks()
        if args.json:
            print(json.dumps([_public(s) for s in subs]), file=out)
        else:
            print(_table([_row(s) for s in subs], ["ID", "NAME", "EVENTS", "URL", "CREATED"]), file=out)
    elif args.command == "get":
        sub = client.get_webhook(args.id)
        print(json.dumps(_public(sub)) if args.json else _details(sub), file=out)
    elif args.command == "delete":
        client.delete_webhook(args.id)
        print(json.dumps({"deleted": args.id}) if args.json else f"deleted {args.id}", file=out)
    return EXIT_OK


def subscribe_stack(args: argparse.Namespace, out: TextIO) -> int:
    outputs: dict[str, str] = {}
    if args.stack_name:
        outputs = stack_outputs(args.stack_name, args)
    elif not (args.webhook_url and args.secret_id):
        raise UsageError("subscribe-stack needs --stack-name, or both --webhook-url and --secret-id")
    webhook_url = args.webhook_url or outputs.get("WebhookUrl")
    secret_id = args.secret_id or outputs.get("WebhookSecretArn")
    if not webhook_url or not secret_id:
        raise AwsError(f"stack {args.stack_name} has no WebhookUrl / WebhookSecretArn output")
    _check_url(webhook_url, "the webhook URL")
    events = _events(args.events) if args.events else list(SYNC_EVENTS)
    client = make_client(args, credentials(args, outputs.get("ArgyleCredentialsSecretArn")))
    # Argyle must answer before anything changes: wrong keys should not rotate the secret.
    existing = [s for s in client.list_webhooks() if s.url == webhook_url]

    # Store first, subscribe second: the receiver accepts the new secret (and still the old one)
    # before Argyle signs anything with it.
    new_secret = secrets.token_urlsafe(32)
    old_value = _aws_call(f"cannot read secret {secret_id}", lambda: _read_secret(secret_id, args, missing_ok=True),
                          args=args, names={"secret": secret_id})
    previous_valid_seconds = 0 if args.revoke_previous else args.previous_valid_hours * 3600
    secretsmanager = _aws_client("secretsmanager", args)
    _aws_call(
        f"cannot store the new secret in {secret_id}",
        secretsmanager.put_secret_value,
        args=args,
        names={"secret": secret_id},
        SecretId=secret_id,
        SecretString=rotated_webhook_secret_value(new_secret, old_value, previous_valid_seconds=previous_valid_seconds),
    )
    config = {"days_synced": args.days_synced} if args.days_synced else None
    sub = client.create_webhook(events=events, url=webhook_url, name=args.name, secret=new_secret, config=config)
    # accounts.updated with the account object (connection status, error code, last scan): Argyle
    # allows include_resource only on a subscription of that one event, so it gets its own.
    status_sub = None
    if not args.events:
        status_sub = client.create_webhook(events=[ACCOUNT_STATUS_EVENT], url=webhook_url,
                                           name=f"{args.name} (account status)", secret=new_secret,
                                           config={"include_resource": True})
    removed = []
    if not args.keep_existing:
        for old in existing:
            client.delete_webhook(old.id)
            removed.append(old.id)
    if args.json:
        print(json.dumps({"subscription": _public(sub), "secret_id": secret_id, "removed": removed,
                          "account_status_subscription": _public(status_sub) if status_sub else None}), file=out)
    else:
        print(_details(sub), file=out)
        if status_sub is not None:
            print(_details(status_sub), file=out)
        kept = (
            "the previous one is revoked"
            if args.revoke_previous
            else f"the previous one stays accepted for {args.previous_valid_hours} h"
        )
        print(f"secret stored in {secret_id} ({kept})", file=out)
        for old_id in removed:
            print(f"deleted older subscription {old_id}", file=out)
    return EXIT_OK


def doctor(args: argparse.Namespace, out: TextIO) -> int:
    outputs: dict[str, str] = {}
    if args.stack_name and not args.webhook_url:
        outputs = stack_outputs(args.stack_name, args)
    webhook_url = args.webhook_url or outputs.get("WebhookUrl")
    if not webhook_url:
        raise UsageError("doctor needs --stack-name or --webhook-url")
    _check_url(webhook_url, "the webhook URL")
    client = make_client(args, credentials(args, outputs.get("ArgyleCredentialsSecretArn")))
    report = check_subscriptions(client.list_webhooks(), webhook_url)
    target = f"--stack-name {args.stack_name}" if args.stack_name else f"--webhook-url {webhook_url} --secret-id SECRET"
    fix = f"argyle-webhooks subscribe-stack {target}"
    if args.json:
        print(json.dumps({**report.as_dict(), "fix": None if report.ok else fix}), file=out)
        return EXIT_OK if report.ok else EXIT_UNSUBSCRIBED
    print(f"webhook URL            {webhook_url}", file=out)
    print(f"active subscriptions   {', '.join(report.subscriptions) or 'none'}", file=out)
    if report.disabled:
        print(f"disabled subscriptions {', '.join(report.disabled)}", file=out)
    if report.ok:
        print(f"ok: Argyle delivers all {len(report.required)} events the sync needs to this URL", file=out)
        return EXIT_OK
    print(f"MISSING: Argyle delivers none of these to this URL: {', '.join(report.missing)}", file=out)
    print("  Their webhooks stop without an error anywhere; the reconciler repairs the data only once a day.", file=out)
    print(f"  fix: {fix}", file=out)
    print("       (subscribes every event again with a new secret, and deletes the URL's older subscriptions)",
          file=out)
    return EXIT_UNSUBSCRIBED


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        # argparse prints --help and usage errors itself: send them where main() was told to.
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE

    def command() -> int:
        """The command, its usage errors as OperatorErrors; run_command adds Argyle's and AWS's."""
        try:
            return run(args, out)
        except UsageError as exc:
            raise OperatorError(str(exc), EXIT_USAGE) from None
        except AwsError as exc:
            raise OperatorError(str(exc), EXIT_AWS) from None

    return run_command(PROG, command, err=err, region=lambda: configured_region(args.region),
                       endpoint_url=args.endpoint_url)


if __name__ == "__main__":
    sys.exit(main())
