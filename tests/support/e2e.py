"""Helpers for end-to-end tests: the local stack and the sandbox, started by the test itself."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from argyle_pipeline.aws.activity_store import ActivityStore
from argyle_sandbox.server import SandboxServer
from local_stack.stack import LocalStack, StackConfig

KEY_ID, KEY_SECRET = "e2e-key", "e2e-secret"
WEBHOOK_SECRET = "e2e-webhook-secret"


@contextlib.contextmanager
def pipeline(seed: int = 11, api: str = "v1", **config: Any) -> Iterator[tuple[SandboxServer, LocalStack]]:
    """The sandbox of Argyle API `api` and the local stack on the same version, the stack subscribed
    to every event. A failed record is retried after 1 s (deployed: 30 s, 2 min, 8 min, 30 min)
    unless `retry_delays` says otherwise."""
    config.setdefault("retry_delays", (1,))
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), \
            SandboxServer(seed=seed, api_key_id=KEY_ID, api_key_secret=KEY_SECRET, api=api) as sandbox:
        stack_config = StackConfig(argyle_api_url=sandbox.base_url, argyle_api_key_id=KEY_ID,
                                   argyle_api_key_secret=KEY_SECRET, argyle_api_version=sandbox.api.name,
                                   webhook_secret=WEBHOOK_SECRET, **config)
        with LocalStack(stack_config) as stack:
            sandbox.subscribe(stack.webhook_url, events=["*"], secret=WEBHOOK_SECRET)
            yield sandbox, stack


def settle(sandbox: SandboxServer, stack: LocalStack, timeout: float = 120) -> None:
    sandbox.wait_for_deliveries(timeout=timeout)
    assert stack.wait_until_drained(timeout=timeout), "the queue did not drain"


def stored_activities(stack: LocalStack, account: str) -> dict[str, dict[str, Any]]:
    store = ActivityStore(stack.outputs()["ActivitiesTableName"])
    return {item["activity_id"]: item["activity"] for item in store.activities(account)}


def truth(sandbox: SandboxServer, account: str) -> dict[str, dict[str, Any]]:
    return {doc["id"]: doc for doc in sandbox.truth(account)}


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def silence_stdout() -> contextlib.AbstractContextManager[Any]:
    return contextlib.redirect_stdout(io.StringIO()) if sys.stdout else contextlib.nullcontext()
