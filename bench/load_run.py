"""A bounded load run on the local stack: a burst of signed webhooks over loopback HTTP, then the
time for the sync to drain the queue, and a check that nothing was lost.

Self-stopping: at most `webhooks` requests, `threads` at a time, and never longer than
`max_seconds`; every address is 127.0.0.1. `make load` runs it; `make bench` includes a small one.
"""

from __future__ import annotations

import contextlib
import io
import json
import queue
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from argyle_pipeline.aws.event_queue import dedupe_key
from argyle_pipeline.receiving.signature import sign


def _post(url: str, body: bytes, secret: str) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "content-type": "application/json", "x-argyle-signature": sign(body, secret)})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def day_before(iso: str | None) -> str | None:
    from datetime import datetime, timedelta

    if iso is None:
        return None
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00")) - timedelta(days=1)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def run_load(webhooks: int = 1000, accounts: int = 20, activities_per_account: int = 60, threads: int = 8,
             max_seconds: float = 120.0, seed: int = 5) -> dict[str, Any]:
    from argyle_pipeline.aws.activity_store import ActivityStore
    from argyle_pipeline.aws.sync_state_store import SyncStateStore
    from argyle_sandbox.server import SandboxServer
    from local_stack.stack import LocalStack, StackConfig

    secret = "load-run-secret"
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), SandboxServer(seed=seed, api_key_id="k", api_key_secret="s") as sandbox:
        # The accounts exist at Argyle; the burst's webhooks ask the sync to (re)list their ranges.
        account_ids = [sandbox.connect_account(n_activities=activities_per_account)[1] for _ in range(accounts)]
        ranges = {a: sandbox.available_range(a) for a in account_ids}
        # A failed record is retried after 1 s (deployed: 30 s first), as before the retry schedule.
        config = StackConfig(argyle_api_url=sandbox.base_url, argyle_api_key_id="k", argyle_api_key_secret="s",
                             webhook_secret=secret, retry_delays=(1,))
        with LocalStack(config) as stack:
            bodies: queue.Queue[bytes] = queue.Queue()
            for account in account_ids:  # each account's initial sync comes first in its group
                oldest, newest = ranges[account]
                bodies.put(json.dumps({"event": "activities.fully_synced", "name": "load", "data": {
                    "account": account, "user": "load-user", "available_from": oldest, "available_to": newest,
                    "available_count": activities_per_account}}).encode())
            for i in range(webhooks - accounts):
                account = account_ids[i % accounts]
                oldest, newest = ranges[account]
                # Like a periodic scan's webhook: the newest day of the account was (re)scanned.
                bodies.put(json.dumps({"event": "activities.added", "name": f"load {i}", "data": {
                    "account": account, "user": "load-user", "added_from": day_before(newest), "added_to": newest,
                    "added_count": 1, "available_from": oldest, "available_to": newest,
                    "available_count": activities_per_account}}).encode())
            statuses: list[int] = []
            accepted_keys: list[str] = []
            lock = threading.Lock()
            deadline = time.monotonic() + max_seconds

            def worker() -> None:
                while time.monotonic() < deadline:
                    try:
                        body = bodies.get_nowait()
                    except queue.Empty:
                        return
                    status = _post(stack.webhook_url, body, secret)
                    with lock:
                        statuses.append(status)
                        if status == 202:
                            accepted_keys.append(dedupe_key(body))

            started = time.monotonic()
            pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
            for t in pool:
                t.start()
            for t in pool:
                t.join(timeout=max_seconds + 30)
            burst_seconds = time.monotonic() - started
            drained = stack.wait_until_drained(timeout=max_seconds * 5, settle=1.0)
            drain_seconds = time.monotonic() - started - burst_seconds

            # Nothing lost: every accepted webhook was processed (archived) and every account matches.
            state = SyncStateStore(stack.outputs()["SyncStateTableName"])
            missing = [k for k in accepted_keys if state.archived_event(k) is None]
            store = ActivityStore(stack.outputs()["ActivitiesTableName"])
            mismatched = [a for a in account_ids
                          if {i["activity_id"]: i["activity"] for i in store.activities(a)}
                          != {d["id"]: d for d in sandbox.truth(a)}]
    return {
        "name": "local_stack_load", "webhooks_sent": len(statuses), "accepted": statuses.count(202),
        "other_statuses": sorted({s for s in statuses if s != 202}), "burst_seconds": burst_seconds,
        "accepted_per_second": statuses.count(202) / burst_seconds if burst_seconds else 0.0,
        "drain_seconds": drain_seconds, "drained": drained, "lost": len(missing),
        "accounts_mismatched": len(mismatched), "threads": threads,
    }


def print_load(result: dict[str, Any]) -> None:
    print("Load run on the local stack (loopback, bounded)")
    print(f"  webhooks sent {result['webhooks_sent']}, accepted {result['accepted']} "
          f"({result['accepted_per_second']:.0f}/s over {result['burst_seconds']:.1f} s, {result['threads']} threads)")
    print(f"  sync drained the queue in {result['drain_seconds']:.1f} s after the burst"
          f"{'' if result['drained'] else ' (NOT drained)'}")
    print(f"  lost {result['lost']}, accounts not matching Argyle {result['accounts_mismatched']}")


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--webhooks", type=int, default=1000)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args()
    result = run_load(webhooks=args.webhooks, accounts=args.accounts, threads=args.threads,
                      max_seconds=args.max_seconds)
    print_load(result)
    return 0 if result["lost"] == 0 and result["accounts_mismatched"] == 0 and result["drained"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
