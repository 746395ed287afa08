"""Serial console watching: a thread per node tails the log and timestamps every marker.

Waiters hold a cursor into the node's marker list (os-autoinst's `wait_serial` cursor), so a
marker is consumed once; a failure marker ends a wait at once with the console context.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ucnb import markers as markers_mod
from ucnb.errors import LaneFailure
from ucnb.markers import Marker


@dataclass(frozen=True)
class SeenMarker:
    marker: Marker
    seen: float       # wall-clock time the watcher read it


class SerialWatcher:
    """Tails one serial log from a byte offset; records markers as they appear."""

    def __init__(self, path: Path, node: str, on_marker: Callable[[SeenMarker], None] | None = None,
                 poll: float = 0.05) -> None:
        self.path, self.node, self.poll = path, node, poll
        self.on_marker = on_marker
        self.seen: list[SeenMarker] = []
        self.offset = path.stat().st_size if path.exists() else 0
        self._pending = b""
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"serial-{self.node}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        self.read_once()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.read_once()
            self._stop.wait(self.poll)

    def read_once(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        if not chunk:
            return
        now = time.time()
        data = self._pending + chunk
        base = self.offset - len(self._pending)
        found, consumed = markers_mod.parse(data, base)
        self._pending = data[consumed:]
        self.offset += len(chunk)
        if found:
            with self._changed:
                for m in found:
                    seen = SeenMarker(m, now)
                    self.seen.append(seen)
                    if self.on_marker:
                        self.on_marker(seen)
                self._changed.notify_all()

    def context(self, around: int, lines: int = 15) -> str:
        """The console lines up to byte offset `around` (for failure messages)."""
        try:
            with self.path.open("rb") as f:
                f.seek(max(0, around - 4000))
                text = f.read(4000 + 500).decode("utf-8", "replace").replace("\r", "")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def tail(self, lines: int = 15) -> str:
        return self.context(self.offset, lines)

    def cursor(self) -> MarkerCursor:
        return MarkerCursor(self, len(self.seen))


class MarkerCursor:
    """A position in a watcher's marker list; each wait consumes the markers it passes."""

    def __init__(self, watcher: SerialWatcher, index: int = 0) -> None:
        self.watcher, self.index = watcher, index

    def wait_for(self, expected: str, timeout: float) -> SeenMarker:
        """Block until a marker matching `expected` appears after the cursor; raise on failure markers."""
        deadline = time.monotonic() + timeout
        w = self.watcher
        with w._changed:
            while True:
                while self.index < len(w.seen):
                    seen = w.seen[self.index]
                    self.index += 1
                    if seen.marker.failed:
                        context = w.context(seen.marker.offset + len(seen.marker.line) + 1)
                        raise LaneFailure(f"{w.node}: failure marker {seen.marker.name!r} while waiting "
                                          f"for {expected!r}; console:\n{context}")
                    if seen.marker.matches(expected):
                        return seen
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    last = w.seen[-1].marker.name if w.seen else "none"
                    raise LaneFailure(
                        f"{w.node}: timed out after {timeout:g}s waiting for marker {expected!r}; "
                        f"last marker: {last}; console tail:\n{w.tail()}")
                w._changed.wait(min(remaining, 0.5))
