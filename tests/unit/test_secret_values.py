from __future__ import annotations

import json

import pytest

from argyle_pipeline.aws.secret_values import (
    SecretMalformed,
    parse_argyle_credentials,
    parse_webhook_secrets,
    rotated_webhook_secret_value,
)


def test_plain_string_secret() -> None:
    assert parse_webhook_secrets("s3cret") == ("s3cret",)


def test_current_and_previous_are_both_accepted() -> None:
    assert parse_webhook_secrets('{"current": "new", "previous": "old"}') == ("new", "old")


def test_empty_previous_is_dropped_and_empty_secret_gives_nothing() -> None:
    assert parse_webhook_secrets('{"current": "new", "previous": ""}') == ("new",)
    assert parse_webhook_secrets("") == ()
    assert parse_webhook_secrets('{"current": ""}') == ()


def test_malformed_json_secret_is_an_error_not_a_plain_secret() -> None:
    with pytest.raises(SecretMalformed):
        parse_webhook_secrets('{"current": ')


def test_rotation_moves_current_to_previous() -> None:
    value = rotated_webhook_secret_value("newest", '{"current": "older", "previous": "oldest"}')
    assert json.loads(value) == {"current": "newest", "previous": "older"}
    assert parse_webhook_secrets(rotated_webhook_secret_value("first", None)) == ("first",)


def test_argyle_credentials_parse_and_hide_the_secret_in_repr() -> None:
    creds = parse_argyle_credentials('{"api_key_id": "id1", "api_key_secret": "very-secret"}')
    assert (creds.api_key_id, creds.api_key_secret) == ("id1", "very-secret")
    assert "very-secret" not in repr(creds)


@pytest.mark.parametrize(
    "value", ["not json", "[]", '{"api_key_id": "x"}', '{"api_key_id": "", "api_key_secret": "y"}'])
def test_argyle_credentials_malformed(value: str) -> None:
    with pytest.raises(SecretMalformed):
        parse_argyle_credentials(value)


def test_rotation_from_a_cleared_secret_keeps_no_previous() -> None:
    # A value whose current secret was cleared holds nothing to keep as previous
    assert json.loads(rotated_webhook_secret_value("fresh", '{"current": "", "previous": ""}')) == {
        "current": "fresh", "previous": ""}
