"""Fetch a listing's next page while the current one is written.

Page k+1 is requested from Argyle while page k goes to DynamoDB, so a listing costs about one
Argyle round trip per page instead of a round trip plus a write. At most two pages are held: the
one being written and the one being fetched (the next fetch starts only when the caller has taken
the fetched page, i.e. after it finished writing the one before).

One worker thread drives the page iterator; the caller's thread never touches it while a fetch is
pending, so an ArgyleClient (not thread-safe) is still used by one thread at a time. `close()`
waits for a pending fetch to end (its result or error is dropped) before closing the iterator: no
thread is left running and no page fetched after a failure is ever handed out.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
_END = object()


class PagePrefetch(Generic[T]):
    def __init__(self, pages: Iterator[T]) -> None:
        self._pages = pages
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="argyle-prefetch")
        self._pending: Future[object] | None = None
        self._closed = False

    def _fetch(self) -> object:
        return next(self._pages, _END)

    def start_next(self) -> None:
        """Begin fetching the following page (call it once the previous page has been taken)."""
        if self._closed:
            raise RuntimeError("prefetch is closed")
        if self._pending is None:
            self._pending = self._pool.submit(self._fetch)

    def take(self) -> T | None:
        """The page after the last one taken (waiting for its fetch); None after the last page.
        A fetch's error is raised here, in the caller's thread."""
        self.start_next()
        assert self._pending is not None
        pending, self._pending = self._pending, None
        page = pending.result()
        return None if page is _END else page  # type: ignore[return-value]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pending = None  # the fetch in flight, if any: its outcome is not wanted any more
        self._pool.shutdown(wait=True)  # waits for it, before its page source is closed
        close = getattr(self._pages, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> PagePrefetch[T]:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
