"""When a failed record comes back: the schedule's delays, its last attempt, and its settings."""

from __future__ import annotations

import pytest

from argyle_pipeline.sync.retry_schedule import RetrySchedule, parse_delays
from argyle_pipeline.sync.settings import sync_settings


def test_each_failure_waits_longer_and_the_last_one_goes_to_the_dlq_at_once() -> None:
    schedule = RetrySchedule((30, 120, 480, 1800), max_attempts=5)
    # Given a record that fails on every attempt, Then it waits 30 s, 2 min, 8 min, 30 min
    waits = [schedule.after_failure(attempt) for attempt in range(1, 6)]
    assert [w.delay_seconds for w in waits] == [30, 120, 480, 1800, 0]
    # And only the fifth failure is its last attempt (SQS moves it to the DLQ on the next receive)
    assert [w.last_attempt for w in waits] == [False, False, False, False, True]
    assert waits[0].max_attempts == 5
    # And it reaches the DLQ 40.5 minutes of delays after its first failure: within about an hour
    assert schedule.seconds_to_dead_letter() == 2430


def test_a_short_schedule_repeats_its_last_delay_and_a_receive_count_past_the_end_is_last() -> None:
    schedule = RetrySchedule((1, 4), max_attempts=4)
    assert [schedule.after_failure(n).delay_seconds for n in (1, 2, 3, 4, 9)] == [1, 4, 4, 0, 0]
    assert schedule.after_failure(9).last_attempt
    assert schedule.after_failure(0).attempt == 1  # a missing receive count counts as the first


@pytest.mark.parametrize(("delays", "max_attempts", "message"), [
    ((), 5, "at least one delay"),
    ((30, -1), 5, "0..43200"),
    ((50_000,), 5, "0..43200"),
    ((30,), 0, "at least 1"),
])
def test_impossible_schedules_are_refused(delays: tuple[int, ...], max_attempts: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetrySchedule(delays, max_attempts)


def test_the_setting_reads_whole_seconds_and_says_what_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_delays("30, 120,480") == (30, 120, 480)
    with pytest.raises(ValueError, match=r"RETRY_DELAYS_SECONDS must be whole seconds.*'30s,2m'"):
        parse_delays("30s,2m")
    with pytest.raises(ValueError, match="at least one delay"):
        parse_delays(",")
    # The sync's settings carry it from the environment, with the queue's receive count
    for name, value in {"ACTIVITIES_TABLE": "a", "SYNC_STATE_TABLE": "s", "IDEMPOTENCY_TABLE": "i",
                        "EVENTS_QUEUE_URL": "q", "RETRY_DELAYS_SECONDS": "1,2", "MAX_RECEIVE_COUNT": "3"}.items():
        monkeypatch.setenv(name, value)
    sync_settings.cache_clear()
    try:
        assert sync_settings().retry_schedule == RetrySchedule((1, 2), 3)
    finally:
        sync_settings.cache_clear()
