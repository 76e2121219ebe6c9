"""Regenerate docs/change-events.schema.json from the change events' models
(argyle_pipeline.sync.change_events); a unit test keeps the two equal."""

from __future__ import annotations

import json
from pathlib import Path

from argyle_pipeline.sync.change_events import json_schema

TARGET = Path(__file__).resolve().parents[1] / "docs" / "change-events.schema.json"


def main() -> None:
    TARGET.write_text(json.dumps(json_schema(), indent=2) + "\n")
    print(f"wrote {TARGET.relative_to(TARGET.parents[1])}")


if __name__ == "__main__":
    main()
