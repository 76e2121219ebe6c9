"""`make mutate`: mutation testing of the critical files, with a score per file and every survivor.

    python -m mutation                       # the critical files (mutation/targets.py)
    python -m mutation FILE...               # only these files
    python -m mutation --minutes 30          # stop starting mutants after 30 minutes (run again to resume)
    python -m mutation --report              # print what is measured so far, run nothing

Exit codes: 0 every file at or above --min-score; 1 a file below it or mutants left to run; 2 usage.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

from mutation.coverage_map import load_or_build
from mutation.mutants import Mutant, mutants_of
from mutation.runner import CAUGHT, Result, Results, result_key, run_all
from mutation.targets import CRITICAL_FILES

REPO = Path(__file__).resolve().parent.parent
STATE = REPO / ".mutation"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mutation", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="files to mutate (default: mutation/targets.py)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=60.0, help="stop starting mutants after this long")
    parser.add_argument("--min-score", type=float, default=90.0)
    parser.add_argument("--report", action="store_true", help="print the results so far; run nothing")
    parser.add_argument("--rebuild-map", action="store_true", help="make the coverage map again")
    parser.add_argument("--tests", nargs="*", default=[], help="the tests to map (default: the whole suite)")
    args = parser.parse_args(argv)
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
    left = 0
    if not args.report:
        started = time.monotonic()
        coverage = load_or_build(REPO, STATE, args.workers, args.tests, rebuild=args.rebuild_map)
        print(f"{len(mutants)} mutants in {len(files)} files", flush=True)

        def show(mutant: Mutant, result: Result) -> None:
            if result.status not in CAUGHT:
                print(f"  {result.status:9} {mutant.describe()}", flush=True)

        left = run_all(REPO, STATE, mutants, coverage, results, workers=args.workers,
                       deadline=started + args.minutes * 60, on_result=show)
    return report(files, mutants, results, args.min_score, left)


def report(files: list[str], mutants: list[tuple[Mutant, str]], results: Results, min_score: float,
           left: int) -> int:
    below = False
    print(f"\n{'file':60} {'caught':>7} {'of':>5} {'score':>7}")
    survivors: list[str] = []
    not_run = 0
    for name in files:
        measured = [(m, results.get(result_key(m, d))) for m, d in mutants if m.path == name]
        done = [(m, r) for m, r in measured if r is not None]
        not_run += len(measured) - len(done)
        caught = sum(r.status in CAUGHT for _, r in done)
        score = 100.0 * caught / len(done) if done else 0.0
        below |= score < min_score
        print(f"{name:60} {caught:7} {len(done):5} " + (f"{score:6.1f}%" if done else "      -")
              + ("" if len(done) == len(measured) else f"  ({len(measured) - len(done)} not run)"))
        survivors.extend(f"{m.describe()}  [{r.status}]" for m, r in done if r.status not in CAUGHT)
    if survivors:
        print("\nsurvivors (file:line: original -> mutant):")
        print("\n".join(f"  {line}" for line in survivors))
    if not_run or left:
        print(f"\n{not_run} mutants not run yet: run again to resume")
    return 1 if below or not_run else 0


if __name__ == "__main__":
    sys.exit(main())
