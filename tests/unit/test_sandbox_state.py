"""The sandbox's data and indexes, without HTTP."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from argyle_sandbox.delivery import Outbox
from argyle_sandbox.faults import Faults
from argyle_sandbox.scenario import Scenario
from argyle_sandbox.state import SINGLE_EVENT_ONLY, SandboxState, StartRange, subscription_config
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


def test_an_offset_page_is_a_position_in_the_listing_as_it_is_now() -> None:
    state = SandboxState(seed=3)
    account = account_with(state, 50)
    order = [key[1] for key in account.keys]

    first = state.offset_page(account.id, StartRange(), 0, 10)
    state.remove_activities(account, [order[2], order[3]])
    second = state.offset_page(account.id, StartRange(), 10, 10)

    assert [rec.id for _, rec in first.items] == order[:10]
    assert [rec.id for _, rec in second.items] == order[12:22]  # order[10:12] are never served
    assert (first.count, second.count) == (50, 48)
    assert len(state.offset_page(account.id, StartRange(), 45, 10).items) == 3
    assert state.offset_page(account.id, StartRange(), 48, 10).items == []


def test_an_offset_page_across_accounts_follows_the_merged_order() -> None:
    state = SandboxState(seed=5)
    account_with(state, 30)
    account_with(state, 20)

    merged_keyset = state.page(None, StartRange(), None, 50)
    pages = [state.offset_page(None, StartRange(), offset, 7) for offset in range(0, 50, 7)]

    assert [rec.id for p in pages for _, rec in p.items] == [rec.id for _, rec in merged_keyset.items]
    assert {p.count for p in pages} == {50}


def test_the_key_before_an_offset_and_the_keys_through_it() -> None:
    state = SandboxState(seed=3)
    account = account_with(state, 20)

    assert state.last_key_before(account, StartRange(), 0) is None
    assert state.last_key_before(account, StartRange(), 5) == account.keys[4]
    assert state.last_key_before(account, StartRange(), 99) == account.keys[19]
    assert state.keys_through(account, StartRange(), account.keys[4]) == account.keys[:5]


def test_a_scan_before_a_page_stays_inside_a_date_filtered_listing() -> None:
    # Given a listing filtered to an older part of the account, at its third page of 10
    state = SandboxState(seed=6)
    account = account_with(state, 200)
    window = StartRange(-account.keys[150][0], -account.keys[40][0])
    faults = Faults(page_shift_remove=2, page_shift_add=3, page_shift_times=1)
    scenario = Scenario(state, Outbox(), faults)
    passed = [k[1] for k in account.keys[40:60]]
    last_passed = account.keys[59]

    # When the scan runs before that page
    shift = scenario.scan_before_page(account.id, window, offset=20)

    # Then it removed what the listing had passed and added activities listed before the page, in the window
    assert shift is not None and len(shift.removed) == 2 and set(shift.removed) <= set(passed)
    assert len(shift.added) == 3
    for activity_id in shift.added:
        start = account.records[activity_id].start
        assert start is not None and window.first <= start <= window.last  # type: ignore[operator]
        assert account.records[activity_id].key < last_passed  # so the page at offset 20 repeats 3
    assert scenario.scan_before_page(account.id, window, offset=30) is None  # page_shift_times used up


def test_drop_faults_count_only_their_events_from_when_they_are_set() -> None:
    faults = Faults(drop_next_deliveries=1)
    assert [faults.drops("a") for _ in range(3)] == [True, False, False]

    faults.update({"drop_every_delivery": 2, "drop_events": ["b"]})

    assert [faults.drops(e) for e in ["a", "b", "a", "b", "b", "b"]] == [False, False, False, True, False, True]
    faults.reset()
    assert not any(faults.drops("b") for _ in range(4))


def test_the_page_shift_fault_counts_down_and_can_name_an_account() -> None:
    faults = Faults(page_shift_remove=2, page_shift_times=2, page_shift_account="mine")

    assert faults.take_page_shift("other") is None
    assert [faults.take_page_shift("mine") for _ in range(3)] == [(2, 0), (2, 0), None]
    assert Faults(page_shift_times=5).take_page_shift("any") is None  # nothing to remove or add


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"drop_every_delivery": -1}, "fault drop_every_delivery: must be 0 or more"),
        ({"drop_events": "activities.removed"}, "fault drop_events: Input should be a valid list"),
        ({"page_shift_times": True}, "fault page_shift_times: Input should be a valid integer"),
        ({"retry_after": 2}, "fault retry_after: Input should be a valid string"),
        ({"page_shift": 1}, "unknown fault"),
    ],
)
def test_bad_fault_values_are_refused_before_anything_changes(changes: dict[str, object], message: str) -> None:
    faults = Faults()

    with pytest.raises(ValueError, match=message):
        faults.update({"fail_next": 3, **changes})

    assert faults == Faults()


def test_revoking_forgets_the_account_and_its_activities_and_never_reuses_the_id() -> None:
    # Given two accounts of one user
    state = SandboxState(seed=8)
    user = state.create_user()
    kept = state.create_account(user)
    state.add_activities(kept, 5, state.now - 86_400, state.now)
    before_leaving = state._rng.getstate()  # to make the generator offer the revoked id again
    leaving = state.create_account(user)
    leaving_ids = [rec.id for rec in state.add_activities(leaving, 7, state.now - 86_400, state.now)]

    # When one is revoked
    account, removed = state.revoke_account(leaving.id)

    # Then it and its activities are gone from every index, the other untouched
    assert (account.id, removed) == (leaving.id, 7)
    assert [state.find(i) for i in leaving_ids] == [None] * 7
    assert state.page(leaving.id, StartRange(), None, 10).items == []
    assert state.offset_page(None, StartRange(), 0, 50).count == 5
    assert user.accounts == [kept.id] and list(state.accounts) == [kept.id]
    with pytest.raises(KeyError, match="was revoked"):
        state.revoke_account(leaving.id)
    with pytest.raises(KeyError, match="was revoked"):
        state.account_document(leaving.id)
    # and an account made when the generator offers that id again gets another one
    state._rng.setstate(before_leaving)
    assert state.create_account(user).id != leaving.id


@pytest.mark.parametrize(
    ("events", "config", "rule", "kept"),
    [
        (["accounts.updated"], {"include_resource": True}, "refuse", {"include_resource": True}),
        (["a.b", "c.d"], {"include_resource": False}, "refuse", {"include_resource": False}),
        (["a.b", "c.d"], {"days_synced": 7}, "refuse", {"days_synced": 7}),
        (["a.b", "c.d"], None, "refuse", None),
        (["a.b", "c.d"], {"include_resource": True, "days_synced": 7}, "drop", {"days_synced": 7}),
        (["*"], {"include_resource": True}, "drop", {}),
    ],
)
def test_a_subscription_keeps_include_resource_only_with_exactly_one_event(
    events: list[str], config: dict[str, object] | None, rule: str, kept: dict[str, object] | None
) -> None:
    assert subscription_config(events, config, rule) == kept  # type: ignore[arg-type]


@pytest.mark.parametrize("events", [["a.b", "c.d"], ["*"], []])
def test_include_resource_on_more_or_fewer_than_one_event_is_refused(events: list[str]) -> None:
    with pytest.raises(ValueError, match="exactly one event") as caught:
        subscription_config(events, {"include_resource": True}, "refuse")

    assert str(caught.value) == SINGLE_EVENT_ONLY


def test_the_account_object_follows_scans_and_connection_errors() -> None:
    state = SandboxState(seed=2)
    account = account_with(state, 4)
    fresh = state.account_document(account.id)

    state.mark_scanned(account)
    scanned = state.account_document(account.id)
    state.set_connection(account, "invalid_credentials")
    broken = state.account_document(account.id)
    state.set_connection(account, None)

    assert fresh["scanned_at"] is None and scanned["scanned_at"] == scanned["updated_at"] > fresh["updated_at"]
    assert scanned["availability"]["activities"]["available_count"] == 4
    assert broken["connection"]["status"] == "error" and broken["connection"]["error_code"] == "invalid_credentials"
    assert broken["connection"]["error_message"] == "The login credentials are incorrect."
    assert broken["connection"]["updated_at"] > scanned["updated_at"]
    assert state.account_document(account.id)["connection"]["error_code"] is None
