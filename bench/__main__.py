"""`make bench`: every benchmark in one run, printing figures against their targets.

Exit status is 0 even when a target is missed: a benchmark reports, the figures say the rest.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

from bench.receiver_bench import run_receiver_bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=["receiver", "sync", "reconcile", "freshness", "load", "scale"],
                        help="run one group")
    parser.add_argument("--sizes", default="2000,10000,100000", help="sync: activities per account")
    parser.add_argument("--apis", default="v1,v2", help="sync: Argyle API versions (v1 activities, v2 gigs)")
    parser.add_argument("--latency", default="",
                        help="sync: the latency model, e.g. page=0.25,get=0.12,dynamodb=0.006 (the default)")
    parser.add_argument("--scale-accounts", type=int, default=0, help="scale: accounts in the burst (default 80)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args(argv)
    print(f"# bench on {platform.python_implementation()} {platform.python_version()}, {platform.machine()}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    results = []
    if args.only in (None, "receiver"):
        results += run_receiver_bench()
    if args.only in (None, "sync"):
        from bench.latency_model import LatencyModel
        from bench.sync_bench import run_sync_bench

        try:
            latency = LatencyModel.parse(args.latency)
            sizes = [int(n) for n in args.sizes.split(",")]
        except ValueError as exc:
            parser.error(str(exc))
        results += run_sync_bench(sizes=sizes, latency=latency, apis=tuple(args.apis.split(",")))
    if args.only in (None, "reconcile"):
        from bench.reconcile_bench import run_reconcile_bench

        results += run_reconcile_bench()
    if args.only in (None, "freshness"):
        from bench.freshness_bench import print_freshness, run_freshness_bench

        freshness = run_freshness_bench()
        print_freshness(freshness)
        results += freshness
    if args.only in (None, "load"):
        from bench.load_run import print_load, run_load

        load = run_load(webhooks=300, accounts=10)
        print_load(load)
        results.append(load)
    if args.only in (None, "scale"):
        from bench.scale_bench import run_scale_bench

        results += run_scale_bench(**({"accounts": args.scale_accounts} if args.scale_accounts else {}))
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
