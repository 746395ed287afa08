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
    """A fault from injection to healed; `held_s`: how long the degraded state was held, from the
    fault being in place to its healing starting."""

    kind: str
    targets: str
    start: float
    end: float | None = None
    held_s: float | None = None


@dataclass
class FigureRow:
    """A headline figure of the lane (acknowledged writes lost, install time…) for result.json."""

    name: str
    value: float | int | str | bool | None
    unit: str = ""


@dataclass
class CoverageRow:
    """One item of what a lane claims to cover (a required component…) and whether it did:
    exercised, skipped (with why), failed, or not reached (the run stopped first)."""

    what: str
    item: str
    status: str
    reason: str = ""
    step: str = ""       # the step that exercised or skipped it (so a skip is not listed twice)


COVERAGE_STATUSES = ("exercised", "skipped", "failed", "not reached")
TABLES: dict[str, type] = {"steps": StepRow, "markers": MarkerRow, "checks": CheckRow, "faults": FaultRow,
                           "figures": FigureRow, "coverage": CoverageRow}


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
        self.waiting = threading.Event()   # set when the run first waits (on a guest, a marker)

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
        """Record a numbered, timed step; an exception marks it failed with its message, an
        interrupt (the stop button, Ctrl-C) "interrupted": the lane did not fail it, the user
        stopped it (a gap in the verdict; under `ucnb run` the run itself fails as interrupted)."""
        row = StepRow(len(self.rows["steps"]) + 1, name, node, time.time(), kind=kind)
        self._emit("steps", row)
        if kind == "wait":
            self.waiting.set()
        try:
            yield row
        except KeyboardInterrupt:
            row.end, row.outcome = time.time(), "interrupted"
            row.detail = f"interrupted by the user after {row.end - row.start:.1f}s"
            self._emit("steps", row, new=False)
            raise
        except BaseException as exc:
            row.end, row.outcome = time.time(), "failed"
            row.detail = row.detail or f"{type(exc).__name__}: {exc}"
            self._emit("steps", row, new=False)
            raise
        row.end = time.time()
        if row.outcome == "running":
            row.outcome = "passed"
        self._emit("steps", row, new=False)

    def skip(self, name: str, reason: str, node: str = "", kind: str = "step",
             covers: tuple[str, str] | None = None) -> StepRow:
        """A step this run cannot perform, with the reason; never counted as passed.

        `kind="delegated"`: the profile's product commands covered it instead (not a gap);
        `covers=(what, item)` also records that item of the lane's coverage as skipped."""
        now = time.time()
        row = StepRow(len(self.rows["steps"]) + 1, name, node, now, now, "skipped", reason, kind)
        self._emit("steps", row)
        if covers:
            self.cover(covers[0], covers[1], "skipped", reason, step=name)
        return row

    def cover(self, what: str, item: str, status: str, reason: str = "", step: str = "") -> None:
        """Record how one item of what the lane claims was covered (the last record of an item
        wins): the banner says "2 of 5 required components exercised; 3 skipped: …"."""
        if status not in COVERAGE_STATUSES:
            raise ValueError(f"coverage status {status!r} is not one of {COVERAGE_STATUSES}")
        with self._lock:
            row = next((r for r in self.rows["coverage"] if (r.what, r.item) == (what, item)), None)
        if row is None:
            self._emit("coverage", CoverageRow(what, item, status, reason, step))
        else:
            row.status, row.reason, row.step = status, reason, step or row.step
            self._emit("coverage", row, new=False)

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
        """One table as a DataFrame on one clock: absolute times as UTC, markers also as seconds
        since their node's power-on, durations in seconds (column names carry the unit)."""
        import pandas as pd  # here, not at import: the CLI reads records without pandas

        from ucnb.evidence.tables import utc_text

        frame = pd.DataFrame([asdict(r) for r in self.rows[name]], columns=field_names(name))
        if name == "steps":
            frame.insert(3, "utc_start", frame["start"].map(utc_text))
            frame.insert(4, "duration_s", (frame["end"] - frame["start"]).round(3))
            frame = frame.drop(columns=["start", "end"])
        elif name == "faults":
            frame.insert(2, "utc_start", frame["start"].map(utc_text))
            frame.insert(3, "duration_s", (frame["end"] - frame["start"]).round(3))
            frame = frame.drop(columns=["start", "end"])
        elif name == "markers":
            frame = pd.DataFrame({"node": frame["node"], "marker": frame["marker"],
                                  "since_power_on_s": frame["since_boot"].round(3),
                                  "utc": frame["first_seen"].map(utc_text)})
        elif name == "checks":
            frame["t"] = frame["t"].map(utc_text)
            frame = frame.rename(columns={"t": "utc"})
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
                   row["name"] if table == "figures" else
                   (row["what"], row["item"]) if table == "coverage" else n)
            tables[table][key] = row
    return {name: list(rows.values()) for name, rows in tables.items()}
