"""`make mutate`: mutation testing of the critical files, with a score per file and every survivor.

    python -m mutation                       # the critical files (mutation/targets.py)
    python -m mutation FILE...               # only these files
    python -m mutation --minutes 30          # stop starting mutants after 30 minutes (run again to resume)
    python -m mutation --report              # print what is measured so far (and the time left), run nothing
    python -m mutation --max-tests 20        # each mutant's 20 fastest tests first; all of them before it survives
    python -m mutation --budget 30           # only each mutant's fastest tests that fit 30 s: a miss is "unsettled"
    python -m mutation --no-fork             # a fresh pytest process per mutant instead of the fork server

A mutant listed as equivalent in docs/testing.md ("Equivalent mutants", with its reason) is not run
and not counted in its file's score (`mutation/equivalents.py`).

Exit codes: 0 every file at or above --min-score; 1 a file below it or mutants left to run; 2 usage.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

from mutation import equivalents
from mutation.coverage_map import CoverageMap, load_if_current, load_or_build
from mutation.mutants import Mutant, mutants_of
from mutation.runner import CAUGHT, UNSETTLED, Result, Results, estimate_seconds, is_measured, result_key, run_all
from mutation.targets import CRITICAL_FILES

REPO = Path(__file__).resolve().parent.parent
STATE = REPO / ".mutation"
EQUIVALENTS = REPO / "docs" / "testing.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mutation", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="files to mutate (default: mutation/targets.py)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=60.0, help="stop starting mutants after this long")
    parser.add_argument("--min-score", type=float, default=90.0)
    parser.add_argument("--report", action="store_true", help="print the results so far; run nothing")
    parser.add_argument("--rebuild-map", action="store_true", help="make the coverage map again")
    parser.add_argument("--tests", nargs="*", default=[], help="the tests to map (default: the whole suite)")
    parser.add_argument("--no-fork", action="store_true",
                        help="start a fresh pytest process per mutant (slower; no fork server)")
    parser.add_argument("--max-tests", type=int, default=None, metavar="N",
                        help="run each mutant's N fastest tests; a mutant they miss is run against all before it "
                             "counts as a survivor")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="run only each mutant's fastest tests that fit SECONDS of their unmutated time; a mutant "
                             "they miss is unsettled (not caught) until a run without --budget runs the rest")
    args = parser.parse_args(argv)
    if args.max_tests is not None and args.max_tests < 1:
        parser.error("--max-tests must be at least 1")
    if args.budget is not None and args.budget <= 0:
        parser.error("--budget must be positive")
    files = args.files or list(CRITICAL_FILES)
    missing = [name for name in files if not (REPO / name).is_file()]
    if missing:
        print(f"mutate: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    STATE.mkdir(exist_ok=True)
    results = Results(STATE / "results.json")
    mutants: list[tuple[Mutant, str]] = []
    for name in files:
        source = (REPO / name).read_bytes()
        digest = hashlib.sha256(source).hexdigest()
        mutants.extend((mutant, digest) for mutant in mutants_of(name, source))
    equivalent = equivalents.load(EQUIVALENTS)
    to_measure = [(m, d) for m, d in mutants if m.describe() not in equivalent]
    left = 0
    if args.report:
        current = load_if_current(REPO, STATE, args.tests)
        print(f"{len(mutants)} mutants in {len(files)} files", flush=True)
        if current is not None:
            print_estimate(to_measure, current, results, args.workers, fork=not args.no_fork, budget=args.budget)
        else:
            print("no coverage map of the code as it is now: the time estimate comes with the next run", flush=True)
    else:
        started = time.monotonic()
        coverage = load_or_build(REPO, STATE, args.workers, args.tests, rebuild=args.rebuild_map)
        print(f"{len(mutants)} mutants in {len(files)} files", flush=True)
        print_estimate(to_measure, coverage, results, args.workers, fork=not args.no_fork, budget=args.budget)

        def show(mutant: Mutant, result: Result) -> None:
            if result.status not in CAUGHT:
                print(f"  {result.status:9} {mutant.describe()}", flush=True)

        left = run_all(REPO, STATE, to_measure, coverage, results, workers=args.workers,
                       deadline=started + args.minutes * 60, on_result=show, fork=not args.no_fork,
                       max_tests=args.max_tests, budget=args.budget)
    return report(files, mutants, results, args.min_score, left, equivalent)


def print_estimate(mutants: list[tuple[Mutant, str]], coverage: CoverageMap, results: Results, workers: int,
                   *, fork: bool, budget: float | None = None) -> None:
    """How long the mutants not measured yet take: a survivor runs all its tests, so their share decides."""
    measured = [r for r in (results.get(result_key(m, d)) for m, d in mutants) if r is not None and r.tests]
    # Until enough mutants are measured, the first partial run's share (1 in 10 not caught).
    surviving = sum(r.status not in CAUGHT for r in measured) / len(measured) if len(measured) >= 20 else 0.1
    to_run = [m for m, digest in mutants
              if not is_measured(results.get(result_key(m, digest)), coverage.digest, budget=budget)]
    estimate = estimate_seconds(to_run, coverage, fork=fork, budget=budget)
    fastest, expected, slowest = (_duration(seconds / max(1, workers)) for seconds in
                                  (estimate.caught, estimate.expected(surviving), estimate.survived))
    print(f"{len(to_run)} mutants to run: {expected} on {workers} workers if {surviving:.0%} survive "
          f"(from {fastest} if each is caught by its fastest test, to {slowest} if none is)", flush=True)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return "less than a minute"
    return f"about {seconds / 60:.0f} minutes" if seconds < 90 * 60 else f"about {seconds / 3600:.1f} hours"


def report(files: list[str], mutants: list[tuple[Mutant, str]], results: Results, min_score: float,
           left: int, equivalent: dict[str, str] | None = None) -> int:
    """A score per file (caught over measured, equivalent mutants left out) and every mutant not caught."""
    equivalent = equivalent or {}
    below = False
    print(f"\n{'file':60} {'caught':>7} {'of':>5} {'score':>7}")
    survivors: list[str] = []
    not_run = 0
    for name in files:
        listed = [(m, d) for m, d in mutants if m.path == name]
        counted = [(m, d) for m, d in listed if m.describe() not in equivalent]
        measured = [(m, results.get(result_key(m, d))) for m, d in counted]
        done = [(m, r) for m, r in measured if r is not None]
        not_run += len(measured) - len(done)
        caught = sum(r.status in CAUGHT for _, r in done)
        score = 100.0 * caught / len(done) if done else 0.0
        below |= score < min_score
        unsettled = sum(r.status == UNSETTLED for _, r in done)
        print(f"{name:60} {caught:7} {len(done):5} " + (f"{score:6.1f}%" if done else "      -")
              + ("" if len(done) == len(measured) else f"  ({len(measured) - len(done)} not run)")
              + (f"  ({len(listed) - len(counted)} equivalent, not counted)" if len(listed) > len(counted) else "")
              + (f"  ({unsettled} unsettled: at least this score)" if unsettled else ""))
        survivors.extend(f"{m.describe()}  [{r.status}]" for m, r in done if r.status not in CAUGHT)
    if survivors:
        print("\nsurvivors (file:line: original -> mutant):")
        print("\n".join(f"  {line}" for line in survivors))
    described = {m.describe() for m, _ in mutants}
    stale = sorted(entry for entry in equivalent
                   if entry.split(":", 1)[0] in files and entry not in described)
    if stale:
        print("\nlisted as equivalent but no longer a mutant of the code (check each again, "
              "then correct docs/testing.md):")
        print("\n".join(f"  {entry}" for entry in stale))
    if not_run or left:
        print(f"\n{not_run} mutants not run yet: run again to resume")
    return 1 if below or not_run else 0


if __name__ == "__main__":
    sys.exit(main())
