"""How /v1 lists page: Django REST framework's LimitOffsetPagination (the default: v1's
`{count, next, previous, results}` is its shape) or a keyset cursor (what v2 documents).

v2's keyset cursor also carries the listing's filters (API-NOTES.md: follow `next` as given), so
its `next` link holds only `cursor` and `limit`; a request that sends the cursor with other
filters than the cursor's is refused (400), as a keyset cursor is only valid for its own listing.

An offset is a position, counted afresh at every request: a change at Argyle before the offset,
between two page requests, shifts what the following page holds (a removal skips a live item, an
addition repeats one). A keyset cursor names the last item served, so changes move nothing.
This module reads and builds the query parameters; SandboxState does the listing.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Literal

from argyle_sandbox.api_errors import field_error
from argyle_sandbox.state import SortKey

PaginationMode = Literal["offset", "keyset"]
PAGINATION_MODES: tuple[PaginationMode, ...] = ("offset", "keyset")

DEFAULT_LIMIT = 10
MAX_LIMIT = 200


def _integer(query: dict[str, str], name: str) -> int | None:
    text = query.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise field_error(name, "A valid integer is required.") from None


def parse_limit(query: dict[str, str]) -> int:
    # DRF itself falls back to the default on a bad limit; a 400 shows a client bug at once.
    limit = _integer(query, "limit")
    if limit is None:
        return DEFAULT_LIMIT
    if limit < 1:
        raise field_error("limit", "Ensure this value is greater than or equal to 1.")
    if limit > MAX_LIMIT:
        raise field_error("limit", f"Ensure this value is less than or equal to {MAX_LIMIT}.")
    return limit


def parse_offset(query: dict[str, str]) -> int:
    offset = _integer(query, "offset")
    if offset is None:
        return 0
    if offset < 0:
        raise field_error("offset", "Ensure this value is greater than or equal to 0.")
    return offset


def offset_links(
    query: dict[str, str], offset: int, limit: int, count: int
) -> tuple[dict[str, str] | None, dict[str, str] | None]:
    """The queries of DRF's `next` and `previous` links: the request's own query with `limit` set
    and `offset` moved by a page (`previous` drops `offset` once it reaches the start), sorted as
    DRF's replace_query_param sorts them. None where DRF's link is null."""
    base = dict(query, limit=str(limit))
    next_query = None
    if offset + limit < count:
        next_query = dict(sorted({**base, "offset": str(offset + limit)}.items()))
    previous_query = None
    if offset > 0:
        back = {k: v for k, v in base.items() if k != "offset"}
        if offset - limit > 0:
            back["offset"] = str(offset - limit)
        previous_query = dict(sorted(back.items()))
    return next_query, previous_query


def encode_cursor(key: SortKey, filters: dict[str, str] | None = None) -> str:
    """The last key served; with `filters`, the listing's filters too (v2's cursor)."""
    value: list[object] = [key[0], key[1]]
    if filters is not None:
        value.append(dict(sorted(filters.items())))
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[SortKey, dict[str, str] | None]:
    """(last key served, the filters it carries or None)."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = json.loads(raw)
        if (isinstance(value, list) and len(value) in (2, 3) and isinstance(value[0], int)
                and isinstance(value[1], str)):
            filters = value[2] if len(value) == 3 else None
            if filters is None or (isinstance(filters, dict)
                                   and all(isinstance(v, str) for v in filters.values())):
                return (value[0], value[1]), filters
    except (binascii.Error, ValueError):
        pass
    raise field_error("cursor", "Invalid cursor.")
