"""Reading the project's secrets from Secrets Manager (through Powertools Parameters, cached).

The webhook secret's value is either a plain string or a JSON object
`{"current": "...", "previous": "..."}`: during a rotation both are accepted.
The Argyle API credentials are a JSON object `{"api_key_id": "...", "api_key_secret": "..."}`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Powertools caches each value for max_age seconds, so a warm function reads Secrets Manager
# about once a few minutes, not once a request, yet picks up a rotation without a redeploy.
DEFAULT_MAX_AGE_SECONDS = 300


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


def parse_webhook_secrets(value: str) -> tuple[str, ...]:
    """The secrets to accept, current first; empty strings are dropped (they never verify)."""
    text = value.strip()
    if text.startswith("{"):
        doc = _json_object(text, "webhook secret")
        candidates = [doc.get("current"), doc.get("previous")]
        return tuple(c for c in candidates if isinstance(c, str) and c)
    return (value,) if value else ()


def webhook_secrets(secret_id: str, max_age: int = DEFAULT_MAX_AGE_SECONDS, *, force: bool = False) -> tuple[str, ...]:
    """The accepted secrets, from Powertools' cache unless `force` (then from Secrets Manager)."""
    if not secret_id:
        return ()
    return parse_webhook_secrets(_read(secret_id, max_age, force))


def rotated_webhook_secret_value(new_secret: str, old_value: str | None) -> str:
    """The value to store when `new_secret` replaces the current one (which becomes previous)."""
    # The old current secret, if the old value holds one (an empty or cleared value holds none).
    previous = (parse_webhook_secrets(old_value) or ("",))[0] if old_value else ""
    return json.dumps({"current": new_secret, "previous": previous})


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
