"""Live progress of a lane run: tails the run's events.jsonl while papermill executes it.

Lanes of a suite running side by side share one `Board` instead of a spinner each (rich shows one
live display at a time): each finished step is printed once, prefixed with its lane, and every
few seconds a line per running lane says where it is.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

MARKS = {"passed": "[green]✓[/]", "failed": "[red]✗[/]", "skipped": "[yellow]-[/]"}
TICK_S = 0.25
HEARTBEAT_S = 10.0


class LaneProgress:
    """Prints each finished step once and shows the running one with a spinner (or, on the
    `board` it shares with lanes running beside it, in its heartbeat lines)."""

    def __init__(self, events: Path, console: Console, title: str, board: Board | None = None) -> None:
        self.events, self.console, self.title, self.board = events, console, title, board
        self._prefix = f"{title}: " if board else ""
        self._stop = threading.Event()
        self._offset = 0
        self._done: set[int] = set()
        self._running: dict[int, dict[str, Any]] = {}
        self._thread = threading.Thread(target=self._loop, name="lane-progress", daemon=True)
        self._started = time.monotonic()

    def __enter__(self) -> LaneProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._poll()

    def _poll(self) -> None:
        if not self.events.exists():
            return
        with self.events.open() as f:
            f.seek(self._offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind("\n") + 1]
        self._offset += len(complete.encode())
        for line in complete.splitlines():
            event = json.loads(line)
            if event["table"] != "steps":
                continue
            row = event["row"]
            if row["outcome"] == "running":
                self._running[row["index"]] = row
                continue
            self._running.pop(row["index"], None)
            if row["index"] in self._done or (row["kind"] == "wait" and row["outcome"] == "passed"):
                continue
            self._done.add(row["index"])
            node = f" [{row['node']}]" if row["node"] else ""
            took = f" {row['end'] - row['start']:.1f}s" if row.get("end") else ""
            detail = f" — {row['detail']}" if row["detail"] and row["outcome"] != "passed" else ""
            line = escape(f"{self._prefix}{row['name']}{node}{took}{detail}")
            self.console.print(f"  {MARKS.get(row['outcome'], '?')} {line}",
                               highlight=False, markup=True)

    def describe(self) -> str:
        """`<lane> <elapsed> · <the running step [node]>`."""
        elapsed = time.monotonic() - self._started
        current = next(reversed(self._running.values()), None)
        what = f"{current['name']} [{current['node']}]" if current and current["node"] else (
            current["name"] if current else "starting")
        return f"{self.title} {elapsed:5.1f}s · {what}"

    def _loop(self) -> None:
        if self.board is not None:
            with self.board.showing(self):
                while not self._stop.wait(TICK_S):
                    self._poll()
            return
        with self.console.status(self.title) as status:
            while not self._stop.wait(TICK_S):
                self._poll()
                status.update(self.describe())


class Board:
    """Progress of lanes running side by side: `with Board():` around them.

    Every HEARTBEAT_S it prints one line per running lane (its time and current step) through
    that lane's own console, so each line is redacted as the lane's are. Plain lines, no live
    display: rich redraws a live display by moving the cursor over what it drew, which lines
    printed meanwhile by the other lanes' consoles would garble.
    """

    def __init__(self, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.heartbeat_s = heartbeat_s
        self._lanes: list[LaneProgress] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="suite-progress", daemon=True)

    def __enter__(self) -> Board:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    @contextlib.contextmanager
    def showing(self, lane: LaneProgress) -> Iterator[None]:
        """The lane is reported on for the block."""
        with self._lock:
            self._lanes.append(lane)
        try:
            yield
        finally:
            with self._lock:
                self._lanes.remove(lane)

    def _loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with self._lock:
                lanes = list(self._lanes)
            for lane in lanes:
                lane.console.print(f"  … {escape(lane.describe())}", highlight=False, markup=True)
