"""argyle-synced: what the sync has stored. Read-only; prints JSON with money exact.

    argyle-synced [--stack-name S | --activities-table T --sync-state-table T] [--endpoint-url U] COMMAND
      activities ACCOUNT [--from ISO] [--to ISO] [--include-removed] [--items] [--limit N]
      activity ACCOUNT ACTIVITY_ID
      state ACCOUNT            the account's sync state
      accounts                 every account's sync state (a Scan: fine for operators, not for code)
      user USER                the user's record from users.fully_synced
      counts [--account A]     events processed by name; with --account, live and removed activities
      event DEDUPE_KEY [--body] an archived webhook (with --body, its exact bytes, for replay)

Table names: the flags, else ACTIVITIES_TABLE / SYNC_STATE_TABLE, else the stack's outputs.
Exit codes: 0 found, 1 not found, 2 usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from argyle_ops.stack_outputs import boto3_client, stack_outputs
from argyle_pipeline.activity_store import ActivityStore
from argyle_pipeline.exact_json import dumps_exact
from argyle_pipeline.sync_state_store import SyncStateStore

NOT_FOUND, USAGE = 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="argyle-synced", description="Show what the Argyle sync has stored.")
    parser.add_argument("--stack-name", help="read the table names from this stack's outputs")
    parser.add_argument("--activities-table", default=os.environ.get("ACTIVITIES_TABLE"))
    parser.add_argument("--sync-state-table", default=os.environ.get("SYNC_STATE_TABLE"))
    parser.add_argument("--endpoint-url", help="AWS endpoint (the local stack's moto server)")
    parser.add_argument("--region", help="AWS region")
    parser.add_argument("--compact", action="store_true", help="one line of JSON instead of indented")
    commands = parser.add_subparsers(dest="command", required=True)

    activities = commands.add_parser("activities", help="an account's stored activities (JSON array)")
    activities.add_argument("account")
    activities.add_argument("--from", dest="start_from", help="start_date at or after (ISO 8601, as Argyle writes)")
    activities.add_argument("--to", dest="start_to", help="start_date at or before")
    activities.add_argument("--include-removed", action="store_true", help="also the removal tombstones")
    activities.add_argument("--items", action="store_true", help="whole table items, not just Argyle's objects")
    activities.add_argument("--limit", type=int, default=None)

    activity = commands.add_parser("activity", help="one stored activity")
    activity.add_argument("account")
    activity.add_argument("activity_id")

    state = commands.add_parser("state", help="an account's sync state")
    state.add_argument("account")
    commands.add_parser("accounts", help="every account's sync state")
    user = commands.add_parser("user", help="a user's record")
    user.add_argument("user")
    counts = commands.add_parser("counts", help="processed events by name, and an account's activities")
    counts.add_argument("--account")
    event = commands.add_parser("event", help="an archived webhook")
    event.add_argument("dedupe_key")
    event.add_argument("--body", action="store_true", help="print only the exact body")
    return parser


def _take(rows: Iterable[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for row in rows:
        if limit is not None and len(out) >= limit:
            break
        out.append(row)
    return out


def run(args: argparse.Namespace, activities: ActivityStore, state: SyncStateStore) -> tuple[int, Any]:
    """(exit code, what to print) for parsed arguments; separate from I/O for tests."""
    if args.command == "activities":
        if args.start_from or args.start_to:
            if args.include_removed:
                return USAGE, {"error": "--include-removed lists by id; it cannot be combined with --from/--to"}
            rows: Iterable[dict[str, Any]] = activities.activities_by_start_date(
                args.account, args.start_from, args.start_to)
        else:
            rows = activities.activities(args.account, include_removed=args.include_removed)
        items = _take(rows, args.limit)
        return 0, items if args.items else [item.get("activity", item) for item in items]
    if args.command == "activity":
        found = activities.get_item(args.account, args.activity_id)
        return (0, found) if found else (NOT_FOUND, {"error": "no such activity"})
    if args.command == "state":
        found = state.account_state(args.account)
        return (0, found) if found else (NOT_FOUND, {"error": "no sync state for this account"})
    if args.command == "accounts":
        return 0, list(state.accounts())
    if args.command == "user":
        found = state.user(args.user)
        return (0, found) if found else (NOT_FOUND, {"error": "no record for this user"})
    if args.command == "counts":
        result: dict[str, Any] = {"events": state.event_counts()}
        if args.account:
            result["activities"] = activities.count(args.account)
        return 0, result
    if args.command == "event":
        found = state.archived_event(args.dedupe_key)
        if not found:
            return NOT_FOUND, {"error": "no archived event with this key (or it has expired)"}
        if args.body:
            return 0, found["body"]
        return 0, {k: v for k, v in found.items() if k != "body"} | {"body_bytes": len(found["body"])}
    return USAGE, {"error": f"unknown command {args.command}"}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.stack_name and not (args.activities_table and args.sync_state_table):
        outputs = stack_outputs(args.stack_name, boto3_client("cloudformation", region=args.region,
                                                              endpoint_url=args.endpoint_url))
        args.activities_table = args.activities_table or outputs.get("ActivitiesTableName")
        args.sync_state_table = args.sync_state_table or outputs.get("SyncStateTableName")
    if not (args.activities_table and args.sync_state_table):
        print("give --stack-name, or --activities-table and --sync-state-table (or set ACTIVITIES_TABLE "
              "and SYNC_STATE_TABLE)", file=sys.stderr)
        return USAGE
    dynamodb = boto3_client("dynamodb", region=args.region, endpoint_url=args.endpoint_url)
    code, value = run(args, ActivityStore(args.activities_table, dynamodb),
                      SyncStateStore(args.sync_state_table, dynamodb))
    if isinstance(value, bytes):  # an archived body: exactly as Argyle sent it
        sys.stdout.buffer.write(value)
        sys.stdout.buffer.flush()
        return code
    text = dumps_exact(value, indent=None if args.compact else 2)
    print(text, file=sys.stdout if code == 0 else sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
