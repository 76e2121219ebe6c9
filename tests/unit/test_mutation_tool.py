"""`make mutate` itself: its mutants are valid code that changes behaviour, and its verdicts are right."""

from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path

from mutation.mutants import Mutant, mutants_of
from mutation.runner import Worker

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


def test_a_mutant_that_breaks_the_module_at_import_is_killed(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "calc.py").write_bytes(SOURCE)
    (project / "test_calc.py").write_text("from calc import total\n\ndef test_total():\n    assert total([1]) == 1\n")
    worker = Worker(project, project, sys.executable)
    worker.env["PYTHONPATH"] = str(project)
    # A module-level line made to raise when imported: collection fails before any test runs
    broken = Mutant("calc.py", 3, 0, 3, 14, "import logging", "import logging_that_is_not_there")

    assert worker.run(broken, ["test_calc.py"], timeout=60).status == "killed"
