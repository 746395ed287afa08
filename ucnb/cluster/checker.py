"""Whole-history linearizability checker for a key-value store (a register per key).

Is there one total order of the operations, consistent with real time (an op that returned
before another was invoked comes first), in which every read returns the latest write? Checking
ops one by one misses stale reads and lost writes that only an order across clients exposes.

- Keys are checked independently: registers are P-compositional (a history is linearizable iff
  every key's sub-history is), and small searches are exponentially cheaper than one big one.
- Per key, Wing & Gong's search with Lowe's memo, structured like Porcupine (the checker of etcd's
  robustness suite): every op is a call and a return entry in a doubly linked list sorted by
  time. At a call, try to linearize the op now; if the register allows it and (linearized set,
  value) is new, push it, *lift* both its entries out of the list and restart at the head. At a
  return, that op was not linearized in time: pop the last choice, *unlift* it, try the next call.
  The memo never explores a configuration twice.
- At equal times calls sort before returns: ops that touch count as concurrent. This is the
  conservative choice (clock granularity never makes a false violation).
- Completions (Jepsen's): `ok` took effect within [invoke, ok]; `fail` certainly did not (a
  failed write is left out of the search, a failed read dropped); `info` (timeout) or a missing
  completion may take effect at any time after the invoke, or never: return time +inf, and an
  info read constrains nothing (dropped). An info write whose value no read returned is dropped
  too (see `_live`): it can never be needed to explain a read.
- The search can be exponential (many concurrent ops on one key). A time and a state budget bound
  it; running out answers "unknown", never "ok". A violation beats unknown.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Verdict = bool | Literal["unknown"]
INF = math.inf


class Event(Protocol):
    """One recorded event; ucnb.history.Op fits (read-only attributes, so any dataclass does)."""

    @property
    def process(self) -> Hashable: ...
    @property
    def type(self) -> str: ...  # invoke | ok | fail | info
    @property
    def f(self) -> str: ...  # write | read
    @property
    def key(self) -> Hashable: ...
    @property
    def value(self) -> Hashable | None: ...
    @property
    def t(self) -> float: ...


@dataclass(slots=True)
class Operation:
    """An invoke paired with its completion. `value`: written, or read (None = key absent)."""

    process: Hashable
    f: str
    key: Hashable
    value: Hashable | None
    call: float
    ret: float  # +inf when indeterminate
    status: str  # ok | fail | info
    index: int  # position of the invoke in the input; -1 for the final-state read

    def row(self) -> dict[str, Any]:
        return {"process": self.process, "f": self.f, "value": self.value, "status": self.status,
                "call": self.call, "ret": self.ret, "index": self.index}


@dataclass
class KeyOutcome:
    """Why one key is not (or not provably) linearizable, with the operations around it."""

    key: Hashable
    linearizable: Verdict
    kind: str  # phantom | failed-write-present | stale-read | lost-write | non-linearizable | unknown
    reason: str
    operations: int
    culprit: Operation | None = None  # the op nothing explains
    witness: Operation | None = None  # the op proving it (the failed write, the overwriting write)
    prefix: list[Operation] = field(default_factory=list)  # longest linearizable prefix, in order
    pending: list[Operation] = field(default_factory=list)  # ops open where the search got stuck
    states: int = 0  # memo entries the search made


@dataclass
class CheckResult:
    linearizable: Verdict
    operations: int
    keys: int
    reads: int
    writes: int
    counts: dict[str, dict[str, int]]  # f -> type -> n, e.g. counts["write"]["info"]
    keys_checked: int  # keys whose search ran (stopping at the first violation skips the rest)
    outcomes: list[KeyOutcome]  # bad and unknown keys only
    elapsed: float
    states: int
    warnings: list[str] = field(default_factory=list)

    @property
    def violations(self) -> list[KeyOutcome]:
        return [o for o in self.outcomes if o.linearizable is False]

    def violation_table(self, context: int = 3) -> list[dict[str, Any]]:
        """Rows for a notebook table: per bad key, the last `context` ops of the longest
        linearizable prefix, the ops pending there, the witness and the culprit."""
        rows: list[dict[str, Any]] = []
        for out in self.outcomes:
            head = {"key": out.key, "kind": out.kind}
            if out.culprit is None:
                rows.append({**head, "role": out.kind, "reason": out.reason})
                continue
            roles = {id(o): ("before", o) for o in (out.prefix[-context:] if context > 0 else [])}
            roles |= {id(o): ("pending", o) for o in out.pending if o is not out.culprit}
            if out.witness is not None:
                roles[id(out.witness)] = ("witness", out.witness)
            part = sorted(roles.values(), key=lambda ro: (ro[1].call, ro[1].ret))
            rows += [{**head, "role": role, **o.row(), "reason": ""} for role, o in part]
            rows.append({**head, "role": "violation", **out.culprit.row(), "reason": out.reason})
        return rows

    def table(self, context: int = 3) -> Any:
        """violation_table() as a pandas DataFrame (pandas imported only here)."""
        import pandas as pd

        return pd.DataFrame(self.violation_table(context))


def _absent(value: Hashable | None) -> Hashable | None:
    return None if value is None or value == "" else value


def pair(events: Iterable[Event]) -> tuple[list[Operation], list[str]]:
    """Operations from events: an invoke is completed by the next event of the same process."""
    ops: list[Operation] = []
    warnings: list[str] = []
    open_: dict[Hashable, tuple[int, Event]] = {}

    def indeterminate(i: int, inv: Event) -> Operation:
        return Operation(inv.process, inv.f, inv.key, _absent(inv.value) if inv.f == "write" else None,
                         inv.t, INF, "info", i)

    for i, e in enumerate(events):
        if e.type == "invoke":
            if e.process in open_:
                warnings.append(f"event {i}: process {e.process!r} invoked before its last op completed")
                ops.append(indeterminate(*open_.pop(e.process)))
            open_[e.process] = (i, e)
        elif e.type in ("ok", "fail", "info") and e.process in open_:
            j, inv = open_.pop(e.process)
            if e.type == "info":
                ops.append(indeterminate(j, inv))
                continue
            if (e.f, e.key) != (inv.f, inv.key) or e.t < inv.t:
                warnings.append(f"event {i}: completion does not match its invoke (event {j})")
            value = e.value if inv.f == "read" else inv.value
            ops.append(Operation(inv.process, inv.f, inv.key, _absent(value), inv.t, max(e.t, inv.t),
                                 e.type, j))
        else:
            warnings.append(f"event {i}: {e.type!r} of process {e.process!r} completes no invoke: ignored")
    ops += [indeterminate(i, inv) for i, inv in open_.values()]
    ops.sort(key=lambda o: o.index)
    return ops, warnings


def check(events: Iterable[Event], final: Mapping[Any, Hashable | None] | None = None, *,
          time_budget: float = 10.0, state_budget: int = 1_000_000,
          stop_at_first: bool = True) -> CheckResult:
    """Check a whole history; `final` (key -> value read after the faults; a key missing from it
    reads as absent) is checked as one more read of each key after every other operation.

    `time_budget` (seconds) bounds the whole check, `state_budget` (memo entries, roughly 100-200
    bytes each) each key's search. Cheap checks (phantom values, present failed writes) run on
    every key; then keys are searched smallest first, so a pathological key spends the budget
    last, stopping at the first violation when `stop_at_first`."""
    start = time.monotonic()
    ops, warnings = pair(events)
    counts: dict[str, dict[str, int]] = {f: {"ok": 0, "fail": 0, "info": 0} for f in ("write", "read")}
    by_key: dict[Hashable, list[Operation]] = defaultdict(list)
    for o in ops:
        counts.setdefault(o.f, {"ok": 0, "fail": 0, "info": 0})[o.status] += 1
        by_key[o.key].append(o)
    if final is not None:
        last = max((x for o in ops for x in (o.call, o.ret) if x < INF), default=0.0)
        for key in {*final, *(o.key for o in ops if o.f == "write")}:
            by_key[key].append(Operation("final", "read", key, _absent(final.get(key)), last + 1, last + 2,
                                         "ok", -1))
    outcomes: list[KeyOutcome] = []
    searchable = []
    for key, kops in by_key.items():
        bad = _values_check(key, kops)
        if bad is not None:
            outcomes.append(bad)
        else:
            searchable.append((key, _live(kops)))
    searchable.sort(key=lambda kv: len(kv[1]))
    checked = states = 0
    for key, kops in searchable:
        if stop_at_first and any(o.linearizable is False for o in outcomes):
            break
        out = _search(key, kops, start + time_budget, state_budget)
        checked += 1
        states += out.states
        if out.linearizable is not True:
            outcomes.append(out)
    verdicts = {o.linearizable for o in outcomes}
    verdict: Verdict = False if False in verdicts else "unknown" if "unknown" in verdicts else True
    return CheckResult(verdict, len(ops), len(by_key), sum(counts["read"].values()),
                       sum(counts["write"].values()), counts, checked, outcomes,
                       time.monotonic() - start, states, warnings)


def _live(ops: list[Operation]) -> list[Operation]:
    """The ops the search must order: ok ops, and the indeterminate writes some read saw.

    An indeterminate write no ok read returned (the final state included) is left out: it may
    never have happened, and if it did, no read fell between it and the next write (none returned
    its value), so the same order without it explains every read. Timeouts pile up while a
    cluster is down; each one kept would double the search."""
    seen = {o.value for o in ops if o.f == "read" and o.status == "ok"}
    return [o for o in ops if o.status == "ok" or (o.f == "write" and o.status == "info" and o.value in seen)]


def _values_check(key: Hashable, ops: list[Operation]) -> KeyOutcome | None:
    """A read of a value no client wrote (phantom), or only a failed write wrote (present failed
    write): a violation without any search."""
    written = {o.value for o in ops if o.f == "write" and o.status != "fail"}
    failed = {o.value: o for o in ops if o.f == "write" and o.status == "fail"}
    for r in ops:
        if r.f != "read" or r.status != "ok" or r.value is None or r.value in written:
            continue
        where = "the final state" if r.index < 0 else f"a read at {r.call:g}"
        if r.value in failed:
            w = failed[r.value]
            return KeyOutcome(key, False, "failed-write-present",
                              f"{where} returned {r.value!r}, written only by a failed write (process "
                              f"{w.process!r} at {w.call:g})", len(ops), r, w)
        what = "a key no client wrote" if not written and not failed else "a value no client wrote"
        return KeyOutcome(key, False, "phantom", f"{where} returned {r.value!r}: {what}", len(ops), r)
    return None


class _Entry:
    """A call or return entry of the linked list; a call's `match` is its return entry."""

    __slots__ = ("id", "match", "next", "op", "prev", "time")

    def __init__(self, op: Operation, id: int, time: float) -> None:
        self.op, self.id, self.time = op, id, time
        self.match: _Entry | None = None
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


