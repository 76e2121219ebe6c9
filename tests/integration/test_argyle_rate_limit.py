"""Argyle's rate limit as the sandbox plays it (a 429 with Retry-After beyond R requests/s), and the
stack's shared request budget keeping several clients under it, over real HTTP on loopback."""

from __future__ import annotations

import threading

from argyle_pipeline.argyle.client import ArgyleClient, ArgyleUnavailable
from argyle_pipeline.argyle.request_budget import SharedRequestBudget
from argyle_sandbox.server import SandboxServer
from tests.support.sandbox_fixtures import SANDBOX_CREDENTIALS, RecordedSleeps, sandbox  # noqa: F401
from tests.unit.test_argyle_request_budget import MemoryBudgetStore


class LockedStore(MemoryBudgetStore):
    """The in-memory store made atomic per call, as DynamoDB's conditional writes are."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def write_shard(self, shard: int, tokens: float, refilled_at: float, expected_version: int) -> bool:
        with self._lock:
            return super().write_shard(shard, tokens, refilled_at, expected_version)

    def pause_shard(self, shard: int, until: float) -> None:
        with self._lock:
            super().pause_shard(shard, until)


def test_the_sandbox_answers_429_with_retry_after_beyond_its_rate(sandbox: SandboxServer):
    # Given the sandbox limited to 5 requests/s, its clock held still, and a client that does not retry
    _, account = sandbox.connect_account(n_activities=3)
    now = [1_000.0]
    sandbox.faults._clock = lambda: now[0]  # the rate limit's clock only, not the process's
    sandbox.faults.update({"rate_limit_per_second": 5.0})
    client = ArgyleClient(sandbox.base_url, SANDBOX_CREDENTIALS, max_attempts=1)

    def answer() -> tuple[int, float | None]:
        try:
            client.count_activities(account)
            return 200, None
        except ArgyleUnavailable as exc:
            return exc.status or 0, exc.retry_after

    # When 8 requests go out within the same instant
    answers = [answer() for _ in range(8)]
    # Then one second's budget (5) was answered and the rest were 429 with Retry-After 1, counted apart
    assert answers == [(200, None)] * 5 + [(429, 1.0)] * 3
    assert sandbox.faults.rate_limited == 3
    # When 0.5 s pass (2.5 tokens back), then 3 more requests
    now[0] += 0.5
    assert [answer()[0] for _ in range(3)] == [200, 200, 429]


def test_clients_sharing_a_budget_stay_under_argyles_limit(sandbox: SandboxServer):
    # Given Argyle limited to 20 requests/s, and 4 concurrent clients (as 4 invocations) sharing a
    # budget of 19/s
    _, account = sandbox.connect_account(n_activities=3)
    sandbox.faults.update({"rate_limit_per_second": 20.0})
    store = LockedStore()
    errors: list[BaseException] = []

    def invocation(seed: int) -> None:
        budget = SharedRequestBudget(store, 19.0)
        client = ArgyleClient(sandbox.base_url, SANDBOX_CREDENTIALS, budget=budget, sleep=RecordedSleeps())
        try:
            for _ in range(15):
                client.count_activities(account)
        except BaseException as exc:  # collected: an assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=invocation, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    # When 60 calls went out between them: none was answered 429
    assert errors == [] and not any(t.is_alive() for t in threads)
    assert sandbox.faults.requests_seen >= 60
    assert sandbox.faults.rate_limited == 0
