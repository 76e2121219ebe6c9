"""`make mutate` itself: its mutants are valid code that changes behaviour, and its verdicts are right."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mutation import equivalents
from mutation.__main__ import report
from mutation.coverage_map import CoverageMap, changed_test_modules, load_or_build, merged
from mutation.mutants import Mutant, mutants_of
from mutation.runner import (
    FORK_OVERHEAD_SECONDS,
    FORK_SERVER,
    ForkWorker,
    Result,
    Results,
    Worker,
    estimate_seconds,
    is_measured,
    result_key,
    run_capped,
)

SOURCE = textwrap.dedent('''
    """A module docstring is never mutated."""
    import logging

    logger = logging.getLogger(__name__)


    def within(limit: int, size: int) -> bool:
        """Nor is a function's."""
        logger.info("checking", limit=limit)
        return size <= limit


    def total(values: list[int]) -> int:
        count = 0
        for value in values:
            count += value
        return count
''').encode()


def test_each_mutant_is_valid_python_and_changes_one_thing() -> None:
    mutants = mutants_of("calc.py", SOURCE)
    described = {m.describe() for m in mutants}

    assert "calc.py:11: size <= limit -> (size < limit)" in described
    assert "calc.py:17: count += value -> count = value" in described
    assert "calc.py:17: count += value -> count -= value" in described
    assert "calc.py:18: return count -> return None" in described
    assert "calc.py:15: 0 -> 1" in described
    for mutant in mutants:
        changed = mutant.apply(SOURCE)
        ast.parse(changed)
        assert changed != SOURCE



def test_two_mutants_of_a_line_that_read_the_same_are_told_apart_by_their_column() -> None:
    source = b"def f(k, n):\n    return max(1, min(k, n + 1))\n"

    described = [m.describe() for m in mutants_of("f.py", source) if m.replacement == "2"]

    assert described == ["f.py:2:16: 1 -> 2", "f.py:2:30: 1 -> 2"]
    assert "f.py:2: n + 1 -> (n - 1)" in {m.describe() for m in mutants_of("f.py", source)}  # others: short

def test_docstrings_annotations_and_log_calls_are_left_alone() -> None:
    mutants = mutants_of("calc.py", SOURCE)

    touched_lines = {m.line for m in mutants}
    assert not touched_lines & {2, 8, 9, 10}, sorted(touched_lines)  # docstrings, signature annotations, the log call


def test_a_line_marked_no_mutate_is_skipped() -> None:
    source = b"def f(x):\n    return x + 1  # pragma: no mutate\n"

    assert mutants_of("f.py", source) == []


def test_a_mutant_the_tests_notice_is_killed_and_one_they_miss_survives(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "calc.py").write_bytes(SOURCE)
    (project / "test_calc.py").write_text(textwrap.dedent("""
        from calc import total, within

        def test_total():
            assert total([2, 3]) == 5

        def test_within_below_the_limit():
            assert within(10, 3)
    """))
    worker = Worker(project, project, sys.executable)
    worker.env["PYTHONPATH"] = str(project)
    by_text = {m.describe(): m for m in mutants_of("calc.py", SOURCE)}

    killed = worker.run(by_text["calc.py:17: count += value -> count = value"], ["test_calc.py"], timeout=60)
    # Only the boundary (size == limit) tells `<=` from `<`, and no test tries it.
    survived = worker.run(by_text["calc.py:11: size <= limit -> (size < limit)"], ["test_calc.py"], timeout=60)

    assert (killed.status, survived.status) == ("killed", "survived")
    assert (project / "calc.py").read_bytes() == SOURCE  # the original is put back


@pytest.mark.parametrize("tests", [["test_calc.py"], ["test_calc.py::test_total"]], ids=["by file", "by test id"])
def test_a_mutant_that_breaks_the_module_at_import_is_killed(tmp_path: Path, tests: list[str]) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "calc.py").write_bytes(SOURCE)
    (project / "test_calc.py").write_text("from calc import total\n\ndef test_total():\n    assert total([1]) == 1\n")
    worker = Worker(project, project, sys.executable)
    worker.env["PYTHONPATH"] = str(project)
    # A module-level line made to raise when imported: collection fails before any test runs
    broken = Mutant("calc.py", 3, 0, 3, 14, "import logging", "import logging_that_is_not_there")

    # (named by test id, pytest answers "found no collectors", exit code 4, not 2: still caught)
    assert worker.run(broken, tests, timeout=60).status == "killed"


LOOPING = textwrap.dedent("""
    import subprocess
    import sys
    from pathlib import Path

    from calc import total

    def test_total_ends():
        # A process of the tests' own, left running: the fork server must not leave it behind.
        helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        with Path("helpers.pid").open("a") as pids:
            pids.write(f"{helper.pid}\\n")
        assert total([2, 3]) == 5
""")


def _toy_project(root: Path, tests: str) -> Path:
    project = root / "project"
    project.mkdir()
    (project / "calc.py").write_bytes(SOURCE)
    (project / "test_calc.py").write_text(tests)
    return project


def _toy_fork_worker(project: Path, preload: list[str]) -> ForkWorker:
    worker = ForkWorker(project, project, sys.executable, preload=preload)
    worker.env["PYTHONPATH"] = str(project)
    worker.env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the toy needs no plugin: each child starts in a blink
    return worker


def _gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for its parent to read its status."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def _until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_the_fork_server_kills_a_noticed_mutant_keeps_a_missed_one_and_imports_the_project_fresh_each_time(
        tmp_path: Path) -> None:
    project = _toy_project(tmp_path, textwrap.dedent("""
        from calc import total, within

        def test_total():
            assert total([2, 3]) == 5

        def test_within_below_the_limit():
            assert within(10, 3)
    """))
    worker = _toy_fork_worker(project, preload=["pytest"])
    by_text = {m.describe(): m for m in mutants_of("calc.py", SOURCE)}
    try:
        killed = worker.run(by_text["calc.py:17: count += value -> count = value"], ["test_calc.py"], timeout=60)
        survived = worker.run(by_text["calc.py:11: size <= limit -> (size < limit)"], ["test_calc.py"], timeout=60)
        # The same server again: the first child's mutated `calc` must not linger in the second.
        killed_again = worker.run(by_text["calc.py:18: return count -> return None"], ["test_calc.py"], timeout=60)
        server = worker.server
        assert server is not None
    finally:
        worker.close()

    assert (killed.status, survived.status, killed_again.status) == ("killed", "survived", "killed")
    assert (project / "calc.py").read_bytes() == SOURCE
    assert server.returncode == 0  # ended at the end of its input


def test_the_fork_server_times_out_an_endless_mutant_and_leaves_no_process_behind(tmp_path: Path) -> None:
    project = _toy_project(tmp_path, LOOPING)
    worker = _toy_fork_worker(project, preload=["pytest"])
    endless = Mutant("calc.py", 17, 8, 17, 22, "count += value", "while True: pass")
    try:
        started = time.monotonic()
        result = worker.run(endless, ["test_calc.py"], timeout=1.5)
        elapsed = time.monotonic() - started
        # No test tries the boundary: this run ends normally, with its helper still running.
        after = worker.run(Mutant("calc.py", 11, 11, 11, 24, "size <= limit", "(size < limit)"), ["test_calc.py"],
                           timeout=60)
        server = worker.server
        assert server is not None
    finally:
        worker.close()

    assert result.status == "timeout"
    assert elapsed < 30  # the server's deadline, not the runner's safety margin, ended it
    assert after.status == "survived"  # the server still answers after a kill
    helpers = [int(pid) for pid in (project / "helpers.pid").read_text().split()]
    assert len(helpers) == 2
    assert _until(lambda: all(_gone(pid) for pid in helpers)), "a process the tests started outlived its run"
    assert _until(lambda: _gone(server.pid)), "the fork server outlived the worker"


def test_the_fork_server_refuses_to_preload_a_module_of_the_project(tmp_path: Path) -> None:
    project = _toy_project(tmp_path, "def test_nothing():\n    assert True\n")
    worker = _toy_fork_worker(project, preload=["pytest", "calc"])
    try:
        result = worker.run(Mutant("calc.py", 15, 12, 15, 13, "0", "1"), ["test_calc.py"], timeout=60)
    finally:
        worker.close()

    assert result.status == "error"
    assert b"imported the project's own modules ['calc']" in (project / ".mutation-last-error.txt").read_bytes()


def test_the_real_preload_list_imports_no_module_of_the_project_and_starts_no_thread() -> None:
    # Given the repository itself as the worker's copy, with the path a worker gives its tests
    repo = Path(__file__).resolve().parents[2]
    worker = Worker(repo, repo, sys.executable)

    # When the fork server imports its default list of heavy modules
    server = subprocess.run([sys.executable, str(FORK_SERVER), "--copy", str(repo)], cwd=repo, env=worker.env,
                            input=b"", capture_output=True, timeout=120, check=False)

    # Then it is ready (it refuses to be if a preloaded module came from the project, or started a thread)
    assert server.returncode == 0, server.stderr.decode()[-2000:]
    ready = json.loads(server.stdout.splitlines()[0])
    assert ready["ready"] is True
    assert ready["not_installed"] == []  # every listed module is installed: the list is not stale


def test_a_resumed_run_keeps_caught_mutants_and_measures_again_errors_and_survivors_of_older_tests() -> None:
    current = "map-now"

    assert is_measured(Result("killed", 1.0, 3, "map-before"), current)
    assert is_measured(Result("survived", 9.0, 3, current), current)
    assert not is_measured(Result("survived", 9.0, 3, "map-before"), current)  # a test may have been added since
    assert not is_measured(Result("error", 0.5, 3, current), current)  # pytest never ran to a verdict
    assert not is_measured(None, current)


class _RecordingWorker(Worker):
    """Kills a mutant when one of `killers` runs; records which tests each run was given."""

    def __init__(self, killers: set[str]) -> None:
        self.killers = killers
        self.runs: list[list[str]] = []
        self.timeouts: list[float] = []

    def run(self, mutant: Mutant, tests: list[str], timeout: float) -> Result:
        self.runs.append(list(tests))
        self.timeouts.append(timeout)
        return Result("killed" if self.killers & set(tests) else "survived", 1.0, len(tests))


def test_tests_run_fastest_first_and_a_capped_survivor_runs_all_its_tests_before_it_survives() -> None:
    coverage = CoverageMap({"calc.py": {11: ["t::slow", "t::quick", "t::medium"]}},
                           {"t::slow": 30.0, "t::quick": 0.1, "t::medium": 2.0})
    mutant = Mutant("calc.py", 11, 11, 11, 24, "size <= limit", "(size < limit)")
    ordered = coverage.fastest_first(coverage.tests_for("calc.py", 11, 11))
    only_the_slow_test_notices = _RecordingWorker({"t::slow"})
    nothing_notices = _RecordingWorker(set())
    the_quick_test_notices = _RecordingWorker({"t::quick"})

    caught_late = run_capped(only_the_slow_test_notices, mutant, ordered, coverage, max_tests=2)
    survivor = run_capped(nothing_notices, mutant, ordered, coverage, max_tests=2)
    caught_early = run_capped(the_quick_test_notices, mutant, ordered, coverage, max_tests=2)

    assert ordered == ["t::quick", "t::medium", "t::slow"]
    assert caught_late.status == "killed"
    assert only_the_slow_test_notices.runs == [["t::quick", "t::medium"], ordered]
    assert (survivor.status, survivor.tests, survivor.seconds) == ("survived", 3, 2.0)  # both runs' time
    assert the_quick_test_notices.runs == [["t::quick", "t::medium"]]  # caught under the cap: no second run
    assert caught_early.status == "killed"



def test_a_mutant_is_given_three_times_its_tests_mapped_time_and_never_under_twenty_seconds() -> None:
    # (an endless mutant is caught by its time limit: ten times cost minutes for a slow test's mutants)
    coverage = CoverageMap({"calc.py": {11: ["t::slow", "t::quick"]}}, {"t::slow": 13.0, "t::quick": 0.5})
    mutant = Mutant("calc.py", 11, 11, 11, 24, "size <= limit", "(size < limit)")
    worker = _RecordingWorker(set())

    run_capped(worker, mutant, ["t::quick"], coverage, None)
    run_capped(worker, mutant, ["t::quick", "t::slow"], coverage, None)

    assert worker.timeouts == [20.0, 40.5]


def test_the_tests_of_the_mutated_files_own_module_run_first_then_the_fastest() -> None:
    # (a dataclass field runs at import: it maps to every test that uses its module)
    coverage = CoverageMap({}, {"tests/test_other.py::quick": 0.1, "tests/test_calc_limits.py::slower": 2.0,
                                "tests/test_calc.py::slowest": 5.0, "tests/test_api.py::medium": 1.0})
    tests = list(coverage.seconds_by_test)

    assert coverage.fastest_first(tests, near="src/pkg/calc.py") == [
        "tests/test_calc_limits.py::slower", "tests/test_calc.py::slowest", "tests/test_other.py::quick",
        "tests/test_api.py::medium"]
    assert coverage.fastest_first(tests)[0] == "tests/test_other.py::quick"

def test_the_estimate_charges_a_caught_mutant_its_fastest_test_and_a_survivor_all_of_them() -> None:
    coverage = CoverageMap({"calc.py": {11: ["t::slow", "t::quick"], 17: ["t::quick"]}},
                           {"t::slow": 30.0, "t::quick": 0.5})
    boundary = Mutant("calc.py", 11, 11, 11, 24, "size <= limit", "(size < limit)")
    total = Mutant("calc.py", 17, 8, 17, 22, "count += value", "count = value")
    never_run = Mutant("calc.py", 5, 0, 5, 1, "0", "1")  # no test executes line 5: it costs nothing

    estimate = estimate_seconds([boundary, total, never_run], coverage, fork=True)

    assert estimate.caught == 2 * FORK_OVERHEAD_SECONDS + 0.5 + 0.5
    assert estimate.survived == 2 * FORK_OVERHEAD_SECONDS + 30.5 + 0.5
    assert estimate.expected(0.5) == (estimate.caught + estimate.survived) / 2
    assert estimate_seconds([boundary], coverage, fork=False).caught > estimate_seconds([boundary], coverage,
                                                                                       fork=True).caught


def test_a_budget_runs_only_the_fastest_tests_that_fit_and_a_mutant_they_miss_is_unsettled() -> None:
    coverage = CoverageMap({"calc.py": {11: ["t::slow", "t::quick", "t::medium"], 17: ["t::quick"]}},
                           {"t::slow": 30.0, "t::quick": 0.1, "t::medium": 2.0})
    boundary = Mutant("calc.py", 11, 11, 11, 24, "size <= limit", "(size < limit)")
    total = Mutant("calc.py", 17, 8, 17, 22, "count += value", "count = value")
    ordered = coverage.fastest_first(coverage.tests_for("calc.py", 11, 11))
    only_the_slow_test_notices = _RecordingWorker({"t::slow"})
    the_medium_test_notices = _RecordingWorker({"t::medium"})
    nothing_notices = _RecordingWorker(set())

    missed_within_budget = run_capped(only_the_slow_test_notices, boundary, ordered, coverage, None, budget=5.0)
    caught = run_capped(the_medium_test_notices, boundary, ordered, coverage, None, budget=5.0)
    # Every test of line 17 fits the budget: a miss there is a real survivor
    survivor = run_capped(nothing_notices, total, ["t::quick"], coverage, None, budget=5.0)
    # A budget below the fastest test still runs that one
    tight = run_capped(_RecordingWorker({"t::quick"}), boundary, ordered, coverage, None, budget=0.01)

    assert only_the_slow_test_notices.runs == [["t::quick", "t::medium"]]  # the slow test never ran
    assert (missed_within_budget.status, missed_within_budget.budget) == ("unsettled", 5.0)
    assert caught.status == "killed"
    assert survivor.status == "survived"
    assert tight.status == "killed"


def test_an_unsettled_mutant_waits_for_a_run_with_a_larger_budget_or_none() -> None:
    current = "map-now"
    unsettled = Result("unsettled", 2.0, 2, current, budget=20.0)

    assert is_measured(unsettled, current, budget=20.0)  # the same budget again leaves it
    assert is_measured(unsettled, current, budget=10.0)
    assert not is_measured(unsettled, current, budget=120.0)  # more of its slower tests fit now
    assert not is_measured(unsettled, current, budget=None)  # a full run runs all of them
    assert not is_measured(Result("unsettled", 2.0, 2, "map-before", budget=20.0), current, budget=20.0)


def test_the_estimate_with_a_budget_charges_a_miss_only_the_tests_that_fit() -> None:
    coverage = CoverageMap({"calc.py": {11: ["t::slow", "t::quick"]}}, {"t::slow": 30.0, "t::quick": 0.5})
    boundary = Mutant("calc.py", 11, 11, 11, 24, "size <= limit", "(size < limit)")

    assert estimate_seconds([boundary], coverage, fork=True, budget=10.0).survived == FORK_OVERHEAD_SECONDS + 0.5
    assert estimate_seconds([boundary], coverage, fork=True).survived == FORK_OVERHEAD_SECONDS + 30.5


def test_the_report_counts_an_unsettled_mutant_as_not_caught_and_says_the_score_is_a_floor(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    killed = Mutant("calc.py", 11, 11, 11, 24, "size <= limit", "(size < limit)")
    unsettled = Mutant("calc.py", 17, 8, 17, 22, "count += value", "count = value")
    results = Results(tmp_path / "results.json")
    results.put(result_key(killed, "d" * 64), Result("killed", 1.0, 1, "map"))
    results.put(result_key(unsettled, "d" * 64), Result("unsettled", 2.0, 2, "map"))

    code = report(["calc.py"], [(killed, "d" * 64), (unsettled, "d" * 64)], results, 90.0, 0)

    out = capsys.readouterr().out
    assert code == 1  # 50% is below 90%
    assert "50.0%" in out and "(1 unsettled: at least this score)" in out
    assert "calc.py:17: count += value -> count = value  [unsettled]" in out


EQUIVALENTS_DOC = textwrap.dedent("""
    # Testing

    ## Scores

    - `calc.py:11: size <= limit -> (size < limit)`: listed in another section, so not an entry.

    ## Equivalent mutants

    Some words first.

    - `calc.py:17: count += value -> count = value`: every caller passes one value,
      so adding to zero and assigning are the same.
    - `calc.py:18: return count -> return None`: no caller reads it.

    ## After
    - `calc.py:15: 0 -> 1`: after the section.
""")


def test_the_equivalent_mutants_are_read_from_their_section_of_the_testing_document(tmp_path: Path) -> None:
    document = tmp_path / "testing.md"
    document.write_text(EQUIVALENTS_DOC)

    listed = equivalents.load(document)

    assert listed == {
        "calc.py:17: count += value -> count = value":
            "every caller passes one value, so adding to zero and assigning are the same.",
        "calc.py:18: return count -> return None": "no caller reads it.",
    }
    assert equivalents.load(tmp_path / "absent.md") == {}


def test_an_equivalent_mutant_leaves_the_score_and_an_entry_the_code_outgrew_is_reported(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    killed = Mutant("calc.py", 11, 11, 11, 24, "size <= limit", "(size < limit)")
    equivalent = Mutant("calc.py", 17, 8, 17, 22, "count += value", "count = value")
    results = Results(tmp_path / "results.json")
    results.put(result_key(killed, "d" * 64), Result("killed", 1.0, 1, "map"))
    listed = {equivalent.describe(): "the reason",
              "calc.py:30: x < y -> (x <= y)": "a line that is gone"}

    code = report(["calc.py"], [(killed, "d" * 64), (equivalent, "d" * 64)], results, 90.0, 0, listed)

    out = capsys.readouterr().out
    assert code == 0  # 1 caught of 1 counted: the equivalent one is neither run nor counted
    assert "100.0%" in out and "(1 equivalent, not counted)" in out
    assert "not run yet" not in out
    assert "no longer a mutant of the code" in out and "calc.py:30: x < y -> (x <= y)" in out


def test_only_a_change_of_test_modules_alone_is_mapped_again_in_part() -> None:
    before = {"layers/shared/calc.py": "a", "tests/unit/test_calc.py": "b", "tests/conftest.py": "c"}

    assert changed_test_modules(before, {**before, "tests/unit/test_calc.py": "B",
                                         "tests/unit/test_new.py": "n"}) == [
        "tests/unit/test_calc.py", "tests/unit/test_new.py"]
    assert changed_test_modules(before, {k: v for k, v in before.items() if k != "tests/unit/test_calc.py"}) == [
        "tests/unit/test_calc.py"]
    assert changed_test_modules(before, {**before, "layers/shared/calc.py": "A"}) is None
    assert changed_test_modules(before, {**before, "tests/conftest.py": "C"}) is None  # every test's fixtures


def test_a_merged_map_replaces_the_changed_modules_tests_and_keeps_the_others() -> None:
    old = CoverageMap({"calc.py": {11: ["tests/test_a.py::t1", "tests/test_b.py::t2"], 17: ["tests/test_a.py::t1"]}},
                      {"tests/test_a.py::t1": 1.0, "tests/test_b.py::t2": 2.0})
    part = CoverageMap({"calc.py": {18: ["tests/test_a.py::t3"]}}, {"tests/test_a.py::t3": 0.5})

    new = merged(old, part, ["tests/test_a.py"])

    assert new.tests_by_line == {"calc.py": {11: ["tests/test_b.py::t2"], 18: ["tests/test_a.py::t3"]}}
    assert new.seconds_by_test == {"tests/test_b.py::t2": 2.0, "tests/test_a.py::t3": 0.5}



def _toy_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tests: dict[str, str]) -> Path:
    """A git repository with `calc.py` in its layer and these test modules, as the current directory."""
    repo = tmp_path / "repo"
    (repo / "layers/shared").mkdir(parents=True)
    (repo / "tests").mkdir()
    (repo / "layers/shared/calc.py").write_bytes(SOURCE)
    for name, text in tests.items():
        (repo / "tests" / name).write_text(text)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    monkeypatch.setenv("PYTHONPATH", f"{repo / 'layers/shared'}:{Path(__file__).resolve().parents[2]}")
    monkeypatch.chdir(repo)
    return repo

def test_a_new_test_module_is_mapped_alone_and_its_tests_join_the_map(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    repo = _toy_repo(tmp_path, monkeypatch, {"test_total.py": "from calc import total\n\ndef test_total():\n"
                                                               "    assert total([2]) == 2\n"})
    state = repo / ".mutation"

    first = load_or_build(repo, state, 1, [])
    (repo / "tests/test_within.py").write_text("from calc import within\n\ndef test_within():\n"
                                               "    assert within(3, 3)\n")
    second = load_or_build(repo, state, 1, [])

    out = capsys.readouterr().out
    assert "1 test modules changed since the coverage map was made: mapping them again" in out
    assert first.tests_for("layers/shared/calc.py", 11, 11) == []
    assert second.tests_for("layers/shared/calc.py", 11, 11) == ["tests/test_within.py::test_within"]
    assert second.tests_for("layers/shared/calc.py", 17, 17) == ["tests/test_total.py::test_total"]
    assert load_or_build(repo, state, 1, []).tests_by_line == second.tests_by_line  # current now: reused


def test_a_line_run_at_import_maps_to_the_tests_written_for_its_module_even_if_they_run_none_of_its_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = _toy_repo(tmp_path, monkeypatch, {
        # (a dataclass's generated methods are like this: they run no line of the file that shapes them)
        "test_calc.py": "import calc\n\ndef test_the_logger_is_named_after_the_module():\n"
                        "    assert calc.logger.name == 'calc'\n",
        "test_other.py": "from calc import total\n\ndef test_total():\n    assert total([2]) == 2\n"})

    built = load_or_build(repo, repo / ".mutation", 1, [])

    assert built.tests_for("layers/shared/calc.py", 5, 5) == [  # `logger = logging.getLogger(__name__)`
        "tests/test_calc.py::test_the_logger_is_named_after_the_module", "tests/test_other.py::test_total"]
    assert built.tests_for("layers/shared/calc.py", 17, 17) == ["tests/test_other.py::test_total"]
