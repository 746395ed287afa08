"""Where the runner's share of a run's wall time goes: named stages and their seconds.

They are kept in the run's index line (not in the sealed proof root: the seal is itself a stage),
so that `benchmarks/quickstart.py` can say what the harness costs beside the guests' own time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ucnb.host.procs import start_time


def since_process_start() -> float:
    """Seconds since this process started (interpreter start-up, imports, the CLI's own checks),
    from /proc's start time in clock ticks since boot (10 ms resolution)."""
    ticks = start_time(os.getpid())
    if ticks is None:
        return 0.0
    return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))


class Stages:
    """Stage name -> seconds, in the order the stages first ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.add(name, time.monotonic() - start)

    def rounded(self) -> dict[str, float]:
        return {name: round(s, 3) for name, s in self.seconds.items()}
