"""Mutants a person checked and found equivalent: no behaviour a user could notice changes.

They are listed with their reasons in docs/testing.md, under "Equivalent mutants", one bullet per
mutant in the form the tool prints a survivor: `` - `file:line: original -> mutant`: why ``. The
tool reads that list: an equivalent mutant is not run and not counted in its file's score, and an
entry that no longer matches a mutant (the code moved or changed) is reported, so that its reason
is checked again rather than carried over.
"""

from __future__ import annotations

import re
from pathlib import Path

HEADING = "## Equivalent mutants"
_ENTRY = re.compile(r"^- `([^`]+?:\d+: .+? -> .+?)`:?\s*(.*)$")


def load(document: Path) -> dict[str, str]:
    """Each listed mutant (as `Mutant.describe()` prints it) -> its reason."""
    if not document.exists():
        return {}
    found: dict[str, str] = {}
    inside = False
    current: str | None = None
    for line in document.read_text().splitlines():
        if line.startswith("## "):
            inside = line.strip() == HEADING
            current = None
            continue
        if not inside:
            continue
        entry = _ENTRY.match(line)
        if entry:
            current = entry.group(1)
            found[current] = entry.group(2).strip()
        elif current and line.startswith("  ") and line.strip():
            found[current] = (found[current] + " " + line.strip()).strip()  # the reason goes on
        else:
            current = None
    return found
