"""Pure units of the cluster lanes: fault targets, the history checker, roles and cluster file."""

from __future__ import annotations

import random

import pytest

from ucnb import profiles
from ucnb.cluster.controlplane import cluster_node_configs
from ucnb.cluster.faults import Fault, resolve_targets
from ucnb.cluster.history import History, Op, classify, lost_acknowledged
from ucnb.errors import LaneFailure, ParameterError
from ucnb.lab.ssh import CommandResult

MEMBERS = ["node01", "node02", "node03"]


def test_targets_resolve_against_current_members() -> None:
    rng = random.Random(7)
    assert resolve_targets("leader", MEMBERS, "node02", rng) == ["node02"]
    assert resolve_targets("node03", MEMBERS, "node02", rng) == ["node03"]
    minority = resolve_targets("minority", MEMBERS, "node02", rng)
    assert len(minority) == 1 and "node02" not in minority  # the leader's side keeps quorum
    majority = resolve_targets("majority", MEMBERS, "node02", rng)
    assert len(majority) == 2
    assert len(resolve_targets("minority", [*MEMBERS, "node04", "node05"], "node01", rng)) == 2
    assert resolve_targets("one", MEMBERS, None, rng)[0] in MEMBERS


def test_bad_targets_are_refused() -> None:
    with pytest.raises(LaneFailure, match="agree on none"):
        resolve_targets("leader", MEMBERS, None)
    with pytest.raises(ParameterError, match="neither a node"):
        resolve_targets("node09", MEMBERS, "node01")
    with pytest.raises(ValueError):
        Fault(kind="meteor", target="leader")  # type: ignore[arg-type]


def _op(kind: str, key: str, value: str = "v", t: float = 0.0) -> Op:
    return Op("c" + key, kind, "write", key, value, t)


def test_a_lost_acknowledged_write_is_counted() -> None:
    history = History([_op("invoke", "a"), _op("ok", "a"), _op("invoke", "b"), _op("ok", "b"),
                       _op("invoke", "c"), _op("info", "c"), _op("invoke", "d"), _op("fail", "d")])
    result = lost_acknowledged(history, {"a": "v", "c": "v"})
    assert not result.ok and [o.key for o in result.lost] == ["b"]
    assert (result.acknowledged, result.indeterminate, result.indeterminate_final, result.failed) == (
        2, 1, 1, 1)


def test_an_overwritten_write_is_lost_only_if_nothing_after_it_is_final() -> None:
    def writes(*ops: tuple[str, float, float, str]) -> list[Op]:
        return [e for p, (v, t0, t1, kind) in enumerate(ops)
                for e in (Op(f"p{p}", "invoke", "write", "x", v, t0), Op(f"p{p}", kind, "write", "x", v, t1))]

    sequential = writes(("1", 0, 1, "ok"), ("2", 2, 3, "ok"))
    assert [o.value for o in lost_acknowledged(sequential, {"x": "1"}).lost] == ["2"]
    assert lost_acknowledged(sequential, {"x": "2"}).ok
    assert len(lost_acknowledged(sequential, {}).lost) == 2
    concurrent = writes(("1", 0, 5, "ok"), ("2", 1, 3, "ok"))  # either may have been applied last
    assert lost_acknowledged(concurrent, {"x": "1"}).ok and lost_acknowledged(concurrent, {"x": "2"}).ok
    late = writes(("1", 0, 1, "ok"), ("2", 2, 3, "info"))  # an indeterminate write may land any time
    assert lost_acknowledged(late, {"x": "2"}).ok and not lost_acknowledged(late, {}).ok
    failed = writes(("1", 0, 1, "ok"), ("2", 2, 3, "fail"))  # a failed write explains nothing
    assert [o.value for o in lost_acknowledged(failed, {"x": "2"}).lost] == ["1"]


def test_client_outcomes_are_classified_conservatively() -> None:
    def result(status: int | None, err: str) -> CommandResult:
        return CommandResult("n", "put", status, "OK\n" if status == 0 else "", err, 0.1)

    assert classify(result(0, "")) == ("ok", "")
    assert classify(result(1, "Error: dial tcp 10.77.1.11:2379: connect: connection refused"))[0] == "fail"
    assert classify(result(1, "Error: context deadline exceeded"))[0] == "info"
    assert classify(result(None, ""))[0] == "info"  # our own deadline: it may have been applied


def test_roles_map_to_the_profile_or_say_why_not() -> None:
    lab = profiles.load("lab")
    assert lab.role("kv").component == "chainfire" and lab.role("kv").provided
    assert "fleet-scheduler" in (lab.role("scheduler").missing or "")
    assert not profiles.load("ultracloud").role("kv").provided


def test_cluster_nodes_come_from_the_cluster_file() -> None:
    configs = {c.name: c for c in cluster_node_configs(profiles.load("lab"))}
    assert sorted(configs) == [f"node0{i}" for i in range(1, 7)]
    assert configs["node01"].held == ("chainfire",) and "flaredb" in configs["node01"].services
    assert configs["node06"].held == () and all(c.networks == 2 for c in configs.values())
    with pytest.raises(ParameterError, match="node09"):
        cluster_node_configs(profiles.load("lab"), ["node09"])


def _membership(change_timeout_s: float = 5.0):  # type: ignore[no-untyped-def]
    """A Membership with just what `retry` uses (a recorder, the change timeout)."""
    from types import SimpleNamespace

    from ucnb.kernel.record import Recorder
    from ucnb.lanes.chainfire_live_membership_proof import Membership

    m = Membership.__new__(Membership)
    m.run = SimpleNamespace(recorder=Recorder())  # type: ignore[assignment]
    m.params = SimpleNamespace(change_timeout_s=change_timeout_s)  # type: ignore[assignment]
    m.refusals = []
    return m


def test_a_membership_change_that_timed_out_but_was_applied_is_not_retried_into_a_refusal() -> None:
    applied: list[str] = []

    def attempt() -> CommandResult:  # the first try times out on our side, yet etcd applies it
        applied.append("add")
        if len(applied) == 1:
            return CommandResult("node01", "member add", None, "", "", 10.0)
        return CommandResult("node01", "member add", 1, "", "Error: Peer URLs already exists", 1.0)

    m = _membership()
    assert m.retry("member add node04", attempt, done=lambda: bool(applied)) == 1
    assert applied == ["add"] and m.refusals[0]["refused"] == 1


def test_a_membership_change_is_retried_while_refused_and_not_in_effect() -> None:
    tries: list[int] = []

    def attempt() -> CommandResult:
        tries.append(1)
        ok = len(tries) == 3
        return CommandResult("node01", "promote", 0 if ok else 1, "", "" if ok else "Error: not in sync", 0.1)

    m = _membership()
    assert m.retry("member promote node04", attempt, done=lambda: False) == 2 and len(tries) == 3
    with pytest.raises(LaneFailure, match="timed out after 1s waiting for member remove"):
        refused = CommandResult("n", "c", 1, "", "Error: no", 0.1)
        _membership(1.0).retry("member remove node04", lambda: refused, done=lambda: False)
