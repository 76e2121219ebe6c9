"""Reading the project's secrets from Secrets Manager (through Powertools Parameters, cached).

The webhook secret's value is either a plain string or a JSON object
`{"current": "...", "previous": "...", "previous_expires_at": "2026-01-31T12:00:00Z"}`: during a
rotation both secrets are accepted, `previous` only until its expiry (a `previous` without a
readable expiry is never accepted), so a rotation after a leak ends the leaked secret's life.
The Argyle API credentials are a JSON object `{"api_key_id": "...", "api_key_secret": "..."}`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

# Powertools caches each value for max_age seconds, so a warm function reads Secrets Manager
# about once a few minutes, not once a request, yet picks up a rotation without a redeploy.
DEFAULT_MAX_AGE_SECONDS = 300
# How long a rotated-out webhook secret stays accepted: Argyle's deliveries signed before the switch
# still arrive (Argyle publishes no retry schedule), and the reconciler repairs what is refused later.
DEFAULT_PREVIOUS_VALID_SECONDS = 24 * 3600


class SecretUnavailable(Exception):
    """Secrets Manager could not be read (a transient failure: answer 5xx so the caller retries)."""


class SecretMalformed(Exception):
    """The secret exists but its value does not have the documented shape."""


@dataclass(frozen=True)
class ArgyleCredentials:
    api_key_id: str
    api_key_secret: str

    def __repr__(self) -> str:  # never print the secret half
        return f"ArgyleCredentials(api_key_id={self.api_key_id!r}, api_key_secret='***')"


def _read(secret_id: str, max_age: int, force: bool = False) -> str:
    # Imported here so that merely importing this module costs nothing on a cold start.
    from aws_lambda_powertools.utilities import parameters

    try:
        value = parameters.get_secret(secret_id, max_age=max_age, force_fetch=force)
    except parameters.exceptions.GetParameterError as exc:
        raise SecretUnavailable(f"cannot read secret {secret_id}: {type(exc.__cause__).__name__}") from exc
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    return str(value)


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise SecretMalformed(f"{what} is not valid JSON") from exc
    if not isinstance(doc, dict):
        raise SecretMalformed(f"{what} must be a JSON object")
    return doc


@dataclass(frozen=True)
class WebhookSecretValue:
    """The webhook secret's value, parsed. `previous_expires_at` is epoch seconds; None (absent or
    unreadable) means `previous` is not accepted at all: fail closed."""

    current: str
    previous: str = ""
    previous_expires_at: float | None = None

    def accepted(self, now: float) -> tuple[str, ...]:
        """The secrets that verify at `now`, current first; empty strings never verify."""
        previous_valid = self.previous_expires_at is not None and now < self.previous_expires_at
        return tuple(s for s in (self.current, self.previous if previous_valid else "") if s)


def _expiry(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


@lru_cache(maxsize=8)  # the receiver parses the cached value on every request; it changes rarely
def parse_webhook_value(value: str) -> WebhookSecretValue:
    text = value.strip()
    if not text.startswith("{"):
        return WebhookSecretValue(current=value)
    doc = _json_object(text, "webhook secret")
    current, previous = doc.get("current"), doc.get("previous")
    return WebhookSecretValue(current=current if isinstance(current, str) else "",
                              previous=previous if isinstance(previous, str) else "",
                              previous_expires_at=_expiry(doc.get("previous_expires_at")))


def parse_webhook_secrets(value: str, now: float | None = None) -> tuple[str, ...]:
    """The secrets to accept at `now` (default: the current time), current first."""
    return parse_webhook_value(value).accepted(time.time() if now is None else now)


def webhook_secrets(secret_id: str, max_age: int = DEFAULT_MAX_AGE_SECONDS, *, force: bool = False) -> tuple[str, ...]:
    """The accepted secrets, from Powertools' cache unless `force` (then from Secrets Manager).
    An expired `previous` is dropped at each call, however long the value has been cached."""
    if not secret_id:
        return ()
    return parse_webhook_secrets(_read(secret_id, max_age, force))


def rotated_webhook_secret_value(new_secret: str, old_value: str | None, *,
                                 previous_valid_seconds: float = DEFAULT_PREVIOUS_VALID_SECONDS,
                                 now: float | None = None) -> str:
    """The value to store when `new_secret` replaces the current one. The old current secret stays
    accepted as `previous` for `previous_valid_seconds`; 0 revokes it at once (after a leak)."""
    # The old current secret, if the old value holds one (an empty or cleared value holds none).
    old_current = parse_webhook_value(old_value).current if old_value else ""
    if previous_valid_seconds <= 0 or not old_current:
        return json.dumps({"current": new_secret, "previous": ""})
    expires = datetime.fromtimestamp((time.time() if now is None else now) + previous_valid_seconds, UTC)
    return json.dumps({"current": new_secret, "previous": old_current,
                       "previous_expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ")})


def parse_argyle_credentials(value: str) -> ArgyleCredentials:
    doc = _json_object(value, "Argyle credentials secret")
    key_id, key_secret = doc.get("api_key_id"), doc.get("api_key_secret")
    if not (isinstance(key_id, str) and key_id and isinstance(key_secret, str) and key_secret):
        raise SecretMalformed("Argyle credentials secret needs non-empty api_key_id and api_key_secret")
    return ArgyleCredentials(key_id, key_secret)


def argyle_credentials(secret_id: str, max_age: int = DEFAULT_MAX_AGE_SECONDS, *,
                       force: bool = False) -> ArgyleCredentials:
    return parse_argyle_credentials(_read(secret_id, max_age, force))


class RefreshLimiter:
    """Allows a forced re-read of a secret at most once per `interval` seconds.

    A signature that fails against the cached secrets may be signed with a secret rotated since the
    cache was filled; one re-read settles it. The limit keeps a flood of forged requests from
    turning into a flood of Secrets Manager calls.
    """

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: float | None = None

    def allow(self) -> bool:
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        return True
