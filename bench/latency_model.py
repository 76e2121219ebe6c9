"""The latency model of the sync benchmark: production's round trips, added on loopback.

On loopback an Argyle page and a DynamoDB call cost well under a millisecond, so the benchmark
would measure CPU (moto's and botocore's) and nothing of what a deployed sync waits for. The model
adds, in the sync's own process, before each request is sent:

    an Argyle listing page (GET /activities)       0.250 s
    a single Argyle GET (GET /activities/{id} ...)  0.120 s
    a DynamoDB call (any operation)                 0.006 s

at the HTTP layer both syncs share: Argyle's in front of the urllib3 pool (`DelayedPool`), DynamoDB's
as a botocore `before-send` handler. So ours and the naive sync pay the same per call, and what
differs is only how many calls each makes and how much of the waiting overlaps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class LatencyModel:
    page_s: float = 0.250
    get_s: float = 0.120
    dynamodb_s: float = 0.006

    @classmethod
    def parse(cls, text: str) -> LatencyModel:
        """`page=0.25,get=0.12,dynamodb=0.006` (seconds; any subset); a clear error otherwise."""
        values = {"page": cls.page_s, "get": cls.get_s, "dynamodb": cls.dynamodb_s}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.partition("=")
            if name not in values:
                raise ValueError(f"latency: unknown part {name!r} (page, get, dynamodb)")
            try:
                values[name] = float(value)
            except ValueError:
                raise ValueError(f"latency: {part!r} is not name=seconds") from None
            if values[name] < 0:
                raise ValueError(f"latency: {name} must not be negative")
        return cls(values["page"], values["get"], values["dynamodb"])

    def describe(self) -> str:
        return (f"Argyle page {self.page_s * 1000:.0f} ms, single GET {self.get_s * 1000:.0f} ms, "
                f"DynamoDB call {self.dynamodb_s * 1000:.0f} ms")

    def argyle_delay(self, method: str, url: str) -> float:
        path = urlsplit(url).path.rstrip("/")
        return self.page_s if method == "GET" and path.endswith("/activities") else self.get_s

    def delay_dynamodb(self, client: Any) -> None:
        """Every call of this botocore DynamoDB client waits the model's DynamoDB latency first."""
        def wait(**_: Any) -> None:
            time.sleep(self.dynamodb_s)

        if self.dynamodb_s > 0:
            client.meta.events.register("before-send.dynamodb.*", wait)


class DelayedPool:
    """A urllib3 pool in front of which every request waits the model's Argyle latency."""

    def __init__(self, pool: Any, model: LatencyModel) -> None:
        self._pool = pool
        self._model = model

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        delay = self._model.argyle_delay(method, url)
        if delay > 0:
            time.sleep(delay)
        return self._pool.request(method, url, **kwargs)
