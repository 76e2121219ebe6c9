"""argyle-synced: what the sync has stored (JSON, money exact), and two operator actions.

    argyle-synced [--stack-name S | --activities-table T --sync-state-table T] [--endpoint-url U] COMMAND
      activities ACCOUNT [--from ISO] [--to ISO] [--include-removed] [--items] [--limit N]
      activity ACCOUNT ACTIVITY_ID
      state ACCOUNT            the account's sync state
      accounts                 every account's sync state (a Scan: fine for operators, not for code)
      user USER                the user's record from users.fully_synced
      counts [ACCOUNT]         events processed by name; with an account, its live and removed activities
      event DEDUPE_KEY [--body] an archived webhook (with --body, its exact bytes, for replay)
      replay DEDUPE_KEY [--publish-changes]  queue an archived webhook again (processed even if seen before)
      resync ACCOUNT [--user U] [--force] [--publish-changes]
                               queue a re-sync from scratch of one account the sync knows; a replay or
                               re-sync publishes no change events unless --publish-changes
      reconcile ACCOUNT | --all [--scope recent|full|counts]
                               queue a reconcile (compare with Argyle, repair the drift) now
      health [ACCOUNT] [--json] [--stale-after-hours H] [--scan-behind-hours H]
                               every account's health, worst first (failing, stale, behind
                               Argyle's scan, drifted, disconnected); a table, or --json
      purge ACCOUNT | --user USER [--dry-run] [--no-wait]
                               erase an account's (or a user's) data; prints a receipt to keep

Table names: the flags, else ACTIVITIES_TABLE / SYNC_STATE_TABLE, else the stack's outputs; the
queue (replay, resync): --queue-url, else EVENTS_QUEUE_URL, else the stack's EventsQueueUrl.
Exit codes: 0 found (or done), 1 not found (an account, activity, user or event the sync does not
have), 2 usage (including no region), 3 a purge queued but not finished in the wait, 6 AWS
(credentials, endpoint, stack, table or queue): one line on stderr says what is wrong and what to
do (with any data that goes with it, such as a queued purge's request id, as JSON on stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from argyle_ops.health_report import account_healths, as_json, as_table, now_utc
from argyle_ops.operator_errors import EXIT_NOT_FOUND, EXIT_USAGE, OperatorError, configured_region, run_command
from argyle_ops.stack_outputs import boto3_client, stack_outputs
from argyle_pipeline.aws.activity_store import ActivityStore
from argyle_pipeline.aws.event_queue import EventQueue, QueuedEvent, dedupe_key
from argyle_pipeline.aws.sync_state_store import SyncStateStore
from argyle_pipeline.exact_json import dumps_exact
from argyle_pipeline.receiving.webhook_intake import message_group
from argyle_pipeline.sync.account_health import HealthThresholds
from argyle_pipeline.sync.messages import PURGE_EVENT, RESYNC_EVENT, PurgeJob, ReconcileJob, ResyncRequest
from argyle_pipeline.sync.reconcile_schedule import reconcile_message

PROG = "argyle-synced"
NOT_FOUND, USAGE, NOT_FINISHED = EXIT_NOT_FOUND, EXIT_USAGE, 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Show what the Argyle sync has stored.",
                                     epilog="exit codes: 0 found, 1 not found, 2 usage, 6 AWS error")
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
    counts.add_argument("account", nargs="?")
    counts.add_argument("--account", dest="account_option", help=argparse.SUPPRESS)  # the old spelling
    event = commands.add_parser("event", help="an archived webhook")
    event.add_argument("dedupe_key")
    event.add_argument("--body", action="store_true", help="print only the exact body")
    parser.add_argument("--queue-url", default=os.environ.get("EVENTS_QUEUE_URL"),
                        help="the events queue (replay, resync)")
    replay = commands.add_parser("replay", help="queue an archived webhook again")
    replay.add_argument("dedupe_key")
    replay.add_argument("--publish-changes", action="store_true",
                        help="publish its change events (a replay publishes none by default)")
    resync = commands.add_parser("resync", help="re-sync one account from scratch")
    resync.add_argument("account")
    resync.add_argument("--user", help="the account's user id (default: the one in its sync state)")
    resync.add_argument("--force", action="store_true",
                        help="queue it even though the sync has no state for the account (all its webhooks missed)")
    resync.add_argument("--publish-changes", action="store_true",
                        help="publish its change events (a re-sync, a backfill, publishes none by default)")
    reconcile = commands.add_parser("reconcile", help="compare accounts with Argyle now and repair what differs")
    reconcile.add_argument("account", nargs="?")
    reconcile.add_argument("--all", action="store_true", help="every account with a sync state")
    reconcile.add_argument("--scope", choices=["recent", "full", "counts"], default="recent",
                           help="recent (default): re-list the recent days, then compare counts; full: re-list "
                                "everything; counts: compare counts only")
    health = commands.add_parser("health", help="every account's health, worst first (or one account's)")
    health.add_argument("account", nargs="?")
    health.add_argument("--json", action="store_true", help="JSON for machines instead of a table")
    health.add_argument("--stale-after-hours", type=float, default=24.0,
                        help="stale: connected, and no successful sync for this long (default 24)")
    health.add_argument("--scan-behind-hours", type=float, default=6.0,
                        help="behind_scan: Argyle's last scan newer than our data-as-of by this much (default 6)")
    purge = commands.add_parser("purge", help="erase an account's or a user's data (a data-subject request)")
    purge.add_argument("account", nargs="?")
    purge.add_argument("--user", help="every account of this user, and the user's profile")
    purge.add_argument("--dry-run", action="store_true", help="print what would go; change nothing")
    purge.add_argument("--no-wait", action="store_true", help="queue the purge and return at once")
    purge.add_argument("--wait-seconds", type=float, default=300.0, help="how long to wait for the receipt")
    return parser


def queue_replay(state: SyncStateStore, queue: EventQueue, dedupe: str,
                 publish_changes: bool = False) -> tuple[int, Any]:
    """Put an archived body back on the queue, in its account's group, marked as a replay so the
    sync processes it again instead of recognising it as already done."""
    found = state.archived_event(dedupe)
    if not found:
        return NOT_FOUND, {"error": f"no archived event with key {dedupe} (or it has expired)"}
    body: bytes = found["body"]
    try:
        payload = json.loads(body)
    except ValueError:
        payload = {}
    event_name = str(found.get("event") or "unknown")
    replay_id = uuid.uuid4().hex
    queued = QueuedEvent(body=body, event_name=event_name,
                         group_id=message_group(payload if isinstance(payload, dict) else {}, event_name),
                         dedupe_key=dedupe_key(body + replay_id.encode()), correlation_id=f"replay-{replay_id}",
                         received_at_ms=int(time.time() * 1000))
    # A replay publishes no change events unless asked (docs/change-events.md).
    extra = {"replay_id": replay_id, **({"publish_changes": "true"} if publish_changes else {})}
    message_id = queue.send(queued, extra_attributes=extra)
    return 0, {"queued": "replay", "event": event_name, "group": queued.group_id, "replay_id": replay_id,
               "message_id": message_id}


def queue_resync(queue: EventQueue, account: str, user: str | None, state: SyncStateStore | None = None,
                 force: bool = False, publish_changes: bool = False) -> tuple[int, Any]:
    """Queue a re-sync of an account the sync knows (`state` given): an unknown id is most often a
    typo, and a re-sync of it would only store nothing. `force` queues it anyway."""
    known = state.account_state(account) if state is not None else None
    if state is not None and known is None and not force:
        return NOT_FOUND, {"error": f"the sync has never seen account {account}: check the id (`argyle-synced "
                                    "accounts` lists the known ones), or pass --force to re-sync an account whose "
                                    "webhooks were all missed"}
    user = user or (str(known["user_id"]) if known and known.get("user_id") else None)
    request = ResyncRequest(account=account, user=user, request_id=uuid.uuid4().hex, publish_changes=publish_changes)
    body = request.body()
    queued = QueuedEvent(body=body, event_name=RESYNC_EVENT, group_id=f"account:{account}",
                         dedupe_key=dedupe_key(body), correlation_id=f"resync-{request.request_id}",
                         received_at_ms=int(time.time() * 1000))
    message_id = queue.send(queued)
    return 0, {"queued": "resync", "account": account, "request_id": request.request_id,
               "message_id": message_id}


def queue_reconcile(state: SyncStateStore, queue: EventQueue, account: str | None, every: bool,
                    scope: str) -> tuple[int, Any]:
    """Queue a reconcile of one account (it must have a sync state) or of every account."""
    if every == bool(account):
        return USAGE, {"error": "give an ACCOUNT or --all (not both)"}
    if account:
        found = state.account_state(account)
        if found is None:
            return NOT_FOUND, {"error": f"the sync has never seen account {account}: check the id "
                                        "(`argyle-synced accounts` lists the known ones)"}
        accounts = [(account, found.get("user_id"))]
    else:
        accounts = [(a, None) for a in state.account_ids()]
    request_id = uuid.uuid4().hex
    now_ms = int(time.time() * 1000)
    jobs = [ReconcileJob(account=a, user=u, request_id=request_id, scope=scope)
            for a, u in accounts]
    queue.send_many([reconcile_message(job, f"reconcile-{request_id}", now_ms) for job in jobs])
    return 0, {"queued": "reconcile", "scope": scope, "accounts": len(jobs), "request_id": request_id}


def _accounts_to_purge(state: SyncStateStore, account: str | None, user: str | None) -> list[dict[str, Any]]:
    """The (not yet purged) account states the request names: one account, or every account of
    the user (its links, and a Scan for accounts linked before links existed)."""
    if account:
        found = state.account_state(account)
        return [found] if found and found.get("status") not in ("purged", "purging") else []
    ids = set(state.user_accounts(str(user))) | {a["account_id"] for a in state.accounts()
                                                 if a.get("user_id") == user and a.get("account_id")}
    states = [state.account_state(a) for a in sorted(ids)]
    return [s for s in states if s and s.get("status") not in ("purged", "purging")]


def queue_purge(state: SyncStateStore, activities: ActivityStore, queue: EventQueue | None, *,
                account: str | None, user: str | None, dry_run: bool, wait_seconds: float | None,
                sleep: Any = time.sleep) -> tuple[int, Any]:
    """An erasure request: what would go (`dry_run`), or the purge queued in each account's group
    and, unless `wait_seconds` is None, the receipt once every account is purged."""
    if bool(account) == bool(user):
        return USAGE, {"error": "give an ACCOUNT or --user USER (not both)"}
    targets = _accounts_to_purge(state, account, user)
    if not targets:
        return NOT_FOUND, {"error": "nothing to purge: no sync state for this account (or user), or already purged"}
    if dry_run:
        plan = []
        for target in targets:
            acc = target["account_id"]
            plan.append({"account": acc, "activities": activities.count(acc),
                         "archived_events": len(state.archived_keys(f"account:{acc}", limit=10**9)),
                         "sync_state": 1})
        user_id = user or targets[0].get("user_id")
        others = set(state.user_accounts(str(user_id))) - {t["account_id"] for t in targets} if user_id else set()
        profile = 1 if user_id and state.user(str(user_id)) and not others else 0
        return 0, {"dry_run": True, "would_delete": plan, "user_profiles": profile}
    assert queue is not None
    request_id = uuid.uuid4().hex
    now_ms = int(time.time() * 1000)
    for target in targets:
        job = PurgeJob(account=target["account_id"], user=target.get("user_id"), request_id=request_id,
                       reason="erasure", removed_received_at_ms=now_ms)
        queue.send(QueuedEvent(body=job.body(), event_name=PURGE_EVENT, group_id=f"account:{job.account}",
                               dedupe_key=job.idempotency_key, correlation_id=f"purge-{request_id}",
                               received_at_ms=now_ms))
    queued = {"queued": "purge", "request_id": request_id, "accounts": [t["account_id"] for t in targets]}
    if wait_seconds is None:
        return 0, queued
    deadline = time.monotonic() + wait_seconds
    receipts: dict[str, Any] = {}
    while True:
        for target in targets:
            acc = target["account_id"]
            found = state.account_state(acc) or {}
            if found.get("status") == "purged" and int(found.get("removed_received_at_ms") or 0) == now_ms:
                receipts[acc] = {"account": acc, "purged_at": found.get("purged_at"),
                                 "deleted": found.get("deleted", {})}
        if len(receipts) == len(targets):
            return 0, {"receipt": "purge", "request_id": request_id, "reason": "erasure",
                       "requested_at_ms": now_ms, "accounts": [receipts[t["account_id"]] for t in targets]}
        if time.monotonic() >= deadline:
            return NOT_FINISHED, {**queued, "error": "queued, not finished within the wait: run "
                                                    "`argyle-synced state ACCOUNT` later for its receipt"}
        sleep(1.0)


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
        if not items and state.account_state(args.account) is None:
            return NOT_FOUND, {"error": _unknown_account(args.account)}
        return 0, items if args.items else [item.get("activity", item) for item in items]
    if args.command == "activity":
        found = activities.get_item(args.account, args.activity_id)
        return (0, found) if found else (NOT_FOUND, {"error": f"no activity {args.activity_id} stored for account "
                                                              f"{args.account}"})
    if args.command == "state":
        found = state.account_state(args.account)
        return (0, found) if found else (NOT_FOUND, {"error": _unknown_account(args.account)})
    if args.command == "accounts":
        return 0, list(state.accounts())
    if args.command == "user":
        found = state.user(args.user)
        return (0, found) if found else (NOT_FOUND, {"error": f"no record for user {args.user} (the sync stores "
                                                              "one per users.fully_synced)"})
    if args.command == "counts":
        account = args.account or args.account_option
        result: dict[str, Any] = {"events": state.event_counts()}
        if account:
            result["activities"] = activities.count(account)
            if not any(result["activities"].values()) and state.account_state(account) is None:
                return NOT_FOUND, {"error": _unknown_account(account)}
        return 0, result
    if args.command == "health":
        return _health(args, state)
    if args.command == "event":
        found = state.archived_event(args.dedupe_key)
        if not found:
            return NOT_FOUND, {"error": f"no archived event with key {args.dedupe_key} (or it has expired)"}
        if args.body:
            return 0, found["body"]
        return 0, {k: v for k, v in found.items() if k != "body"} | {"body_bytes": len(found["body"])}
    return USAGE, {"error": f"unknown command {args.command}"}


def _health(args: argparse.Namespace, state: SyncStateStore) -> tuple[int, Any]:
    """Exit 0 with the findings (problems are data, not errors); 1 only for an unknown ACCOUNT."""
    thresholds = HealthThresholds(stale_after_seconds=int(args.stale_after_hours * 3600),
                                  scan_behind_seconds=int(args.scan_behind_hours * 3600))
    if args.account:
        found = state.account_state(args.account)
        if found is None:
            return NOT_FOUND, {"error": _unknown_account(args.account)}
        states: list[dict[str, Any]] = [found]
    else:
        states = list(state.accounts())
    healths = account_healths(states, now_utc(), thresholds)
    return 0, HealthOutput(as_json(healths) if args.json else as_table(healths))


@dataclass
class HealthOutput:
    """What `health` prints: a table (text) or JSON; its exit code 1 is a finding, not an error."""

    value: Any


def _unknown_account(account: str) -> str:
    return (f"the sync has no state and no activities for account {account}: check the id "
            "(`argyle-synced accounts` lists the known ones)")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names: dict[str, str] = {}  # what the command named, for a "does not exist" line; filled as resolved
    return run_command(PROG, lambda: _command(args, names), region=lambda: configured_region(args.region),
                       endpoint_url=args.endpoint_url, names=names)


def _command(args: argparse.Namespace, names: dict[str, str]) -> int:
    """Every subcommand runs here, inside run_command: any AWS error is one line and exit code 6."""
    needs_queue = args.command in ("replay", "resync", "reconcile") or (
        args.command == "purge" and not args.dry_run)
    if args.stack_name and not (args.activities_table and args.sync_state_table
                                and (args.queue_url or not needs_queue)):
        names["stack"] = repr(args.stack_name)
        outputs = stack_outputs(args.stack_name, boto3_client("cloudformation", region=args.region,
                                                              endpoint_url=args.endpoint_url))
        args.activities_table = args.activities_table or outputs.get("ActivitiesTableName")
        args.sync_state_table = args.sync_state_table or outputs.get("SyncStateTableName")
        args.queue_url = args.queue_url or outputs.get("EventsQueueUrl")
    if needs_queue and not args.queue_url:
        raise OperatorError("give --stack-name or --queue-url (or set EVENTS_QUEUE_URL)", USAGE)
    if not (args.activities_table and args.sync_state_table):
        raise OperatorError("give --stack-name, or --activities-table and --sync-state-table (or set "
                            "ACTIVITIES_TABLE and SYNC_STATE_TABLE)", USAGE)
    names["table"] = f"{args.activities_table} or {args.sync_state_table}"
    if args.queue_url:
        names["queue"] = args.queue_url
    dynamodb = boto3_client("dynamodb", region=args.region, endpoint_url=args.endpoint_url)
    state = SyncStateStore(args.sync_state_table, dynamodb)
    if needs_queue:
        queue = EventQueue(args.queue_url, boto3_client("sqs", region=args.region, endpoint_url=args.endpoint_url))
        if args.command == "purge":
            code, value = queue_purge(state, ActivityStore(args.activities_table, dynamodb), queue,
                                      account=args.account, user=args.user, dry_run=False,
                                      wait_seconds=None if args.no_wait else args.wait_seconds)
        elif args.command == "replay":
            code, value = queue_replay(state, queue, args.dedupe_key, args.publish_changes)
        elif args.command == "reconcile":
            code, value = queue_reconcile(state, queue, args.account, args.all, args.scope)
        else:
            code, value = queue_resync(queue, args.account, args.user, state, args.force, args.publish_changes)
    elif args.command == "purge":  # --dry-run: reads only
        code, value = queue_purge(state, ActivityStore(args.activities_table, dynamodb), None, account=args.account,
                                  user=args.user, dry_run=True, wait_seconds=None)
    else:
        code, value = run(args, ActivityStore(args.activities_table, dynamodb), state)
    if isinstance(value, HealthOutput):
        text = value.value if isinstance(value.value, str) else dumps_exact(value.value,
                                                                            indent=None if args.compact else 2)
        print(text)
        return code
    if code != 0:
        # The error is one line on stderr; what goes with it (a queued purge's request id) is on stdout.
        details = {k: v for k, v in value.items() if k != "error"} if isinstance(value, dict) else {}
        if details:
            print(dumps_exact(details, indent=None if args.compact else 2))
        raise OperatorError(str(value.get("error", value)) if isinstance(value, dict) else str(value), code)
    if isinstance(value, bytes):  # an archived body: exactly as Argyle sent it
        sys.stdout.buffer.write(value)
        sys.stdout.buffer.flush()
        return code
    print(dumps_exact(value, indent=None if args.compact else 2))
    return code


if __name__ == "__main__":
    sys.exit(main())
