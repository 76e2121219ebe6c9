"""Argyle API client: activities (v1) or gigs (v2), paged and resumable, and webhook subscriptions.

The version's description (`api_versions.ApiVersion`) names the list path, the filters and the
object's fields; the methods are the same for both (a gig is read as an Activity).

Built on urllib3, which boto3 already brings into the Lambda runtime, so the layer needs no HTTP
dependency of its own. Every request goes to the configured base URL with HTTP Basic auth; a
`next` link only lends its cursor parameters, never its host, so credentials cannot be sent to
a host named inside a response. 429, 5xx and connection errors are retried with exponential
backoff and full jitter (honouring Retry-After) a bounded number of times; other 4xx are not.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import urllib3
from pydantic import BaseModel, ConfigDict, Field

from argyle_pipeline.argyle.activity import Activity, parse_json
from argyle_pipeline.argyle.api_versions import V1, ApiVersion, api_base_url, api_version
from argyle_pipeline.aws.secret_values import ArgyleCredentials, argyle_credentials
from argyle_pipeline.timestamps import UtcDateTime

PRODUCTION_URL = "https://api.argyle.com/v1"
SANDBOX_URL = "https://api-sandbox.argyle.com/v1"
DEFAULT_BASE_URL = PRODUCTION_URL
MAX_PAGE_LIMIT = 200
USER_AGENT = "argyle-activity-sync/0.1 (+urllib3)"
# Connect fails fast; a page of 200 activities can take Argyle a while to assemble.
DEFAULT_TIMEOUT = urllib3.Timeout(connect=5.0, read=30.0)

# Query parameters this client sets itself: a `next` link may not change them (it could
# otherwise switch the account or the date range under us); every other parameter is cursor.
# The listing's own are the version's (`ApiVersion.list_filters`).
_WEBHOOK_FILTERS = frozenset({"limit", "ordering", "from_created_at_date", "to_created_at_date"})

# Failures where the request never reached Argyle: safe to retry even for a POST.
_NOT_SENT = (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)

CredentialsSource = Callable[[], ArgyleCredentials] | ArgyleCredentials


@dataclass(frozen=True)
class RetryWait:
    """A wait before a retry, told to `on_retry` (for the caller's logs) before it is slept."""

    method: str
    path: str
    status: int | None  # None: no answer (the connection failed or timed out)
    seconds: float
    retry_after: bool  # the wait is Argyle's own Retry-After
    attempt: int  # the attempt that failed


class RequestBudget(Protocol):
    """The stack's shared Argyle request rate (argyle/request_budget.py): a token before each
    request, and every invocation slowed when Argyle answers 429."""

    def acquire(self) -> None: ...

    def slow_down(self, seconds: float) -> None: ...


# --- errors -------------------------------------------------------------------------------------



def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False

class ArgyleError(Exception):
    """Anything that went wrong talking to Argyle. `status` is the HTTP status, when there was one."""

    def __init__(self, message: str, *, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class ArgyleAuthError(ArgyleError):
    """401/403: the API key id/secret are wrong, or belong to the other environment."""


class ArgyleClientError(ArgyleError):
    """A 4xx other than 401/403/429: the request itself is wrong; retrying cannot help."""


class ArgyleNotFound(ArgyleClientError):
    """404 for a single object."""


class ActivityNotFound(ArgyleNotFound):
    pass


class WebhookNotFound(ArgyleNotFound):
    pass


class AccountNotFound(ArgyleNotFound):
    pass


class ArgyleUnavailable(ArgyleError):
    """429, 5xx or connection failures outlasted the retries (or Retry-After asked for longer than
    we may wait). `retry_after` is Argyle's last Retry-After in seconds, when it sent one."""

    def __init__(
        self, message: str, *, status: int | None = None, body: Any = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status, body=body)
        self.retry_after = retry_after


class PageLimitExceeded(ArgyleError):
    """More pages than `max_pages`: raised instead of returning a silently truncated list.
    `next_cursor` lets a caller resume from where the client stopped."""

    def __init__(self, message: str, *, next_cursor: dict[str, str] | None) -> None:
        super().__init__(message)
        self.next_cursor = next_cursor


class ForeignNextLink(ArgyleError):
    """A `next` link named another host (only raised with on_foreign_next="refuse")."""


class UnexpectedResponse(ArgyleError):
    """A 2xx whose body is not what the API documents (not JSON, no results...)."""


# --- models -------------------------------------------------------------------------------------


class WebhookSubscription(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    name: str | None = None
    events: list[str] = Field(default_factory=list)
    url: str | None = None
    config: dict[str, Any] | None = None
    secret: str | None = Field(default=None, repr=False)
    created_at: UtcDateTime | None = None
    updated_at: UtcDateTime | None = None


@dataclass
class ActivityPage:
    activities: list[Activity]
    # Query parameters to pass back as `cursor=` to fetch the following page; None on the last.
    next_cursor: dict[str, str] | None
    # Argyle's `count` (how many activities match the filters, now), when the response has one.
    count: int | None = None


@dataclass(frozen=True)
class _Response:
    status: int
    data: bytes
    headers: Mapping[str, str]


# --- helpers ------------------------------------------------------------------------------------


def retry_after_seconds(
    value: str | None, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date. None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now()).total_seconds())


def backoff_delay(attempt: int, base: float, cap: float, rand: Callable[[], float]) -> float:
    """Full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2**(attempt-1))]."""
    return rand() * min(cap, base * (2 ** (attempt - 1)))


def _error_message(body: Any) -> str:
    """A short human message from Argyle's (Django REST framework style) error body."""
    if isinstance(body, dict):
        for key in ("detail", "message", "error"):
            if isinstance(body.get(key), str):
                return str(body[key])
        parts = []
        for key, value in body.items():
            if isinstance(value, list):
                value = " ".join(str(v) for v in value)
            parts.append(f"{key}: {value}")
        if parts:
            return "; ".join(parts)
    if isinstance(body, list) and body:
        return " ".join(str(v) for v in body)
    if isinstance(body, str) and body:
        return body[:200]
    return ""


def _count(doc: Any) -> int | None:
    """A list response's `count` as an int (Argyle may send it as a string); None when absent."""
    value = doc.get("count") if isinstance(doc, dict) else None
    if isinstance(value, bool) or value is None:
        return None
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise UnexpectedResponse("list response's 'count' is not a number") from None
    if count < 0:
        raise UnexpectedResponse("list response's 'count' is negative")
    return count


def _credentials_from_environment() -> ArgyleCredentials:
    secret_id = os.environ.get("ARGYLE_CREDENTIALS_SECRET_ID", "")
    if not secret_id:
        raise ArgyleAuthError("no Argyle credentials: set ARGYLE_CREDENTIALS_SECRET_ID")
    return argyle_credentials(secret_id)


# --- the client ---------------------------------------------------------------------------------


class ArgyleClient:
    """One per container (it pools connections). Not for use by several threads at once
    (the `calls`/`retries` counters are plain ints)."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        credentials: CredentialsSource | None = None,
        *,
        timeout: float | urllib3.Timeout = DEFAULT_TIMEOUT,
        max_attempts: int = 5,
        max_pages: int = 2_000,
        page_limit: int = MAX_PAGE_LIMIT,
        sleep: Callable[[float], None] = time.sleep,
        pool: urllib3.PoolManager | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 20.0,
        max_retry_after: float = 60.0,
        on_foreign_next: Literal["rewrite", "refuse"] = "rewrite",
        rand: Callable[[], float] = random.random,
        on_retry: Callable[[RetryWait], None] | None = None,
        api: ApiVersion = V1,
        budget: RequestBudget | None = None,
    ) -> None:
        if not 1 <= page_limit <= MAX_PAGE_LIMIT:
            raise ValueError(f"page_limit must be 1..{MAX_PAGE_LIMIT}")
        if max_attempts < 1 or max_pages < 1:
            raise ValueError("max_attempts and max_pages must be at least 1")
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if parts.scheme == "http" and not _loopback(parts.hostname):
            # Every request carries the API keys as Basic auth: plain http only to this machine.
            raise ValueError(f"base_url must be https (http only on loopback, for a local API), got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.api = api
        self._origin = (parts.scheme, parts.netloc.lower())
        self._credentials: CredentialsSource = credentials or _credentials_from_environment
        self.timeout = (
            timeout
            if isinstance(timeout, urllib3.Timeout)
            else urllib3.Timeout(connect=timeout, read=timeout)
        )
        self.max_attempts = max_attempts
        self.max_pages = max_pages
        self.page_limit = page_limit
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_retry_after = max_retry_after
        self.on_foreign_next = on_foreign_next
        self._sleep = sleep
        self._rand = rand
        self._on_retry = on_retry
        self._budget = budget
        # retries=False: retrying is ours (urllib3's would also follow redirects to other hosts).
        self._pool = pool or urllib3.PoolManager(retries=False, maxsize=4)
        self.calls = 0  # HTTP requests sent, retries included
        self.retries = 0  # requests that were retries of an earlier attempt

    @classmethod
    def from_environment(cls, **kwargs: Any) -> ArgyleClient:
        """ARGYLE_API_VERSION, ARGYLE_API_URL (empty: the version's production URL) and
        ARGYLE_CREDENTIALS_SECRET_ID, as template.yaml sets them."""
        api = api_version(os.environ.get("ARGYLE_API_VERSION"))
        return cls(api_base_url(api, os.environ.get("ARGYLE_API_URL")), None, api=api, **kwargs)

    # --- activities -----------------------------------------------------------------------------

    def list_activity_pages(
        self,
        account: str | None,
        from_start_date: str | None = None,
        to_start_date: str | None = None,
        cursor: dict[str, str] | None = None,
    ) -> Iterator[ActivityPage]:
        """Pages of `limit=page_limit` activities, oldest filters inclusive, following `next`.

        Lazy: a page is fetched only when the previous one has been consumed, so memory stays flat.
        Pass a page's `next_cursor` back as `cursor` to resume in another invocation.
        """
        filters = {
            "account": account,
            self.api.from_filter: from_start_date,
            self.api.to_filter: to_start_date,
            "limit": str(self.page_limit),
        }
        base_params = {k: v for k, v in filters.items() if v}
        current = dict(cursor or {})
        pages = 0
        while True:
            if pages >= self.max_pages:
                raise PageLimitExceeded(
                    f"listing {self.api.objects} of account {account} needs more than {self.max_pages} pages",
                    next_cursor=current or None,
                )
            doc = self._get_json(self.api.list_path, {**base_params, **current})
            results, next_link = self._page_parts(doc)
            pages += 1
            next_cursor = self._cursor_from_next(next_link, self.api.list_filters) if next_link else None
            if next_cursor is not None and next_cursor == current:
                raise UnexpectedResponse("Argyle's next link repeats the current page (pagination loop)")
            yield ActivityPage([Activity.from_api(item, self.api) for item in results], next_cursor, _count(doc))
            if next_cursor is None:
                return
            current = next_cursor

    def list_activities(
        self,
        account: str | None,
        from_start_date: str | None = None,
        to_start_date: str | None = None,
        cursor: dict[str, str] | None = None,
    ) -> Iterator[Activity]:
        for page in self.list_activity_pages(account, from_start_date, to_start_date, cursor):
            yield from page.activities

    def count_activities(
        self, account: str, from_start_date: str | None = None, to_start_date: str | None = None
    ) -> int | None:
        """How many activities Argyle holds for these filters now: the `count` of a one-activity
        page (one call, whatever the account's size). None when Argyle's response has no count
        (v2 documents none: the reconciler then compares by a full pass)."""
        params = {"account": account, self.api.from_filter: from_start_date, self.api.to_filter: to_start_date,
                  "limit": "1"}
        doc = self._get_json(self.api.list_path, {k: v for k, v in params.items() if v})
        self._page_parts(doc)  # the same shape checks as a listing
        return _count(doc)

    def get_activity(self, activity_id: str) -> Activity:
        try:
            doc = self._get_json(self.api.object_path(activity_id), {})
        except ArgyleNotFound as exc:
            raise ActivityNotFound(f"{self.api.object_name} {activity_id} not found", status=404,
                                   body=exc.body) from exc
        if not isinstance(doc, dict):
            raise UnexpectedResponse(f"{self.api.object_name} response is not a JSON object")
        return Activity.from_api(doc, self.api)

    def get_account(self, account_id: str) -> dict[str, Any]:
        """The account object; AccountNotFound once the account is gone (revoked or deleted)."""
        try:
            doc = self._get_json(f"/accounts/{quote(account_id, safe='')}", {})
        except ArgyleNotFound as exc:
            raise AccountNotFound(f"account {account_id} not found", status=404, body=exc.body) from exc
        if not isinstance(doc, dict):
            raise UnexpectedResponse("account response is not a JSON object")
        return doc

    # --- webhook subscriptions ------------------------------------------------------------------

    def create_webhook(
        self,
        *,
        events: list[str],
        url: str,
        name: str,
        secret: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> WebhookSubscription:
        body: dict[str, Any] = {"events": events, "name": name, "url": url}
        if secret is not None:
            body["secret"] = secret
        if config:
            body["config"] = config
        doc = self._json("POST", "/webhooks", {}, body=body)
        return WebhookSubscription.model_validate(doc)

    def list_webhooks(
        self,
        *,
        ordering: str | None = None,
        from_created_at_date: str | None = None,
        to_created_at_date: str | None = None,
    ) -> list[WebhookSubscription]:
        """Every subscription, all pages; accepts `{"results", "next"}` or a bare array (docs' example)."""
        params = {
            k: v
            for k, v in {
                "limit": str(MAX_PAGE_LIMIT),
                "ordering": ordering,
                "from_created_at_date": from_created_at_date,
                "to_created_at_date": to_created_at_date,
            }.items()
            if v
        }
        found: list[WebhookSubscription] = []
        current: dict[str, str] = {}
        for _ in range(self.max_pages):
            doc = self._get_json("/webhooks", {**params, **current})
            results, next_link = self._page_parts(doc)
            found.extend(WebhookSubscription.model_validate(item) for item in results)
            next_cursor = self._cursor_from_next(next_link, _WEBHOOK_FILTERS) if next_link else None
            if next_cursor is None:
                return found
            if next_cursor == current:
                raise UnexpectedResponse("Argyle's next link repeats the current page (pagination loop)")
            current = next_cursor
        raise PageLimitExceeded(
            f"listing webhooks needs more than {self.max_pages} pages", next_cursor=current
        )

    def get_webhook(self, webhook_id: str) -> WebhookSubscription:
        try:
            doc = self._get_json(f"/webhooks/{quote(webhook_id, safe='')}", {})
        except ArgyleNotFound as exc:
            raise WebhookNotFound(f"webhook {webhook_id} not found", status=404, body=exc.body) from exc
        return WebhookSubscription.model_validate(doc)

    def delete_webhook(self, webhook_id: str) -> None:
        try:
            self._request("DELETE", f"/webhooks/{quote(webhook_id, safe='')}", {})
        except ArgyleNotFound as exc:
            raise WebhookNotFound(f"webhook {webhook_id} not found", status=404, body=exc.body) from exc

    # --- plumbing -------------------------------------------------------------------------------

    @staticmethod
    def _page_parts(doc: Any) -> tuple[list[dict[str, Any]], str | None]:
        if isinstance(doc, list):
            results, next_link = doc, None
        elif isinstance(doc, dict) and isinstance(doc.get("results"), list):
            results, next_link = doc["results"], doc.get("next")
        else:
            raise UnexpectedResponse("list response has no 'results' array")
        if not all(isinstance(item, dict) for item in results):
            raise UnexpectedResponse("list response has a result that is not an object")
        if next_link is not None and not isinstance(next_link, str):
            raise UnexpectedResponse("list response's 'next' is not a string")
        return results, next_link or None

    def _cursor_from_next(self, next_link: str, own_params: frozenset[str]) -> dict[str, str] | None:
        parts = urlsplit(next_link)
        foreign = bool(parts.netloc) and (parts.scheme.lower(), parts.netloc.lower()) != self._origin
        if foreign and self.on_foreign_next == "refuse":
            raise ForeignNextLink(f"next link points at another host ({parts.netloc}); not followed")
        # Otherwise ("rewrite") only its cursor parameters are used, against our own host.
        cursor = {k: v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in own_params}
        if not cursor:
            raise UnexpectedResponse("next link carries no cursor parameters")
        return cursor

    def _get_json(self, path: str, params: Mapping[str, str]) -> Any:
        return self._json("GET", path, params)

    def _json(self, method: str, path: str, params: Mapping[str, str], body: Any = None) -> Any:
        response = self._request(method, path, params, body=body)
        try:
            return parse_json(response.data)
        except (ValueError, RecursionError) as exc:
            raise UnexpectedResponse(
                f"{method} {path}: response is not JSON", status=response.status
            ) from exc

    def _headers(self, has_body: bool) -> dict[str, str]:
        source = self._credentials
        creds = source() if callable(source) else source
        headers = urllib3.make_headers(
            basic_auth=f"{creds.api_key_id}:{creds.api_key_secret}", user_agent=USER_AGENT
        )
        headers["Accept"] = "application/json"
        if has_body:
            headers["Content-Type"] = "application/json"
        return headers

    def _request(self, method: str, path: str, params: Mapping[str, str], body: Any = None) -> _Response:
        url = self.base_url + path + (("?" + urlencode(params)) if params else "")
        payload = None
        if body is not None:
            payload = json.dumps(body).encode("utf-8")
        # A POST is only retried when Argyle cannot have acted on it: 429, or no connection made.
        idempotent = method in ("GET", "DELETE", "HEAD")
        last_status: int | None = None
        retry_after: float | None = None
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                self.retries += 1
            if self._budget is not None:
                self._budget.acquire()  # may raise RateBudgetExhausted (an ArgyleUnavailable)
            self.calls += 1
            try:
                raw = self._pool.request(
                    method,
                    url,
                    body=payload,
                    headers=self._headers(payload is not None),
                    timeout=self.timeout,
                    retries=False,
                    redirect=False,
                )
            except urllib3.exceptions.HTTPError as exc:
                connect_failed = isinstance(exc, _NOT_SENT)
                if not (idempotent or connect_failed) or attempt == self.max_attempts:
                    raise ArgyleUnavailable(
                        f"{method} {path}: {type(exc).__name__} after {attempt} attempt(s)"
                    ) from exc
                self._wait(RetryWait(method, path, None, backoff_delay(
                    attempt, self.backoff_base, self.backoff_cap, self._rand), False, attempt))
                continue
            response = _Response(raw.status, raw.data, raw.headers)
            if 200 <= response.status < 300:
                return response
            last_status = response.status
            retryable = response.status == 429 or (response.status >= 500 and idempotent)
            if not retryable:
                self._raise_for(method, path, response)
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            if response.status == 429 and self._budget is not None:
                # Every invocation of the stack waits, not only this one.
                self._budget.slow_down(retry_after if retry_after is not None else backoff_delay(
                    attempt, self.backoff_base, self.backoff_cap, self._rand))
            if retry_after is not None and retry_after > self.max_retry_after:
                raise ArgyleUnavailable(
                    f"{method} {path}: HTTP {response.status}, Retry-After {retry_after:.0f}s is longer than "
                    f"{self.max_retry_after:.0f}s",
                    status=response.status,
                    retry_after=retry_after,
                )
            if attempt == self.max_attempts:
                break
            delay = (
                retry_after
                if retry_after is not None
                else backoff_delay(attempt, self.backoff_base, self.backoff_cap, self._rand)
            )
            self._wait(RetryWait(method, path, response.status, delay, retry_after is not None, attempt))
        raise ArgyleUnavailable(
            f"{method} {path}: HTTP {last_status} after {self.max_attempts} attempt(s)",
            status=last_status,
            retry_after=retry_after,
        )

    def _wait(self, wait: RetryWait) -> None:
        if self._on_retry is not None:
            self._on_retry(wait)
        self._sleep(wait.seconds)

    @staticmethod
    def _raise_for(method: str, path: str, response: _Response) -> None:
        try:
            body: Any = parse_json(response.data) if response.data else None
        except (ValueError, RecursionError):
            body = response.data[:200].decode("utf-8", errors="replace")
        detail = _error_message(body)
        status = response.status
        suffix = f": {detail}" if detail else ""
        if status == 401:
            raise ArgyleAuthError(
                f"{method} {path}: HTTP 401, Argyle rejected the API key id/secret (wrong keys, or keys of "
                f"the other environment: sandbox and production keys differ){suffix}",
                status=status,
                body=body,
            )
        if status == 403:
            raise ArgyleAuthError(
                f"{method} {path}: HTTP 403, these API keys may not do this{suffix}", status=status, body=body
            )
        if status == 404:
            raise ArgyleNotFound(f"{method} {path}: HTTP 404{suffix}", status=status, body=body)
        if status >= 500:  # a non-idempotent request's 5xx: not retried, Argyle may have acted
            raise ArgyleUnavailable(f"{method} {path}: HTTP {status}{suffix}", status=status, body=body)
        raise ArgyleClientError(f"{method} {path}: HTTP {status}{suffix}", status=status, body=body)
