"""JSON text in which Decimal numbers keep every digit (the standard encoder would need float).

Used to show stored activities (the CLI) and by tests that compare them with Argyle's JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any


def dumps_exact(value: Any, *, sort_keys: bool = False) -> str:
    """Compact JSON; Decimal as a number literal with its exact digits, bytes as UTF-8 text."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} has no JSON form")
        # An exponent form ("1E+2") prints as the integer it is; every other value as its digits.
        exponent = value.as_tuple().exponent
        return str(int(value)) if isinstance(exponent, int) and exponent > 0 else str(value)
    if isinstance(value, Mapping):
        items = sorted(value.items()) if sort_keys else value.items()
        return "{" + ",".join(json.dumps(str(k)) + ":" + dumps_exact(v, sort_keys=sort_keys)
                              for k, v in items) + "}"
    if isinstance(value, list | tuple | set | frozenset):
        return "[" + ",".join(dumps_exact(v, sort_keys=sort_keys) for v in value) + "]"
    if isinstance(value, bytes | bytearray):
        return json.dumps(bytes(value).decode("utf-8", errors="replace"))
    return json.dumps(value)
