"""Fixtures around the Argyle sandbox, imported explicitly by the modules that use them:

    from tests.support.sandbox_fixtures import sandbox, sandbox_client  # noqa: F401

Also small loopback servers a test can point webhooks or `next` links at.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from argyle_pipeline.argyle.client import ArgyleClient
from argyle_pipeline.aws.secret_values import ArgyleCredentials
from argyle_sandbox.server import SandboxServer

SANDBOX_KEY_ID = "test-key-id"
SANDBOX_KEY_SECRET = "test-key-secret"
SANDBOX_CREDENTIALS = ArgyleCredentials(SANDBOX_KEY_ID, SANDBOX_KEY_SECRET)


class RecordedSleeps(list[float]):
    """A `sleep` for ArgyleClient that records instead of waiting: retry tests take no time."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """A fresh sandbox (seed 1) on a free loopback port; deliveries retry fast."""
    with SandboxServer(seed=1, api_key_id=SANDBOX_KEY_ID, api_key_secret=SANDBOX_KEY_SECRET,
                       delivery_backoff=0.01, delivery_timeout=2.0) as server:
        yield server


@contextmanager
def webhook_inbox(sandbox: SandboxServer, secret: str) -> Iterator[RecordingServer]:
    """Where the sandbox delivers every signed webhook (tests hand them to the receiver's code)."""
    server = RecordingServer().start()
    sandbox.subscribe(f"{server.url}/webhooks/argyle", events=["*"], secret=secret)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sleeps() -> RecordedSleeps:
    return RecordedSleeps()


@pytest.fixture
def sandbox_client(sandbox: SandboxServer, sleeps: RecordedSleeps) -> ArgyleClient:
    """An ArgyleClient for the sandbox whose backoff sleeps are recorded, not slept."""
    return ArgyleClient(sandbox.base_url, SANDBOX_CREDENTIALS, sleep=sleeps, max_attempts=4, timeout=5.0)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class RecordingServer:
    """A loopback HTTP server that records every request and answers `status` (a list is used in
    turn, its last value repeating): a webhook receiver, or the "other host" of a next link."""

    statuses: list[int] = field(default_factory=lambda: [200])
    requests: list[Received] = field(default_factory=list)
    _httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> RecordingServer:
        recorder = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with lock:
                    recorder.requests.append(Received(self.command, self.path,
                                                      {k.lower(): v for k, v in self.headers.items()}, body))
                    index = min(len(recorder.requests) - 1, len(recorder.statuses) - 1)
                    status = recorder.statuses[index]
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = do_DELETE = _record

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        serve = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                 daemon=True)
        serve.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()


@pytest.fixture
def recorder() -> Iterator[RecordingServer]:
    """A loopback server that records what it receives and answers 200."""
    server = RecordingServer().start()
    try:
        yield server
    finally:
        server.stop()
