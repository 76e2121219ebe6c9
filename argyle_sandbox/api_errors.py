"""Errors the sandbox answers with, shaped as Django REST framework shapes them (Argyle's v1 API
is built on it): `{"detail": "..."}` for auth, 404 and the like, `{"field": ["message"]}` when a
parameter is invalid."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def field_error(name: str, message: str) -> ApiError:
    return ApiError(400, {name: [message]})
