"""What the cluster lanes share: boot the cluster lab, form the control plane, run a workload,
inject faults with health checked before and after each, and judge the history."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from pydantic import Field

from ucnb.cluster.controlplane import CHECK_PREFIX, ControlPlane, cluster_node_configs
from ucnb.cluster.faults import Fault, Nemesis
from ucnb.cluster.history import History, WriteWorkload, check_acknowledged, classify
from ucnb.errors import LaneFailure
from ucnb.kernel.wait import wait_until
from ucnb.lab.lab import Lab
from ucnb.lanes import LaneParameters

if TYPE_CHECKING:
    from ucnb.kernel.run import Run

DISCONNECTING = ("power_loss", "pause", "link_down")


@dataclass
class ClusterEnv:
    lab: Lab
    cp: ControlPlane
    nemesis: Nemesis
    client: str
    history: History = field(default_factory=History)
    workload: WriteWorkload | None = None


class ClusterParameters(LaneParameters):
    """What every cluster lane takes."""

    profile: Literal["lab", "ultracloud"] = "lab"
    nodes: list[str] = Field(default_factory=lambda: [f"node0{i}" for i in range(1, 7)])
    voters: list[str] = Field(default_factory=lambda: ["node01", "node02", "node03"])
    client: str = "node04"
    boot_timeout_s: float = Field(120.0, gt=0)
    boot_mode: Literal["cold", "restore"] = "cold"
    write_interval_s: float = Field(0.2, ge=0)
    keep_vm: bool = False
    flake: str = "."


def boot_or_delegate(run: Run, params: ClusterParameters) -> ClusterEnv | None:
    """Lab: boot the cluster and form its control plane. ultracloud: the product's own harness
    runs the lane (seed: `nix run ./nix/test-cluster#cluster -- <lane>`), and None is returned."""
    if run.profile.name == "ultracloud":
        command = f"nix run {params.flake}/nix/test-cluster#cluster -- {run.lane.name}"
        run.run_commands([command], cwd=params.flake, log_name=f"{run.lane.name}.log")
        return None
    return boot_cluster(run, params.nodes, params.voters, params.client, params.boot_timeout_s,
                        params.boot_mode)


def boot_cluster(run: Run, nodes: list[str], voters: list[str], client: str,
                 boot_timeout_s: float, boot_mode: str = "cold") -> ClusterEnv:
    """Boot the nodes in parallel (or restore them just-booted) and form the control plane."""
    lab = run.lab(cluster_node_configs(run.profile, nodes), warm=boot_mode == "restore")
    run.boot(lab, boot_timeout_s, boot_mode)
    cp = ControlPlane(lab, run.profile, run.recorder, voters, token=f"ucnb-{run.run_id}")
    with run.step("form the control plane"):
        cp.bootstrap()
    return ClusterEnv(lab, cp, Nemesis(lab, run.recorder, run.profile.service_manager), client)


def readiness(run: Run, env: ClusterEnv, started: float) -> pd.DataFrame:
    """Every control-plane service healthy, from inside the guests, with time since boot."""
    rows = []
    for name in env.cp.members:
        node = env.lab[name]
        for component in ("chainfire", "flaredb"):
            spec = run.profile.component(component)
            if not spec.provided or spec.health is None:
                continue
            with run.step(f"ready: {component}", name):
                result = node.run(spec.health, timeout=15)
                if not run.recorder.check(f"{component} healthy on {name}", True, result.ok, node=name):
                    raise LaneFailure(f"{name}: {component} is not healthy: {result}")
            rows.append({"node": name, "component": component, "stands_in": spec.stands_in,
                         "healthy": True, "ready_after_s": round(time.time() - started, 1)})
    return pd.DataFrame(rows)


def start_workload(env: ClusterEnv, interval: float) -> None:
    """Writes through the client host to every member's endpoint (the client fails over)."""
    client = env.lab[env.client]
    members = list(env.cp.members)
    env.workload = WriteWorkload(lambda k, v: env.cp.kv.put(client, members, k, v), "workload/",
                                 env.client, env.history, interval).start()


