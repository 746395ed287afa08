"""Ctrl-C and SIGTERM during a lane run: always the same ending (exit 130, notebook and result.json
written, the run's labs removed), wherever the signal lands.

Why the runner handles them itself: nbclient replaces the SIGINT/SIGTERM handlers of the loop it
runs in with one that only shuts the kernel down, and the kernel runs in a session of its own
(jupyter_client starts it so), so a terminal's Ctrl-C never reaches it. Left alone, a lane could
end "passed" after Ctrl-C. So papermill runs in a worker thread (where nbclient cannot install
its handlers) and the main thread owns the signals:

- the first signal interrupts the kernel (SIGINT to the kernel: the running cell raises
  KeyboardInterrupt) and stops papermill from starting another cell (the `on_cell_execute` hook
  raises); it is sent again after RESEND_S in case it arrived while the kernel was between cells;
- the kernel is killed when the cell has not ended GRACE_S after the first signal, or at once on
  a second signal (and papermill is given up on GIVE_UP_S later: the notebook is saved per cell);
- whatever papermill then reports, the run ends as interrupted.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ucnb.host.procs import ProcessId

GRACE_S = 15.0
RESEND_S = 2.0
GIVE_UP_S = 60.0   # after the kill: papermill notices a dead kernel within seconds, or never will
SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def owning_signals(receive: Callable[[int], None]) -> Iterator[None]:
    """SIGINT and SIGTERM go to `receive` for the block, the previous handlers after it (no-op
    outside the main thread, where Python delivers no signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, lambda signum, _frame: receive(signum)) for s in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class InterruptedBeforeCell(KeyboardInterrupt):
    """Raised in papermill's thread instead of starting a cell once the run was interrupted."""


class Interruption:
    """The signals a run received and what was done to its kernel about them."""

    def __init__(self) -> None:
        self.signals: list[int] = []
        self.kernel: ProcessId | None = None
        self.cell_running = False
        self._first_at = 0.0
        self._sent_at = 0.0
        self._killed = False
        self._killed_at = 0.0
        self._lock = threading.RLock()   # a signal may land while this thread holds it

    @property
    def requested(self) -> bool:
        return bool(self.signals)

    def describe(self) -> str:
        names = ", ".join(signal.Signals(s).name for s in self.signals)
        return f"interrupted ({names})" + (": the kernel did not stop and was killed" if self._killed else "")

    # -- in the main thread ------------------------------------------------------------------
    @contextlib.contextmanager
    def handling(self) -> Iterator[Interruption]:
        """Own SIGINT and SIGTERM for the block (no-op outside the main thread)."""
        with owning_signals(self.receive):
            yield self

    def receive(self, signum: int) -> None:
        """A signal for this run: its own handler's, or passed on by a suite running lanes side by side."""
        self.signals.append(signum)
        if len(self.signals) == 1:
            self._first_at = time.monotonic()
            self._interrupt_kernel()
        else:
            self._kill_kernel()

    def tick(self) -> None:
        """Called while waiting for papermill: resend the interrupt, or kill after the grace."""
        if not self.requested or self._killed:
            return
        if not self.cell_running:   # between cells or shutting down: papermill ends it
            return
        now = time.monotonic()
        if now - self._first_at > GRACE_S:
            self._kill_kernel()
        elif now - self._sent_at > RESEND_S:
            self._interrupt_kernel()

    def _interrupt_kernel(self) -> None:
        with self._lock:
            if self.kernel is not None and self.cell_running:
                self.kernel.signal(signal.SIGINT)
                self._sent_at = time.monotonic()

    def _kill_kernel(self) -> None:
        with self._lock:
            if self.kernel is not None and self.kernel.signal(signal.SIGKILL):
                self._killed, self._killed_at = True, time.monotonic()

    def stuck(self) -> bool:
        """The kernel was killed GIVE_UP_S ago and papermill has still not returned."""
        return self._killed and time.monotonic() - self._killed_at > GIVE_UP_S

    # -- nbclient hooks, in papermill's thread ---------------------------------------------------
    def before_cell(self, **_: Any) -> None:
        """`on_cell_execute`: no new cell once interrupted."""
        if self.requested:
            raise InterruptedBeforeCell("interrupted before this cell")
        self.cell_running = True

    def after_cell(self, **_: Any) -> None:
        """`on_cell_executed`."""
        self.cell_running = False

    def kernel_started(self, pid: int | None) -> None:
        if pid is not None and self.kernel is None:
            self.kernel = ProcessId.of(pid)
