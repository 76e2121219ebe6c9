"""Which tests execute each line: one run of the suite under coverage, with a context per test.

The map is cached in `.mutation/` and made again when any tracked Python file changes. Lines that
only subprocesses execute (the local stack's workers in the end-to-end tier) are not in the map, so
their mutants run only against the in-process tests that reach them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from coverage import CoverageData

SOURCES = ("layers/shared", "functions")


@dataclass
class CoverageMap:
    tests_by_line: dict[str, dict[int, list[str]]]  # file (repo-relative) -> line -> test node ids
    seconds_by_test: dict[str, float]
    digest: str = ""  # of the code and tests it was made from

    def tests_for(self, path: str, first: int, last: int) -> list[str]:
        lines = self.tests_by_line.get(path, {})
        found = {test for line in range(first, last + 1) for test in lines.get(line, [])}
        return sorted(found)

    def seconds_for(self, tests: list[str]) -> float:
        return sum(self.seconds_by_test.get(test, 1.0) for test in tests)

    def fastest_first(self, tests: list[str]) -> list[str]:
        """`tests` by their unmutated time, so that a mutant a quick test notices is killed quickly."""
        return sorted(tests, key=lambda test: (self.seconds_by_test.get(test, 1.0), test))


# The tool itself and its own tests: they run no line of the critical files, so changing them does
# not make the map wrong (and a new map costs the whole suite under coverage).
_NOT_MAPPED = ("mutation/", "tests/unit/test_mutation_tool.py", "bench/mutation_speed.py")


def tree_digest(repo: Path) -> str:
    """A digest of every tracked or new Python file but the tool's own: the map is only as good as
    the code it was made from."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "*.py"], cwd=repo,
                            capture_output=True, text=True, check=True).stdout.split()
    digest = hashlib.sha256()
    for name in sorted(n for n in listed if not n.startswith(_NOT_MAPPED)):
        path = repo / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def load_if_current(repo: Path, state: Path, tests: list[str]) -> CoverageMap | None:
    """The cached map if it was made from the code as it is now; None otherwise (nothing is built)."""
    cached = state / "coverage-map.json"
    digest = tree_digest(repo) + ":" + ",".join(tests)
    if not cached.exists():
        return None
    saved = json.loads(cached.read_text())
    return _from_json(saved, digest) if saved.get("digest") == digest else None


def load_or_build(repo: Path, state: Path, workers: int, tests: list[str], *, rebuild: bool = False) -> CoverageMap:
    cached = state / "coverage-map.json"
    digest = tree_digest(repo) + ":" + ",".join(tests)
    if cached.exists() and not rebuild:
        saved = json.loads(cached.read_text())
        if saved.get("digest") == digest:
            return _from_json(saved, digest)
        print("the code changed since the coverage map was made: making it again", flush=True)
    built = build(repo, state, workers, tests)
    built.digest = digest
    cached.write_text(json.dumps({"digest": digest, "tests_by_line": built.tests_by_line,
                                  "seconds_by_test": built.seconds_by_test}))
    return built


def _from_json(saved: dict, digest: str) -> CoverageMap:
    lines = {path: {int(line): tests for line, tests in by_line.items()}
             for path, by_line in saved["tests_by_line"].items()}
    return CoverageMap(lines, saved["seconds_by_test"], digest)


def build(repo: Path, state: Path, workers: int, tests: list[str]) -> CoverageMap:
    state.mkdir(parents=True, exist_ok=True)
    data_file = state / "coverage.sqlite"
    timings = state / "timings.json"
    for stale in state.glob("coverage.sqlite*"):
        stale.unlink()
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "mutation.timing_plugin",
               *(f"--cov={source}" for source in SOURCES), "--cov-context=test", "--cov-report=",
               "-n", str(workers), *tests]
    print("making the coverage map: the suite once under coverage, one context per test", flush=True)
    env = {**os.environ, "COVERAGE_FILE": str(data_file), "MUTATION_TIMINGS": str(timings)}
    result = subprocess.run(command, cwd=repo, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"mutate: the suite does not pass unmutated (pytest exit {result.returncode}); "
                         "fix it before measuring mutants")
    data = CoverageData(basename=str(data_file))
    data.read()
    tests_by_line: dict[str, dict[int, list[str]]] = {}
    for measured in data.measured_files():
        relative = os.path.relpath(measured, repo)
        by_line: dict[int, list[str]] = {}
        at_import: list[int] = []
        for line, contexts in data.contexts_by_lineno(measured).items():
            tests = sorted({context.rsplit("|", 1)[0] for context in contexts if context})
            if tests:
                by_line[line] = tests
            else:
                at_import.append(line)
        # A line run only when the module was imported (a constant, a compiled pattern) ran before
        # any test's context began; every test that runs the module's code depends on it.
        users = sorted({test for tests in by_line.values() for test in tests})
        for line in at_import:
            by_line[line] = users
        tests_by_line[relative] = by_line
    return CoverageMap(tests_by_line, json.loads(timings.read_text()) if timings.exists() else {})
