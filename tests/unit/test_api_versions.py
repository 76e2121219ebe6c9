"""Argyle API v2 (gigs) through the one code path: the version descriptions, the webhook models,
the gig as an activity, its stored item, the client's requests, and the sync's rules."""

from __future__ import annotations

import json
from typing import Any

import pytest

from argyle_pipeline.argyle.activity import Activity
from argyle_pipeline.argyle.api_versions import (
    V1,
    V2,
    UnknownApiVersion,
    api_base_url,
    api_version,
    data_event_version,
    rule_event,
)
from argyle_pipeline.argyle.client import ArgyleClient
from argyle_pipeline.argyle.webhook_events import (
    ActivitiesAdded,
    ActivitiesFullySynced,
    ActivitiesPartiallySynced,
    ActivitiesRemoved,
    ActivitiesUpdated,
    MalformedWebhook,
    UsersFullySynced,
    parse_webhook,
    sync_events,
)
from argyle_pipeline.aws.activity_store import activity_item
from argyle_pipeline.sync.context import SyncOptions
from argyle_pipeline.sync.dispatch import ActivitySync
from argyle_pipeline.sync.messages import SyncMessage, parse_message
from argyle_pipeline.sync.reconcile_schedule import ReconcileSchedule
from tests.support.fake_argyle import FakeArgyle, range_of, webhook_body
from tests.support.sync_fakes import MemoryActivities, MemoryQueue, MemoryState
from tests.unit.test_argyle_client_rules import CREDS, FakePool, page

ACCOUNT, USER = "acc-1", "user-1"
PLENTY = 10**9

# The v2 bodies as API-NOTES.md describes them (counts as strings, as some doc copies give them).
GIG_EVENTS: dict[str, tuple[type, dict[str, Any]]] = {
    "gigs.fully_synced": (ActivitiesFullySynced, {"available_count": "12"}),
    "gigs.partially_synced": (ActivitiesPartiallySynced, {"available_count": 3, "days_synced": "30",
                                                          "item_id": "item_000000001"}),
    "gigs.added": (ActivitiesAdded, {"added_count": "2", "added_from": "2024-01-01T00:00:00Z",
                                     "added_to": "2024-01-02T00:00:00Z"}),
    "gigs.updated": (ActivitiesUpdated, {"updated_count": "2", "updated_gigs": ["g1", "g2"]}),
    "gigs.removed": (ActivitiesRemoved, {"removed_count": 1, "removed_gigs": ["g3"]}),
}


def gig(n: int, start: str | None = "2024-03-01T10:00:00Z") -> dict[str, Any]:
    return {"id": f"g{n}", "account": ACCOUNT, "start_datetime": start, "end_datetime": "2024-03-01T10:30:00Z",
            "updated_at": "2024-03-02T00:00:00Z", "task_count": 1,
            "income": {"currency": "USD", "total": "12.30", "customer_price": "15.00", "other": "0.00"}}


# --- the descriptions ----------------------------------------------------------------------------


def test_each_version_names_its_paths_filters_fields_and_events() -> None:
    assert (V1.list_path, V1.object_path("a/b"), V1.from_filter, V1.start_field) == (
        "/activities", "/activities/a%2Fb", "from_start_date", "start_date")
    assert (V2.list_path, V2.object_path("g1"), V2.to_filter, V2.start_field) == (
        "/gigs", "/gigs/g1", "to_start_datetime", "start_datetime")
    assert V2.data_events == ("gigs.fully_synced", "gigs.partially_synced", "gigs.added", "gigs.updated",
                              "gigs.removed")
    assert V2.ids_field("removed") == "removed_gigs" and V1.ids_field("updated") == "updated_activities"


def test_gig_events_map_onto_the_activities_rules_and_nothing_else_does() -> None:
    assert rule_event("gigs.removed") == "activities.removed"
    assert rule_event("activities.added") == "activities.added"
    assert rule_event("users.fully_synced") == "users.fully_synced"
    assert data_event_version("gigs.added") is V2 and data_event_version("activities.added") is V1
    assert data_event_version("accounts.removed") is None


def test_a_version_name_is_checked_and_an_empty_one_is_v1() -> None:
    assert api_version("v2") is V2 and api_version(" V1 ") is V1 and api_version("") is V1
    with pytest.raises(UnknownApiVersion, match="unknown Argyle API version 'v3'"):
        api_version("v3")


def test_an_empty_api_url_is_the_versions_default_and_a_url_of_the_other_version_is_refused() -> None:
    assert api_base_url(V2, "") == "https://api.argyle.com/v2"
    assert api_base_url(V1, None) == "https://api.argyle.com/v1"
    assert api_base_url(V2, "http://127.0.0.1:4010/v2/") == "http://127.0.0.1:4010/v2"
    assert api_base_url(V2, "https://argyle.example/proxy") == "https://argyle.example/proxy"
    with pytest.raises(UnknownApiVersion, match="is a v1 URL, but the API version is v2"):
        api_base_url(V2, "https://api-sandbox.argyle.com/v1")