def _lift(e: _Entry) -> None:
    """Unlink a call entry and its return entry (dancing links: they keep their own pointers)."""
    m = e.match
    assert e.prev is not None and e.next is not None and m is not None and m.prev is not None
    e.prev.next, e.next.prev = e.next, e.prev
    m.prev.next = m.next
    if m.next is not None:
        m.next.prev = m.prev


def _unlift(e: _Entry) -> None:
    m = e.match
    assert e.prev is not None and e.next is not None and m is not None and m.prev is not None
    m.prev.next = m
    if m.next is not None:
        m.next.prev = m
    e.prev.next = e.next.prev = e


def _search(key: Hashable, ops: list[Operation], deadline: float, max_states: int) -> KeyOutcome:
    """Wing & Gong / Lowe over one key's ops (ok ops, info writes; the initial value is absent).

    The linearized set is a bitset over op ids (ids follow call order) kept as (low, high): every
    id below `low` is linearized, `high` holds the bits from `low` up. Ops linearize roughly in
    call order, so memo keys stay small instead of growing with the history."""
    ops = sorted(ops, key=lambda o: o.call)
    head = _Entry(Operation(None, "", key, None, -INF, -INF, "", -1), -1, -INF)
    entries = []
    for i, o in enumerate(ops):
        call, ret = _Entry(o, i, o.call), _Entry(o, i, o.ret)
        call.match = ret
        entries += [(o.call, 0, i, call), (o.ret, 1, i, ret)]
    prev = head
    for *_, node in sorted(entries, key=lambda x: x[:3]):
        prev.next, node.prev, prev = node, prev, node
    state: Hashable | None = None
    low = high = depth = steps = 0
    frame: tuple[Any, ...] | None = None  # (call entry, state, low, high, parent frame, depth)
    memo: set[tuple[int, int, Hashable | None]] = set()
    best: tuple[int, Any, Hashable | None, list[Operation], Operation] | None = None
    entry: _Entry | None = head.next
    while entry is not None:
        steps += 1
        if len(memo) >= max_states or (steps & 1023 == 0 and time.monotonic() > deadline):
            what = "state" if len(memo) >= max_states else "time"
            return KeyOutcome(key, "unknown", "unknown", f"{what} budget exhausted after {len(memo)} "
                              f"states", len(ops), states=len(memo))
        if entry.match is not None:  # a call: try to linearize its op here
            op = entry.op
            if op.f == "write" or op.value == state:
                new_state = op.value if op.f == "write" else state
                if entry.id == low:
                    new_high = high | 1
                    ones = (~new_high & (new_high + 1)).bit_length() - 1
                    new_low, new_high = low + ones, new_high >> ones
                else:
                    new_low, new_high = low, high | (1 << (entry.id - low))
                config = (new_low, new_high, new_state)
                if config not in memo:
                    memo.add(config)
                    frame = (entry, state, low, high, frame, depth)
                    state, low, high, depth = new_state, new_low, new_high, depth + 1
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        elif entry.time == INF:  # only indeterminate ops are left: they may happen last, or never
            break
        else:  # a return: its op was not linearized in time, undo the last choice
            if best is None or depth > best[0]:
                pending: list[Operation] = []
                e: _Entry | None = head.next
                while e is not None and e is not entry:
                    pending.append(e.op)
                    e = e.next
                best = (depth, frame, state, pending, entry.op)
            if frame is None:
                assert best is not None
                return _explain(key, ops, best, len(memo))
            entry, state, low, high, frame, depth = frame
            _unlift(entry)
            entry = entry.next
    return KeyOutcome(key, True, "ok", "", len(ops), states=len(memo))


