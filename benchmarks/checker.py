"""Benchmark (not a test): the history checker's throughput and its time to answer "unknown".

Histories come from the unit tests' seeded simulator (a real register per key, 5 clients,
overlapping ops, ~4% info and ~4% failed ops) and are linearizable; they are recorded as the lanes
record theirs (`ucnb.cluster.history.Op` events) and each is checked with its final state.
Throughput = operations / check time (generation excluded). The pathological history (n
concurrent writes, then two reads in an impossible order) exhausts its time budget.

Usage: .venv/bin/python benchmarks/checker.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.unit.test_checker import pathological, simulate
from ucnb.cluster.checker import check
from ucnb.cluster.history import Op

CASES = [  # (operations, clients, keys)
    (1_000, 5, 10), (10_000, 5, 1), (10_000, 5, 10), (10_000, 5, 100), (100_000, 5, 100), (100_000, 5, 1),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the 100k-operation histories")
    args = parser.parse_args()
    print(f"{'ops':>8} {'clients':>7} {'keys':>5} {'verdict':>8} {'states':>9} {'check s':>8} {'ops/s':>9}")
    for n, clients, keys in CASES:
        if args.quick and n > 10_000:
            continue
        sim = simulate(seed=1, n_ops=n, clients=clients, keys=keys)
        events = [Op(e.process, e.type, e.f, e.key, e.value, e.t) for e in sim.events]
        times = []
        for _ in range(5 if n <= 10_000 else 1):  # the median of 5 for the small ones
            start = time.perf_counter()
            result = check(events, sim.final, time_budget=600)
            times.append(time.perf_counter() - start)
        took = statistics.median(times)
        print(f"{result.operations:>8} {clients:>7} {keys:>5} {result.linearizable!s:>8} {result.states:>9} "
              f"{took:>8.3f} {result.operations / took:>9.0f}")
    for budget in (0.5, 2.0):
        start = time.perf_counter()
        result = check(pathological(40), time_budget=budget, state_budget=10**9)
        took = time.perf_counter() - start
        print(f"pathological (40 concurrent writes, budget {budget} s): {result.linearizable} after "
              f"{took:.3f} s ({result.elapsed:.3f} s inside check), {result.states} states")


if __name__ == "__main__":
    main()
