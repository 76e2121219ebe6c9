"""How the sandbox behaves when nothing is wrong (unlike faults, `Faults.reset()` leaves these
alone): set by SandboxServer(...), `--pagination`, or POST /_sandbox/settings at run time."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from argyle_sandbox.pagination import PaginationMode
from argyle_sandbox.state import IncludeResourceRule


class SandboxSettings(BaseModel):
    # Unknown names and bad values are errors, also on assignment: a typo is never ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    pagination: PaginationMode = "offset"
    # A subscription asking include_resource for more than one event: "refuse" answers 400 (the
    # rule Argyle states); "drop" answers 201 without it (what Argyle's own create example shows).
    include_resource_rule: IncludeResourceRule = "refuse"

    def updated(self, changes: dict[str, Any]) -> SandboxSettings:
        """A validated copy with `changes` applied (pydantic's ValidationError names the field)."""
        return SandboxSettings.model_validate({**self.model_dump(), **changes})
