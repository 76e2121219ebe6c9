"""The stored activity is exactly what boto3's own serializer would store: the fast path for JSON
values must never change an item (a changed item would be a silent rewrite of every copy)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from boto3.dynamodb.types import TypeSerializer
from hypothesis import given, settings
from hypothesis import strategies as st

from argyle_pipeline.argyle.activity import parse_json
from argyle_pipeline.aws.activity_store import json_attribute_value

_boto3 = TypeSerializer()

_scalars = (st.none() | st.booleans() | st.text(max_size=12)
            | st.integers(min_value=-(10**40), max_value=10**40)
            | st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-10**9, max_value=10**9))
json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=25)


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_every_json_value_is_stored_as_boto3_would_store_it(value: object):
    try:
        expected = _boto3.serialize(value)
    except Exception as refused:  # boto3 refuses (say, 40 digits): so must the fast path, the same way
        with pytest.raises(type(refused)):
            json_attribute_value(value)
        return
    assert json_attribute_value(value) == expected


def test_an_argyle_activity_with_money_and_nesting_is_stored_unchanged():
    doc = parse_json(json.dumps({
        "id": "a1", "income": {"currency": "USD", "pay": "12.50", "fees": 1.25, "tips": None},
        "distance": 3.7, "all_datetimes": {"shift_start": "2026-01-01T00:00:00Z"}, "tags": ["x", 2, True],
        "count": 12345678901234567890123456789012345678}))
    assert json_attribute_value(doc) == _boto3.serialize(doc)
    assert json_attribute_value(doc)["M"]["distance"] == {"N": "3.7"}
    assert isinstance(doc["distance"], Decimal)


def test_a_number_too_precise_for_dynamodb_is_refused_not_rounded():
    with pytest.raises(Exception, match=r"Inexact|Rounded"):
        json_attribute_value({"pay": 10**40 + 1})


@pytest.mark.parametrize("number", [10**38, -(10**38), 10**38 + 1, -(10**38 + 1)])
def test_a_whole_number_of_39_digits_is_refused_as_boto3_refuses_it(number: int):
    # The first integers past DynamoDB's 38 digits, even round ones: refused before anything is sent.
    with pytest.raises(Exception, match=r"Inexact|Rounded"):
        json_attribute_value({"pay": number})


def test_the_largest_whole_numbers_of_38_digits_are_stored_exactly():
    assert json_attribute_value([10**38 - 1, -(10**38 - 1)]) == {"L": [{"N": "9" * 38}, {"N": "-" + "9" * 38}]}


def test_a_decimal_too_precise_for_dynamodb_is_refused_not_rounded():
    with pytest.raises(Exception, match=r"Inexact|Rounded"):
        json_attribute_value({"rate": Decimal("1." + "3" * 40)})
