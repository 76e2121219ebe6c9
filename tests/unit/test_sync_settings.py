"""SyncSettings from the environment, and exact JSON for stored numbers."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from argyle_pipeline.exact_json import dumps_exact
from argyle_pipeline.sync.settings import sync_settings

REQUIRED = {"ACTIVITIES_TABLE": "acts", "SYNC_STATE_TABLE": "state", "IDEMPOTENCY_TABLE": "idem",
            "EVENTS_QUEUE_URL": "https://sqs/q.fifo"}


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch):
    for name in ("EVENT_ARCHIVE_DAYS", "IDEMPOTENCY_DAYS", "TOMBSTONE_DAYS", "CONTINUATION_MARGIN_SECONDS",
                 "ARGYLE_FETCH_CONCURRENCY", "ARGYLE_API_URL", "FULL_SYNC_WHOLE_ACCOUNT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    sync_settings.cache_clear()
    yield
    sync_settings.cache_clear()


def test_defaults_when_only_the_resources_are_set():
    settings = sync_settings()
    assert (settings.activities_table, settings.sync_state_table, settings.idempotency_table) == (
        "acts", "state", "idem")
    assert settings.argyle_api_url == "https://api.argyle.com/v1"
    assert settings.event_archive_seconds == 90 * 86_400 and settings.idempotency_seconds == 30 * 86_400
    assert settings.tombstone_seconds == 35 * 86_400
    assert settings.continuation_margin_ms == 120_000 and settings.full_sync_whole_account is True


def test_values_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EVENT_ARCHIVE_DAYS", "7")
    monkeypatch.setenv("IDEMPOTENCY_DAYS", "2")
    monkeypatch.setenv("CONTINUATION_MARGIN_SECONDS", "1.5")
    monkeypatch.setenv("ARGYLE_FETCH_CONCURRENCY", "0")
    monkeypatch.setenv("FULL_SYNC_WHOLE_ACCOUNT", "false")
    monkeypatch.setenv("ARGYLE_API_URL", "http://127.0.0.1:9/v1")
    settings = sync_settings()
    assert settings.event_archive_seconds == 7 * 86_400 and settings.idempotency_seconds == 2 * 86_400
    assert settings.continuation_margin_ms == 1_500
    assert settings.fetch_concurrency == 1  # at least one fetcher
    assert settings.full_sync_whole_account is False
    assert settings.argyle_api_url == "http://127.0.0.1:9/v1"


def test_settings_are_read_once_until_the_cache_is_cleared(monkeypatch: pytest.MonkeyPatch):
    first = sync_settings()
    monkeypatch.setenv("ACTIVITIES_TABLE", "other")
    assert sync_settings() is first
    sync_settings.cache_clear()
    assert sync_settings().activities_table == "other"


def test_exact_json_keeps_every_digit_and_reads_back_equal():
    value = {"pay": "9.04", "rate": Decimal("2.830"), "big": Decimal("12345678901234567890.123456789"),
             "n": Decimal("3"), "e": Decimal("1E+2"), "list": [True, None, Decimal("-0.5")], "empty": {}}
    text = dumps_exact(value)
    assert '"rate":2.830' in text and '"big":12345678901234567890.123456789' in text
    assert '"n":3' in text and '"e":100' in text
    assert json.loads(text, parse_float=Decimal) == value
    assert json.loads(dumps_exact(value, indent=2), parse_float=Decimal) == value
