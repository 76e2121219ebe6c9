"""`make dev`: the whole pipeline on this machine until Ctrl-C.

moto's server is AWS; the receiver answers on a real HTTP port; a poller feeds the sync function
from the queue; unless ARGYLE_API_URL names another Argyle-compatible API, the Argyle sandbox
serves the activities API and sends signed webhooks. The functions' own JSON logs go to
.local-stack/functions.log; the terminal gets one line per event.

Environment (all optional):
  ARGYLE_API_URL           Argyle-compatible API (default: the sandbox started here)
  ARGYLE_API_KEY_ID        API key id for it          (default: the sandbox's)
  ARGYLE_API_KEY_SECRET    API key secret for it      (default: the sandbox's)
  LOCAL_WEBHOOK_SECRET     webhook secret the receiver accepts (default: argyle-local-dev-secret)
  MOTO_PORT                AWS endpoint port          (default 4566)
  RECEIVER_PORT            webhook receiver port      (default 3000)
  SANDBOX_PORT             sandbox port               (default 4010)
  SANDBOX_SEED             sandbox data seed          (default 1)
  SYNC_WORKERS             concurrent sync pollers    (default 2)
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from local_stack.dev_config import (
    DEFAULT_MOTO_PORT,
    DEFAULT_RECEIVER_PORT,
    DEFAULT_SANDBOX_PORT,
    LOCAL_DEV_SECRET,
    SANDBOX_API_KEY_ID,
    SANDBOX_API_KEY_SECRET,
)
from local_stack.stack import LocalStack, StackConfig

ROOT = Path(__file__).resolve().parent.parent


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def main() -> int:
    terminal = sys.stdout
    log_dir = ROOT / ".local-stack"
    log_dir.mkdir(exist_ok=True)
    log_file = open(log_dir / "functions.log", "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the stack
    sys.stdout = log_file  # the functions' JSON logs; the terminal gets one line per event

    def say(line: str) -> None:
        terminal.write(f"{time.strftime('%H:%M:%S')}  {line}\n")
        terminal.flush()

    sandbox: Any = None
    api_url = os.environ.get("ARGYLE_API_URL", "").strip()
    key_id = os.environ.get("ARGYLE_API_KEY_ID", SANDBOX_API_KEY_ID)
    key_secret = os.environ.get("ARGYLE_API_KEY_SECRET", SANDBOX_API_KEY_SECRET)
    if not api_url:
        from argyle_sandbox.server import SandboxServer

        sandbox = SandboxServer(seed=_int_env("SANDBOX_SEED", 1), api_key_id=key_id, api_key_secret=key_secret,
                                port=_int_env("SANDBOX_PORT", DEFAULT_SANDBOX_PORT)).start()
        api_url = sandbox.base_url

    config = StackConfig(
        argyle_api_url=api_url, argyle_api_key_id=key_id, argyle_api_key_secret=key_secret,
        webhook_secret=os.environ.get("LOCAL_WEBHOOK_SECRET", LOCAL_DEV_SECRET),
        moto_port=_int_env("MOTO_PORT", DEFAULT_MOTO_PORT),
        receiver_port=_int_env("RECEIVER_PORT", DEFAULT_RECEIVER_PORT),
        sync_workers=_int_env("SYNC_WORKERS", 2),
        # The reconcile schedule, on a short period so that drift is found while you watch.
        reconcile_every=_int_env("RECONCILE_EVERY_SECONDS", 120),
    )
    stack = LocalStack(config, report=say)
    stopping = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        stack.start()
        outputs = stack.outputs()
        say("local stack is up (Ctrl-C stops it)")
        for line in (
            f"webhook URL      {outputs['WebhookUrl']}",
            f"AWS endpoint     {stack.aws_endpoint}   (export AWS_ENDPOINT_URL={stack.aws_endpoint})",
            f"Argyle API       {api_url}" + ("   (sandbox)" if sandbox else ""),
            f"activities table {outputs['ActivitiesTableName']}",
            f"sync state table {outputs['SyncStateTableName']}",
            f"events queue     {outputs['EventsQueueUrl']}",
            f"DLQ              {outputs['EventsDlqUrl']}",
            f"function logs    {log_dir / 'functions.log'}",
            f"reconcile        every {config.reconcile_every:.0f} s (RECONCILE_EVERY_SECONDS); now: "
            f"argyle-synced --endpoint-url {stack.aws_endpoint} --queue-url {outputs['EventsQueueUrl']} "
            f"--activities-table {outputs['ActivitiesTableName']} --sync-state-table "
            f"{outputs['SyncStateTableName']} reconcile --all",
        ):
            say("  " + line)
        if sandbox:
            sandbox.subscribe(outputs["WebhookUrl"], events=["*"], secret=config.webhook_secret,
                              name="local stack")
            say("  the sandbox is subscribed to every event; connect an account with:")
            say(f"    curl -X POST {sandbox.root_url}/_sandbox/connect -d '{{\"n_activities\": 500}}'")
        while not stopping.wait(0.5):
            pass
        say("stopping...")
    finally:
        stack.stop()
        if sandbox:
            sandbox.stop()
        sys.stdout = terminal
        log_file.close()
    say("stopped cleanly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
