"""Live progress of a wait in the cell that waits, for a person watching a notebook in JupyterLab.

A kernel started by a Jupyter server for a notebook has `JPY_SESSION_NAME` (the notebook's path);
papermill and `ucnb run` start kernels without it, so their notebooks keep only the tables the
lane shows. The line is one display, updated in place about once a second by a small thread (a
wait may block in a lock or a socket) and left with the outcome when the wait ends.
"""

from __future__ import annotations

import os
import threading
import time
from types import TracebackType
from typing import Any

TICK_S = 1.0


def watched() -> bool:
    """A person may be watching: a Jupyter server started this kernel for a notebook."""
    return bool(os.environ.get("JPY_SESSION_NAME")) and _shell() is not None


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


class WaitProgress:
    """`with WaitProgress("SSH", "node01", 90) as progress: ... progress.observe(text)`."""

    def __init__(self, what: str, node: str, timeout: float) -> None:
        self.what = f"{what} on {node}" if node else what
        self.timeout = timeout
        self.observation = ""
        self._handle: Any = None
        self._done = threading.Event()
        self._updating = threading.Lock()   # the last update is the outcome, never a late tick
        self._start = time.monotonic()

    def observe(self, observation: str) -> None:
        self.observation = observation

    def _text(self, outcome: str | None = None) -> str:
        elapsed = time.monotonic() - self._start
        if outcome is None:
            last = f"; last: {self.observation[:160]}" if self.observation else ""
            return f"… waiting for {self.what}: {elapsed:.0f} s of {self.timeout:g} s{last}"
        return f"{'✓' if outcome == 'done' else '✗'} {self.what}: {outcome} after {elapsed:.1f} s"

    def _tick(self) -> None:
        while not self._done.wait(TICK_S):
            with self._updating:
                if not self._done.is_set():
                    self._handle.update({"text/plain": self._text()}, raw=True)

    def __enter__(self) -> WaitProgress:
        if watched():
            from IPython.display import display

            self._handle = display({"text/plain": self._text()}, raw=True, display_id=True)
            threading.Thread(target=self._tick, name="wait-progress", daemon=True).start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._updating:
            self._done.set()
        if self._handle is not None:
            outcome = ("done" if kind is None else "interrupted" if issubclass(kind, KeyboardInterrupt)
                       else "failed")
            self._handle.update({"text/plain": self._text(outcome)}, raw=True)