def run_fault(run: Run, env: ClusterEnv, fault: Fault, index: int) -> pd.DataFrame:
    """One fault with its invariants: healthy before, majority serving during, healthy and
    caught up after."""
    cp, checks = env.cp, []
    label = f"fault {index}: {fault.describe()}"

    def check(name: str, expected: Any, observed: Any, ok: bool | None = None) -> None:
        passed = run.recorder.check(f"{label}: {name}", expected, observed, ok)
        checks.append({"fault": label, "check": name, "expected": str(expected),
                       "observed": str(observed), "ok": passed})
        if not passed:
            raise LaneFailure(f"{label}: {name}: expected {expected}, observed {observed}")

    env.nemesis.assert_expected_up(list(env.lab.nodes), seen_by=f"health before {label}")
    check("members healthy before", cp.members, healthy_members(env))
    leader = cp.wait_leader()
    with env.nemesis.inject(fault, cp.members, leader) as targets:
        if fault.hold_s:
            time.sleep(fault.hold_s)
        if fault.kind in DISCONNECTING:
            survivors = [m for m in cp.members if m not in targets]
            new_leader = cp.wait_leader(exclude=tuple(targets), timeout=30)
            check("majority has a leader among the survivors", survivors, new_leader,
                  ok=new_leader in survivors)
            if leader in targets:
                check("a new leader replaced the faulted one", f"not {leader}", new_leader,
                      ok=new_leader != leader)
            write = cp.kv.put(cp.operator(tuple(targets)), survivors, f"{CHECK_PREFIX}during/{index}",
                              fault.kind, timeout=10)
            check("majority accepts writes", "acknowledged", classify(write)[0], ok=write.ok)
            cp.expected[f"{CHECK_PREFIX}during/{index}"] = fault.kind
            if fault.kind == "link_down":
                cut = cp.kv.put(env.lab[targets[0]], targets, f"cut/{index}", "x", timeout=3)
                kind, error = classify(cut)
                check("cut-off side cannot write", "not acknowledged", f"{kind}: {error}", ok=not cut.ok)
    for name in cp.members:
        cp.wait_healthy(name, timeout=60)
    check("members healthy after", cp.members, healthy_members(env))
    table = cp.read_check(label, timeout=30)
    checks += [{"fault": label, "check": f"local reads on {r.member}", "expected": f"{r.keys} keys",
                "observed": "all served", "ok": r.ok} for r in table.itertuples()]
    return pd.DataFrame(checks)


def healthy_members(env: ClusterEnv) -> list[str]:
    """The members whose health probe passes right now (each probed once)."""
    return [m for m in env.cp.members if env.cp.kv.health(env.lab[m], m).ok]


def durability(run: Run, env: ClusterEnv) -> pd.DataFrame:
    """Stop the workload, read the final state, and count acknowledged writes lost (must be 0)."""
    assert env.workload is not None
    history = env.workload.stop()
    with run.step("check acknowledged writes"):
        final = wait_until(lambda: [env.cp.kv.read_prefix(env.cp.operator(), env.cp.live_members()[0],
                                                          "workload/")],
                           timeout=30, what="a linearizable read of every workload key",
                           recorder=run.recorder)[0]
        result = check_acknowledged(history, final)
        run.recorder.check("acknowledged writes lost", 0, len(result.lost))
        if result.lost:
            keys = ", ".join(o.key for o in result.lost[:10])
            raise LaneFailure(f"{len(result.lost)} acknowledged writes lost: {keys}")
    return pd.DataFrame([{"acknowledged": result.acknowledged, "lost": len(result.lost),
                          "indeterminate (present)": result.indeterminate_present,
                          "indeterminate (absent)": result.indeterminate_absent,
                          "failed (not applied)": result.failed}])


def latency_plot(run: Run, env: ClusterEnv) -> None:
    from ucnb.kernel.plots import latency

    ops = [(o.t, o.latency, o.type) for o in env.history.completions()]
    run.show_figure(latency(run.recorder, ops, f"{run.lane.name}: workload writes"), "latency.png")
