"""The run recorder: every step, wait, marker, check, skip and fault of a run, as plain rows.

Rows are appended to `events.jsonl` as they happen (so a crashed or killed run still leaves its
history, and the CLI can show progress by tailing it); tables and plots are views of the rows.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ucnb.evidence.redact import Redactor

if TYPE_CHECKING:
    import pandas as pd

@dataclass
class StepRow:
    index: int
    name: str
    node: str
    start: float
    end: float | None = None
    outcome: str = "running"
    detail: str = ""
    kind: str = "step"   # step | wait

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start


@dataclass
class MarkerRow:
    node: str
    marker: str
    first_seen: float
    since_boot: float


@dataclass
class CheckRow:
    name: str
    expected: str
    observed: str
    ok: bool
    node: str = ""
    t: float = field(default_factory=time.time)


@dataclass
class FaultRow:
    kind: str
    targets: str
    start: float
    end: float | None = None


@dataclass
class FigureRow:
    """A headline figure of the lane (acknowledged writes lost, install time…) for result.json."""

    name: str
    value: float | int | str | bool | None
    unit: str = ""


TABLES: dict[str, type] = {"steps": StepRow, "markers": MarkerRow, "checks": CheckRow, "faults": FaultRow,
                           "figures": FigureRow}


def field_names(table: str) -> list[str]:
    """The columns of one table, in order."""
    return [f.name for f in fields(TABLES[table])]


class Recorder:
    """Collects one run's rows; thread-safe (serial watchers record markers from their threads)."""

    def __init__(self, events_path: Path | None = None, redactor: Redactor | None = None) -> None:
        self.events_path = events_path
        self.redactor = redactor or Redactor()
        self.started = time.time()
        self.rows: dict[str, list[Any]] = {name: [] for name in TABLES}
        self._lock = threading.Lock()

    # -- writing ---------------------------------------------------------------------------
    def _emit(self, table: str, row: Any, new: bool = True) -> None:
        with self._lock:
            if new:
                self.rows[table].append(row)
            if self.events_path is not None:
                line = self.redactor.text(json.dumps({"table": table, "row": asdict(row)}))
                with self.events_path.open("a") as f:
                    f.write(line + "\n")

    @contextmanager
    def step(self, name: str, node: str = "", kind: str = "step") -> Iterator[StepRow]:
        """Record a numbered, timed step; an exception marks it failed with its message."""
        row = StepRow(len(self.rows["steps"]) + 1, name, node, time.time(), kind=kind)
        self._emit("steps", row)
        try:
            yield row
        except BaseException as exc:
            row.end, row.outcome = time.time(), "failed"
            row.detail = row.detail or f"{type(exc).__name__}: {exc}"
            self._emit("steps", row, new=False)
            raise
        row.end = time.time()
        if row.outcome == "running":
            row.outcome = "passed"
        self._emit("steps", row, new=False)

    def skip(self, name: str, reason: str, node: str = "") -> StepRow:
        """A step this run cannot perform, with the reason; never counted as passed."""
        now = time.time()
        row = StepRow(len(self.rows["steps"]) + 1, name, node, now, now, "skipped", reason)
        self._emit("steps", row)
        return row

    def marker(self, node: str, marker: str, first_seen: float, since_boot: float) -> None:
        self._emit("markers", MarkerRow(node, marker, first_seen, since_boot))

    def check(self, name: str, expected: object, observed: object, ok: bool | None = None,
              node: str = "") -> bool:
        """Record a check; `ok` defaults to expected == observed. Returns ok."""
        result = (expected == observed) if ok is None else ok
        self._emit("checks", CheckRow(name, str(expected), str(observed), bool(result), node))
        return bool(result)

    def figure(self, name: str, value: float | int | str | bool | None, unit: str = "") -> None:
        """A headline figure; the last value recorded under a name is the one result.json keeps."""
        self._emit("figures", FigureRow(name, value, unit))

    @contextmanager
    def fault(self, kind: str, targets: str) -> Iterator[FaultRow]:
        """A fault interval (Jepsen's nemesis): start when injected, end when healed."""
        row = FaultRow(kind, targets, time.time())
        self._emit("faults", row)
        try:
            yield row
        finally:
            row.end = time.time()
            self._emit("faults", row, new=False)

    # -- reading ---------------------------------------------------------------------------
    def table(self, name: str) -> pd.DataFrame:
        """One table as a DataFrame (times as seconds since the run started)."""
        import pandas as pd  # here, not at import: the CLI reads records without pandas

        rows = [asdict(r) for r in self.rows[name]]
        frame = pd.DataFrame(rows, columns=field_names(name))
        for column in ("start", "end", "first_seen", "t"):
            if column in frame:
                frame[column] = (frame[column] - self.started).round(3)
        if name == "steps":
            frame.insert(5, "duration", (frame["end"] - frame["start"]).round(3))
        return frame


def load_events(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Rebuild the tables from an events file (the last record of a row wins)."""
    tables: dict[str, dict[Any, dict[str, Any]]] = {name: {} for name in TABLES}
    if path.exists():
        for n, line in enumerate(path.read_text().splitlines()):
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a killed run
            row = event["row"]
            table = event["table"]
            key = (row.get("index") if table == "steps" else
                   (row["kind"], row["targets"], row["start"]) if table == "faults" else
                   row["name"] if table == "figures" else n)
            tables[table][key] = row
    return {name: list(rows.values()) for name, rows in tables.items()}
