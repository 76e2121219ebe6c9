"""Which tests execute each line: one run of the suite under coverage, with a context per test.

The map is cached in `.mutation/` and made again when any tracked Python file changes; when only
test modules (`tests/**/test_*.py`) changed, only those modules run under coverage and their tests'
entries are replaced, so a test written for a survivor costs its own minutes, not the suite's. Lines that
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

    def fastest_first(self, tests: list[str], near: str | None = None) -> list[str]:
        """`tests` by their unmutated time, so that a mutant a quick test notices is killed quickly.
        With `near` (the mutated file), the tests of modules named after it come first: a line run
        at import (a constant, a dataclass field) maps to every test that uses its module, hundreds,
        and the ones written for that module are the likeliest to notice it changing."""
        stem = Path(near).stem if near else None

        def key(test: str) -> tuple[bool, float, str]:
            elsewhere = stem is None or stem not in Path(test.split("::", 1)[0]).name
            return (elsewhere, self.seconds_by_test.get(test, 1.0), test)

        return sorted(tests, key=key)


# The tool itself and its own tests: they run no line of the critical files, so changing them does
# not make the map wrong (and a new map costs the whole suite under coverage).
_NOT_MAPPED = ("mutation/", "tests/unit/test_mutation_tool.py", "bench/mutation_speed.py")


def _mapped_names(repo: Path) -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "*.py"], cwd=repo,
                            capture_output=True, text=True, check=True).stdout.split()
    return sorted(n for n in listed if not n.startswith(_NOT_MAPPED) and (repo / n).is_file())


def tree_digest(repo: Path) -> str:
    """A digest of every tracked or new Python file but the tool's own: the map is only as good as
    the code it was made from."""
    digest = hashlib.sha256()
    for name in _mapped_names(repo):
        digest.update(name.encode() + b"\0" + (repo / name).read_bytes())
    return digest.hexdigest()


def file_digests(repo: Path) -> dict[str, str]:
    """Each mapped file's own digest: what tells a change of tests alone from a change of code."""
    return {name: hashlib.sha256((repo / name).read_bytes()).hexdigest() for name in _mapped_names(repo)}


def is_test_module(name: str) -> bool:
    """A module of tests alone: changing it changes which lines its own tests run, nothing else's
    (a conftest or a helper module may change every test's, so it is code here)."""
    return name.startswith("tests/") and Path(name).name.startswith("test_")


def changed_test_modules(before: dict[str, str], now: dict[str, str]) -> list[str] | None:
    """The test modules added, changed or removed since `before`; None when anything else changed."""
    changed = sorted(name for name in before.keys() | now.keys() if before.get(name) != now.get(name))
    return changed if all(is_test_module(name) for name in changed) else None


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
    files = file_digests(repo)
    built: CoverageMap | None = None
    if cached.exists() and not rebuild:
        saved = json.loads(cached.read_text())
        if saved.get("digest") == digest:
            return _from_json(saved, digest)
        modules = changed_test_modules(saved.get("files", {}), files) if saved.get("files") and not tests else None
        if modules:
            print(f"{len(modules)} test modules changed since the coverage map was made: mapping them again",
                  flush=True)
            part = build(repo, state, workers, [m for m in modules if (repo / m).is_file()], part=True)
            built = merged(_from_json(saved, saved["digest"]), part, modules)
        else:
            print("the code changed since the coverage map was made: making it again", flush=True)
    if built is None:
        built = build(repo, state, workers, tests)
    built.digest = digest
    cached.write_text(json.dumps({"digest": digest, "files": files, "tests_by_line": built.tests_by_line,
                                  "seconds_by_test": built.seconds_by_test}))
    return built


def merged(old: CoverageMap, part: CoverageMap, modules: list[str]) -> CoverageMap:
    """`old` with every test of `modules` replaced by what `part` (those modules, run again) measured."""
    def kept(test: str) -> bool:
        return test.split("::", 1)[0] not in modules

    lines: dict[str, dict[int, list[str]]] = {}
    for path in old.tests_by_line.keys() | part.tests_by_line.keys():
        by_line: dict[int, list[str]] = {}
        before, after = old.tests_by_line.get(path, {}), part.tests_by_line.get(path, {})
        for line in before.keys() | after.keys():
            tests = sorted({t for t in before.get(line, []) if kept(t)} | set(after.get(line, [])))
            if tests:
                by_line[line] = tests
        lines[path] = by_line
    seconds = {t: s for t, s in old.seconds_by_test.items() if kept(t)} | part.seconds_by_test
    return CoverageMap(lines, seconds)


def _from_json(saved: dict, digest: str) -> CoverageMap:
    lines = {path: {int(line): tests for line, tests in by_line.items()}
             for path, by_line in saved["tests_by_line"].items()}
    return CoverageMap(lines, saved["seconds_by_test"], digest)


def build(repo: Path, state: Path, workers: int, tests: list[str], *, part: bool = False) -> CoverageMap:
    """The suite (or `tests`) once under coverage. `part`: only some test modules, which may now hold
    no test at all (pytest's exit code 5)."""
    state.mkdir(parents=True, exist_ok=True)
    name = "coverage-part" if part else "coverage"
    data_file = state / f"{name}.sqlite"
    timings = state / f"timings-{name}.json" if part else state / "timings.json"
    for stale in (*state.glob(f"{name}.sqlite*"), timings):
        if stale.exists():
            stale.unlink()
    if part and not tests:
        return CoverageMap({}, {})
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "mutation.timing_plugin",
               *(f"--cov={source}" for source in SOURCES), "--cov-context=test", "--cov-report=",
               "-n", str(workers), *tests]
    print(f"making the coverage map: {'those modules' if part else 'the suite'} once under coverage, "
          "one context per test", flush=True)
    env = {**os.environ, "COVERAGE_FILE": str(data_file), "MUTATION_TIMINGS": str(timings)}
    result = subprocess.run(command, cwd=repo, env=env, check=False)
    if result.returncode != 0 and not (part and result.returncode == 5):
        raise SystemExit(f"mutate: the suite does not pass unmutated (pytest exit {result.returncode}); "
                         "fix it before measuring mutants")
    if not data_file.exists():  # no test ran
        return CoverageMap({}, json.loads(timings.read_text()) if timings.exists() else {})
    data = CoverageData(basename=str(data_file))
    data.read()
    every_test = list(json.loads(timings.read_text())) if timings.exists() else []
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
        # any test's context began; every test that runs the module's code depends on it, and so do
        # the tests written for the module, which may run none of its lines: a dataclass's field
        # options shape its generated `__eq__` and `__repr__`, whose code has no line in the file.
        stem = Path(relative).stem
        users = {test for tests in by_line.values() for test in tests}
        users |= {test for test in every_test if stem in Path(test.split("::", 1)[0]).name}
        for line in at_import:
            by_line[line] = sorted(users)
        tests_by_line[relative] = by_line
    return CoverageMap(tests_by_line, json.loads(timings.read_text()) if timings.exists() else {})
