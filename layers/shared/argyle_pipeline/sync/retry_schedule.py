"""When a failed record comes back: a short, growing delay per attempt instead of the queue's
visibility timeout (5,400 s, kept as the ceiling for a record that is still being worked on).

The queue hands a record out at most `max_attempts` times (its RedrivePolicy's maxReceiveCount);
after the last failure the record is made visible at once, so that SQS moves it to the DLQ on the
next receive rather than an hour and a half later. No AWS here: the handler applies the delays
through `aws.event_queue.EventQueue.retry_later`.
"""

from __future__ import annotations

from dataclasses import dataclass

# SQS's largest visibility timeout (12 hours).
MAX_VISIBILITY_SECONDS = 43_200
DEFAULT_DELAYS_SECONDS = (30, 120, 480, 1800)
DEFAULT_MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class Redelivery:
    attempt: int
    max_attempts: int
    delay_seconds: int

    @property
    def last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts


@dataclass(frozen=True)
class RetrySchedule:
    delays_seconds: tuple[int, ...] = DEFAULT_DELAYS_SECONDS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    def __post_init__(self) -> None:
        if not self.delays_seconds:
            raise ValueError("the retry schedule needs at least one delay")
        if any(not 0 <= d <= MAX_VISIBILITY_SECONDS for d in self.delays_seconds):
            raise ValueError(f"retry delays must be 0..{MAX_VISIBILITY_SECONDS} seconds, got {self.delays_seconds}")
        if self.max_attempts < 1:
            raise ValueError(f"max attempts must be at least 1, got {self.max_attempts}")

    def after_failure(self, attempt: int) -> Redelivery:
        """`attempt` is the record's ApproximateReceiveCount (1 on its first delivery). Past the
        schedule's end the last delay repeats; after the last attempt the delay is 0."""
        attempt = max(1, attempt)
        if attempt >= self.max_attempts:
            return Redelivery(attempt, self.max_attempts, 0)
        delay = self.delays_seconds[min(attempt, len(self.delays_seconds)) - 1]
        return Redelivery(attempt, self.max_attempts, delay)

    def seconds_to_dead_letter(self) -> int:
        """The delays a record that always fails waits in all before it reaches the DLQ (its
        processing time comes on top)."""
        return sum(self.after_failure(n).delay_seconds for n in range(1, self.max_attempts + 1))


def parse_delays(text: str) -> tuple[int, ...]:
    """"30,120,480,1800" (seconds) as a tuple; a clear error for anything else."""
    try:
        delays = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise ValueError(f"RETRY_DELAYS_SECONDS must be whole seconds separated by commas, got {text!r}") from None
    if not delays:
        raise ValueError(f"RETRY_DELAYS_SECONDS must name at least one delay, got {text!r}")
    return delays
