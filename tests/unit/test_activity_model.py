"""Activity: the typed view parses Argyle's shapes; `raw` keeps the exact document."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from argyle_pipeline.argyle.activity import Activity, InvalidActivity, parse_json

# Shapes from API-NOTES.md: money as strings, income_rates as JSON numbers, nulls, unknown fields.
ACTIVITY_JSON = b"""{
  "id": "a1", "account": "acc1", "employer": "SprintCar", "status": "completed", "type": "rideshare",
  "start_date": "2022-03-01T10:00:00Z", "end_date": null, "updated_at": "2022-03-02T10:00:00.123456+02:00",
  "income": {"pay": "9.04", "fees": "1.10", "tips": "0.00", "bonus": null, "taxes": null, "total": "10.14",
             "currency": "USD", "total_charge": "12.50"},
  "income_rates": {"hour": 2.83, "mile": 1},
  "circumstances": {"is_pool": false, "position": null},
  "all_timestamps": {"request_at": 1646128800},
  "brand_new_field": {"nested": [1.25, "x"]}
}"""


def test_raw_is_the_exact_parsed_document_with_decimal_numbers() -> None:
    # Given Argyle's JSON parsed the project's way
    doc = parse_json(ACTIVITY_JSON)

    # When it becomes an Activity
    activity = Activity.from_api(doc)

    # Then raw is the very same mapping: unknown fields kept, floats as Decimal, strings unchanged
    assert activity.raw is doc
    assert activity.raw["income_rates"] == {"hour": Decimal("2.83"), "mile": 1}
    assert isinstance(activity.raw["income_rates"]["hour"], Decimal)
    assert activity.raw["income"]["pay"] == "9.04"
    assert activity.raw["brand_new_field"] == {"nested": [Decimal("1.25"), "x"]}
    assert activity.raw["updated_at"] == "2022-03-02T10:00:00.123456+02:00"


def test_typed_fields_are_aware_utc_and_money_is_decimal() -> None:
    activity = Activity.from_api(parse_json(ACTIVITY_JSON))

    assert activity.id == "a1" and activity.account == "acc1"
    assert activity.start_date == datetime(2022, 3, 1, 10, 0, tzinfo=UTC)
    assert activity.updated_at == datetime(2022, 3, 2, 8, 0, 0, 123456, tzinfo=UTC)
    assert activity.updated_at is not None and activity.updated_at.utcoffset().total_seconds() == 0
    assert activity.end_date is None
    assert activity.income is not None
    assert activity.income.total == Decimal("10.14") and activity.income.bonus is None


def test_null_start_date_and_odd_money_do_not_fail_the_activity() -> None:
    doc = parse_json(
        json.dumps({"id": "a2", "account": "acc1", "start_date": None, "income": {"pay": "", "total": "N/A"}})
    )

    activity = Activity.from_api(doc)

    assert activity.start_date is None
    assert activity.income is not None and activity.income.pay is None and activity.income.total is None
    assert activity.raw["income"]["total"] == "N/A"


def test_parse_json_keeps_integers_as_int() -> None:
    assert parse_json(b'{"n": 3, "x": 0.1}') == {"n": 3, "x": Decimal("0.1")}
    assert isinstance(parse_json(b'{"n": 3}')["n"], int)


def test_a_malformed_field_the_sync_never_reads_does_not_fail_the_activity() -> None:
    # Given an activity whose id, account, start and update time are fine, but whose other fields
    # are not what the documentation says (Argyle's data comes from thousands of employers)
    doc = parse_json(json.dumps({
        "id": "a3", "account": "acc1", "start_date": "2022-03-01T10:00:00Z", "updated_at": "2022-03-02T10:00:00Z",
        "created_at": "yesterday", "end_date": 17, "employer": {"name": "SprintCar"}, "status": 3,
        "type": None, "income": {"currency": 840, "total": "10.14"}}))

    # When it becomes an Activity
    activity = Activity.from_api(doc)

    # Then the sync's fields are typed, the conveniences say "unknown", and raw keeps it all as sent
    assert activity.id == "a3" and activity.start_date == datetime(2022, 3, 1, 10, 0, tzinfo=UTC)
    assert activity.created_at is None and activity.end_date is None
    assert activity.employer is None and activity.status is None and activity.type is None
    assert activity.income is None
    assert activity.raw is doc and activity.raw["employer"] == {"name": "SprintCar"}


def test_a_malformed_field_the_sync_reads_fails_the_activity_naming_the_field_not_its_value() -> None:
    doc = {"id": "a4", "account": "acc1", "updated_at": "last tuesday at 55 Main St"}

    with pytest.raises(InvalidActivity, match="updated_at") as raised:
        Activity.from_api(doc)

    assert "Main St" not in str(raised.value)
