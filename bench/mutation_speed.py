"""`make mutate`'s seconds per mutant: a fresh pytest per mutant with its tests in file order (as it
was), against the fork server with its tests fastest first (as it is), on the same sample of mutants.

    python -m bench.mutation_speed                    # 8 mutants of signature.py, 12 of changes.py
    python -m bench.mutation_speed --map FILE         # another coverage map (the tests it names must exist)

It needs a coverage map (`make mutate` makes `.mutation/coverage-map.json`). One worker, one way after the
other; survivors run all their tests either way, so the killed mutants show the difference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from mutation.coverage_map import CoverageMap, _from_json, load_if_current
from mutation.mutants import Mutant, mutants_of
from mutation.runner import ForkWorker, Result, Worker, make_copy, run_capped

REPO = Path(__file__).resolve().parent.parent
LAYER = "layers/shared/argyle_pipeline"
SAMPLE = ((f"{LAYER}/receiving/signature.py", 8), (f"{LAYER}/sync/changes.py", 12))


def sample(coverage: CoverageMap) -> list[tuple[Mutant, list[str]]]:
    chosen = []
    for path, count in SAMPLE:
        covered = [(m, coverage.tests_for(m.path, m.line, m.end_line))
                   for m in mutants_of(path, (REPO / path).read_bytes())]
        chosen += [(m, tests) for m, tests in covered if tests][:count]
    return chosen


def measure(kind: type[Worker], chosen: list[tuple[Mutant, list[str]]], coverage: CoverageMap,
            state: Path) -> list[Result]:
    worker = kind(REPO, make_copy(REPO, state / f"bench-{kind.__name__}"), sys.executable)
    found = []
    try:
        for mutant, tests in chosen:
            if kind is ForkWorker:
                result = run_capped(worker, mutant, coverage.fastest_first(tests), coverage, None)
            else:
                result = worker.run(mutant, sorted(tests), max(60.0, 10 * coverage.seconds_for(tests)))
            print(f"  {kind.__name__:10} {result.status:9} {result.seconds:7.2f} s  {mutant.describe()}", flush=True)
            found.append(result)
    finally:
        worker.close()
    return found


def summary(label: str, results: list[Result]) -> str:
    killed = [r.seconds for r in results if r.status == "killed"]
    others = [r.seconds for r in results if r.status != "killed"]
    return (f"{label}: {sum(r.seconds for r in results):.0f} s for {len(results)} mutants; "
            f"{len(killed)} killed, {statistics.mean(killed) if killed else 0:.2f} s each "
            f"(median {statistics.median(killed) if killed else 0:.2f}); {len(others)} not caught, "
            f"{sum(others):.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--map", type=Path, help="a coverage map file (default: make mutate's, if current)")
    args = parser.parse_args(argv)
    state = REPO / ".mutation"
    if args.map:
        saved = json.loads(args.map.read_text())
        coverage: CoverageMap | None = _from_json(saved, saved.get("digest", ""))
    else:
        coverage = load_if_current(REPO, state, [])
    if coverage is None:
        print("mutation_speed: no coverage map of the code as it is now: run `make mutate` first, or pass --map",
              file=sys.stderr)
        return 2
    chosen = sample(coverage)
    print(f"# mutation speed, {len(chosen)} mutants, {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    before = measure(Worker, chosen, coverage, state)
    after = measure(ForkWorker, chosen, coverage, state)
    print(summary("a fresh process each, file order", before))
    print(summary("fork server, fastest first     ", after))
    return 0


if __name__ == "__main__":
    sys.exit(main())
