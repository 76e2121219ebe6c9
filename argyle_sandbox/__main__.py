"""`python -m argyle_sandbox` (or `make sandbox ARGS="..."`): run the Argyle sandbox on loopback.

    python -m argyle_sandbox --port 8010 --seed 7 --accounts 2 --activities 500 \
        --subscribe http://127.0.0.1:3000/webhooks/argyle --secret s3cret --pagination keyset

Prints the base URL to use as ARGYLE_API_URL, then serves until Ctrl-C. Scenarios and faults are
driven over HTTP at /_sandbox/... (see docs/argyle-api.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from argyle_pipeline.argyle.api_versions import API_VERSIONS
from argyle_sandbox.pagination import PAGINATION_MODES
from argyle_sandbox.server import SandboxServer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="argyle-sandbox", description="A local Argyle API (v1 or v2) and webhooks.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8010, help="port (0 picks a free one; default 8010)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic data (default 1)")
    parser.add_argument("--api-key-id", default="sandbox-key-id", help="HTTP Basic user the API accepts")
    parser.add_argument("--api-key-secret", default="sandbox-key-secret", help="HTTP Basic password")
    parser.add_argument("--accounts", type=int, default=0, help="accounts to connect at start (default 0)")
    parser.add_argument("--activities", type=int, default=200, help="activities per account at start")
    parser.add_argument("--years", type=float, default=3.0, help="years the start dates spread over")
    parser.add_argument(
        "--api-version",
        choices=sorted(API_VERSIONS),
        default="v1",
        help="v1 (/v1/activities, activities.* webhooks; the default) or v2 (/v2/gigs, gigs.* webhooks)",
    )
    parser.add_argument(
        "--pagination",
        choices=PAGINATION_MODES,
        default=None,
        help="how the list pages: offset (DRF limit/offset, v1's default) or keyset (a stable cursor, v2's)",
    )
    parser.add_argument("--subscribe", metavar="URL", help="subscribe URL to every event before connecting")
    parser.add_argument("--secret", help="signing secret of --subscribe's subscription")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a fault, e.g. rate_limit_every=5 (values are JSON)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    return parser


def parse_faults(items: list[str]) -> dict[str, object]:
    faults: dict[str, object] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--fault needs NAME=VALUE, got {item!r}")
        try:
            faults[name.strip()] = json.loads(value)
        except ValueError:
            faults[name.strip()] = value  # a bare string, e.g. foreign_next_host=http://127.0.0.1:9
    return faults


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sandbox = SandboxServer(
        seed=args.seed,
        api_key_id=args.api_key_id,
        api_key_secret=args.api_key_secret,
        host=args.host,
        port=args.port,
        pagination=args.pagination,
        api=args.api_version,
        verbose=args.verbose,
    )
    try:
        sandbox.faults.update(parse_faults(args.fault))
    except ValueError as exc:
        print(f"argyle-sandbox: {exc}", file=sys.stderr)
        return 2
    try:
        sandbox.start()
    except OSError as exc:  # one line, not a traceback (docs/runbook.md "Exit codes")
        print(f"argyle-sandbox: error: cannot listen on {args.host}:{args.port} ({exc.strerror}): stop what holds "
              "it, or choose another --port", file=sys.stderr)
        return 3
    if args.subscribe:
        sandbox.subscribe(args.subscribe, ["*"], args.secret, name="argyle-sandbox --subscribe")
    for _ in range(args.accounts):
        user, account = sandbox.connect_account(n_activities=args.activities, years=args.years)
        print(f"connected account {account} (user {user}, {args.activities} activities)", flush=True)
    print(f"Argyle sandbox on {sandbox.base_url}  (user {args.api_key_id!r}; Ctrl-C stops)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        sandbox.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
