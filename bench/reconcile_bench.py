"""Reconciliation cost: what comparing one account with Argyle costs, in Argyle calls and wall time.

One account of N = 10,000 activities is synced (the real sync against moto's server and the
Argyle sandbox over HTTP, offset pages of 200), then reconciled ("counts" scope: the comparison
and its repairs, without the recent re-listing) in four situations:
- no drift;
- one activity Argyle added whose webhook never came;
- 50 scattered ones;
- and, for scale, a full pass (re-list everything, as the weekly reconcile does).

Targets (issue "a copy that cannot silently drift"): no drift costs at most 2 + the windows checked
(here: 2 calls); one missing activity at most 2 * log2(N/200) + 2 calls; both far below the
N/200 pages of a full listing.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KEY_ID, KEY_SECRET = "bench-key-id", "bench-key-secret"


def run_reconcile_bench(n: int = 10_000) -> list[dict[str, Any]]:
    sys.path[:0] = [str(ROOT / "layers" / "shared"), str(ROOT / "functions" / "sync"), str(ROOT)]
    import boto3

    import sync_handler
    from argyle_pipeline.argyle.client import ArgyleClient
    from argyle_pipeline.aws.secret_values import ArgyleCredentials
    from argyle_pipeline.sync.messages import ReconcileJob, SyncMessage, parse_message
    from argyle_pipeline.sync.settings import sync_settings
    from argyle_sandbox.server import SandboxServer
    from bench.sync_bench import _aws_environment, _fresh_stack, _start_moto, _webhook

    moto, endpoint = _start_moto()
    saved_env = dict(os.environ)
    rows: list[dict[str, Any]] = []
    floor = math.ceil(n / 200)
    one_target = 2 * math.log2(n / 200) + 2
    print(f"\n## Reconciliation of one account of N = {n:,} (moto server + sandbox over HTTP, offset pages)")
    print(f"{'situation':<32} {'Argyle calls':>12} {'target':>8} {'wall s':>7} {'drift found':>28}")
    try:
        with SandboxServer(seed=9, api_key_id=KEY_ID, api_key_secret=KEY_SECRET) as sandbox:
            _, account = sandbox.connect_account(n_activities=n)
            stack = _fresh_stack(endpoint, "benchrec")
            os.environ.update({**_aws_environment(endpoint), **stack.environment(),
                               "ARGYLE_API_URL": sandbox.base_url, "ARGYLE_API_VERSION": sandbox.api.name})
            sync_settings.cache_clear()
            client = ArgyleClient(sandbox.base_url, ArgyleCredentials(KEY_ID, KEY_SECRET), page_limit=200)
            runtime = sync_handler.build_runtime(sync_settings(), argyle=client, fetchers=[client],
                                                 dynamodb=boto3.client("dynamodb"))
            sync = runtime.sync

            def process(body: bytes) -> dict[str, Any]:
                message = SyncMessage(body=body, group_id=f"account:{account}", correlation_id="bench",
                                      received_at_ms=int(time.time() * 1000))
                outcome: dict[str, Any] = sync.process(message, parse_message(message), lambda: 10**9).as_dict()
                return outcome

            process(_webhook(sandbox, account).encode())
            acct = sandbox.state.account(account)
            first, last = sandbox.state.date_span(acct)
            situations = [("no drift", 0, "counts"), ("1 missing (webhook never came)", 1, "counts"),
                          ("50 scattered missing", 50, "counts"), ("full pass (weekly), no drift", 0, "full")]
            for number, (label, missing, scope) in enumerate(situations):
                if missing:
                    sandbox.state.add_activities(acct, missing, first or 0, last or 0)
                calls = client.calls
                started = time.perf_counter()
                outcome = process(ReconcileJob(account=account, request_id=f"bench-{number:04d}",
                                               scope=scope).body())
                wall = time.perf_counter() - started
                used = client.calls - calls
                drift = outcome.get("drift") or {}
                target = {"no drift": 2, "1 missing (webhook never came)": one_target}.get(label)
                row = {"situation": label, "argyle_calls": used, "target": target, "wall_s": wall, "drift": drift,
                       "n": n, "full_listing_pages": floor}
                rows.append(row)
                verdict = "" if target is None else ("  ok" if used <= target else "  MISSED")
                found = ", ".join(f"{k} {v}" for k, v in drift.items())
                target_text = "-" if target is None else f"<= {target:.1f}"
                print(f"{label:<32} {used:>12,} {target_text:>8} {wall:>7.1f} {found:>28}{verdict}")
            started = time.perf_counter()
            keys = len(sync.ctx.activities.stored_keys(account))
            print(f"(a full listing of the account is {floor} pages. Wall time is mostly moto's: reading the "
                  f"{keys:,} stored keys back through moto's server alone takes {time.perf_counter() - started:.1f} s; "
                  "in DynamoDB it is one ~1 MB Query)")
    finally:
        sync_handler.set_runtime(None)
        os.environ.clear()
        os.environ.update(saved_env)
        moto.terminate()
        try:
            moto.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a loaded machine: moto's server is slow to exit
            moto.kill()
            moto.wait(timeout=10)
    return rows


if __name__ == "__main__":
    run_reconcile_bench(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
