"""JSON text in which Decimal numbers keep every digit (the standard encoder would need float).

Used to show stored activities (the CLI) and by tests that compare them with Argyle's JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any


def dumps_exact(value: Any, *, sort_keys: bool = False, indent: int | None = None) -> str:
    """JSON; Decimal as a number literal with its exact digits, bytes as UTF-8 text. Compact
    unless `indent` is given."""
    return _render(value, sort_keys, indent, 0)


def _render(value: Any, sort_keys: bool, indent: int | None, level: int) -> str:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} has no JSON form")
        # An exponent form ("1E+2") prints as the integer it is; every other value as its digits.
        exponent = value.as_tuple().exponent
        return str(int(value)) if isinstance(exponent, int) and exponent > 0 else str(value)
    if isinstance(value, Mapping):
        items = sorted(value.items()) if sort_keys else list(value.items())
        parts = [json.dumps(str(k)) + (": " if indent is not None else ":")
                 + _render(v, sort_keys, indent, level + 1) for k, v in items]
        return _join("{", parts, "}", indent, level)
    if isinstance(value, list | tuple | set | frozenset):
        return _join("[", [_render(v, sort_keys, indent, level + 1) for v in value], "]", indent, level)
    if isinstance(value, bytes | bytearray):
        return json.dumps(bytes(value).decode("utf-8", errors="replace"))
    return json.dumps(value)


def _join(start: str, parts: list[str], end: str, indent: int | None, level: int) -> str:
    if indent is None or not parts:
        return start + ",".join(parts) + end
    inner = "\n" + " " * (indent * (level + 1))
    return start + inner + ("," + inner).join(parts) + "\n" + " " * (indent * level) + end
