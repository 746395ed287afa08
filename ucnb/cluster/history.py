"""Operation histories (Jepsen's lesson): every read and write as invoke, then ok, fail or info.

`ok` means acknowledged (a read's value is what it returned), `fail` means certainly not applied,
`info` means indeterminate (a timeout: a write may or may not have happened, at any later time).
A few clients share a small key space, so reads and overwrites interleave on every key; each client
has one operation in flight, and its invoke and completion times are taken on the harness (the
real operation happened inside that interval). The whole history then goes to
`ucnb.cluster.checker`; `lost_acknowledged` is the plain durability count beside it.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from ucnb.cluster.checker import Operation, pair
from ucnb.lab.ssh import CommandResult
from ucnb.lazy import lazy_module

if TYPE_CHECKING:
    import pandas as pd
else:  # `ucnb run` imports this module to validate parameters: pandas only once used
    pd = lazy_module("pandas")

# Errors that prove the request never reached a member: the write certainly did not happen.
DEFINITE_FAILURES = ("connection refused", "no route to host", "network is unreachable")
COLUMNS = ["process", "type", "f", "key", "value", "t", "latency", "error"]


@dataclass
class Op:
    """One event. Invoke: a write carries its value, a read none (""). Completion: a read's
    value is what it returned ("" = the key was absent)."""

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

    def snapshot(self) -> list[Op]:
        with self._lock:
            return list(self.ops)

    def completions(self) -> list[Op]:
        return [o for o in self.snapshot() if o.type != "invoke"]

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(o) for o in self.snapshot()], columns=COLUMNS)


@dataclass(frozen=True)
class DurabilityCheck:
    """What the final state says about the writes (the checker judges the whole history)."""

    acknowledged: int
    lost: list[Operation]       # acknowledged writes the final state holds nothing at or after
    indeterminate: int          # info writes (timeouts): applied or not, either is allowed
    indeterminate_final: int    # ... of which the final state holds the value (so applied)
    failed: int

    @property
    def ok(self) -> bool:
        return not self.lost


def lost_acknowledged(history: History | list[Op], final: dict[str, str]) -> DurabilityCheck:
    """Acknowledged writes the final state lost: its key holds neither the write's value nor the
    value of a write that may have come after it (one that had not returned before the
    acknowledged write was invoked; an indeterminate one may return at any time)."""
    ops, _ = pair(history.snapshot() if isinstance(history, History) else history)
    writes = [o for o in ops if o.f == "write"]
    by_key: dict[object, list[Operation]] = defaultdict(list)
    for o in writes:
        if o.status != "fail":
            by_key[o.key].append(o)
    lost = []
    for w in (o for o in writes if o.status == "ok"):
        now = final.get(str(w.key))
        if not any(x.value == now and (x is w or x.ret >= w.call) for x in by_key[w.key]):
            lost.append(w)
    info = [o for o in writes if o.status == "info"]
    return DurabilityCheck(
        acknowledged=sum(1 for o in writes if o.status == "ok"), lost=lost, indeterminate=len(info),
        indeterminate_final=sum(1 for o in info if final.get(str(o.key)) == o.value),
        failed=sum(1 for o in writes if o.status == "fail"))


@dataclass(frozen=True)
class Client:
    """One client's calls: `put(key, value)`, and `get(key)` giving the call's result and the
    value it found (None when absent); `close` when the workload stops."""

    put: Callable[[str, str], CommandResult]
    get: Callable[[str], tuple[CommandResult, str | None]]
    close: Callable[[], None] = lambda: None


class Workload:
    """Clients (name -> Client), each a thread with one operation in flight, reading and writing
    random keys of `keys` until stopped. Values are unique (client and sequence number), so a
    read names the write it saw. Seeded: the same seed, the same choices."""

    def __init__(self, clients: dict[str, Client], keys: list[str], history: History | None = None,
                 interval: float = 0.2, read_fraction: float = 0.5, seed: str = "") -> None:
        if not keys or not clients:
            raise ValueError("a workload needs at least one key and one client")
        self.clients, self.keys, self.interval = clients, keys, interval
        self.read_fraction, self.seed = read_fraction, seed
        self.history = history if history is not None else History()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(p,), name=f"workload-{p}", daemon=True)
                         for p in clients]

    def start(self) -> Workload:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> History:
        """Stop every client after its current operation (one still running at the deadline stays
        open: the checker counts it as indeterminate), then close the clients."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for client in self.clients.values():
            client.close()
        return self.history

    def _client(self, process: str) -> None:
        rng = random.Random(f"{self.seed}/{process}")
        n = 0
        while not self._stop.is_set():
            key = rng.choice(self.keys)
            if rng.random() < self.read_fraction:
                self._op(process, "read", key, "")
            else:
                n += 1
                self._op(process, "write", key, f"{process}-{n:06d}")
            self._stop.wait(self.interval)

    def _op(self, process: str, f: str, key: str, value: str) -> None:
        client = self.clients[process]
        start = time.time()
        self.history.record(Op(process, "invoke", f, key, value, start))
        try:
            if f == "write":
                kind, error = classify(client.put(key, value))
            else:
                result, seen = client.get(key)
                kind, error = classify(result)
                value = (seen or "") if kind == "ok" else ""
        except Exception as exc:  # the client host failed, or a reply we cannot read: indeterminate
            kind, error, value = "info", f"{type(exc).__name__}: {exc}", value if f == "write" else ""
        end = time.time()
        self.history.record(Op(process, kind, f, key, value, end, end - start, error))
