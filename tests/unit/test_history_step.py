"""The shared history step (`ucnb.cluster.steps.acknowledged_writes`) on recorded histories, with
the cluster faked: a linearizable history passes; a violation fails the lane, shows the
operations around it and keeps them; `unknown` is a skipped check, never a pass; the figures are
recorded whatever the verdict."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from ucnb.cluster import steps
from ucnb.cluster.history import History, Op
from ucnb.errors import LaneFailure
from ucnb.kernel.record import Recorder

T0 = 1_800_000_000.0  # epoch seconds, as the harness records them


def ops(*spec: tuple[str, str, str, str, float, float, str]) -> History:
    """(process, f, key, value, invoke, complete, status) per op, seconds after T0."""
    events = []
    for process, f, key, value, t0, t1, status in spec:
        events.append(Op(process, "invoke", f, key, value if f == "write" else "", T0 + t0))
        events.append(Op(process, status, f, key, value, T0 + t1, t1 - t0))
    return History(sorted(events, key=lambda e: e.t))


class FakeRun:
    def __init__(self, root: Path, budget: float = 30.0) -> None:
        self.recorder, self.proof_root, self.delegated = Recorder(), root, ""
        self.recorder.started = T0
        self.params = steps.ClusterParameters(checker_budget_s=budget)
        self.shown: list[Any] = []

    def parameters(self, schema: type) -> Any:
        return self.params

    @contextlib.contextmanager
    def step(self, name: str, node: str = "") -> Iterator[Any]:
        with self.recorder.step(name, node) as row:
            yield row

    def skip(self, name: str, reason: str, node: str = "") -> pd.DataFrame:
        self.recorder.skip(name, reason, node)
        return pd.DataFrame()

    def show(self, obj: Any) -> None:
        self.shown.append(obj)

    def figures(self) -> dict[str, Any]:
        return {f.name: f.value for f in self.recorder.rows["figures"]}

    def checks(self) -> dict[str, bool]:
        return {c.name: c.ok for c in self.recorder.rows["checks"]}


def env(history: History, final: dict[str, str], members_agree: bool = True) -> Any:
    def read_check(*args: Any, **kwargs: Any) -> pd.DataFrame:
        assert kwargs["exact"] and kwargs["expected"] == final and kwargs["prefix"] == steps.WORKLOAD_PREFIX
        if not members_agree:
            raise LaneFailure("after workload final state: local reads missing expected data on node02")
        return pd.DataFrame([{"member": "node01", "ok": True}])

    kv = SimpleNamespace(read_prefix=lambda via, member, prefix: dict(final))
    cp = SimpleNamespace(kv=kv, operator=lambda: None, live_members=lambda: ["node01"], read_check=read_check)
    return SimpleNamespace(workload=SimpleNamespace(stop=lambda: history), cp=cp)


GOOD = ops(("a", "write", "workload/k0", "a-1", 0, 1, "ok"), ("b", "read", "workload/k0", "a-1", 2, 3, "ok"),
           ("a", "write", "workload/k0", "a-2", 4, 5, "info"), ("b", "read", "workload/k1", "", 4, 6, "ok"))


def test_a_linearizable_history_passes_with_its_figures(tmp_path: Path) -> None:
    run = FakeRun(tmp_path)
    table = steps.acknowledged_writes(run, env(GOOD, {"workload/k0": "a-2"}))  # type: ignore[arg-type]
    assert run.checks()["the whole history is linearizable"] is True
    figures = run.figures()
    names = ["linearizable", "operations", "reads", "writes", "ok", "fail", "info",
             "acknowledged writes lost"]
    assert [figures[n] for n in names] == [True, 4, 2, 2, 3, 0, 1, 0]
    assert dict(zip(table["history"], table["value"], strict=True))["linearizable"] is True
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 1 + 8
    assert not (tmp_path / "history-violations.csv").exists()


def test_a_stale_read_fails_the_lane_and_shows_the_operations_around_it(tmp_path: Path) -> None:
    stale = ops(("a", "write", "workload/k0", "a-1", 0, 1, "ok"),
                ("a", "write", "workload/k0", "a-2", 2, 3, "ok"),
                ("b", "read", "workload/k0", "a-1", 4, 5, "ok"))
    run = FakeRun(tmp_path)
    with pytest.raises(LaneFailure, match="not linearizable: key workload/k0 \\(stale-read\\)"):
        steps.acknowledged_writes(run, env(stale, {"workload/k0": "a-2"}))  # type: ignore[arg-type]
    assert run.checks()["the whole history is linearizable"] is False
    assert run.figures()["linearizable"] is False
    shown = next(t for t in run.shown if isinstance(t, pd.DataFrame) and "role" in t)
    violation = shown[shown["role"] == "violation"].iloc[0]
    assert (violation["process"], violation["value"], violation["call"]) == ("b", "a-1", 4.0)  # run-relative
    assert "witness" in set(shown["role"])
    kept = pd.read_csv(tmp_path / "history-violations.csv")
    assert list(kept["role"]) == list(shown["role"])


def test_a_lost_write_and_a_member_that_disagrees_fail_the_lane_after_the_figures(tmp_path: Path) -> None:
    run = FakeRun(tmp_path)
    with pytest.raises(LaneFailure) as failure:
        steps.acknowledged_writes(run, env(GOOD, {}, members_agree=False))  # type: ignore[arg-type]
    assert "local reads missing expected data on node02" in str(failure.value)
    assert "1 acknowledged writes lost: workload/k0=a-1" in str(failure.value)
    assert run.figures()["acknowledged writes lost"] == 1 and run.figures()["linearizable"] is False
    assert run.checks()["acknowledged writes lost"] is False


def test_unknown_is_a_skipped_check_never_a_pass(tmp_path: Path) -> None:
    writes = [(f"p{i}", "write", "workload/hot", f"v{i}", 0, 10, "ok") for i in range(40)]
    reads = [("r", "read", "workload/hot", "v0", 11, 12, "ok"),
             ("r", "read", "workload/hot", "v1", 13, 14, "ok")]
    run = FakeRun(tmp_path, budget=0.3)
    steps.acknowledged_writes(run, env(ops(*writes, *reads), {"workload/hot": "v1"}))  # type: ignore[arg-type]
    assert "the whole history is linearizable" not in run.checks()
    (skip,) = [s for s in run.recorder.rows["steps"] if s.outcome == "skipped"]
    assert skip.name == "the whole history is linearizable"
    assert skip.detail.startswith(
        "unknown: the checker's budget (checker_budget_s=0.3) ran out on key workload/hot")
    assert run.figures()["linearizable"] == "unknown"
