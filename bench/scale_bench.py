"""Scale benchmark: an onboarding burst against Argyle's rate limit, on the local stack.

The sandbox plays Argyle with a rate limit of R requests/s (a 429 with Retry-After beyond it); the
local stack runs C sync workers (as C concurrent Lambda invocations, each its own container) that
share the stack's Argyle budget (ArgyleRequestsPerSecond, here 0.95 R: a little under Argyle's
own limit). A burst of A accounts x P pages arrives as A signed `activities.fully_synced` webhooks.

Printed: the drain time against the ideal (every Argyle call the sync made / R: no stack can list
faster than Argyle lets it), the share of Argyle calls answered 429, and whether every account
ended exact. Targets: drain <= 1.2x ideal, < 1% answered 429, every account exact.

Pages are small (ARGYLE_PAGE_LIMIT, default 10 activities) so that Argyle's limit, not moto's CPU
on this machine, is what bounds the drain: the figure is about the rate limit, not the writes.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from argyle_pipeline.receiving.signature import sign

DRAIN_TARGET = 1.2
THROTTLED_TARGET = 0.01
# The stack's budget against Argyle's limit: a margin for clocks and leases, as a deployment would set.
BUDGET_SHARE = 0.95


def _post(url: str, body: bytes, secret: str) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "content-type": "application/json", "x-argyle-signature": sign(body, secret)})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def run_scale(accounts: int = 80, pages: int = 10, page_size: int = 10, rate: float = 20.0, workers: int = 8,
              max_seconds: float = 600.0, seed: int = 7) -> dict[str, Any]:
    from argyle_pipeline.aws.activity_store import ActivityStore
    from argyle_sandbox.server import SandboxServer
    from local_stack.stack import LocalStack, StackConfig

    secret = "scale-bench-secret"
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), SandboxServer(seed=seed, api_key_id="k", api_key_secret="s") as sandbox:
        account_ids = [sandbox.connect_account(n_activities=pages * page_size)[1] for _ in range(accounts)]
        config = StackConfig(
            argyle_api_url=sandbox.base_url, argyle_api_key_id="k", argyle_api_key_secret="s",
            webhook_secret=secret, retry_delays=(1,), sync_workers=workers,
            extra_env={"ARGYLE_PAGE_LIMIT": str(page_size),
                       "ARGYLE_REQUESTS_PER_SECOND": str(rate * BUDGET_SHARE)})
        with LocalStack(config) as stack:
            bodies = []
            for account in account_ids:
                oldest, newest = sandbox.available_range(account)
                bodies.append(json.dumps({"event": "activities.fully_synced", "name": "scale", "data": {
                    "account": account, "user": "scale-user", "available_from": oldest, "available_to": newest,
                    "available_count": pages * page_size}}).encode())
            sandbox.faults.update({"rate_limit_per_second": float(rate)})
            seen_before, limited_before = sandbox.faults.requests_seen, sandbox.faults.rate_limited
            statuses: list[int] = []
            lock = threading.Lock()

            def send(chunk: list[bytes]) -> None:
                for body in chunk:
                    status = _post(stack.webhook_url, body, secret)
                    with lock:
                        statuses.append(status)

            started = time.monotonic()
            senders = [threading.Thread(target=send, args=(bodies[i::4],), daemon=True) for i in range(4)]
            for t in senders:
                t.start()
            for t in senders:
                t.join(timeout=60)
            settle = 1.0
            drained = stack.wait_until_drained(timeout=max_seconds, settle=settle)
            # Until the queue was first seen empty (it is then watched `settle` s more to be sure).
            drain_seconds = time.monotonic() - started - (settle if drained else 0.0)
            calls = sandbox.faults.requests_seen - seen_before
            throttled = sandbox.faults.rate_limited - limited_before
            sandbox.faults.reset()
            store = ActivityStore(stack.outputs()["ActivitiesTableName"])
            mismatched = [a for a in account_ids
                          if {i["activity_id"]: i["activity"] for i in store.activities(a)}
                          != {d["id"]: d for d in sandbox.truth(a)}]
    ideal = calls / rate
    return {"name": "scale", "accounts": accounts, "pages": pages, "page_size": page_size, "rate": rate,
            "stack_budget": rate * BUDGET_SHARE, "workers": workers, "accepted": statuses.count(202),
            "argyle_calls": calls, "throttled": throttled, "throttled_share": throttled / calls if calls else 0.0,
            "drain_seconds": drain_seconds, "ideal_seconds": ideal,
            "of_ideal": drain_seconds / ideal if ideal else 0.0, "drained": drained,
            "accounts_mismatched": len(mismatched)}


def print_scale(r: dict[str, Any]) -> None:
    print(f"\n## Scale: a burst of {r['accounts']} accounts x {r['pages']} pages of {r['page_size']}, "
          f"{r['workers']} sync workers, Argyle limited to {r['rate']:.0f} requests/s "
          f"(the stack's budget {r['stack_budget']:.1f}/s)")
    ok_drain = r["of_ideal"] <= DRAIN_TARGET and r["drained"]
    ok_429 = r["throttled_share"] < THROTTLED_TARGET
    print(f"  drained in {r['drain_seconds']:.1f} s against an ideal of {r['ideal_seconds']:.1f} s "
          f"({r['argyle_calls']} Argyle calls / {r['rate']:.0f}/s): {r['of_ideal']:.2f}x ideal "
          f"(target <= {DRAIN_TARGET}x): {'ok' if ok_drain else 'OVER TARGET'}"
          f"{'' if r['drained'] else ' (NOT drained)'}")
    print(f"  answered 429: {r['throttled']} of {r['argyle_calls']} calls ({r['throttled_share']:.2%}; "
          f"target < {THROTTLED_TARGET:.0%}): {'ok' if ok_429 else 'OVER TARGET'}")
    print(f"  accounts not matching Argyle: {r['accounts_mismatched']} of {r['accounts']}"
          f" ({'every account exact' if not r['accounts_mismatched'] else 'NOT EXACT'})")


def run_scale_bench(**kwargs: Any) -> list[dict[str, Any]]:
    result = run_scale(**kwargs)
    print_scale(result)
    return [result]
