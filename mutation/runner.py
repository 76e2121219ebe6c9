"""Runs each mutant against the tests that execute its lines, in copies of the repository.

Each worker owns one copy (`.mutation/work-N`): it writes the mutant into its copy, runs pytest on
the covering tests, fastest first, stopping at the first failure, and puts the original back. By
default pytest runs in a child forked from the worker's fork server (`fork_server.py`), which has
imported the heavy third-party modules once; `Worker` (the `--no-fork` fallback) starts a fresh
`python -m pytest` per mutant. Results are saved after every mutant, keyed by the file's content, so
an interrupted run resumes where it stopped and an edited file is measured again.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
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
# A mutant its fastest tests missed within `--budget` seconds, not yet run against the slower ones:
# not caught (the score is a lower bound) until a run with a larger budget, or none, runs them.
UNSETTLED = "unsettled"
FORK_SERVER = Path(__file__).with_name("fork_server.py")
SERVER_START_SECONDS = 300.0  # importing moto, boto3 and hypothesis on a busy machine
# Seconds each mutant costs before its first test runs (docs/testing.md: measured on 20 mutants).
FORK_OVERHEAD_SECONDS = 0.5
PROCESS_OVERHEAD_SECONDS = 3.0
# A mutant that makes a loop endless costs this much at least. A forked child starts in under a
# second, and its tests' times in the map were taken under coverage (slower than these runs).
TIMEOUT_FLOOR_SECONDS = 20.0
TIMEOUT_FACTOR = 3.0
PYTEST_ARGS = ("-x", "-q", "-p", "no:cacheprovider", "--no-header", "-o", "addopts=")
PYTHONPATH_DIRS = ("layers/shared", "functions/receiver", "functions/sync", "functions/reconcile", ".")


@dataclass
class Result:
    status: str  # killed | timeout | survived | unsettled | uncovered | error
    seconds: float
    tests: int
    map_digest: str = ""  # the coverage map (code and tests) a survivor was measured with
    budget: float | None = None  # an unsettled mutant's budget (seconds of its fastest tests)


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


def collection_failed(output: bytes) -> bool:
    """pytest could not import a test module: with `-x` it then stops with "found no collectors"
    (exit code 4) rather than 2, but the cause is the same, a mutant that breaks an import."""
    return b"ERROR collecting" in output


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
            code, output = self.pytest([*PYTEST_ARGS, f"@{args_file}"], timeout)
        finally:
            target.write_bytes(original)
        # 2: collection failed (the mutant broke an import): the tests noticed it as surely as a failure.
        status = "timeout" if code is None else {0: "survived", 1: "killed", 2: "killed"}.get(code, "error")
        if status == "error" and collection_failed(output):
            status = "killed"  # 4 ("found no collectors"): the test module itself failed to import
        if status == "error":
            (self.copy / ".mutation-last-error.txt").write_bytes(output)
        return Result(status, round(time.monotonic() - started, 2), len(tests))

    def pytest(self, args: list[str], timeout: float) -> tuple[int | None, bytes]:
        """pytest's exit code (None: out of time) and the end of its output."""
        try:
            completed = subprocess.run([self.python, "-m", "pytest", *args], cwd=self.copy, env=self.env,
                                       capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return None, b""
        return completed.returncode, completed.stdout[-4000:] + completed.stderr[-4000:]

    def close(self) -> None:
        """Nothing to stop: each run's process ended with it."""


class ForkServerError(RuntimeError):
    pass


class ForkWorker(Worker):
    """Runs pytest in a child forked from this worker's fork server, started at its first mutant."""

    def __init__(self, repo: Path, copy: Path, python: str, preload: list[str] | None = None) -> None:
        super().__init__(repo, copy, python)
        self.preload = preload  # None: the server's own list of heavy modules
        self.server: subprocess.Popen[bytes] | None = None

    def pytest(self, args: list[str], timeout: float) -> tuple[int | None, bytes]:
        output = self.copy / ".mutation-output.txt"
        try:
            server = self.server or self._start()
            self._send(server, {"args": args, "timeout": timeout, "output": str(output)})
            # The server enforces the timeout; the margin only covers a server that stopped answering.
            code = self._receive(server, timeout + 60)["code"]
        except ForkServerError as failure:
            self.close()  # the next mutant starts a new server
            return -1, str(failure).encode() + b"\n" + self._server_log()
        found = output.read_bytes() if output.exists() else b""
        return code, found[-8000:]

    def _start(self) -> subprocess.Popen[bytes]:
        command = [self.python, str(FORK_SERVER), "--copy", str(self.copy)]
        if self.preload is not None:
            command.append("--preload=" + ",".join(self.preload))
        with open(self.copy / ".mutation-fork-server.log", "wb") as log:
            self.server = subprocess.Popen(command, cwd=self.copy, env=self.env, stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=log)
        self._receive(self.server, SERVER_START_SECONDS)
        return self.server

    @staticmethod
    def _send(server: subprocess.Popen[bytes], message: dict) -> None:
        assert server.stdin is not None
        try:
            server.stdin.write(json.dumps(message).encode() + b"\n")
            server.stdin.flush()
        except (BrokenPipeError, OSError) as failure:
            raise ForkServerError(f"the fork server is gone: {failure}") from failure

    @staticmethod
    def _receive(server: subprocess.Popen[bytes], timeout: float) -> dict:
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], timeout)
        line = server.stdout.readline() if ready else b""
        if not line:
            raise ForkServerError("the fork server stopped answering" if not ready else "the fork server exited")
        return json.loads(line)

    def _server_log(self) -> bytes:
        log = self.copy / ".mutation-fork-server.log"
        return log.read_bytes()[-4000:] if log.exists() else b""

    def close(self) -> None:
        """Ends the server: end of its input, then a kill if it does not go."""
        server, self.server = self.server, None
        if server is None:
            return
        assert server.stdin is not None
        with contextlib.suppress(OSError):  # already gone
            server.stdin.close()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stdout is not None:
            server.stdout.close()


