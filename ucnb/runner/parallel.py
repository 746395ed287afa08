"""A suite's steps run with up to N lanes side by side on one host (`ucnb suite NAME --jobs N`).

Each lane runs as `ucnb run` runs it, in a worker thread of the suite process: its own kernel,
lab, subnet and names (the host-wide lab lock gives each lab its own), its proof root inside the
suite root. `--jobs 1` is the same machinery with one worker, so a serial and a parallel run
differ only in what overlaps. What stays as in a serial run:

- the entries come out in the suite's order, whatever order the lanes finish in;
- a guard is a barrier: it runs when every lane before it has ended and before any lane after it
  starts (a guard vouches for the tree and profiles the later lanes run; it takes seconds);
- the main thread owns SIGINT and SIGTERM and passes each to every running lane (the first
  interrupts its kernel, a second kills it; see `ucnb.runner.interrupt`), so Ctrl-C ends every
  lane the one way (exit 130, labs removed, evidence sealed) and no further step starts.

The default for N (`default_jobs`): a TCG lane keeps about one core busy, and the biggest lab needs
about LANE_MEMORY_MIB: six 256 MiB guests (measured 255-262 MiB RSS per QEMU on a loaded host,
each able to grow by its 64 MiB translation cache) plus the lane's Jupyter kernel (160-166 MiB)
and runner (160-177 MiB); so min(usable cores, available memory / LANE_MEMORY_MIB), at least 1.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial

from rich.console import Console
from rich.markup import escape

from ucnb.errors import Interrupted
from ucnb.evidence import index
from ucnb.runner.execute import Beside
from ucnb.runner.interrupt import Interruption, owning_signals
from ucnb.runner.progress import Board
from ucnb.runner.suites import NOT_RUN, PENDING, SuiteEntry

LANE_MEMORY_MIB = 2560
POLL_S = 0.2


@dataclass(frozen=True)
class Jobs:
    """How many lanes run side by side, and why that many."""

    count: int
    reason: str


def host_capacity() -> tuple[int, int]:
    """(usable cores, available memory in MiB) of this host."""
    with open("/proc/meminfo") as f:
        meminfo = dict(line.split(":", 1) for line in f)
    return len(os.sched_getaffinity(0)), int(meminfo["MemAvailable"].split()[0]) // 1024


def default_jobs(cores: int | None = None, available_mib: int | None = None) -> Jobs:
    """One lane per core, as far as memory holds LANE_MEMORY_MIB per lane (see the module)."""
    if cores is None or available_mib is None:
        cores, available_mib = host_capacity()
    count = max(1, min(cores, available_mib // LANE_MEMORY_MIB))
    return Jobs(count, f"default: {cores} cores, {available_mib / 1024:.1f} GiB available, "
                       f"{LANE_MEMORY_MIB / 1024:.1f} GiB and one core a lane")


class Signals:
    """SIGINT/SIGTERM for the suite: recorded, and passed on to every lane's `Interruption`."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._lanes: list[Interruption] = []
        self._lock = threading.RLock()   # the handler runs in the main thread, which may hold it

    def receive(self, signum: int) -> None:
        self.received.append(signum)
        with self._lock:
            lanes = list(self._lanes)
        for lane in lanes:
            lane.receive(signum)

    def interruption(self) -> Interruption:
        """A new lane's interruption, which gets every later signal."""
        lane = Interruption()
        with self._lock:
            self._lanes.append(lane)
        return lane


class Spans:
    """When each lane of this suite run started and ended: who ran alongside whom."""

    def __init__(self) -> None:
        self._spans: dict[str, tuple[float, float | None]] = {}
        self._lock = threading.Lock()

    def start(self, name: str) -> None:
        with self._lock:
            self._spans[name] = (time.monotonic(), None)

    def end(self, name: str) -> None:
        with self._lock:
            self._spans[name] = (self._spans[name][0], time.monotonic())

    def alongside(self, name: str) -> list[str]:
        """The other lanes whose run overlapped `name`'s so far, in the order they started."""
        with self._lock:
            start = self._spans[name][0]
            return [other for other, (s, e) in sorted(self._spans.items(), key=lambda kv: kv[1][0])
                    if other != name and (e is None or e > start)]


def run_entries(entries: list[SuiteEntry], jobs: Jobs, guard: Callable[[SuiteEntry], None],
                lane: Callable[[SuiteEntry, Beside], None], console: Console, progress: bool) -> bool:
    """Run the pending entries in place (`pending` status), lanes up to `jobs.count` at a time and
    guards alone; entries not started because of a signal become `not-run`. True when interrupted."""
    signals, spans = Signals(), Spans()
    board = Board() if progress and jobs.count > 1 else None
    running: dict[Future[None], SuiteEntry] = {}

    def environment(name: str) -> dict[str, str]:
        return {"suite_jobs": str(jobs.count), "suite_jobs_reason": jobs.reason,
                "suite_ran_alongside": ", ".join(spans.alongside(name)) or "none"}

    def timed(entry: SuiteEntry, run: Callable[[], None]) -> None:
        entry.started = index.iso_utc(time.time())
        t0 = time.monotonic()
        spans.start(entry.name)
        try:
            run()
        finally:
            spans.end(entry.name)
            entry.duration_s = round(time.monotonic() - t0, 2)

    with owning_signals(signals.receive), ThreadPoolExecutor(jobs.count, thread_name_prefix="lane") as pool, \
            board or contextlib.nullcontext():
        for entry in entries:
            if entry.status != PENDING:
                console.print(f"[yellow]{entry.status}[/] {entry.name}: {escape(entry.reason)}")
                continue
            _drain(running, 0 if entry.kind == "guard" else jobs.count - 1)  # a barrier, or a free slot
            # Interrupted: the suite got a signal, or a lane was interrupted from elsewhere (its kernel).
            if signals.received or any(e.exit_code == Interrupted.exit_code for e in entries):
                entry.status, entry.reason = NOT_RUN, "the suite was interrupted before this step"
            elif entry.kind == "guard":
                timed(entry, partial(guard, entry))
            else:
                beside = Beside(signals.interruption(), partial(environment, entry.name), board)
                running[pool.submit(timed, entry, partial(lane, entry, beside))] = entry
        _drain(running, 0)
    return bool(signals.received)


def _drain(running: dict[Future[None], SuiteEntry], at_most: int) -> None:
    """Wait (waking for signals) until at most `at_most` lanes run; a lane's exception is raised."""
    while len(running) > at_most:
        done, _ = wait(running, timeout=POLL_S, return_when=FIRST_COMPLETED)
        for future in done:
            del running[future]
            future.result()
