"""`make dev`: the whole pipeline on this machine until Ctrl-C (or SIGTERM).

moto's server is AWS; the receiver answers on a real HTTP port; a poller feeds the sync function
from the queue; unless ARGYLE_API_URL names another Argyle-compatible API, the Argyle sandbox
serves the activities API and sends signed webhooks. The functions' own JSON logs go to
.local-stack/functions.log; the terminal gets one line per event, and why a record failed.

Environment (all optional):
  ARGYLE_API_URL           Argyle-compatible API (default: the sandbox started here)
  ARGYLE_API_KEY_ID        API key id for it          (default: the sandbox's)
  ARGYLE_API_KEY_SECRET    API key secret for it      (default: the sandbox's)
  LOCAL_WEBHOOK_SECRET     webhook secret the receiver accepts (default: argyle-local-dev-secret)
  LOCAL_STACK_HOST         address every server binds (default 127.0.0.1; 0.0.0.0 lets a
                           container reach it, and anyone on your network too)
  MOTO_PORT                AWS endpoint port          (default 4566)
  RECEIVER_PORT            webhook receiver port      (default 3000)
  SANDBOX_PORT             sandbox port               (default 4010)
  SANDBOX_SEED             sandbox data seed          (default 1)
  SYNC_WORKERS             concurrent sync pollers    (default 2)
  RETRY_DELAYS_SECONDS     a failed record's retry delays (default as deployed: 30,120,480,1800)
  RECONCILE_EVERY_SECONDS  how often every account is reconciled with Argyle (default 120)

Exit codes: 0 stopped by Ctrl-C or SIGTERM, 2 a setting above is not valid, 3 a port is taken or
a server cannot start.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from local_stack.dev_config import (
    DEFAULT_MOTO_PORT,
    DEFAULT_RECEIVER_PORT,
    DEFAULT_SANDBOX_PORT,
    LOCAL_DEV_SECRET,
    SANDBOX_API_KEY_ID,
    SANDBOX_API_KEY_SECRET,
)
from local_stack.stack import LocalStack, LocalStackError, PortInUse, StackConfig, check_port_free

ROOT = Path(__file__).resolve().parent.parent
PROG = "make dev"
EXIT_SETTING, EXIT_CANNOT_START = 2, 3
PORT_VARIABLES = {"the AWS endpoint, moto": "MOTO_PORT", "the webhook receiver": "RECEIVER_PORT",
                  "the Argyle sandbox": "SANDBOX_PORT"}


class BadSetting(Exception):
    pass


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise BadSetting(f"{name}={value!r} is not a whole number") from None


def _delays_env(name: str) -> tuple[int, ...] | None:
    from argyle_pipeline.sync.retry_schedule import parse_delays

    value = os.environ.get(name, "").strip()
    try:
        return parse_delays(value) if value else None
    except ValueError as exc:
        raise BadSetting(str(exc)) from None


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the stack exactly as Ctrl-C does


def fail(code: int, message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def main() -> int:
    try:
        host = os.environ.get("LOCAL_STACK_HOST", "").strip() or "127.0.0.1"
        ports = {"MOTO_PORT": _int_env("MOTO_PORT", DEFAULT_MOTO_PORT),
                 "RECEIVER_PORT": _int_env("RECEIVER_PORT", DEFAULT_RECEIVER_PORT),
                 "SANDBOX_PORT": _int_env("SANDBOX_PORT", DEFAULT_SANDBOX_PORT)}
        seed, workers = _int_env("SANDBOX_SEED", 1), _int_env("SYNC_WORKERS", 2)
        # The reconcile schedule, on a short period so that drift is found while you watch.
        reconcile_every = _int_env("RECONCILE_EVERY_SECONDS", 120)
        retry_delays = _delays_env("RETRY_DELAYS_SECONDS")
    except BadSetting as exc:
        return fail(EXIT_SETTING, f"{exc}: fix or unset it")
    api_url = os.environ.get("ARGYLE_API_URL", "").strip()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        # Before anything starts: a taken port is one line, not a half-started stack.
        check_port_free("the AWS endpoint, moto", host, ports["MOTO_PORT"])
        check_port_free("the webhook receiver", host, ports["RECEIVER_PORT"])
        if not api_url:
            check_port_free("the Argyle sandbox", host, ports["SANDBOX_PORT"])
        return run(host, ports, seed, workers, retry_delays, reconcile_every, api_url)
    except PortInUse as exc:
        variable = PORT_VARIABLES.get(exc.what, "the port")
        return fail(EXIT_CANNOT_START, f"{exc}: stop what holds it (another `make dev`?), or choose another "
                                       f"port, e.g. {variable}={exc.port + 1} make dev")
    except (LocalStackError, OSError) as exc:
        return fail(EXIT_CANNOT_START, f"the local stack cannot start: {exc}")
    except KeyboardInterrupt:  # Ctrl-C while starting: everything started is already stopped
        return 0


def run(host: str, ports: dict[str, int], seed: int, workers: int, retry_delays: tuple[int, ...] | None,
        reconcile_every: int, api_url: str) -> int:
    terminal = sys.stdout
    log_dir = ROOT / ".local-stack"
    log_dir.mkdir(exist_ok=True)

    def say(line: str) -> None:
        terminal.write(f"{time.strftime('%H:%M:%S')}  {line}\n")
        terminal.flush()

    sandbox: Any = None
    key_id = os.environ.get("ARGYLE_API_KEY_ID", SANDBOX_API_KEY_ID)
    key_secret = os.environ.get("ARGYLE_API_KEY_SECRET", SANDBOX_API_KEY_SECRET)
    stack: LocalStack | None = None
    with open(log_dir / "functions.log", "a", encoding="utf-8") as log_file:
        sys.stdout = log_file  # the functions' JSON logs; the terminal gets one line per event
        try:
            if not api_url:
                from argyle_sandbox.server import SandboxServer

                try:
                    sandbox = SandboxServer(seed=seed, api_key_id=key_id, api_key_secret=key_secret, host=host,
                                            port=ports["SANDBOX_PORT"]).start()
                except OSError:
                    raise PortInUse("the Argyle sandbox", host, ports["SANDBOX_PORT"]) from None
                api_url = sandbox.base_url
            config = StackConfig(
                argyle_api_url=api_url, argyle_api_key_id=key_id, argyle_api_key_secret=key_secret,
                webhook_secret=os.environ.get("LOCAL_WEBHOOK_SECRET", LOCAL_DEV_SECRET), host=host,
                moto_port=ports["MOTO_PORT"], receiver_port=ports["RECEIVER_PORT"], sync_workers=workers,
                retry_delays=retry_delays, reconcile_every=reconcile_every, change_events=True,
                change_events_file=log_dir / "change-events.jsonl")
            stack = LocalStack(config, report=say)
            stack.start()
            banner(stack, sandbox, api_url, config, log_dir, say)
            while True:
                time.sleep(0.5)
        except KeyboardInterrupt:
            say("stopping...")
        finally:
            if stack is not None:
                stack.stop()
            if sandbox:
                sandbox.stop()
            sys.stdout = terminal
    say("stopped cleanly")
    return 0


def banner(stack: LocalStack, sandbox: Any, api_url: str, config: StackConfig, log_dir: Path, say: Any) -> None:
    outputs = stack.outputs()
    delays = ", ".join(f"{d} s" for d in config.retry_delays) if config.retry_delays else \
        "30 s, 2 min, 8 min, 30 min (as deployed; RETRY_DELAYS_SECONDS=1 make dev for 1 s)"
    say("local stack is up (Ctrl-C stops it)")
    for line in (
        f"webhook URL      {outputs['WebhookUrl']}",
        f"AWS endpoint     {stack.aws_endpoint}   (export AWS_ENDPOINT_URL={stack.aws_endpoint})",
        f"Argyle API       {api_url}" + ("   (sandbox)" if sandbox else ""),
        f"activities table {outputs['ActivitiesTableName']}",
        f"sync state table {outputs['SyncStateTableName']}",
        f"events queue     {outputs['EventsQueueUrl']}",
        f"DLQ              {outputs['EventsDlqUrl']}",
        f"retry delays     {delays}",
        f"function logs    {log_dir / 'functions.log'}",
        f"change events    bus {stack.change_events.bus_name if stack.change_events else '-'}: a `change` line "
        f"each, and {log_dir / 'change-events.jsonl'}",
        f"reconcile        every {config.reconcile_every:.0f} s (RECONCILE_EVERY_SECONDS); now: "
        f"argyle-synced --endpoint-url {stack.aws_endpoint} --queue-url {outputs['EventsQueueUrl']} "
        f"--activities-table {outputs['ActivitiesTableName']} --sync-state-table "
        f"{outputs['SyncStateTableName']} reconcile --all",
    ):
        say("  " + line)
    if config.host != "127.0.0.1":
        say(f"  listening on {config.host}: reachable from containers (and from your network)")
    if sandbox:
        sandbox.subscribe(outputs["WebhookUrl"], events=["*"], secret=config.webhook_secret, name="local stack")
        say("  the sandbox is subscribed to every event; connect an account with:")
        say(f"    curl -X POST {sandbox.root_url}/_sandbox/connect -d '{{\"n_activities\": 500}}'")


if __name__ == "__main__":
    sys.exit(main())
