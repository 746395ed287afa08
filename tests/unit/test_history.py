"""The workload's recorded history: clients with one operation in flight, reads and overwrites on
a small key space, outcomes classified; its history is what the checker judges whole."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict

import pytest

from ucnb.cluster.checker import check, pair
from ucnb.cluster.history import Client, History, Op, Workload, lost_acknowledged
from ucnb.lab.ssh import CommandResult


def _result(ok: bool = True, err: str = "") -> CommandResult:
    return CommandResult("client", "etcdctl", 0 if ok else 1, "OK\n" if ok else "", err, 0.001)


class Register:
    """An in-memory store whose operations take effect at one instant inside their call (a
    linearizable store), optionally serving reads from a stale copy."""

    def __init__(self, stale: bool = False, seed: int = 0) -> None:
        self.data: dict[str, str] = {}
        self.first: dict[str, str] = {}  # the first value each key had (what a stale replica keeps)
        self.stale = stale
        self.lock = threading.Lock()
        self.rng = random.Random(seed)

    def _pause(self) -> None:
        time.sleep(self.rng.random() * 0.002)

    def put(self, key: str, value: str) -> CommandResult:
        self._pause()
        with self.lock:
            self.data[key] = value
            self.first.setdefault(key, value)
        self._pause()
        return _result()

    def get(self, key: str) -> tuple[CommandResult, str | None]:
        self._pause()
        with self.lock:
            value = (self.first if self.stale else self.data).get(key)
        self._pause()
        return _result(), value


def _run(workload: Workload, ops: int = 200, timeout: float = 10.0) -> History:
    workload.start()
    deadline = time.monotonic() + timeout
    while len(workload.history.ops) < 2 * ops and time.monotonic() < deadline:
        time.sleep(0.01)
    return workload.stop()


def test_clients_read_and_overwrite_a_small_key_space_one_op_in_flight_each() -> None:
    store = Register()
    keys, clients = ["k0", "k1"], ["n/c1", "n/c2", "n/c3"]
    closed = []
    history = _run(Workload({p: Client(store.put, store.get, lambda p=p: closed.append(p)) for p in clients},
                            keys, interval=0, seed="t"))
    assert sorted(closed) == clients
    ops, warnings = pair(history.ops)
    assert warnings == []
    assert {o.f for o in ops} == {"read", "write"} and {o.key for o in ops} == set(keys)
    assert {o.process for o in ops} == set(clients)
    by_process: dict[str, list[Op]] = defaultdict(list)
    for event in history.ops:
        by_process[event.process].append(event)
    for events in by_process.values():  # invoke, completion, invoke, completion...
        assert [e.type == "invoke" for e in events] == [i % 2 == 0 for i in range(len(events))]
    writes = [o.value for o in ops if o.f == "write"]
    assert len(set(writes)) == len(writes)  # unique values: a read names the write it saw
    assert any(o.f == "read" and o.value is not None for o in ops)
    result = check(history.ops, dict(store.data))
    assert result.linearizable is True, result.violation_table()
    assert lost_acknowledged(history, dict(store.data)).ok


def test_a_stale_replica_is_caught_by_the_checker() -> None:
    store = Register(stale=True)
    clients = {p: Client(store.put, store.get) for p in ("a", "b")}
    history = _run(Workload(clients, ["k0"], interval=0, seed="s"))
    result = check(history.ops, dict(store.data))
    assert result.linearizable is False
    assert result.violations[0].kind in ("stale-read", "lost-write")


def test_failures_and_unreadable_replies_are_recorded_as_such() -> None:
    calls = {"n": 0}

    def put(key: str, value: str) -> CommandResult:
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            raise OSError("the client node went away")
        if calls["n"] % 3 == 1:
            return _result(False, "Error: dial tcp 10.77.1.11:2379: connect: connection refused")
        return _result(False, "Error: context deadline exceeded")

    def get(key: str) -> tuple[CommandResult, str | None]:
        raise ValueError("not a get reply")

    history = _run(Workload({"a": Client(put, get)}, ["k"], interval=0), ops=30)
    done = [o for o in history.ops if o.type != "invoke"]
    assert {o.type for o in done if o.f == "write"} == {"fail", "info"}
    assert {(o.type, o.value) for o in done if o.f == "read"} == {("info", "")}
    assert any("went away" in o.error for o in done) and any("not a get reply" in o.error for o in done)
    assert check(history.ops, {}).linearizable is True  # nothing acknowledged, nothing present


def test_the_same_seed_makes_the_same_choices() -> None:
    def choices(seed: str) -> list[tuple[str, str]]:
        store = Register()
        history = _run(Workload({"p": Client(store.put, store.get)}, ["a", "b", "c"], interval=0, seed=seed),
                       ops=20)
        return [(o.f, o.key) for o in history.ops if o.type == "invoke"][:20]

    assert choices("x") == choices("x") != choices("y")


def test_a_workload_needs_keys_and_clients() -> None:
    store = Register()
    with pytest.raises(ValueError, match="at least one key"):
        Workload({"a": Client(store.put, store.get)}, [])