# --- webhook models --------------------------------------------------------------------------------


@pytest.mark.parametrize("event", sorted(GIG_EVENTS))
def test_every_gig_event_parses_into_its_activities_twins_model(event: str) -> None:
    model_type, extra = GIG_EVENTS[event]
    body = json.dumps({"event": event, "name": "hook", "data": {"account": ACCOUNT, "user": USER, **extra}})

    name, model = parse_webhook(body)

    assert name == event and type(model) is model_type


def test_gig_id_lists_and_string_counts_are_read() -> None:
    _, updated = parse_webhook(webhook_body("gigs.updated", account=ACCOUNT, updated_count="2",
                                            updated_gigs=["g1", "g2"], available_count=" 7 "))
    _, removed = parse_webhook(webhook_body("gigs.removed", account=ACCOUNT, removed_gigs=["g3"], removed_count=""))
    assert isinstance(updated, ActivitiesUpdated) and updated.updated_activities == ["g1", "g2"]
    assert updated.updated_count == 2 and updated.available_count == 7
    assert isinstance(removed, ActivitiesRemoved) and removed.removed_activities == ["g3"]
    assert removed.removed_count is None  # an empty count is no count


@pytest.mark.parametrize("count", ["twelve", "1.5", "1e3"])
def test_a_count_that_is_not_a_whole_number_is_a_malformed_webhook(count: str) -> None:
    with pytest.raises(MalformedWebhook, match="available_count"):
        parse_webhook(webhook_body("gigs.fully_synced", account=ACCOUNT, available_count=count))


def test_v2_users_fully_synced_is_read_with_its_own_fields() -> None:
    resource = {"id": USER, "accounts_connected": ["acc-1", "acc-2"], "items_connected": ["item_1"],
                "employers_connected": ["Uber"], "external_metadata": {}, "external_id": None,
                "created_at": "2024-01-01T00:00:00Z"}
    _, model = parse_webhook(webhook_body("users.fully_synced", user=USER, resource=resource))
    assert isinstance(model, UsersFullySynced) and model.resource is not None
    assert model.resource.accounts_connected == ["acc-1", "acc-2"] and model.resource.items_connected == ["item_1"]
    assert model.original("resource") == resource  # what is stored: exactly as sent


def test_a_v2_stack_subscribes_to_gig_events_and_not_to_activity_events() -> None:
    events = sync_events(V2)
    assert set(V2.data_events) <= set(events) and not set(V1.data_events) & set(events)
    assert "users.fully_synced" in events and "accounts.removed" in events and "accounts.updated" not in events


# --- a gig as an activity, and as a stored item --------------------------------------------------------


def test_a_gig_reads_as_an_activity_and_keeps_its_own_fields() -> None:
    doc = gig(1)

    activity = Activity.from_api(doc, V2)

    assert activity.start_date is not None and activity.start_date.isoformat() == "2024-03-01T10:00:00+00:00"
    assert activity.end_date is not None and activity.api_version is V2
    assert activity.raw is doc and "start_date" not in doc  # the gig as sent, not renamed


def test_a_stored_gig_item_has_its_start_and_its_version() -> None:
    item = activity_item(Activity.from_api(gig(1), V2), "2024-03-03T00:00:00.000Z")
    undated = activity_item(Activity.from_api(gig(2, start=None), V2), "2024-03-03T00:00:00.000Z")
    v1_item = activity_item(Activity.from_api({"id": "a1", "account": ACCOUNT, "start_date": "2024-03-01"}),
                            "2024-03-03T00:00:00.000Z")

    assert item["start_date"] == {"S": "2024-03-01T10:00:00Z"} and item["api_version"] == {"S": "v2"}
    assert item["start_key"] == {"S": "2024-03-01T10:00:00.000000Z"}
    assert item["activity"]["M"]["start_datetime"] == {"S": "2024-03-01T10:00:00Z"}
    assert "start_date" not in undated and undated["start_key"] == {"S": "~"}
    assert v1_item["api_version"] == {"S": "v1"} and v1_item["start_date"] == {"S": "2024-03-01"}


# --- the client ---------------------------------------------------------------------------------------


