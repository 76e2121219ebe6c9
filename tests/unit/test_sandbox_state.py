"""The sandbox's data and indexes, without HTTP."""

from __future__ import annotations

import time
import tracemalloc

from argyle_sandbox.faults import Faults
from argyle_sandbox.state import SandboxState, StartRange
from argyle_sandbox.synthetic import money, render


def account_with(state: SandboxState, n: int, undated: int = 0):  # type: ignore[no-untyped-def]
    account = state.create_account(state.create_user())
    state.add_activities(account, n, state.now - 10 * 86_400, state.now, undated=undated)
    return account


def test_start_range_bounds_are_inclusive_and_exclude_undated_when_filtered() -> None:
    keys = [(-30, "a"), (-20, "b"), (-20, "c"), (-10, "d"), (1 << 62, "e")]

    assert StartRange(10, 20).bounds(keys) == (1, 4)
    assert StartRange(None, None).bounds(keys) == (0, 5)
    assert StartRange(None, 25).bounds(keys) == (1, 4)
    assert StartRange(21, None).bounds(keys) == (0, 1)
    assert StartRange(31, 40).bounds(keys) == (0, 0)


def test_pages_follow_the_listing_order_and_the_keyset_survives_removals() -> None:
    state = SandboxState(seed=3)
    account = account_with(state, 50)
    order = [key[1] for key in account.keys]

    first = state.page(account.id, StartRange(), None, 10)
    state.remove_activities(account, [order[9], order[10], order[11]])
    second = state.page(account.id, StartRange(), first.next_after, 10)

    assert [rec.id for _, rec in first.items] == order[:10]
    assert [rec.id for _, rec in second.items] == order[12:22]
    assert second.count == 47


def test_the_last_page_has_no_next() -> None:
    state = SandboxState(seed=3)
    account = account_with(state, 20)

    assert state.page(account.id, StartRange(), None, 20).next_after is None
    assert state.page(account.id, StartRange(), None, 19).next_after is not None


def test_a_big_account_is_quick_to_make_and_modest_in_memory() -> None:
    state = SandboxState(seed=9)
    user = state.create_user()
    account = state.create_account(user)

    tracemalloc.start()
    began = time.perf_counter()
    state.add_activities(account, 100_000, state.now - 5 * 365 * 86_400, state.now)
    elapsed = time.perf_counter() - began
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert len(account.records) == len(account.keys) == 100_000
    assert account.keys == sorted(account.keys)
    assert peak / 100_000 < 1_000, f"{peak / 100_000:.0f} bytes per activity"
    assert elapsed < 20  # a few seconds on a laptop, even traced; generous for slow CI machines
    # A page deep inside is a bisect and a slice, not a scan
    middle = account.keys[50_000]
    page = state.page(account.id, StartRange(), middle, 200)
    assert [rec.id for _, rec in page.items] == [k[1] for k in account.keys[50_001:50_201]]


def test_render_is_pure_and_an_update_changes_what_a_scan_would() -> None:
    state = SandboxState(seed=4)
    account = account_with(state, 5)
    rec = next(iter(account.records.values()))

    before = render(account, rec)
    assert render(account, rec) == before
    state.update_activities(account, [rec.id])
    after = render(account, rec)

    assert after["metadata"] == {"revision": 1} and after["updated_at"] > before["updated_at"]
    assert after["start_date"] == before["start_date"] and after["id"] == before["id"]
    assert after["income"]["tips"] != before["income"]["tips"]


def test_money_renders_as_two_decimal_strings() -> None:
    assert [money(0), money(904), money(-150), money(None)] == ["0.00", "9.04", "-1.50", None]


def test_fault_counters_take_next_before_every() -> None:
    faults = Faults(rate_limit_next=1, fail_every=3)

    assert [faults.decide() for _ in range(6)] == [429, None, 500, None, None, 500]
    faults.reset()
    assert faults.decide() is None and faults.requests_seen == 7
