"""A pytest plugin that writes each test's duration (setup + call + teardown) to MUTATION_TIMINGS."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Any

_durations: defaultdict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report: Any) -> None:
    _durations[report.nodeid] += report.duration


def pytest_sessionfinish(session: Any) -> None:
    target = os.environ.get("MUTATION_TIMINGS")
    if target and not hasattr(session.config, "workerinput"):  # xdist workers report to the controller
        with open(target, "w", encoding="utf-8") as out:
            json.dump(dict(_durations), out)
