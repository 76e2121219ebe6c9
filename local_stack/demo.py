"""`make demo`: the receiver on every sample in events/, against moto, showing what reached the queue."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from local_stack.invoke import invoke

ROOT = Path(__file__).resolve().parent.parent


def receiver_samples() -> int:
    from moto import mock_aws

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


def main() -> int:
    for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(name, value)
    return receiver_samples()


if __name__ == "__main__":
    sys.exit(main())