def _explain(key: Hashable, ops: list[Operation], best: tuple[Any, ...], states: int) -> KeyOutcome:
    """A violation, described from the deepest point the search reached: the read there that the
    register cannot return, and, when there is one, the acknowledged write that proves it stale."""
    _, frame, state, pending, stuck = best
    prefix: list[Operation] = []
    while frame is not None:
        prefix.append(frame[0].op)
        frame = frame[4]
    prefix.reverse()
    failing = [o for o in [stuck, *pending] if o.f == "read" and o.value != state]
    culprit = failing[0] if failing else stuck
    v = culprit.value
    writers = [o for o in ops if o.f == "write" and o.value == v]
    overwrote = [w for w in ops if w.f == "write" and w.status == "ok" and w.value != v
                 and w.ret < culprit.call and all(x.ret < w.call for x in writers)]
    witness = max(overwrote, key=lambda w: w.ret, default=None)
    where = "the final state" if culprit.index < 0 else f"the read at [{culprit.call:g}, {culprit.ret:g}]"
    said = f"{where} {'has no value' if v is None else f'returned {v!r}'}"
    if culprit.f != "read":
        kind, reason = "non-linearizable", f"no order of the ops explains the {culprit.f} at {culprit.call:g}"
    elif witness is not None:
        lost = culprit.index < 0 or v is None
        kind = "lost-write" if lost else "stale-read"
        after = "" if v is None else f" after every write of {v!r}"
        reason = (f"{said}, but write {witness.value!r} was acknowledged at {witness.ret:g}{after}"
                  + (": the acknowledged write is lost" if lost else ""))
    else:
        kind = "lost-write" if culprit.index < 0 else "stale-read"
        reason = (f"{said}: no order of the concurrent ops explains it (the longest linearizable "
                  f"prefix, {len(prefix)} ops, leaves {state!r})")
    return KeyOutcome(key, False, kind, reason, len(ops), culprit, witness, prefix, pending, states)
