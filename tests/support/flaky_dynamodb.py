"""A DynamoDB client wrapper that misbehaves the way DynamoDB does under load: BatchWriteItem and
BatchGetItem leave part of a request unprocessed, and calls fail with a throttling error once
botocore's own retries are spent. Either by a fixed count (`unprocessed_next`, `throttle_next`) or
at random from a seeded generator. Everything else goes to the real (moto) client."""

from __future__ import annotations

import random
import threading
from typing import Any

from botocore.exceptions import ClientError


def throttled(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "ProvisionedThroughputExceededException",
                                  "Message": "Rate of requests exceeds the allowed throughput."}}, operation)


class FlakyDynamoDB:
    def __init__(self, client: Any, *, seed: int | None = None, p_unprocessed: float = 0.0,
                 p_throttle: float = 0.0, throttle_operations: frozenset[str] = frozenset()) -> None:
        self._client = client
        self._rng = random.Random(seed)
        self.p_unprocessed = p_unprocessed
        self.p_throttle = p_throttle
        # Which operations may be throttled at random (snake_case names); empty means none.
        self.throttle_operations = throttle_operations
        self.unprocessed_next = 0  # the next N batch calls leave half of their items unprocessed
        self.throttle_next = 0  # the next N calls of a throttle_operations operation raise
        self.enabled = True
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()  # the store sends a page's batches from several threads

    def _count(self, operation: str) -> None:
        with self._lock:
            self.calls[operation] = self.calls.get(operation, 0) + 1

    def _throttle(self, operation: str) -> None:
        if not self.enabled or operation not in self.throttle_operations:
            return
        with self._lock:
            if self.throttle_next > 0:
                self.throttle_next -= 1
                fail = True
            else:
                fail = bool(self.p_throttle) and self._rng.random() < self.p_throttle
        if fail:
            raise throttled(operation)

    def _drop_half(self) -> bool:
        if not self.enabled:
            return False
        with self._lock:
            if self.unprocessed_next > 0:
                self.unprocessed_next -= 1
                return True
            return bool(self.p_unprocessed) and self._rng.random() < self.p_unprocessed

    def batch_write_item(self, RequestItems: dict[str, list[Any]], **kwargs: Any) -> dict[str, Any]:
        self._count("batch_write_item")
        self._throttle("batch_write_item")
        if not self._drop_half():
            return dict(self._client.batch_write_item(RequestItems=RequestItems, **kwargs))
        done: dict[str, list[Any]] = {}
        left: dict[str, list[Any]] = {}
        for table, requests in RequestItems.items():
            cut = len(requests) // 2
            done[table], left[table] = requests[:cut], requests[cut:]
        if any(done.values()):
            self._client.batch_write_item(RequestItems={t: r for t, r in done.items() if r}, **kwargs)
        return {"UnprocessedItems": {t: r for t, r in left.items() if r}}

    def batch_get_item(self, RequestItems: dict[str, dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        self._count("batch_get_item")
        self._throttle("batch_get_item")
        if not self._drop_half():
            return dict(self._client.batch_get_item(RequestItems=RequestItems, **kwargs))
        asked: dict[str, dict[str, Any]] = {}
        left: dict[str, dict[str, Any]] = {}
        for table, request in RequestItems.items():
            keys = request["Keys"]
            cut = len(keys) // 2
            asked[table] = {**request, "Keys": keys[:cut]}
            left[table] = {**request, "Keys": keys[cut:]}
        responses: dict[str, list[Any]] = {}
        if any(r["Keys"] for r in asked.values()):
            responses = self._client.batch_get_item(
                RequestItems={t: r for t, r in asked.items() if r["Keys"]}, **kwargs)["Responses"]
        return {"Responses": responses, "UnprocessedKeys": {t: r for t, r in left.items() if r["Keys"]}}

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._client, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self._count(name)
            self._throttle(name)
            return target(*args, **kwargs)

        return call
