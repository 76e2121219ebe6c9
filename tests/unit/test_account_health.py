"""Account health (sync/account_health.py): problems from a state item, worst first; what the
sync records for it (last sync, data as of, counts); the subscription check's rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from argyle_pipeline.argyle.client import WebhookSubscription
from argyle_pipeline.argyle.webhook_events import ACCOUNT_STATUS_EVENT, SYNC_EVENTS
from argyle_pipeline.sync.account_health import HealthThresholds, assess, problem_counts, worst_first
from argyle_pipeline.sync.messages import ReconcileJob
from argyle_pipeline.sync.subscription_check import REQUIRED_EVENTS, check_subscriptions
from tests.support.fake_argyle import webhook_body
from tests.unit.test_sync_logic import ACCOUNT, USER, World, fully_synced

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
THRESHOLDS = HealthThresholds(stale_after_seconds=24 * 3600, scan_behind_seconds=6 * 3600)


def at(hours_ago: float) -> str:
    return (NOW - timedelta(hours=hours_ago)).isoformat().replace("+00:00", "Z")


def healthy(**changes: Any) -> dict[str, Any]:
    state: dict[str, Any] = {"account_id": "acc", "connection_status": "connected",
                             "last_sync": {"event": "activities.added", "at": at(1)}, "data_as_of": at(2),
                             "scanned_at": at(3), "last_counts": {"stored_live": 10, "argyle_count": 10},
                             "last_reconcile": {"drift": {"missing": 0, "extra": 0, "stale": 0}},
                             "last_event_received_at_ms": int((NOW - timedelta(hours=1)).timestamp() * 1000),
                             "last_event": "activities.added"}
    state.update(changes)
    return state


def test_a_recently_synced_exact_account_has_no_problem() -> None:
    health = assess(healthy(), NOW, THRESHOLDS)
    assert health.problems == []
    assert health.last_webhook_event == "activities.added" and health.stored_live == health.argyle_count == 10


def test_failing_means_a_failure_newer_than_the_last_success() -> None:
    newer = assess(healthy(last_failure={"at": at(0.5), "reason": "ArgyleUnavailable: 500", "attempts": 2}),
                   NOW, THRESHOLDS)
    older = assess(healthy(last_failure={"at": at(5), "reason": "x", "attempts": 1}), NOW, THRESHOLDS)
    never_synced = assess(healthy(last_sync=None, last_failure={"at": at(5), "attempts": 1}), NOW, THRESHOLDS)
    assert newer.problems == ["failing"] and older.problems == [] and "failing" in never_synced.problems


def test_stale_when_connected_and_no_success_for_longer_than_the_threshold() -> None:
    assert assess(healthy(last_sync={"at": at(25)}), NOW, THRESHOLDS).problems == ["stale"]
    assert assess(healthy(last_sync={"at": at(23)}), NOW, THRESHOLDS).problems == []
    # Never synced: stale counted from its first webhook
    silent = healthy(last_sync=None, last_event_received_at_ms=int((NOW - timedelta(hours=30)).timestamp() * 1000))
    assert assess(silent, NOW, THRESHOLDS).problems == ["stale"]
    # Argyle reports the connection in error: not our staleness, listed as disconnected
    assert assess(healthy(last_sync={"at": at(48)}, connection_status="error"), NOW, THRESHOLDS).problems == [
        "disconnected"]


def test_behind_scan_when_argyle_scanned_well_after_our_data_as_of() -> None:
    assert assess(healthy(scanned_at=at(1), data_as_of=at(8)), NOW, THRESHOLDS).problems == ["behind_scan"]
    assert assess(healthy(scanned_at=at(1), data_as_of=at(6.5)), NOW, THRESHOLDS).problems == []
    assert assess(healthy(scanned_at=at(1), data_as_of=None), NOW, THRESHOLDS).problems == ["behind_scan"]


def test_drifted_by_the_last_reconcile_or_by_counts_that_differ() -> None:
    assert assess(healthy(last_reconcile={"drift": {"missing": 2}}), NOW, THRESHOLDS).problems == ["drifted"]
    assert assess(healthy(last_counts={"stored_live": 9, "argyle_count": 10}), NOW, THRESHOLDS).problems == [
        "drifted"]
    # Without a reconcile's counts, Argyle's latest available_count stands in
    assert assess(healthy(last_counts=None, available_count=11), NOW, THRESHOLDS).problems == []


def test_worst_first_and_counts_per_problem() -> None:
    states = [healthy(account_id="ok"), healthy(account_id="drift", last_reconcile={"drift": {"extra": 1}}),
              healthy(account_id="fail", last_failure={"at": at(0), "attempts": 1}, last_sync={"at": at(30)}),
              healthy(account_id="stale", last_sync={"at": at(30)})]
    healths = worst_first(assess(s, NOW, THRESHOLDS) for s in states)
    assert [h.account for h in healths] == ["fail", "stale", "drift", "ok"]
    assert healths[0].problems == ["failing", "stale"]
    assert problem_counts(healths) == {"failing": 1, "stale": 2, "behind_scan": 0, "drifted": 1, "disconnected": 0}


# --- what the sync records --------------------------------------------------------------------


def test_a_whole_account_listing_records_the_sync_and_its_data_as_of() -> None:
    world = World()
    docs = world.argyle.add(ACCOUNT, 30)
    outcome = world.deliver(fully_synced(docs))
    state = world.state.accounts[ACCOUNT]
    assert outcome["completed"] and outcome["exact"]
    assert state["last_sync"]["event"] == "activities.fully_synced" and "from" not in state["last_sync"]
    assert state["data_as_of"] == state["last_sync"]["at"]


def test_a_ranged_listing_records_what_it_covered_but_no_data_as_of() -> None:
    world = World()
    world.argyle.add(ACCOUNT, 5)
    body = webhook_body("activities.added", account=ACCOUNT, user=USER, added_from="2024-01-01T00:00:00Z",
                        added_to="2024-02-01T00:00:00Z", available_count=5)
    world.deliver(body)
    state = world.state.accounts[ACCOUNT]
    assert state["last_sync"] == {"event": "activities.added", "at": state["last_sync"]["at"],
                                  "from": "2024-01-01T00:00:00Z", "to": "2024-02-01T00:00:00Z"}
    assert "data_as_of" not in state


def test_a_fully_synced_listing_of_a_range_open_at_one_end_records_no_data_as_of() -> None:
    # Given the option to list only a fully_synced's own range, and one that names no end
    world = World(whole_account=False)
    world.argyle.add(ACCOUNT, 5)
    body = webhook_body("activities.fully_synced", account=ACCOUNT, user=USER,
                        available_from="2024-01-01T00:00:00Z", available_to=None, available_count=5)
    # When it is processed
    outcome = world.deliver(body)
    # Then what it covered is recorded, but not as an exact copy of the account (activities before
    # its start, or without a start date, were not listed)
    state = world.state.accounts[ACCOUNT]
    assert outcome["completed"] and not outcome["exact"]
    assert state["last_sync"]["from"] == "2024-01-01T00:00:00Z"
    assert "data_as_of" not in state


def test_a_listing_that_continues_records_nothing_until_its_last_part() -> None:
    world = World(page_limit=10, margin_ms=10**12)  # always short of time: one page per part
    docs = world.argyle.add(ACCOUNT, 25)
    first = world.deliver(fully_synced(docs))
    assert first["action"] == "continued" and not first["completed"]
    assert "last_sync" not in world.state.accounts.get(ACCOUNT, {})


def test_a_reconcile_records_data_as_of_and_the_counts_it_compared() -> None:
    world = World()
    docs = world.argyle.add(ACCOUNT, 12)
    world.deliver(fully_synced(docs))
    world.activities.items.pop(next(k for k in world.activities.items if k[0] == ACCOUNT))  # one goes missing
    job = ReconcileJob(account=ACCOUNT, user=USER, request_id="request-1", scope="counts")
    outcome = world.deliver(webhook_body("argyle_sync.reconcile", **job.model_dump()))
    state = world.state.accounts[ACCOUNT]
    assert outcome["drift"]["missing"] == 1 and outcome["exact"]
    # Stored 11 before the repair, 1 missing written: 12, as Argyle counts
    assert state["last_counts"]["stored_live"] == 12 and state["last_counts"]["argyle_count"] == 12
    assert state["data_as_of"] == state["last_sync"]["at"]


def test_a_reconcile_that_removes_what_argyle_no_longer_has_records_counts_that_agree() -> None:
    # Given a synced account of 12, two of them since removed at Argyle with no webhook
    world = World()
    docs = world.argyle.add(ACCOUNT, 12)
    world.deliver(fully_synced(docs))
    for doc in docs[3:5]:
        world.argyle.remove(ACCOUNT, doc["id"])
    # When it is reconciled by counts
    job = ReconcileJob(account=ACCOUNT, user=USER, request_id="request-2", scope="counts")
    outcome = world.deliver(webhook_body("argyle_sync.reconcile", **job.model_dump()))
    # Then the two were removed, and the counts recorded agree: 12 stored before, 2 removed, as Argyle counts 10
    state = world.state.accounts[ACCOUNT]
    assert outcome["drift"]["extra"] == 2 and outcome["exact"]
    assert state["last_counts"]["stored_live"] == 10 and state["last_counts"]["argyle_count"] == 10


def test_a_reconcile_that_argyle_gave_no_count_for_records_no_counts() -> None:
    # Given a synced account, one activity missing from the copy, and Argyle answering counts
    # without a count (as when its response omits it)
    world = World()
    docs = world.argyle.add(ACCOUNT, 12)
    world.deliver(fully_synced(docs))
    world.activities.items.pop(next(k for k in world.activities.items if k[0] == ACCOUNT))
    counts_before = world.state.accounts[ACCOUNT].get("last_counts")
    world.argyle.count_activities = lambda *args, **kwargs: None  # type: ignore[method-assign]
    # When it is reconciled by counts
    job = ReconcileJob(account=ACCOUNT, user=USER, request_id="request-3", scope="counts")
    outcome = world.deliver(webhook_body("argyle_sync.reconcile", **job.model_dump()))
    # Then the copy was repaired by a full pass, but no comparison of counts is reported or recorded
    # (there was no count of Argyle's to compare)
    assert outcome["drift"]["missing"] == 1 and outcome["completed"]
    assert outcome["counts"] is None
    assert world.state.accounts[ACCOUNT].get("last_counts") == counts_before


def test_an_account_whose_connection_failed_is_recorded_failed_and_an_update_without_its_account_changes_nothing():
    # Given a connected account
    world = World()
    world.deliver(webhook_body("accounts.connected", account=ACCOUNT, user=USER))
    assert world.state.accounts[ACCOUNT]["connection_status"] == "connected"
    # When Argyle reports an accounts.updated without the account object, the status is kept
    quiet = world.deliver(webhook_body("accounts.updated", account=ACCOUNT, user=USER), received_at_ms=2)
    assert quiet["connection_status"] is None
    assert world.state.accounts[ACCOUNT]["connection_status"] == "connected"
    # And when Argyle reports accounts.failed, the account is recorded as failed
    failed = world.deliver(webhook_body("accounts.failed", account=ACCOUNT, user=USER), received_at_ms=3)
    assert failed["connection_status"] == "failed"
    assert world.state.accounts[ACCOUNT]["connection_status"] == "failed"


def test_an_account_argyle_reports_in_error_shows_disconnected_with_its_error_code_until_it_reconnects() -> None:
    # Given a synced account
    world = World()
    world.deliver(fully_synced(world.argyle.add(ACCOUNT, 3)))

    def updated(connection: dict[str, Any] | None, **resource: Any) -> dict[str, Any]:
        body = webhook_body("accounts.updated", account=ACCOUNT, user=USER,
                            resource={"id": ACCOUNT, "connection": connection, **resource})
        return world.deliver(body)

    # When Argyle reports (accounts.updated, with the account object) its connection in error
    outcome = updated({"status": "error", "error_code": "auth_required"}, scanned_at=at(1))
    # Then the state holds Argyle's status, error code and scan time, and the account's health says so
    state = world.state.accounts[ACCOUNT]
    assert outcome["connection_status"] == "error"
    assert (state["connection_status"], state["error_code"], state["scanned_at"]) == ("error", "auth_required", at(1))
    assert "disconnected" in assess(state, NOW, THRESHOLDS).problems
    # And when the worker fixes it, the account is connected again and its error code is gone
    updated({"status": "connected", "error_code": None})
    state = world.state.accounts[ACCOUNT]
    assert (state["connection_status"], state["error_code"]) == ("connected", None)
    assert "disconnected" not in assess(state, NOW, THRESHOLDS).problems


# --- the subscription check ---------------------------------------------------------------------

URL = "https://abc.execute-api.us-east-1.amazonaws.com/prod/webhooks/argyle"


def sub(sub_id: str, events: list[str], url: str = URL, **extra: Any) -> WebhookSubscription:
    return WebhookSubscription.model_validate({"id": sub_id, "events": events, "url": url, **extra})


def test_subscribe_stacks_two_subscriptions_cover_every_required_event() -> None:
    report = check_subscriptions([sub("a", list(SYNC_EVENTS)), sub("b", [ACCOUNT_STATUS_EVENT])], URL)
    assert report.ok and report.missing == [] and report.subscriptions == ["a", "b"]
    assert set(REQUIRED_EVENTS) == {*SYNC_EVENTS, ACCOUNT_STATUS_EVENT}


def test_a_wildcard_covers_everything_and_other_urls_count_for_nothing() -> None:
    assert check_subscriptions([sub("a", ["*"], url=URL + "/")], URL).ok
    report = check_subscriptions([sub("a", ["*"], url="https://elsewhere.example/hook")], URL)
    assert report.missing == list(REQUIRED_EVENTS) and report.subscriptions == []


def test_a_disabled_subscription_delivers_nothing() -> None:
    report = check_subscriptions([sub("a", list(SYNC_EVENTS), status="disabled"), sub("b", [ACCOUNT_STATUS_EVENT]),
                                  sub("c", ["activities.added"], active=False)], URL)
    assert report.disabled == ["a", "c"] and report.missing == list(SYNC_EVENTS)
