"""Freshness on the local stack under a steady webhook load (`python -m bench --only freshness`):
the lag from the receiver accepting a webhook to its data written (`SyncLagMs`) and to its whole work
applied (`ExactLagMs`), p50 / p90 / max, read from the sync's own metric lines (EMF), the same
figures the deployed dashboard shows. Target (docs/runbook.md, "Freshness"): ExactLagMs p90 under
60 s, max under 5 minutes, when no record fails.

The load: `accounts` accounts synced first (not measured), then Argyle's periodic scans at a steady
`scans_per_second` for `seconds` (each sends activities.added / .updated / .removed and
accounts.updated), delivered by the sandbox over loopback HTTP. Bounded: loopback only, at most
`seconds` of load and `drain_seconds` to drain.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import time
from typing import Any


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def metric_values(text: str, name: str) -> list[float]:
    """Every value of metric `name` in Embedded Metric Format lines."""
    values: list[float] = []
    for line in text.splitlines():
        if f'"{name}"' not in line or not line.startswith("{"):
            continue
        value = json.loads(line).get(name)
        values.extend(value if isinstance(value, list) else [value])
    return [float(v) for v in values]


def run_freshness_bench(accounts: int = 6, activities_per_account: int = 200, scans_per_second: float = 2.0,
                        seconds: float = 30.0, drain_seconds: float = 120.0, seed: int = 8) -> list[dict[str, Any]]:
    from argyle_sandbox.server import SandboxServer
    from local_stack.stack import LocalStack, StackConfig

    secret = "freshness-bench-secret"
    logs = io.StringIO()
    with contextlib.redirect_stdout(logs), SandboxServer(seed=seed, api_key_id="k", api_key_secret="s") as sandbox:
        config = StackConfig(argyle_api_url=sandbox.base_url, argyle_api_key_id="k", argyle_api_key_secret="s",
                             webhook_secret=secret, retry_delays=(1,))
        with LocalStack(config) as stack:
            sandbox.subscribe(stack.webhook_url, events=["*"], secret=secret)
            ids = [sandbox.connect_account(n_activities=activities_per_account)[1] for _ in range(accounts)]
            sandbox.wait_for_deliveries(timeout=drain_seconds)
            stack.wait_until_drained(timeout=drain_seconds, settle=1.0)
            measured_from = len(logs.getvalue())  # the initial syncs are not the steady state
            started, scans = time.monotonic(), 0
            while (elapsed := time.monotonic() - started) < seconds:
                due = int(elapsed * scans_per_second) + 1
                while scans < due:  # steady: the scans due by now, each on the next account
                    sandbox.periodic_scan(ids[scans % accounts], add=2, update=1, remove=1)
                    scans += 1
                time.sleep(min(0.05, 1 / scans_per_second))
            sandbox.wait_for_deliveries(timeout=drain_seconds)
            drained = stack.wait_until_drained(timeout=drain_seconds, settle=1.0)
            steady = logs.getvalue()[measured_from:]
    results = []
    for name in ("SyncLagMs", "ExactLagMs"):
        values = metric_values(steady, name)
        results.append({"name": f"freshness_{name}", "samples": len(values), "p50_ms": percentile(values, 50),
                        "p90_ms": percentile(values, 90), "max_ms": max(values, default=math.nan),
                        "scans": scans, "scans_per_second": scans_per_second, "seconds": seconds,
                        "accounts": accounts, "drained": drained})
    return results


def print_freshness(results: list[dict[str, Any]]) -> None:
    first = results[0]
    print(f"Freshness on the local stack: {first['scans']} scans at {first['scans_per_second']}/s over "
          f"{first['seconds']:.0f} s, {first['accounts']} accounts (webhook accepted -> ...)")
    labels = {"freshness_SyncLagMs": "data written (SyncLagMs)",
              "freshness_ExactLagMs": "whole work applied (ExactLagMs)"}
    for r in results:
        print(f"  {labels[r['name']]:34} p50 {r['p50_ms']:7.0f} ms  p90 {r['p90_ms']:7.0f} ms  "
              f"max {r['max_ms']:7.0f} ms  ({r['samples']} messages)")
    exact = results[-1]
    verdict = "met" if exact["p90_ms"] < 60_000 and exact["max_ms"] < 300_000 else "MISSED"
    print(f"  target ExactLagMs p90 < 60 s, max < 5 min: {verdict}"
          + ("" if exact["drained"] else " (the queue did NOT drain)"))
