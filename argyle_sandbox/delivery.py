"""Webhook delivery: an outbox drained by one background thread, so scenario steps return at once.

Like Argyle, a delivery that gets no 2xx (or no answer) is retried, here a bounded number of
times with exponential backoff; what happened to each delivery is kept in `log` for tests,
including the ones a fault made the sandbox forget (never sent, status "dropped").
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from dataclasses import dataclass, field

import urllib3

USER_AGENT = "Argyle-Webhooks-Sandbox/1.0"


@dataclass
class Delivery:
    subscription_id: str
    url: str
    event: str
    body: bytes
    signature: str | None  # X-Argyle-Signature; None when the subscription has no secret
    attempts: int = 0
    outcomes: list[int | str] = field(default_factory=list)  # HTTP status or error name, per attempt
    delivered: bool = False
    gave_up: bool = False
    dropped: bool = False  # forgotten by a fault: never sent, as webhooks Argyle never sends

    @property
    def status(self) -> str:
        """dropped (never sent), delivered (a 2xx), gave_up (attempts exhausted) or pending."""
        if self.dropped:
            return "dropped"
        if self.delivered:
            return "delivered"
        return "gave_up" if self.gave_up else "pending"


class Outbox:
    def __init__(self, *, max_attempts: int = 5, backoff: float = 0.2, timeout: float = 5.0) -> None:
        self.max_attempts = max_attempts
        self.backoff = backoff
        self._pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=timeout, read=timeout))
        self._queue: list[tuple[float, int, Delivery]] = []  # (ready at, order, delivery)
        self._order = itertools.count()
        self._in_flight = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.log: list[Delivery] = []  # every delivery, in the order it was queued

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sandbox-webhook-delivery", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._pool.clear()

    def put(self, deliveries: list[Delivery]) -> None:
        """Log every delivery in order; send all but the dropped ones (logged so tests see them)."""
        with self._cond:
            now = time.monotonic()
            for delivery in deliveries:
                self.log.append(delivery)
                if not delivery.dropped:
                    heapq.heappush(self._queue, (now, next(self._order), delivery))
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + self._in_flight

    def wait(self, timeout: float) -> None:
        """Block until nothing is queued or being sent; TimeoutError if that takes longer than timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: not self._queue and not self._in_flight, timeout=timeout):
                raise TimeoutError(
                    f"{len(self._queue) + self._in_flight} webhook deliveries still pending after {timeout}s"
                )

    def _next(self) -> Delivery | None:
        with self._cond:
            while not self._stopping:
                if self._queue:
                    wait = self._queue[0][0] - time.monotonic()
                    if wait <= 0:
                        _, _, delivery = heapq.heappop(self._queue)
                        self._in_flight += 1
                        return delivery
                    self._cond.wait(timeout=wait)
                else:
                    self._cond.wait()
            return None

    def _run(self) -> None:
        while (delivery := self._next()) is not None:
            outcome = self._send(delivery)
            with self._cond:
                self._in_flight -= 1
                delivery.attempts += 1
                delivery.outcomes.append(outcome)
                if isinstance(outcome, int) and 200 <= outcome < 300:
                    delivery.delivered = True
                elif delivery.attempts >= self.max_attempts:
                    delivery.gave_up = True
                else:
                    ready = time.monotonic() + self.backoff * (2 ** (delivery.attempts - 1))
                    heapq.heappush(self._queue, (ready, next(self._order), delivery))
                self._cond.notify_all()

    def _send(self, delivery: Delivery) -> int | str:
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if delivery.signature is not None:
            headers["X-Argyle-Signature"] = delivery.signature
        try:
            response = self._pool.request(
                "POST", delivery.url, body=delivery.body, headers=headers, retries=False, redirect=False
            )
        except urllib3.exceptions.HTTPError as exc:
            return type(exc).__name__
        except ValueError as exc:  # a URL urllib3 cannot use
            return type(exc).__name__
        return int(response.status)
