"""Argyle webhook signatures: hex HMAC-SHA512 of the raw body, keyed by the subscription secret.

The body is digested exactly as received; parsing and re-rendering it first would change the bytes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

SIGNATURE_HEADER = "x-argyle-signature"


class InvalidSignature(Exception):
    """The request is not signed by any configured secret. `reason` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sign(body: bytes, secret: str) -> str:
    """The `X-Argyle-Signature` value Argyle sends for `body`; shared by tests and tools."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha512).hexdigest()


def verify(body: bytes, signature: str | None, secrets: Iterable[str]) -> None:
    """Raise InvalidSignature unless `signature` is `body` signed by one of `secrets`.

    Fails closed: no header, or no usable secret, is a rejection. Every secret is tried with a
    constant-time comparison so that rotation (current and previous secret) needs no downtime.
    """
    usable = [s for s in secrets if s]
    if not usable:
        raise InvalidSignature("no_secret_configured")
    if not signature:
        raise InvalidSignature("missing_signature")
    presented = signature.strip().lower().encode("ascii", errors="replace")
    matched = False
    for secret in usable:
        # No early exit: the time taken does not tell which secret matched.
        matched |= hmac.compare_digest(sign(body, secret).encode("ascii"), presented)
    if not matched:
        raise InvalidSignature("signature_mismatch")
