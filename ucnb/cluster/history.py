"""Operation histories (Jepsen's lesson): every write as invoke, then ok, fail or info.

`ok` means acknowledged, `fail` means certainly not applied, `info` means indeterminate (a
timeout: the write may or may not have happened). After the faults, every acknowledged write
must be readable with its value; an `info` write may be either.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from ucnb.lab.ssh import CommandResult
from ucnb.lazy import lazy_module

if TYPE_CHECKING:
    import pandas as pd
else:  # `ucnb run` imports this module to validate parameters: pandas only once used
    pd = lazy_module("pandas")

# Errors that prove the request never reached a member: the write certainly did not happen.
DEFINITE_FAILURES = ("connection refused", "no route to host", "network is unreachable")


@dataclass
class Op:
    process: str
    type: str          # invoke | ok | fail | info
    f: str             # write | read
    key: str
    value: str
    t: float
    latency: float | None = None
    error: str = ""


def classify(result: CommandResult) -> tuple[str, str]:
    """ok / fail / info for one client call, with the error text."""
    if result.ok:
        return "ok", ""
    text = (result.stderr or result.stdout).strip().splitlines()
    error = text[-1] if text else str(result)
    if result.exit_status is not None and any(e in error.lower() for e in DEFINITE_FAILURES):
        return "fail", error
    return "info", error


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, op: Op) -> None:
        with self._lock:
            self.ops.append(op)

    def completions(self) -> list[Op]:
        return [o for o in self.ops if o.type != "invoke"]

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(o) for o in self.ops],
                            columns=["process", "type", "f", "key", "value", "t", "latency", "error"])


@dataclass(frozen=True)
class DurabilityCheck:
    acknowledged: int
    lost: list[Op]
    indeterminate_present: int
    indeterminate_absent: int
    failed: int

    @property
    def ok(self) -> bool:
        return not self.lost


def check_acknowledged(history: History, final: dict[str, str]) -> DurabilityCheck:
    """Every acknowledged write must be in the final state with its value."""
    writes = [o for o in history.completions() if o.f == "write"]
    ok = [o for o in writes if o.type == "ok"]
    info = [o for o in writes if o.type == "info"]
    return DurabilityCheck(
        acknowledged=len(ok),
        lost=[o for o in ok if final.get(o.key) != o.value],
        indeterminate_present=sum(1 for o in info if final.get(o.key) == o.value),
        indeterminate_absent=sum(1 for o in info if final.get(o.key) != o.value),
        failed=sum(1 for o in writes if o.type == "fail"),
    )


class WriteWorkload:
    """A thread writing unique keys through `put(key, value)` until stopped, recording each op."""

    def __init__(self, put: Callable[[str, str], CommandResult], prefix: str, process: str,
                 history: History | None = None, interval: float = 0.2) -> None:
        self.put, self.prefix, self.process, self.interval = put, prefix, process, interval
        self.history = history or History()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"workload-{process}", daemon=True)
        self.count = 0

    def start(self) -> WriteWorkload:
        self._thread.start()
        return self

    def stop(self) -> History:
        self._stop.set()
        self._thread.join(timeout=60)
        return self.history

    def _run(self) -> None:
        while not self._stop.is_set():
            self.count += 1
            key, value = f"{self.prefix}{self.count:06d}", f"v{self.count}-{time.time():.3f}"
            start = time.time()
            self.history.record(Op(self.process, "invoke", "write", key, value, start))
            try:
                kind, error = classify(self.put(key, value))
            except Exception as exc:  # the client host itself failed: indeterminate
                kind, error = "info", f"{type(exc).__name__}: {exc}"
            end = time.time()
            self.history.record(Op(self.process, kind, "write", key, value, end, end - start, error))
            self._stop.wait(self.interval)
