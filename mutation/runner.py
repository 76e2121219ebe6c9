"""Runs each mutant against the tests that execute its lines, in copies of the repository.

Each worker owns one copy (`.mutation/work-N`): it writes the mutant into its copy, runs pytest on
the covering tests (stopping at the first failure), and puts the original back. Results are saved
after every mutant, keyed by the file's content, so an interrupted run resumes where it stopped and
an edited file is measured again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mutation.coverage_map import CoverageMap
from mutation.mutants import Mutant

CAUGHT = ("killed", "timeout")
PYTHONPATH_DIRS = ("layers/shared", "functions/receiver", "functions/sync", "functions/reconcile", ".")


@dataclass
class Result:
    status: str  # killed | timeout | survived | uncovered | error
    seconds: float
    tests: int
    map_digest: str = ""  # the coverage map (code and tests) a survivor was measured with


class Results:
    """`.mutation/results.json`: mutant key -> result, written atomically after each mutant."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.saved: dict[str, dict] = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str) -> Result | None:
        found = self.saved.get(key)
        return Result(**found) if found else None

    def put(self, key: str, result: Result) -> None:
        with self._lock:
            self.saved[key] = result.__dict__
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps(self.saved, indent=0, sort_keys=True))
            temporary.replace(self.path)


def result_key(mutant: Mutant, file_digest: str) -> str:
    return f"{file_digest[:16]}:{mutant.key}"


def make_copy(repo: Path, destination: Path) -> Path:
    """The repository's tracked and new files (not its virtual environments) in `destination`."""
    if destination.exists():
        shutil.rmtree(destination)
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=repo,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    for name in listed:
        source = repo / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


class Worker:
    def __init__(self, repo: Path, copy: Path, python: str) -> None:
        self.repo = repo
        self.copy = copy
        self.python = python
        # Subprocesses the tests start must import the copy, not the editable install of `repo`.
        self.env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1",
                    "PYTHONPATH": os.pathsep.join(str(copy / part) for part in PYTHONPATH_DIRS)}
        for name in ("SAM_CLI", "CHECKOV"):
            self.env.pop(name, None)

    def run(self, mutant: Mutant, tests: list[str], timeout: float) -> Result:
        target = self.copy / mutant.path
        original = target.read_bytes()
        target.write_bytes(mutant.apply(original))
        args_file = self.copy / ".mutation-tests.txt"
        args_file.write_text("\n".join(tests) + "\n")
        started = time.monotonic()
        try:
            completed = subprocess.run(
                [self.python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header",
                 "-o", "addopts=", f"@{args_file}"],
                cwd=self.copy, env=self.env, capture_output=True, timeout=timeout, check=False)
            code = completed.returncode
            # 2: collection failed (the mutant broke an import): the tests noticed it as surely as a failure.
            status = {0: "survived", 1: "killed", 2: "killed"}.get(code, "error")
            if status == "error":
                output = completed.stdout[-4000:] + completed.stderr[-4000:]
                (self.copy / ".mutation-last-error.txt").write_bytes(output)
        except subprocess.TimeoutExpired:
            status = "timeout"
        finally:
            target.write_bytes(original)
        return Result(status, round(time.monotonic() - started, 2), len(tests))


def run_all(repo: Path, state: Path, mutants: list[tuple[Mutant, str]], coverage: CoverageMap, results: Results,
            *, workers: int, deadline: float, on_result: Callable[[Mutant, Result], None]) -> int:
    """Runs the mutants not yet measured until `deadline` (a monotonic time); returns how many were left."""
    def measured(mutant: Mutant, digest: str) -> bool:
        # A caught mutant stays caught; one that was not is measured again once the tests changed.
        found = results.get(result_key(mutant, digest))
        return found is not None and (found.status in CAUGHT or found.map_digest == coverage.digest)

    pending = [(m, digest) for m, digest in mutants if not measured(m, digest)]
    for mutant, digest in list(pending):
        if not coverage.tests_for(mutant.path, mutant.line, mutant.end_line):
            result = Result("uncovered", 0.0, 0, coverage.digest)
            results.put(result_key(mutant, digest), result)
            on_result(mutant, result)
            pending.remove((mutant, digest))
    copies = [make_copy(repo, state / f"work-{index}") for index in range(workers)] if pending else []
    free = [Worker(repo, copy, sys.executable) for copy in copies]
    lock = threading.Lock()
    left = 0

    def measure(item: tuple[Mutant, str]) -> None:
        nonlocal left
        mutant, digest = item
        if time.monotonic() > deadline:
            with lock:
                left += 1
            return
        with lock:
            worker = free.pop()
        try:
            tests = coverage.tests_for(mutant.path, mutant.line, mutant.end_line)
            # Ten times what the tests took unmutated, and never under a minute: a slower run is a loop.
            timeout = max(60.0, 10 * coverage.seconds_for(tests))
            result = worker.run(mutant, tests, timeout)
            result.map_digest = coverage.digest
            results.put(result_key(mutant, digest), result)
            on_result(mutant, result)
        finally:
            with lock:
                free.append(worker)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(measure, pending))
    return left
