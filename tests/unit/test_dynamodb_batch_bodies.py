"""The sync's DynamoDB client writes a batch call's body itself (`WireFormSerializer`): whatever the
items hold, the request it sends is the one botocore's own serializer would have sent."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from hypothesis import given, settings
from hypothesis import strategies as st

from argyle_pipeline.aws.dynamodb_client import WireFormSerializer, sync_dynamodb_client

TABLE = "Activities"

_text = st.text(max_size=12)
_number = st.integers(-10**12, 10**12).map(str) | st.decimals(allow_nan=False, allow_infinity=False,
                                                            places=4).map(str)
_scalar = st.one_of(
    _text.map(lambda s: {"S": s}),
    _number.map(lambda n: {"N": n}),
    st.booleans().map(lambda b: {"BOOL": b}),
    st.just({"NULL": True}),
    st.lists(_text, min_size=1, max_size=3, unique=True).map(lambda v: {"SS": v}),
)
attribute_values = st.recursive(
    _scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=3).map(lambda v: {"L": v}),
                            st.dictionaries(_text, inner, max_size=3).map(lambda v: {"M": v})),
    max_leaves=12,
)
items = st.dictionaries(_text, attribute_values, min_size=1, max_size=5)


def botocore_request(params: dict[str, Any], operation: str) -> dict[str, Any]:
    client = boto3.client("dynamodb", region_name="us-east-1", config=Config(parameter_validation=False))
    return client._serializer.serialize_to_request(params, client.meta.service_model.operation_model(operation))


def sync_client_request(params: dict[str, Any], operation: str) -> dict[str, Any]:
    client = sync_dynamodb_client(region_name="us-east-1")
    assert isinstance(client._serializer, WireFormSerializer)
    return client._serializer.serialize_to_request(params, client.meta.service_model.operation_model(operation))


@settings(max_examples=60, deadline=None)
@given(st.lists(items, min_size=1, max_size=4))
def test_a_batch_write_is_sent_exactly_as_botocore_would_send_it(page: list[dict[str, Any]]) -> None:
    params = {"RequestItems": {TABLE: [{"PutRequest": {"Item": item}} for item in page]
                               + [{"DeleteRequest": {"Key": {"pk": {"S": "gone"}}}}]},
              "ReturnConsumedCapacity": "TOTAL"}

    assert sync_client_request(params, "BatchWriteItem") == botocore_request(params, "BatchWriteItem")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.dictionaries(_text, _scalar, min_size=1, max_size=2), min_size=1, max_size=4))
def test_a_batch_get_is_sent_exactly_as_botocore_would_send_it(keys: list[dict[str, Any]]) -> None:
    params = {"RequestItems": {TABLE: {"Keys": keys, "ProjectionExpression": "#v", "ConsistentRead": True,
                                       "ExpressionAttributeNames": {"#v": "version"}}}}

    assert sync_client_request(params, "BatchGetItem") == botocore_request(params, "BatchGetItem")


def test_a_binary_value_goes_through_botocore_which_encodes_it() -> None:
    params = {"RequestItems": {TABLE: [{"PutRequest": {"Item": {"pk": {"S": "a"}, "blob": {"B": b"\x00\xff"}}}}]}}

    request = sync_client_request(params, "BatchWriteItem")

    assert request == botocore_request(params, "BatchWriteItem")
    assert b'"B": "AP8="' in request["body"]


def test_other_calls_are_botocore_own() -> None:
    params = {"TableName": TABLE, "Item": {"pk": {"S": "a"}, "blob": {"B": b"\x01"}}}

    assert sync_client_request(params, "PutItem") == botocore_request(params, "PutItem")
