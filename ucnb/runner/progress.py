"""Live progress of a lane run: tails the run's events.jsonl while papermill executes it."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

MARKS = {"passed": "[green]✓[/]", "failed": "[red]✗[/]", "skipped": "[yellow]-[/]"}


class LaneProgress:
    """Prints each finished step once and shows the running one with a spinner."""

    def __init__(self, events: Path, console: Console, title: str) -> None:
        self.events, self.console, self.title = events, console, title
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
            line = escape(f"{row['name']}{node}{took}{detail}")
            self.console.print(f"  {MARKS.get(row['outcome'], '?')} {line}",
                               highlight=False, markup=True)

    def _loop(self) -> None:
        with self.console.status(self.title) as status:
            while not self._stop.wait(0.25):
                self._poll()
                elapsed = time.monotonic() - self._started
                current = next(reversed(self._running.values()), None)
                what = f"{current['name']} [{current['node']}]" if current and current["node"] else (
                    current["name"] if current else "starting")
                status.update(f"{self.title} {elapsed:5.1f}s · {what}")
