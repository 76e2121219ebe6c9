"""Webhook payload models: every documented example parses, with the tolerances seen in the wild."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from argyle_pipeline.argyle.webhook_events import (
    SYNC_EVENTS,
    AccountsUpdated,
    ActivitiesAdded,
    ActivitiesFullySynced,
    ActivitiesPartiallySynced,
    ActivitiesRemoved,
    ActivitiesUpdated,
    MalformedWebhook,
    UsersFullySynced,
    parse_webhook,
)
from argyle_pipeline.timestamps import iso_z, parse_timestamp

# The "Example Webhook" bodies of activities-webhooks.txt and users-webhooks.txt.
DOC_EXAMPLES = {
    "activities.fully_synced": {
        "account": "12db5af4-fd5f-4d1f-bd98-0360df770aa8",
        "user": "abdb5af4-fd5f-4d1f-bd10-0360df77012c",
        "available_from": "2019-03-07T20:12:09Z",
        "available_to": "2019-09-23T23:57:31Z",
        "available_count": 432,
    },
    "activities.partially_synced": {
        "account": "12db",
        "user": "abdb",
        "days_synced": 7,
        "available_from": "2019-06-07T20:12:09Z",
        "available_to": "2019-06-14T20:12:09Z",
        "available_count": 324,
    },
    "activities.added": {
        "account": "12db",
        "user": "abdb",
        "added_from": "2019-08-07T20:12:09Z",
        "added_to": "2019-09-23T23:57:31Z",
        "added_count": 10,
        "available_from": "2019-03-07T20:12:09Z",
        "available_to": "2019-09-23T23:57:31Z",
        "available_count": 456,
    },
    "activities.updated": {
        "account": "12db",
        "user": "abdb",
        "updated_from": "2019-09-10T10:00:00Z",
        "updated_to": "2019-09-12T12:00:00Z",
        "updated_count": 2,
        "updated_activities": [
            "d667a477-e252-4f8a-9518-92a51b235187",
            "27f3cde1-1ca0-4b5a-940d-337fd33f97b5",
        ],
        "available_from": "2019-03-07T20:12:09Z",
        "available_to": "2019-09-23T23:57:31Z",
        "available_count": 456,
    },
    "activities.removed": {
        "account": "017d9bdc",
        "user": "017d8fed",
        "removed_from": "2021-09-27T00:22:54Z",
        "removed_to": "2021-09-27T00:22:54Z",
        "removed_count": 1,
        "removed_activities": ["017d9f62-84e1-15ad-b269-624458d343c8"],
        "available_from": "2019-09-03T17:56:22Z",
        "available_to": "2021-12-09T00:01:01Z",
        "available_count": 1237,
    },
    "users.fully_synced": {
        "user": "01838ad1",
        "resource": {
            "id": "01838ad1",
            "data_providers_connected": ["mypayroll_platform"],
            "employers_connected": ["Whole Goods", "SprintCar"],
            "external_metadata": {},
            "created_at": "2022-09-29T19:55:43.166095Z",
        },
    },
}
EXPECTED_TYPES = {
    "activities.fully_synced": ActivitiesFullySynced,
    "activities.partially_synced": ActivitiesPartiallySynced,
    "activities.added": ActivitiesAdded,
    "activities.updated": ActivitiesUpdated,
    "activities.removed": ActivitiesRemoved,
    "users.fully_synced": UsersFullySynced,
}


def body(event: str, data: object, name: str = "my hook") -> bytes:
    return json.dumps({"event": event, "name": name, "data": data}).encode()


@pytest.mark.parametrize("event", sorted(DOC_EXAMPLES))
def test_every_documented_example_parses_into_its_model(event: str) -> None:
    # When the documented example body is parsed
    name, model = parse_webhook(body(event, DOC_EXAMPLES[event]))

    # Then it is the event's own model, carrying the subscription name
    assert name == event
    assert type(model) is EXPECTED_TYPES[event]
    assert model.webhook_name == "my hook"


def test_the_stack_subscribes_to_every_event_it_syncs_and_the_account_lifecycle() -> None:
    # accounts.updated has a subscription of its own (Argyle allows include_resource only there)
    assert set(SYNC_EVENTS) == set(EXPECTED_TYPES) | {"accounts.removed", "accounts.connected", "accounts.failed"}


def test_accounts_updated_reads_the_connection_and_survives_a_resource_it_does_not_read() -> None:
    resource = {"id": "acc-1", "connection": {"status": "error", "error_code": "auth_required",
                                              "error_message": "x", "updated_at": "2024-01-01T00:00:00Z"},
                "scanned_at": "2024-01-02T00:00:00Z", "availability": {"gigs": "anything"}}
    _, model = parse_webhook(body("accounts.updated", {"account": "acc-1", "user": "u", "resource": resource}))
    assert isinstance(model, AccountsUpdated) and model.resource is not None
    assert model.resource.connection is not None and model.resource.connection.status == "error"
    assert model.resource.scanned_at == "2024-01-02T00:00:00Z"
    # A connection or scanned_at of an unexpected shape is dropped, not fatal
    _, odd = parse_webhook(body("accounts.updated", {"account": "acc-1", "resource": {"connection": "up",
                                                                                       "scanned_at": 5}}))
    assert isinstance(odd, AccountsUpdated) and odd.resource is not None and odd.resource.connection is None


def test_dates_are_aware_utc_and_original_strings_are_kept() -> None:
    _, model = parse_webhook(body("activities.added", DOC_EXAMPLES["activities.added"]))

    assert isinstance(model, ActivitiesAdded)
    assert model.added_from == datetime(2019, 8, 7, 20, 12, 9, tzinfo=UTC)
    assert model.original("added_from") == "2019-08-07T20:12:09Z"
    assert iso_z(model.added_from) == "2019-08-07T20:12:09Z"
    assert model.added_count == 10 and model.available_count == 456


def test_naive_timestamps_from_the_overview_page_are_utc() -> None:
    # webhooks-overview.txt's example has no zone at all
    data = {
        "account": "a",
        "user": "u",
        "available_from": "2017-07-15T00:00:00",
        "available_to": "2019-10-01T15:47:00",
        "available_count": 324,
    }

    _, model = parse_webhook(body("activities.fully_synced", data))

    assert isinstance(model, ActivitiesFullySynced)
    assert model.available_from == datetime(2017, 7, 15, tzinfo=UTC)
    assert iso_z(model.available_to) == "2019-10-01T15:47:00Z"


def test_empty_account_has_null_available_range() -> None:
    data = {"account": "a", "user": "u", "available_from": None, "available_to": None, "available_count": 0}

    _, model = parse_webhook(body("activities.fully_synced", data))

    assert isinstance(model, ActivitiesFullySynced)
    assert model.available_from is None and model.available_to is None and model.available_count == 0


def test_removed_gigs_is_accepted_for_removed_activities() -> None:
    data = {"account": "a", "removed_gigs": ["g1", "g2"], "removed_count": 2}

    _, model = parse_webhook(body("activities.removed", data))

    assert isinstance(model, ActivitiesRemoved)
    assert model.removed_activities == ["g1", "g2"]


def test_unknown_fields_are_kept() -> None:
    data = dict(DOC_EXAMPLES["activities.updated"], brand_new="x")

    _, model = parse_webhook(body("activities.updated", data))

    assert model is not None and model.model_extra == {"brand_new": "x"}


@pytest.mark.parametrize("event", ["accounts.added", "paystubs.added", "identities.added", "something.new"])
def test_events_not_modelled_return_no_model(event: str) -> None:
    assert parse_webhook(body(event, {"account": "a"})) == (event, None)


def test_models_also_accept_the_whole_envelope() -> None:
    envelope = {
        "event": "activities.fully_synced",
        "name": "n",
        "data": DOC_EXAMPLES["activities.fully_synced"],
    }

    model = ActivitiesFullySynced.model_validate(envelope)

    assert model.available_count == 432 and model.webhook_name == "n"


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1]",
        b'{"name": "no event"}',
        b'{"event": 5}',
        body("activities.added", {"user": "no account"}),
        body("activities.added", {"account": "a", "added_from": "yesterday"}),
    ],
)
def test_malformed_bodies_raise_a_value_error(raw: bytes) -> None:
    with pytest.raises(MalformedWebhook) as caught:
        parse_webhook(raw)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2019-03-07T20:12:09Z", datetime(2019, 3, 7, 20, 12, 9, tzinfo=UTC)),
        ("2019-03-07T22:12:09+02:00", datetime(2019, 3, 7, 20, 12, 9, tzinfo=UTC)),
        ("2019-03-07", datetime(2019, 3, 7, tzinfo=UTC)),
    ],
)
def test_parse_timestamp_and_iso_z_round_trip(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected
    assert parse_timestamp(iso_z(expected)) == expected
