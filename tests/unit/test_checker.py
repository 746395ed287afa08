"""The history checker: generated linearizable histories pass; each kind of violation is caught;
a pathological history answers "unknown" within its budget."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from itertools import permutations

import pytest

from ucnb.cluster.checker import CheckResult, check, pair


@dataclass
class Ev:
    process: str
    type: str
    f: str
    key: str
    value: str
    t: float


@dataclass
class PlannedOp:
    process: str
    f: str
    key: str
    value: str
    invoke: float
    complete: float
    status: str
    at: float | None  # the linearization point in the real register; None = never applied
    done: Ev | None = None  # its completion event


@dataclass
class Sim:
    events: list[Ev]
    final: dict[str, str]
    ops: list[PlannedOp] = field(default_factory=list)

    @property
    def end(self) -> float:
        return max(e.t for e in self.events)


def simulate(seed: int, n_ops: int = 300, clients: int = 5, keys: int = 3, p_read: float = 0.5,
             p_info: float = 0.04, p_fail: float = 0.04) -> Sim:
    """A seeded history of a real register per key: each op takes effect at a random point of its
    interval (an info op: half never, half at any time after its invoke, even after its timeout);
    a failed op never does. Write values are unique."""
    rng = random.Random(seed)
    ops: list[PlannedOp] = []
    for c in range(clients):
        t = rng.random()
        for n in range(n_ops // clients):
            t0 = t
            t1 = t0 + rng.expovariate(1.0)
            f = "read" if rng.random() < p_read else "write"
            key = f"k{rng.randrange(keys)}"
            r = rng.random()
            status = "info" if r < p_info else "fail" if r < p_info + p_fail else "ok"
            at: float | None = rng.uniform(t0, t1)
            if status == "fail" or (status == "info" and rng.random() < 0.5):
                at = None
            elif status == "info":
                at = rng.uniform(t0, t1 + 3)
            value = f"{key}-{c}-{n}" if f == "write" else ""
            ops.append(PlannedOp(f"c{c}", f, key, value, t0, t1, status, at))
            t = t1 + rng.expovariate(5.0)
    register: dict[str, str] = {}
    for op in sorted((o for o in ops if o.at is not None), key=lambda o: o.at or 0.0):
        if op.f == "write":
            register[op.key] = op.value
        elif op.status == "ok":
            op.value = register.get(op.key, "")
    events = []
    for op in ops:
        events.append(Ev(op.process, "invoke", op.f, op.key, op.value if op.f == "write" else "", op.invoke))
        seen = op.value if op.status != "info" else ""
        op.done = Ev(op.process, op.status, op.f, op.key, seen, op.complete)
        events.append(op.done)
    events.sort(key=lambda e: e.t)
    return Sim(events, dict(register), ops)


def history(*ops: tuple[str, str, str, str, float, float, str]) -> list[Ev]:
    """(process, f, key, value, invoke, complete, status) per op, as time-ordered events."""
    events = []
    for process, f, key, value, t0, t1, status in ops:
        events.append(Ev(process, "invoke", f, key, value if f == "write" else "", t0))
        events.append(Ev(process, status, f, key, value, t1))
    return sorted(events, key=lambda e: e.t)


def bad_key(result: CheckResult) -> tuple[str, str]:
    assert result.linearizable is False, result
    return result.violations[0].key, result.violations[0].kind  # type: ignore[return-value]


def after(sim: Sim, *ops: tuple[str, str, str, str]) -> list[Ev]:
    """The history followed by sequential ops (process, f, key, value) once everyone is done."""
    t = sim.end + 1
    extra = [(p, f, k, v, t + 2 * i, t + 2 * i + 1, "ok") for i, (p, f, k, v) in enumerate(ops)]
    return sim.events + history(*extra)


# Generated histories: linearizable, then each mutation is caught.

@pytest.mark.parametrize("seed", range(40))
def test_generated_histories_are_linearizable(seed: int) -> None:
    sim = simulate(seed)
    result = check(sim.events, sim.final)
    assert result.linearizable is True, result.violation_table()
    assert result.outcomes == [] and result.operations == 300 and result.keys == 3
    assert result.counts["write"]["fail"] + result.counts["read"]["fail"] > 0
    assert result.reads + result.writes == 300


@pytest.mark.parametrize("seed", range(3))
def test_larger_histories_with_many_clients_and_one_key(seed: int) -> None:
    sim = simulate(seed, n_ops=3000, clients=8, keys=1, p_info=0.02)
    result = check(sim.events, sim.final)
    assert result.linearizable is True and result.keys_checked == 1


def stale_read(sim: Sim) -> PlannedOp:
    """Make an ok read return a value certainly overwritten before it began."""
    writes = [o for o in sim.ops if o.f == "write" and o.status == "ok"]
    for r in (o for o in sim.ops if o.f == "read" and o.status == "ok"):
        for w2 in (w for w in writes if w.key == r.key and w.complete < r.invoke):
            for w1 in (w for w in writes if w.key == r.key and w.complete < w2.invoke):
                assert r.done is not None
                r.done.value = w1.value
                return r
    raise AssertionError("no stale read to make")


@pytest.mark.parametrize("seed", range(10))
def test_a_stale_read_is_caught(seed: int) -> None:
    sim = simulate(seed)
    r = stale_read(sim)
    result = check(sim.events, sim.final)
    assert bad_key(result) == (r.key, "stale-read")
    culprit = result.violations[0].culprit
    assert culprit is not None and r.done is not None
    assert (culprit.process, culprit.call, culprit.value) == (r.process, r.invoke, r.done.value)


@pytest.mark.parametrize("seed", range(5))
def test_a_lost_acknowledged_write_is_caught_in_the_final_state(seed: int) -> None:
    sim = simulate(seed)
    lost = next(o for o in reversed(sim.ops) if o.f == "write" and o.status == "ok")
    final = {k: v for k, v in sim.final.items() if k != lost.key}
    assert bad_key(check(sim.events, final)) == (lost.key, "lost-write")
    older = next(w for w in sim.ops if w.key == lost.key and w.f == "write" and w.status == "ok"
                 and w.complete < lost.invoke and w.value != sim.final[lost.key])
    result = check(sim.events, {**sim.final, lost.key: older.value})
    assert bad_key(result) == (lost.key, "lost-write")
    assert "the final state" in result.violations[0].reason


@pytest.mark.parametrize("seed", range(5))
def test_a_lost_acknowledged_write_is_caught_by_a_later_read(seed: int) -> None:
    sim = simulate(seed)
    result = check(after(sim, ("late", "read", "k1", "")))
    assert bad_key(result) == ("k1", "lost-write")
    witness = result.violations[0].witness
    assert witness is not None and witness.status == "ok" and witness.key == "k1"
    assert check(after(sim, ("late", "read", "k1", sim.final["k1"]))).linearizable is True


@pytest.mark.parametrize("seed", range(5))
def test_a_present_failed_write_is_caught(seed: int) -> None:
    sim = simulate(seed)
    failed = next(o for o in sim.ops if o.f == "write" and o.status == "fail")
    result = check(after(sim, ("late", "read", failed.key, failed.value)), sim.final)
    assert bad_key(result) == (failed.key, "failed-write-present")
    assert result.violations[0].witness is not None and result.violations[0].witness.value == failed.value
    assert bad_key(check(sim.events, {**sim.final, failed.key: failed.value})) == (
        failed.key, "failed-write-present")


def test_phantom_values_and_keys_are_caught() -> None:
    sim = simulate(1)
    assert bad_key(check(after(sim, ("late", "read", "k2", "nobody-wrote-this")))) == ("k2", "phantom")
    result = check(sim.events, {**sim.final, "ghost": "x"})
    assert bad_key(result) == ("ghost", "phantom")
    assert "a key no client wrote" in result.violations[0].reason
    assert check(after(sim, ("late", "read", "ghost", "boo"))).violations[0].kind == "phantom"


def test_every_bad_key_is_reported_unless_stopping_at_the_first() -> None:
    sim = simulate(2)
    events = after(sim, ("late", "read", "k0", ""), ("late", "read", "k1", ""))
    assert len(check(events, stop_at_first=True).violations) == 1
    assert sorted(str(o.key) for o in check(events, stop_at_first=False).violations) == ["k0", "k1"]


def test_the_violation_table_shows_the_ops_around_it() -> None:
    sim = simulate(3)
    r = stale_read(sim)
    rows = check(sim.events).violation_table()
    assert rows[-1]["role"] == "violation" and rows[-1]["key"] == r.key and rows[-1]["reason"]
    assert {row["role"] for row in rows} >= {"before", "witness", "violation"}
    assert len(rows) < 15
    table = check(sim.events).table()
    assert list(table.columns[:3]) == ["key", "kind", "role"] and len(table) == len(rows)


# Classic small cases.

def test_concurrent_writes_may_take_effect_in_either_order() -> None:
    ops = [("a", "write", "x", "1", 0, 10, "ok"), ("b", "write", "x", "2", 1, 11, "ok")]
    assert check(history(*ops, ("c", "read", "x", "1", 12, 13, "ok"),
                         ("c", "read", "x", "1", 14, 15, "ok"))).linearizable is True
    assert check(history(*ops, ("c", "read", "x", "2", 12, 13, "ok"))).linearizable is True
    result = check(history(*ops, ("c", "read", "x", "1", 12, 13, "ok"),
                           ("c", "read", "x", "2", 14, 15, "ok")))
    assert bad_key(result) == ("x", "stale-read")


def test_a_read_may_see_a_concurrent_write_but_never_the_old_value_after_the_new() -> None:
    ops = [("a", "write", "x", "1", 0, 1, "ok"), ("b", "write", "x", "2", 2, 10, "ok")]
    assert check(history(*ops, ("c", "read", "x", "1", 3, 4, "ok"), ("c", "read", "x", "2", 5, 6, "ok"),
                         ("d", "read", "x", "2", 3, 7, "ok"))).linearizable is True
    result = check(history(*ops, ("c", "read", "x", "2", 3, 4, "ok"), ("c", "read", "x", "1", 5, 6, "ok")))
    assert bad_key(result) == ("x", "stale-read")
    culprit = result.violations[0].culprit
    assert culprit is not None and (culprit.value, culprit.call) == ("1", 5)


def test_absent_before_the_first_write_and_never_after_it() -> None:
    w = ("a", "write", "x", "1", 0, 10, "ok")
    assert check(history(w, ("b", "read", "x", "", 1, 2, "ok"), ("b", "read", "x", "1", 3, 4, "ok"))
                 ).linearizable is True
    # Not yet acknowledged, but seen: absent again after that is a stale read; after the ok, a lost write.
    assert bad_key(check(history(w, ("b", "read", "x", "1", 1, 2, "ok"), ("b", "read", "x", "", 3, 4, "ok")))
                   ) == ("x", "stale-read")
    assert bad_key(check(history(w, ("b", "read", "x", "", 11, 12, "ok")))) == ("x", "lost-write")


def test_ops_that_touch_at_the_same_instant_are_concurrent() -> None:
    # Calls sort before returns at equal times: the read at 5 may precede the write returning at 5.
    assert check(history(("a", "write", "x", "1", 0, 5, "ok"), ("b", "read", "x", "", 5, 6, "ok"))
                 ).linearizable is True
    assert check(history(("a", "write", "x", "1", 0, 5, "ok"), ("b", "read", "x", "", 5.001, 6, "ok"))
                 ).linearizable is False


def test_an_info_write_may_take_effect_late_or_never() -> None:
    ops = [("a", "write", "x", "1", 0, 1, "ok"), ("b", "write", "x", "2", 2, 3, "info"),
           ("c", "read", "x", "1", 10, 11, "ok")]
    assert check(history(*ops)).linearizable is True
    assert check(history(*ops), {"x": "1"}).linearizable is True
    assert check(history(*ops, ("c", "read", "x", "2", 12, 13, "ok")), {"x": "2"}).linearizable is True
    result = check(history(*ops, ("c", "read", "x", "2", 12, 13, "ok"),
                           ("c", "read", "x", "1", 14, 15, "ok")))
    assert bad_key(result) == ("x", "stale-read")


def test_timeouts_piling_up_on_a_key_cost_nothing_unless_a_read_saw_them() -> None:
    """A cluster down for a while leaves many indeterminate writes on a key: those no read saw are
    left out of the search (else proving the final state absent is 2^n orders)."""
    infos = [(f"p{i}", "write", "x", f"v{i}", 2 * i, 2 * i + 1, "info") for i in range(200)]
    result = check(history(*infos), {}, state_budget=10_000)
    assert result.linearizable is True and result.states < 10
    assert result.counts["write"]["info"] == 200
    seen = history(*infos, ("r", "read", "x", "v7", 500, 501, "ok"))
    assert check(seen, {"x": "v7"}, state_budget=10_000).linearizable is True
    assert bad_key(check(history(*infos, ("r", "read", "x", "v7", 500, 501, "ok"),
                                 ("r", "read", "x", "", 502, 503, "ok")))) == ("x", "stale-read")


def test_info_reads_constrain_nothing_and_unfinished_invokes_are_info() -> None:
    events = history(("a", "write", "x", "1", 0, 1, "ok"), ("b", "read", "x", "zzz", 2, 3, "info"),
                     ("c", "read", "x", "1", 4, 5, "fail"))
    events.append(Ev("d", "invoke", "write", "x", "2", 6))
    result = check(events, {"x": "2"})
    assert result.linearizable is True and result.counts["write"]["info"] == 1
    assert result.counts["read"] == {"ok": 0, "fail": 1, "info": 1}
    assert check(events, {"x": "1"}).linearizable is True  # the unfinished write never happened


def test_a_failed_write_must_never_be_observed() -> None:
    ops = [("a", "write", "x", "1", 0, 1, "fail")]
    assert check(history(*ops, ("b", "read", "x", "", 2, 3, "ok")), {}).linearizable is True
    result = check(history(*ops, ("b", "read", "x", "1", 2, 3, "ok")))
    assert bad_key(result) == ("x", "failed-write-present")


def test_pairing_and_the_history_recorders_op() -> None:
    from ucnb.cluster.history import Op

    events = [Op("a", "invoke", "write", "x", "1", 0.0), Op("b", "invoke", "read", "x", "", 0.5),
              Op("a", "ok", "write", "x", "1", 1.0), Op("a", "invoke", "write", "x", "2", 2.0),
              Op("b", "ok", "read", "x", "1", 3.0), Op("c", "ok", "read", "x", "1", 3.5)]
    ops, warnings = pair(events)
    assert [(o.process, o.f, o.value, o.call, o.ret, o.status) for o in ops] == [
        ("a", "write", "1", 0.0, 1.0, "ok"), ("b", "read", "1", 0.5, 3.0, "ok"),
        ("a", "write", "2", 2.0, float("inf"), "info")]
    assert len(warnings) == 1 and "completes no invoke" in warnings[0]
    assert check(events).linearizable is True and check([]).linearizable is True


def brute_force(events: list[Ev]) -> bool:
    """Is there a total order respecting real time in which the register explains every read?"""
    ops = [o for o in pair(events)[0] if o.status == "ok" or (o.f == "write" and o.status == "info")]
    for order in permutations(ops):
        if any(b.ret < a.call for i, a in enumerate(order) for b in order[i + 1:]):
            continue
        state = None
        for o in order:
            if o.f == "write":
                state = o.value
            elif o.value != state:
                break
        else:
            return True
    return False


def test_the_search_agrees_with_brute_force_on_small_random_histories() -> None:
    rng = random.Random(7)
    verdicts = []
    for case in range(400):
        ops = []
        for i in range(rng.randint(2, 6)):
            t0 = rng.randint(0, 8)
            f = rng.choice(["write", "read"])
            status = rng.choices(["ok", "info", "fail"], [6, 1, 1])[0]
            value = rng.choice(["1", "2", "3"]) if f == "write" else rng.choice(["1", "2", "3", ""])
            ops.append((f"p{i}", f, "x", value, t0, t0 + rng.randint(0, 4), status))
        events = history(*ops)
        verdict = check(events).linearizable
        assert verdict == brute_force(events), (case, ops)
        verdicts.append(verdict)
    assert 50 < verdicts.count(True) < 350  # both answers are exercised


# Budgets.

def pathological(n: int = 40) -> list[Ev]:
    """n concurrent writes, then reads of two of their values in an impossible order: proving it
    means trying every order of the writes (2^n memo states)."""
    writes = [(f"p{i}", "write", "hot", f"v{i}", 0, 10, "ok") for i in range(n)]
    reads = [("r", "read", "hot", "v0", 11, 12, "ok"), ("r", "read", "hot", "v1", 13, 14, "ok")]
    return history(*writes, *reads)


def test_small_pathological_history_is_proven_bad() -> None:
    assert bad_key(check(pathological(8))) == ("hot", "stale-read")


def test_a_pathological_history_answers_unknown_within_its_time_budget() -> None:
    start = time.monotonic()
    result = check(pathological(), time_budget=0.5, state_budget=10**9)
    assert time.monotonic() - start < 2 and result.elapsed < 2
    assert result.linearizable == "unknown" and result.outcomes[0].key == "hot"
    assert "time budget" in result.outcomes[0].reason
    assert result.violation_table()[0]["role"] == "unknown"


def test_a_pathological_history_answers_unknown_within_its_state_budget() -> None:
    result = check(pathological(), state_budget=5000)
    assert result.linearizable == "unknown" and "state budget" in result.outcomes[0].reason
    assert result.states == result.outcomes[0].states == 5000


def test_a_violation_beats_unknown() -> None:
    stale = history(("a", "write", "cold", "1", 100, 101, "ok"), ("a", "read", "cold", "", 102, 103, "ok"))
    events = sorted(pathological() + stale, key=lambda e: e.t)
    result = check(events, time_budget=0.3, state_budget=10**9, stop_at_first=False)
    assert result.linearizable is False
    assert {o.key: o.linearizable for o in result.outcomes} == {"cold": False, "hot": "unknown"}
    result = check(events, time_budget=0.3, state_budget=10**9)
    assert result.linearizable is False and result.keys_checked == 1  # the small key first, then stop
