"""The one place that talks to EventBridge: change events for the user's systems
(sync/change_events.py says what they hold)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from argyle_pipeline.sync.change_events import SOURCE

_PUT_EVENTS_MAX = 10  # entries per PutEvents call


class ChangeEventsNotPublished(Exception):
    """EventBridge refused some entries: the record fails and is retried (its stored outcome is
    published again, same event ids)."""


class ChangeEventBus:
    def __init__(self, bus_name: str, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("events")
        self._client = client
        self.bus_name = bus_name
        self.calls = 0

    def publish(self, events: Sequence[tuple[str, Any]]) -> int:
        """Publish (detail type, pydantic detail) pairs, 10 per call; raises when any is refused."""
        entries = [{"Source": SOURCE, "DetailType": detail_type, "Detail": detail.model_dump_json(),
                    "EventBusName": self.bus_name} for detail_type, detail in events]
        for start in range(0, len(entries), _PUT_EVENTS_MAX):
            self.calls += 1
            response = self._client.put_events(Entries=entries[start:start + _PUT_EVENTS_MAX])
            if response.get("FailedEntryCount"):
                codes = sorted({e.get("ErrorCode", "?") for e in response.get("Entries", []) if e.get("ErrorCode")})
                raise ChangeEventsNotPublished(f"EventBridge refused {response['FailedEntryCount']} change "
                                               f"event(s): {', '.join(codes)}")
        return len(entries)
