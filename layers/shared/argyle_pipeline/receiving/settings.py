"""Settings from environment variables, read inside a handler call and cached.

Plain dataclasses, not pydantic: the receiver imports this on its cold path.
Secrets are never environment values: only the ids of the Secrets Manager secrets are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache


def _flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


@dataclass(frozen=True)
class ReceiverSettings:
    queue_url: str
    webhook_secret_id: str
    secret_max_age: int
    max_message_bytes: int
    verify_source_ip: bool
    allowed_source_ips: frozenset[str] | None


@cache
def receiver_settings() -> ReceiverSettings:
    from argyle_pipeline.aws.event_queue import DEFAULT_MAX_MESSAGE_BYTES
    from argyle_pipeline.receiving.webhook_intake import ARGYLE_WEBHOOK_IPS

    verify_ip = _flag("VERIFY_SOURCE_IP")
    extra = os.environ.get("ALLOWED_SOURCE_IPS", "")
    ips = frozenset(ip.strip() for ip in extra.split(",") if ip.strip()) or ARGYLE_WEBHOOK_IPS
    return ReceiverSettings(
        queue_url=os.environ["EVENTS_QUEUE_URL"],
        webhook_secret_id=os.environ.get("WEBHOOK_SECRET_ID", ""),
        secret_max_age=_int("SECRET_MAX_AGE_SECONDS", 300),
        max_message_bytes=_int("MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES),
        verify_source_ip=verify_ip,
        allowed_source_ips=ips if verify_ip else None,
    )
