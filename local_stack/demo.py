"""`make demo`: the whole pipeline on this machine, checked against Argyle's truth.

Starts the local stack and the Argyle sandbox, subscribes the stack with the subscription CLI,
connects users with several accounts and thousands of activities, runs periodic scans that add,
update and remove activities, with the sandbox misbehaving (429s, 500s, duplicate and
out-of-order deliveries, accounts changing between the pages of a listing, a webhook Argyle never
sends, a signed removal of activities Argyle still has), sends a forged webhook, runs a reconcile,
then compares DynamoDB with the sandbox's truth. Each step is announced as it starts. Exits 0 only
if the copy is exact.

`python -m local_stack.demo --samples` instead runs the receiver on every sample in events/.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from local_stack.lambda_runtime import environment

ROOT = Path(__file__).resolve().parent.parent

# users x accounts, and activities per account: thousands in all, a few seconds each to sync
DEMO_ACCOUNTS = [[900, 400], [700, 300, 200], [500]]
SCANS = 2
# A failed record's retry delays here; deployed: 30 s, 2 min, 8 min, 30 min (RETRY_DELAYS_SECONDS).
DEMO_RETRY_DELAYS = (1, 2, 4, 8)


def receiver_samples() -> int:
    from moto import mock_aws

    from local_stack.invoke import invoke

    samples = sorted(p for p in (ROOT / "events").glob("*.json")
                     if not p.name.startswith("sqs_") and p.name != "env.json")
    print(f"{'sample':40} {'status':>6}  queued")
    failures = 0
    for path in samples:
        with mock_aws():
            outcome = invoke("ReceiverFunction", json.loads(path.read_text()), quiet=True)
        status = outcome["response"]["statusCode"]
        queued = outcome["queued"]
        summary = ", ".join(f"{m['attributes']['event']} -> group {m['group_id']}" for m in queued) or "-"
        print(f"{path.name:40} {status:>6}  {summary}")
        genuine = not path.name.startswith(("forged", "missing"))
        if genuine != (status == 202 and len(queued) == 1):
            failures += 1
    print("all samples behaved as expected" if not failures else f"{failures} sample(s) misbehaved")
    return 1 if failures else 0


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body,  # noqa: S310 - our own loopback URL
                                     headers={"content-type": "application/json", **headers}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback only
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def compare(stack: Any, sandbox: Any, accounts: list[str]) -> tuple[int, int, list[str]]:
    """(stored, expected, problems): every account's stored activities against the sandbox's truth."""
    from argyle_pipeline.aws.activity_store import ActivityStore

    store = ActivityStore(stack.outputs()["ActivitiesTableName"])
    stored_total = expected_total = 0
    problems: list[str] = []
    for account in accounts:
        truth = {doc["id"]: doc for doc in sandbox.truth(account)}
        stored = {item["activity_id"]: item["activity"] for item in store.activities(account)}
        stored_total += len(stored)
        expected_total += len(truth)
        missing, extra = truth.keys() - stored.keys(), stored.keys() - truth.keys()
        different = [i for i in truth.keys() & stored.keys() if truth[i] != stored[i]]
        if missing or extra or different:
            problems.append(f"account {account}: {len(missing)} missing, {len(extra)} extra, "
                            f"{len(different)} different")
    return stored_total, expected_total, problems


def subscribe_stack(stack: Any, sandbox: Any) -> None:
    """What a user does after `sam deploy`: the subscription CLI, against the local stack."""
    from argyle_ops import webhooks_cli

    outputs = stack.outputs()
    args = ["--api-url", sandbox.base_url, "subscribe-stack", "--webhook-url", outputs["WebhookUrl"],
            "--secret-id", outputs["WebhookSecretArn"], "--endpoint-url", stack.aws_endpoint]
    env = {"ARGYLE_API_KEY_ID": sandbox.api_key_id, "ARGYLE_API_KEY_SECRET": sandbox.api_key_secret}
    out = io.StringIO()
    with environment(env), contextlib.redirect_stdout(out):
        code = webhooks_cli.main(args)
    if code != 0:
        raise SystemExit(f"argyle-webhooks subscribe-stack failed ({code}): {out.getvalue()}")


def full_demo(seed: int, accounts_plan: list[list[int]], scans: int) -> int:
    from argyle_pipeline.receiving.signature import sign
    from argyle_sandbox.server import SandboxServer
    from local_stack.dev_config import SANDBOX_API_KEY_ID, SANDBOX_API_KEY_SECRET
    from local_stack.stack import LocalStack, StackConfig

    terminal = sys.stdout
    started = time.monotonic()
    log_path = ROOT / ".local-stack" / "demo-functions.log"
    log_path.parent.mkdir(exist_ok=True)

    def say(line: str) -> None:
        terminal.write(f"[{time.monotonic() - started:6.1f}s] {line}\n")
        terminal.flush()

    with open(log_path, "w", encoding="utf-8") as log_file:
        sys.stdout = log_file  # the functions' JSON logs go to the file, the story to the terminal
        try:
            with SandboxServer(seed=seed, api_key_id=SANDBOX_API_KEY_ID, api_key_secret=SANDBOX_API_KEY_SECRET) as sb:
                events_path = ROOT / ".local-stack" / "demo-change-events.jsonl"
                events_path.unlink(missing_ok=True)
                config = StackConfig(argyle_api_url=sb.base_url, argyle_api_key_id=SANDBOX_API_KEY_ID,
                                     argyle_api_key_secret=SANDBOX_API_KEY_SECRET, retry_delays=DEMO_RETRY_DELAYS,
                                     change_events=True, change_events_file=events_path)
                say(f"Argyle sandbox up: {sb.base_url}; starting the local stack (moto, receiver, sync)...")
                with LocalStack(config) as stack:
                    say(f"local stack up: webhook URL {stack.webhook_url}, AWS endpoint {stack.aws_endpoint}")
                    say("a failed record is retried after " + ", ".join(f"{d} s" for d in DEMO_RETRY_DELAYS)
                        + " here (deployed: 30 s, 2 min, 8 min, 30 min), then goes to the DLQ")
                    subscribe_stack(stack, sb)
                    say("subscribed the stack to the sandbox with `argyle-webhooks subscribe-stack` "
                        "(new random secret stored in the stack's secret)")
                    sb.faults.update({"rate_limit_every": 9, "retry_after": "0", "fail_every": 13,
                                      "duplicate_deliveries": 1, "reorder_deliveries": True})
                    say("sandbox faults on: 429 every 9th call, 500 every 13th, every webhook delivered twice, "
                        "each step's webhooks in reverse order")
                    sb.faults.update({"page_shift_remove": 2, "page_shift_add": 1, "page_shift_times": 6})
                    say("sandbox fault on: during the first listings, a scan removes 2 and adds 1 activity "
                        "before the next page (offset pages then skip live activities)")
                    accounts: list[str] = []
                    for plan in accounts_plan:
                        user: str | None = None
                        for n in plan:
                            user, account = sb.connect_account(user_id=user, n_activities=n)
                            accounts.append(account)
                        say(f"connected user {str(user)[:8]}... with {len(plan)} account(s): {sum(plan)} activities")
                    wait(sb, stack, say, "initial sync")
                    shifts = len(sb.page_shifts)
                    say(f"Argyle changed accounts between listing pages {shifts} time(s); "
                        "the sync listed those accounts again before recording them as synced")
                    for scan in range(1, scans + 1):
                        if scan == 1:  # Argyle forgets one webhook: nothing but a reconcile can find it
                            sb.faults.update({"drop_next_deliveries": 1, "drop_events": ["activities.added"]})
                        for account in accounts:
                            sb.periodic_scan(account, add=25, update=10, remove=5)
                        say(f"periodic scan {scan}: +25 added, 10 updated, 5 removed on each account"
                            + (" (Argyle never sends one account's activities.added)" if scan == 1 else ""))
                        wait(sb, stack, say, f"scan {scan}")
                    revoked = accounts.pop(1)
                    sb.revoke(revoked)
                    wait(sb, stack, say, "a worker revoked access to one account (Argyle sends only accounts.removed)")
                    purged = purge_state(stack, revoked)
                    say(f"  purged: {purged}")
                    lied = sb.lying_removal(accounts[-1], 5)
                    wait(sb, stack, say, "a signed activities.removed of 5 activities Argyle still has")
                    kept = sum(1 for i in lied if store_has(stack, accounts[-1], i))
                    say(f"  Argyle contradicted it: {kept} of 5 kept (RemovalsContradicted counts them)")
                    body = json.dumps({"event": "activities.removed", "name": "forged",
                                       "data": {"account": accounts[0], "removed_activities": ["everything"]}}).encode()
                    forged = post(stack.webhook_url, body, {"x-argyle-signature": sign(body, "attacker-secret")})
                    unsigned = post(stack.webhook_url, body, {})
                    say(f"forged webhook answered {forged}, unsigned webhook answered {unsigned}")
                    wait(sb, stack, say, "final drain")
                    stack.reconcile_now(scope="recent")
                    wait(sb, stack, say, "reconcile of every account (what the daily schedule does)")
                    drift = reconcile_drift(stack, accounts)
                    say(f"  drift found and repaired: {drift['missing']} missing, {drift['extra']} extra, "
                        f"{drift['stale']} stale")
                    say(f"comparing DynamoDB with the sandbox's truth, account by account ({len(accounts)} of them)...")
                    stored, expected, problems = compare(stack, sb, accounts)
                    say(f"comparison: {stored} activities stored, {expected} in Argyle, "
                        + ("every account exact" if not problems else f"{len(problems)} account(s) differ"))
                    counters = stack.counters
                    stats = stack.poller.stats if stack.poller else None
                    processed = stats.records - stats.failed_records if stats else 0
                    explanation = records_explained(counters.accepted, stack.dedupe_window.dropped, processed,
                                                    stats.failed_records if stats else 0)
                    elapsed = time.monotonic() - started
                    rows = [
                        ("events accepted (202)", counters.accepted),
                        ("dropped by SQS's dedupe window", stack.dedupe_window.dropped),
                        ("events rejected", ", ".join(f"{n}x {s}" for s, n in sorted(counters.rejected.items())) or 0),
                        ("accounts", len(accounts)),
                        ("activities in Argyle (truth)", expected),
                        ("activities stored in DynamoDB", stored),
                        ("webhooks Argyle never sent", sum(1 for d in sb.deliveries if d.status == "dropped")),
                        ("listing pages Argyle shifted", shifts),
                        ("lying removals kept", f"{kept} of {len(lied)}"),
                        ("revoked account purged", purged),
                        ("drift repaired by reconcile", f"{drift['missing']} missing, {drift['extra']} extra, "
                                                        f"{drift['stale']} stale"),
                        ("Argyle API calls (incl. faulted)", sb.faults.requests_seen),
                        ("AWS calls (moto server)", stack.aws_calls),
                        ("sync batches / records processed", f"{stats.batches} / {processed}" if stats else "-"),
                        ("failed attempts (retried)", stats.failed_records if stats else "-"),
                        ("change events (EventBridge)", change_event_counts(stack)),
                        ("time", f"{elapsed:.1f} s"),
                        ("copy exact", "yes" if exact(problems, forged, unsigned, kept, lied, purged) else "NO"),
                    ]
        finally:
            sys.stdout = terminal
    width = max(len(r[0]) for r in rows)
    values = max(len(str(r[1])) for r in rows)
    print()
    print("+-" + "-" * width + "-+-" + "-" * values + "-+")
    for name, value in rows:
        print(f"| {name:<{width}} | {value!s:<{values}} |")
    print("+-" + "-" * width + "-+-" + "-" * values + "-+")
    print(explanation)
    for problem in problems:
        print("MISMATCH", problem)
    print(f"function logs: {log_path.relative_to(ROOT)}")
    print(f"change events: {(ROOT / '.local-stack' / 'demo-change-events.jsonl').relative_to(ROOT)}")
    return 0 if exact(problems, forged, unsigned, kept, lied, purged) else 1


def exact(problems: list[str], forged: int, unsigned: int, kept: int, lied: list[str], purged: str = "yes") -> bool:
    return not problems and forged == 401 and unsigned == 401 and kept == len(lied) and purged.startswith("yes")


def change_event_counts(stack: Any) -> str:
    """What the stack published to its change-event bus, by detail type (read off the rule's queue)."""
    watcher = stack.change_events
    if watcher is None:
        return "-"
    while watcher.drain():  # what is still in the queue, before the stack stops
        pass
    return ", ".join(f"{n} {kind}" for kind, n in sorted(watcher.seen.items())) or "none"


def purge_state(stack: Any, account: str) -> str:
    """"yes (...counts...)" when nothing of the account is left but its marker; what is left otherwise."""
    from argyle_pipeline.aws.activity_store import ActivityStore
    from argyle_pipeline.aws.sync_state_store import SyncStateStore

    outputs = stack.outputs()
    items = len(ActivityStore(outputs["ActivitiesTableName"]).item_ids(account))
    state = SyncStateStore(outputs["SyncStateTableName"])
    marker = state.account_state(account) or {}
    archived = len(state.archived_keys(f"account:{account}"))
    if marker.get("status") == "purged" and items == 0 and archived == 0:
        deleted = marker.get("deleted") or {}
        return "yes (" + ", ".join(f"{k} {v}" for k, v in sorted(deleted.items())) + " deleted)"
    return f"NO: {items} items, {archived} archived bodies, state {marker.get('status')}"


def store_has(stack: Any, account: str, activity_id: str) -> bool:
    from argyle_pipeline.aws.activity_store import ActivityStore

    return ActivityStore(stack.outputs()["ActivitiesTableName"]).live_activity(account, activity_id) is not None


def reconcile_drift(stack: Any, accounts: list[str]) -> dict[str, int]:
    """What the last reconcile of each account found (and repaired), summed, from the accounts' states."""
    from argyle_pipeline.aws.sync_state_store import SyncStateStore

    state = SyncStateStore(stack.outputs()["SyncStateTableName"])
    total = {"missing": 0, "extra": 0, "stale": 0}
    for account in accounts:
        found = (state.account_state(account) or {}).get("last_reconcile") or {}
        for kind, n in (found.get("drift") or {}).items():
            total[kind] = total.get(kind, 0) + int(n)
    return total


def records_explained(accepted: int, dropped: int, processed: int, failed: int) -> str:
    """How the webhooks the receiver accepted became the records the sync processed."""
    queued = accepted - dropped
    text = f"From {accepted} accepted webhooks to {processed} processed records: "
    if dropped:
        text += (f"the queue dropped {dropped} re-sent deliveries (a deduplication id it saw within 5 minutes), "
                 f"so {queued} reached the sync. ")
    text += ("Argyle's duplicate deliveries (the sandbox sends every webhook twice) are messages of their own, "
             "each with its own deduplication id; the sync processes each and skips the work when an earlier run "
             "already covered it (docs/sync.md, \"What a duplicate is\").")
    if processed > queued:
        text += (f" The {processed - queued} other records are the sync's own messages (reconcile jobs, "
                 "continuations of long listings).")
    elif processed < queued:
        text += f" {queued - processed} were not processed (see the DLQ)."
    if failed:
        text += f" {failed} attempts failed (Argyle's faults) and were retried; they are not counted as processed."
    return text


def wait(sandbox: Any, stack: Any, say: Any, what: str) -> None:
    say(f"{what}: waiting for the sandbox's deliveries and the sync...")
    sandbox.wait_for_deliveries(timeout=120)
    if not stack.wait_until_drained(timeout=300):
        raise SystemExit(f"the queue did not drain during {what}")
    say(f"{what}: webhooks delivered, queue drained ({stack.counters.accepted} accepted so far)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", action="store_true", help="only run the receiver on the samples in events/")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--scans", type=int, default=SCANS)
    args = parser.parse_args(argv)
    for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(name, value)
    if args.samples:
        return receiver_samples()
    return full_demo(args.seed, DEMO_ACCOUNTS, args.scans)


if __name__ == "__main__":
    sys.exit(main())
