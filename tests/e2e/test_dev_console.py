"""What the operator sees in `make dev`: why a record failed, attempt n of 5, when it goes to the
DLQ, and Argyle's 429 waits as such; and `make dev` itself stops on SIGTERM as on Ctrl-C."""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from argyle_sandbox.server import SandboxServer
from local_stack.stack import LocalStack, StackConfig
from tests.support.e2e import KEY_ID, KEY_SECRET, WEBHOOK_SECRET
from tests.support.network import free_port

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_the_console_says_why_a_record_failed_which_attempt_and_when_it_goes_to_the_dlq() -> None:
    lines: list[str] = []
    with contextlib.redirect_stdout(io.StringIO()), \
            SandboxServer(seed=41, api_key_id=KEY_ID, api_key_secret=KEY_SECRET) as sandbox:
        # Retries 1 s apart (deployed: 30 s, 2 min, 8 min, 30 min); two tries per Argyle call
        config = StackConfig(argyle_api_url=sandbox.base_url, argyle_api_key_id=KEY_ID,
                             argyle_api_key_secret=KEY_SECRET, webhook_secret=WEBHOOK_SECRET, retry_delays=(1,),
                             extra_env={"ARGYLE_MAX_ATTEMPTS": "2"})
        with LocalStack(config, report=lines.append) as stack:
            sandbox.subscribe(stack.webhook_url, events=["*"], secret=WEBHOOK_SECRET)
            # Given Argyle answering 429 once (Retry-After 0), then 500 to everything
            sandbox.faults.update({"rate_limit_next": 1, "retry_after": "0", "fail_every": 1})
            # When an account connects and its sync keeps failing
            _, account = sandbox.connect_account(n_activities=20)
            deadline = time.monotonic() + 120
            while stack.queue_depth("EventsDLQ") == 0 or not any(" TO DLQ " in line for line in lines):
                assert time.monotonic() < deadline, "\n".join(lines)
                time.sleep(0.2)
    group = f"account:{account}"
    failed = [line for line in lines if line.startswith("sync      FAILED") and group in line]
    # Then the 429 shows as a wait Argyle asked for
    assert "argyle    answered 429 to GET /activities: waiting 0.0 s (its Retry-After)" in lines
    # And each failure says its reason and its attempt, and when it comes back
    reason = r"ArgyleUnavailable: GET /activities: HTTP 500 after 2 attempt\(s\)"
    assert failed and all(re.search(rf"attempt [1-4] of 5: {reason}; retry in 1 s$", line) for line in failed)
    assert [int(re.search(r"attempt (\d)", line).group(1)) for line in failed][:4] == [1, 2, 3, 4]  # type: ignore[union-attr]
    # And the last one that it goes to the DLQ now
    dead = next(line for line in lines if line.startswith("sync      TO DLQ") and group in line)
    assert re.search(rf"attempt 5 of 5: {reason}; SQS moves it to the DLQ now", dead)


def test_make_dev_stops_cleanly_on_sigterm() -> None:
    env = {**os.environ, "MOTO_PORT": str(free_port()), "RECEIVER_PORT": str(free_port()),
           "SANDBOX_PORT": str(free_port()), "PYTHONPATH": os.pathsep.join([str(ROOT / "layers/shared"), str(ROOT)])}
    env.pop("AWS_ENDPOINT_URL", None)
    dev = subprocess.Popen([sys.executable, "-m", "local_stack.dev"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=env, cwd=ROOT)
    out: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [out.put(line) for line in dev.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        # Given make dev up and running
        deadline = time.monotonic() + 60
        seen: list[str] = []
        while not any("local stack is up" in line for line in seen):
            assert time.monotonic() < deadline and dev.poll() is None, "".join(seen) + dev.stderr.read()  # type: ignore[union-attr]
            with contextlib.suppress(queue.Empty):
                seen.append(out.get(timeout=0.5))
        # When it is sent SIGTERM (as a process manager or `kill` does)
        dev.send_signal(signal.SIGTERM)
        # Then it stops everything and exits 0
        assert dev.wait(timeout=30) == 0
    finally:
        if dev.poll() is None:
            dev.kill()
    rest = []
    while not out.empty():
        rest.append(out.get())
    assert any(line.rstrip().endswith("stopped cleanly") for line in rest), rest


def test_the_console_shows_each_change_event_and_the_file_keeps_them(tmp_path: Path) -> None:
    lines: list[str] = []
    path = tmp_path / "change-events.jsonl"
    with contextlib.redirect_stdout(io.StringIO()), \
            SandboxServer(seed=43, api_key_id=KEY_ID, api_key_secret=KEY_SECRET) as sandbox:
        config = StackConfig(argyle_api_url=sandbox.base_url, argyle_api_key_id=KEY_ID,
                             argyle_api_key_secret=KEY_SECRET, webhook_secret=WEBHOOK_SECRET,
                             change_events=True, change_events_file=path)
        with LocalStack(config, report=lines.append) as stack:
            sandbox.subscribe(stack.webhook_url, events=["*"], secret=WEBHOOK_SECRET)
            # When an account connects (its first sync), then Argyle's scan removes one activity
            _, account = sandbox.connect_account(n_activities=8)
            deadline = time.monotonic() + 120
            while not any(line.startswith("change    account.synced") for line in lines):
                assert time.monotonic() < deadline, "\n".join(lines)
                time.sleep(0.2)
            sandbox.periodic_scan(account, remove=1)
            while not any(line.endswith("+0 ~0 -1") for line in lines):
                assert time.monotonic() < deadline, "\n".join(lines)
                time.sleep(0.2)
    # Then the console showed the first sync's additions, the account exact, and the removal
    changes = [line for line in lines if line.startswith("change ")]
    assert f"change    activities.changed  account:{account}  +8 ~0 -0" in changes
    assert any(line.startswith(f"change    account.synced      account:{account}  data as of ") for line in changes)
    # And the file holds the same events, as EventBridge delivered them (ids and counts only)
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["detail-type"] for e in events] == [line.split()[1] for line in changes]
    assert {e["source"] for e in events} == {"argyle-activity-sync"}