def is_measured(found: Result | None, map_digest: str, *, budget: float | None = None) -> bool:
    """A caught mutant stays caught; one that was not is measured again once the code or tests changed.
    An error measured nothing (a run interrupted, a fork server gone): it is run again. An unsettled
    one (missed by its fastest tests within a budget) is run again by a run with a larger budget or
    none (`budget` None)."""
    if found is None or found.status == "error":
        return False
    if found.status == UNSETTLED and (budget is None or found.budget is None or budget > found.budget):
        return False
    return found.status in CAUGHT or found.map_digest == map_digest


def run_all(repo: Path, state: Path, mutants: list[tuple[Mutant, str]], coverage: CoverageMap, results: Results,
            *, workers: int, deadline: float, on_result: Callable[[Mutant, Result], None], fork: bool = True,
            max_tests: int | None = None, budget: float | None = None) -> int:
    """Runs the mutants not yet measured until `deadline` (a monotonic time); returns how many were left.
    With `budget` (seconds of mapped test time per mutant) a mutant missed by its fastest tests
    within it is recorded as unsettled instead of running the slower ones."""
    pending = [(m, digest) for m, digest in mutants
               if not is_measured(results.get(result_key(m, digest)), coverage.digest, budget=budget)]
    for mutant, digest in list(pending):
        if not coverage.tests_for(mutant.path, mutant.line, mutant.end_line):
            result = Result("uncovered", 0.0, 0, coverage.digest)
            results.put(result_key(mutant, digest), result)
            on_result(mutant, result)
            pending.remove((mutant, digest))
    copies = [make_copy(repo, state / f"work-{index}") for index in range(workers)] if pending else []
    kind = ForkWorker if fork else Worker
    free: list[Worker] = [kind(repo, copy, sys.executable) for copy in copies]
    everyone = list(free)
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
            covering = coverage.tests_for(mutant.path, mutant.line, mutant.end_line)
            tests = coverage.fastest_first(covering, near=mutant.path)
            result = run_capped(worker, mutant, tests, coverage, max_tests, budget)
            result.map_digest = coverage.digest
            results.put(result_key(mutant, digest), result)
            on_result(mutant, result)
        finally:
            with lock:
                free.append(worker)

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(measure, pending))
    finally:
        for worker in everyone:
            worker.close()
    return left


def within_budget(tests: list[str], coverage: CoverageMap, budget: float) -> list[str]:
    """The longest prefix of `tests` (fastest first) whose mapped time fits `budget`; at least one test."""
    chosen: list[str] = []
    spent = 0.0
    for test in tests:
        spent += coverage.seconds_for([test])
        if chosen and spent > budget:
            break
        chosen.append(test)
    return chosen


def run_capped(worker: Worker, mutant: Mutant, tests: list[str], coverage: CoverageMap,
               max_tests: int | None, budget: float | None = None) -> Result:
    """Runs the first `max_tests` of `tests`; a mutant they miss is run against all of them before it
    survives. With `budget`, only the fastest tests that fit it run: a mutant they miss, when slower
    tests are left, is unsettled (the slower tests never ran against it)."""
    def timeout_for(chosen: list[str]) -> float:
        # Three times what the tests took in the map, and never under TIMEOUT_FLOOR_SECONDS: a
        # slower run is a loop. The map's times were taken under coverage (about twice as slow), so
        # this is some six times their own; ten times made each endless mutant of a slow test cost
        # minutes (132 s for 13 s of tests).
        return max(TIMEOUT_FLOOR_SECONDS, TIMEOUT_FACTOR * coverage.seconds_for(chosen))

    if budget is not None:
        chosen = within_budget(tests, coverage, budget)
        if max_tests:
            chosen = chosen[:max_tests]
        result = worker.run(mutant, chosen, timeout_for(chosen))
        if result.status == "survived" and len(chosen) < len(tests):
            result.status, result.budget = UNSETTLED, budget
        return result
    first = tests[:max_tests] if max_tests else tests
    result = worker.run(mutant, first, timeout_for(first))
    if result.status == "survived" and len(first) < len(tests):
        again = worker.run(mutant, tests, timeout_for(tests))
        again.seconds = round(again.seconds + result.seconds, 2)
        result = again
    return result


@dataclass
class Estimate:
    """Seconds on one worker for a set of mutants: each caught by its fastest test, or each running all."""

    caught: float = 0.0
    survived: float = 0.0

    def expected(self, surviving: float) -> float:
        """With a share `surviving` of mutants that run every covering test (a survivor does)."""
        return (1 - surviving) * self.caught + surviving * self.survived


def estimate_seconds(mutants: list[Mutant], coverage: CoverageMap, *, fork: bool,
                     budget: float | None = None) -> Estimate:
    overhead = FORK_OVERHEAD_SECONDS if fork else PROCESS_OVERHEAD_SECONDS
    estimate = Estimate()
    for mutant in mutants:
        tests = coverage.fastest_first(coverage.tests_for(mutant.path, mutant.line, mutant.end_line), near=mutant.path)
        if tests:  # an uncovered mutant costs nothing: it is a survivor without a run
            estimate.caught += overhead + coverage.seconds_for(tests[:1])
            missed = tests if budget is None else within_budget(tests, coverage, budget)
            estimate.survived += overhead + coverage.seconds_for(missed)
    return estimate
