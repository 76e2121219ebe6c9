"""moto's server, one request at a time: its threaded server runs requests concurrently, but
moto's backends are not safe for that (`make load` printed `RuntimeError: dictionary changed size
during iteration` from DynamoDB's transact_write_items while other writes ran). AWS serves
concurrent calls; here a lock around moto's WSGI app gives the same answers, in turn.

SQS's ReceiveMessage stays outside the lock: moto long-polls inside the request (WaitTimeSeconds),
and holding the lock for that wait would stall every other call."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

_UNLOCKED_TARGETS = frozenset({"AmazonSQS.ReceiveMessage"})

WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


@dataclass
class SerializedApp:
    """A WSGI app that lets one request at a time into `app`; counts the requests that had to wait."""

    app: WsgiApp
    lock: threading.Lock = field(default_factory=threading.Lock)
    _count_lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    waited: int = 0
    _in_app: int = 0
    max_in_app: int = 0
    polls_in_flight: int = 0  # ReceiveMessage calls in moto now (outside the lock)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("HTTP_X_AMZ_TARGET") in _UNLOCKED_TARGETS:
            with self._count_lock:
                self.polls_in_flight += 1
            try:
                return self.app(environ, start_response)
            finally:
                with self._count_lock:
                    self.polls_in_flight -= 1
        if not self.lock.acquire(blocking=False):
            self.lock.acquire()
            self.waited += 1  # under the lock from here on
        try:
            self.requests += 1
            self._in_app += 1
            self.max_in_app = max(self.max_in_app, self._in_app)
            response = self.app(environ, start_response)
            try:
                # The body too is built under the lock: a lazy iterable would read moto's state later.
                return [b"".join(response)]
            finally:
                close = getattr(response, "close", None)
                if close is not None:
                    close()
        finally:
            self._in_app -= 1
            self.lock.release()


def serialize_requests(server: Any) -> SerializedApp:
    """Wrap the WSGI app of a started werkzeug server (ThreadedMotoServer._server) in place."""
    serialized = SerializedApp(server.app)
    server.app = serialized
    return serialized