def test_the_v2_client_lists_gigs_with_v2_filters_and_keeps_them_against_a_next_link() -> None:
    base = "https://api.argyle.test/v2"
    evil_next = f"{base}/gigs?account=other&from_start_datetime=1970-01-01T00:00:00Z&limit=5&cursor=k1"
    pool = FakePool([page([gig(1)], evil_next), page([gig(2)])])
    client = ArgyleClient(base, CREDS, pool=pool, api=V2)  # type: ignore[arg-type]

    pages = list(client.list_activity_pages(ACCOUNT, "2024-01-01T00:00:00Z", "2024-12-31T00:00:00Z"))

    assert [a.id for p in pages for a in p.activities] == ["g1", "g2"]
    assert pages[0].next_cursor == {"cursor": "k1"} and pages[0].count is None
    first, second = pool.requests[0][1], pool.requests[1][1]
    assert first.startswith(f"{base}/gigs?") and "from_start_datetime=2024-01-01T00%3A00%3A00Z" in first
    assert "to_start_datetime=2024-12-31" in second and "account=acc-1" in second and "other" not in second
    assert "from_start_date=" not in first


def test_the_v2_client_reads_one_gig(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.unit.test_argyle_client_rules import FakeResponse

    pool = FakePool([FakeResponse(200, json.dumps(gig(7)).encode())])
    client = ArgyleClient("https://api.argyle.test/v2", CREDS, pool=pool, api=V2)  # type: ignore[arg-type]

    found = client.get_activity("g7")

    assert pool.requests[0][1] == "https://api.argyle.test/v2/gigs/g7" and found.start_date is not None


def test_the_client_from_the_environment_takes_the_version_and_its_default_url(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARGYLE_API_VERSION", "v2")
    monkeypatch.setenv("ARGYLE_API_URL", "")
    client = ArgyleClient.from_environment()
    assert client.api is V2 and client.base_url == "https://api.argyle.com/v2"


# --- the sync's rules on v2 ---------------------------------------------------------------------------


class GigWorld:
    def __init__(self, api: Any = V2, page_limit: int = 200) -> None:
        self.argyle = FakeArgyle(page_limit=page_limit, api=V2)
        self.activities, self.state, self.queue = MemoryActivities(), MemoryState(), MemoryQueue()
        self.sync = ActivitySync(self.argyle, self.activities, self.state, self.queue, SyncOptions(api=api))

    def deliver(self, body: bytes, received_at_ms: int = 1) -> dict[str, Any]:
        message = SyncMessage(body=body, group_id=f"account:{ACCOUNT}", correlation_id="corr",
                              received_at_ms=received_at_ms)
        return self.sync.process(message, parse_message(message), lambda: PLENTY).as_dict()


def test_gigs_fully_synced_lists_every_gig_and_records_the_account_fully_synced() -> None:
    world = GigWorld(page_limit=4)
    docs = world.argyle.add(ACCOUNT, 10)
    start, end = range_of(docs, "start_datetime")

    outcome = world.deliver(webhook_body("gigs.fully_synced", account=ACCOUNT, user=USER, available_from=start,
                                         available_to=end, available_count=str(len(docs))))

    assert outcome["pages"] == 3 and outcome["upserted"] == 10
    assert world.activities.live(ACCOUNT) == world.argyle.truth(ACCOUNT)
    assert world.state.accounts[ACCOUNT]["status"] == "fully_synced"
    assert world.state.accounts[ACCOUNT]["available_count"] == 10
    # A whole-account listing Argyle held still during: the copy is exact, as after activities.fully_synced
    assert world.state.accounts[ACCOUNT]["data_as_of"] == world.state.accounts[ACCOUNT]["last_sync"]["at"]


def test_gigs_updated_and_removed_are_confirmed_with_argyle_like_their_v1_twins() -> None:
    world = GigWorld()
    docs = world.argyle.add(ACCOUNT, 3)
    start, end = range_of(docs, "start_datetime")
    world.deliver(webhook_body("gigs.fully_synced", account=ACCOUNT, user=USER, available_from=start,
                               available_to=end, available_count=3))
    kept, gone, changed = docs[0]["id"], docs[1]["id"], docs[2]["id"]
    world.argyle.update(ACCOUNT, changed, tips="5.55")
    world.argyle.remove(ACCOUNT, gone)

    updated = world.deliver(webhook_body("gigs.updated", account=ACCOUNT, updated_gigs=[changed],
                                         updated_count="1"), received_at_ms=2)
    removed = world.deliver(webhook_body("gigs.removed", account=ACCOUNT, removed_gigs=[gone, kept],
                                         removed_count="2"), received_at_ms=3)

    assert updated["upserted"] == 1 and removed["removed"] == 1
    assert removed["contradicted"] == 1  # Argyle still has `kept`: it stays
    assert world.activities.live(ACCOUNT) == world.argyle.truth(ACCOUNT)
    assert world.argyle.get_requests == [changed, gone, kept]


def test_a_stack_on_one_version_archives_the_other_versions_data_events() -> None:
    world = GigWorld(api=V1)
    world.argyle.add(ACCOUNT, 2)

    outcome = world.deliver(webhook_body("gigs.fully_synced", account=ACCOUNT, available_count=2))

    assert outcome["action"] == "archived_other_version" and outcome["archived"]
    assert world.argyle.calls == 0 and world.activities.live(ACCOUNT) == {}


def test_without_list_counts_every_scheduled_reconcile_is_a_full_pass() -> None:
    with_counts, without = ReconcileSchedule(counts=V1.list_counts), ReconcileSchedule(counts=V2.list_counts)
    accounts = [f"acc-{n}" for n in range(30)]

    assert {job.scope for job in without.requests(accounts, 1_000_000.0)} == {"full"}
    assert {job.scope for job in with_counts.requests(accounts, 1_000_000.0)} == {"full", "recent"}


# --- the stack's parameter and settings ------------------------------------------------------------


def test_the_template_defaults_to_v2_and_gives_the_version_to_the_sync_and_the_reconciler() -> None:
    from local_stack.template_resources import load_template

    template = load_template()
    version, url = template["Parameters"]["ArgyleApiVersion"], template["Parameters"]["ArgyleApiUrl"]
    assert version["Default"] == "v2" and version["AllowedValues"] == ["v1", "v2"]
    assert url["Default"] == ""  # the version's own URL, resolved by api_base_url
    for function in ("SyncFunction", "ReconcileFunction"):
        variables = template["Resources"][function]["Properties"]["Environment"]["Variables"]
        assert variables["ARGYLE_API_VERSION"] == {"Ref": "ArgyleApiVersion"}, function


def test_sync_settings_resolve_the_versions_url_and_refuse_a_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    from argyle_pipeline.sync.settings import sync_settings

    for name in ("ACTIVITIES_TABLE", "SYNC_STATE_TABLE", "IDEMPOTENCY_TABLE", "EVENTS_QUEUE_URL"):
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("ARGYLE_API_VERSION", "v2")
    monkeypatch.setenv("ARGYLE_API_URL", "")
    sync_settings.cache_clear()
    try:
        settings = sync_settings()
        assert settings.argyle_api is V2 and settings.argyle_api_url == "https://api.argyle.com/v2"
        monkeypatch.setenv("ARGYLE_API_URL", "https://api-sandbox.argyle.com/v1")
        sync_settings.cache_clear()
        with pytest.raises(UnknownApiVersion, match="v1 URL"):
            sync_settings()
        monkeypatch.delenv("ARGYLE_API_VERSION")  # a stack deployed before v2: v1, its own URL
        sync_settings.cache_clear()
        assert sync_settings().argyle_api is V1
    finally:
        sync_settings.cache_clear()


def test_a_v2_reconcile_is_a_full_pass_that_finds_a_missed_gig_and_a_removed_one() -> None:
    from argyle_pipeline.sync.messages import ReconcileJob

    # Given a synced v2 account; then Argyle adds a gig whose webhook never came and removes one
    world = GigWorld(page_limit=4)
    docs = world.argyle.add(ACCOUNT, 9)
    world.deliver(webhook_body("gigs.fully_synced", account=ACCOUNT, user=USER, available_count=9))
    world.argyle.add(ACCOUNT, 1, first=100)
    world.argyle.remove(ACCOUNT, docs[0]["id"])
    world.argyle.count_requests.clear()

    # When a reconcile of scope "recent" (the CLI's default) runs
    job = ReconcileJob(account=ACCOUNT, user=USER, request_id="reconcile-v2-0001", scope="recent")
    outcome = world.deliver(job.body(), received_at_ms=5)

    # Then it went straight to a full pass (no count asked: v2 has none) and repaired both
    assert world.argyle.count_requests == []
    assert outcome["drift"] == {"missing": 1, "extra": 1, "stale": 0}
    assert world.activities.live(ACCOUNT) == world.argyle.truth(ACCOUNT)


def test_the_subscription_check_of_a_v2_stack_requires_the_gig_events() -> None:
    from argyle_pipeline.argyle.client import WebhookSubscription
    from argyle_pipeline.sync.subscription_check import check_subscriptions, required_events

    url = "https://hooks.example/webhooks/argyle"
    v1_only = [WebhookSubscription(id="s1", url=url, events=list(sync_events(V1))),
               WebhookSubscription(id="s2", url=url, events=["accounts.updated"])]

    report = check_subscriptions(v1_only, url, required_events(V2))

    # A v2 stack still subscribed as v1 gets none of its data-set events: all five are missing
    assert not report.ok and report.missing == list(V2.data_events)
    assert check_subscriptions(v1_only, url, required_events(V1)).ok
