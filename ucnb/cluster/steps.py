"""What the cluster lanes share: boot the cluster lab, form the control plane, run a workload,
inject faults with health checked before and after each, and judge the history."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, model_validator

from ucnb import files
from ucnb.cluster.checker import CheckResult, check
from ucnb.cluster.controlplane import CHECK_PREFIX, ControlPlane, cluster_node_configs
from ucnb.cluster.faults import SPECIAL_TARGETS, Fault, Nemesis
from ucnb.cluster.history import Client, DurabilityCheck, History, Workload, classify, lost_acknowledged
from ucnb.cluster.kv import value_of
from ucnb.errors import HarnessError, LaneFailure
from ucnb.kernel.steps import boots, lab_step
from ucnb.kernel.wait import wait_until
from ucnb.lab.lab import DiskConfig, Lab
from ucnb.lab.ssh import CommandResult, GuestShell
from ucnb.lanes import WarmStartParameters
from ucnb.lazy import lazy_module

if TYPE_CHECKING:
    import pandas as pd

    from ucnb.kernel.run import Run
else:  # `ucnb run` imports this module to validate parameters: pandas only once used
    pd = lazy_module("pandas")

NodeName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,30}$")]
READY_TIMEOUT_S = 60.0
WORKLOAD_PREFIX = "workload/"  # the workload's keys: empty at the start, read whole at the end


@dataclass
class ClusterEnv:
    lab: Lab
    cp: ControlPlane
    nemesis: Nemesis
    client: str
    history: History = field(default_factory=History)
    workload: Workload | None = None


class ClusterParameters(WarmStartParameters):
    """What every cluster lane takes; node names are checked against each other and against the
    profile's cluster file before any VM exists."""

    nodes: list[NodeName] = Field(default_factory=lambda: [f"node0{i}" for i in range(1, 7)], min_length=1)
    voters: list[NodeName] = Field(default_factory=lambda: ["node01", "node02", "node03"], min_length=1)
    client: NodeName = "node04"
    boot_timeout_s: float = Field(120.0, gt=0, le=3600)
    write_interval_s: float = Field(0.2, ge=0, le=60)  # pause between each client's operations
    workload_clients: int = Field(3, ge=1, le=8)   # clients, each with one operation in flight
    workload_keys: int = Field(4, ge=1, le=64)     # a small key space: reads and overwrites interleave
    read_fraction: float = Field(0.5, ge=0, le=1)
    checker_budget_s: float = Field(30.0, gt=0, le=3600)  # past it the checker answers "unknown"

    @model_validator(mode="after")
    def _names_in_nodes(self) -> ClusterParameters:
        missing = [f"{field} {name}" for field, names in (("voters", self.voters), ("client", [self.client]))
                   for name in names if name not in self.nodes]
        if missing:
            raise ValueError(f"not in nodes ({', '.join(self.nodes)}): {', '.join(missing)}")
        duplicates = sorted({n for n in self.nodes if self.nodes.count(n) > 1})
        if duplicates:
            raise ValueError(f"nodes: listed twice: {', '.join(duplicates)}")
        known = cluster_nodes(self.profile)
        unknown = [n for n in self.nodes if known is not None and n not in known]
        if unknown:
            raise ValueError(f"nodes: {', '.join(unknown)} not in the {self.profile} cluster file "
                             f"(it has {', '.join(known or [])})")
        return self


def cluster_nodes(profile_name: str) -> dict[str, str] | None:
    """node -> node class of the profile's cluster file; None when the profile has none (its
    cluster comes from the product at run time)."""
    from ucnb import profiles

    profile = profiles.load(profile_name)
    if profile.cluster_file is None:
        return None
    cluster = profile.cluster()
    return {name: cluster.resolved(name).node_class for name in cluster.nodes}


def check_fault_targets(nodes: list[str], faults: list[Fault], voters: list[str] | None = None,
                        profile_name: str = "lab") -> None:
    """Fault targets must be booted nodes or special targets, and a restarted service one that
    the targeted nodes run on this profile (a ValueError for the schema, before any VM exists)."""
    from ucnb import profiles

    classes = cluster_nodes(profile_name)
    profile = profiles.load(profile_name)
    for number, fault in enumerate(faults, 1):
        if fault.target not in (*nodes, *SPECIAL_TARGETS):
            raise ValueError(f"faults[{number}].target: {fault.target!r} is neither a node "
                             f"({', '.join(nodes)}) nor one of {', '.join(SPECIAL_TARGETS)}")
        if fault.kind != "service_restart" or classes is None:
            continue
        # Special targets pick among the members, which start as the voters.
        targets = [fault.target] if fault.target in nodes else (voters or nodes)
        for node in targets:
            runs = profile.node_classes.get(classes.get(node, ""))
            services = (runs.services + runs.held) if runs else []
            if fault.service not in services:
                raise ValueError(f"faults[{number}].service: {fault.service!r} does not run on {node} "
                                 f"(it runs: {', '.join(services) or 'nothing restartable'})")


def boot_lab(run: Run, disks: dict[str, tuple[DiskConfig, ...]] | None = None) -> ClusterEnv:
    """Boot the nodes in parallel (or restore them just-booted) and form the control plane.

    `disks` gives nodes extra blank disks (by node name), e.g. a data disk to inject faults on."""
    params = run.parameters(ClusterParameters)
    configs = [dataclasses.replace(c, disks=c.disks + (disks or {}).get(c.name, ()))
               for c in cluster_node_configs(run.profile, params.nodes)]
    lab = run.lab(configs, warm=params.boot_mode == "restore")
    run.boot(lab, params.boot_timeout_s, params.boot_mode)
    cp = ControlPlane(lab, run.profile, run.recorder, params.voters, token=f"ucnb-{run.run_id}")
    with run.step("form the control plane"):
        cp.bootstrap()
    return ClusterEnv(lab, cp, Nemesis(lab, run.recorder, run.profile.service_manager), params.client)


boot = boots(boot_lab)  # the cluster lanes' first step (ultracloud: the product's harness runs the lane)


@lab_step("readiness")
def readiness(run: Run, env: ClusterEnv) -> pd.DataFrame:
    """Every control-plane service healthy, from inside the guests, with time since power-on
    (each probe retried for up to READY_TIMEOUT_S: a starved TCG guest misses a probe's deadline
    now and then; one that never answers fails the lane)."""
    rows = []
    for name in env.cp.members:
        node = env.lab[name]
        for component in ("chainfire", "flaredb"):
            spec = run.profile.component(component)
            health = spec.health
            if not spec.provided or health is None:
                continue
            with run.step(f"ready: {component}", name):
                try:
                    result = wait_until(functools.partial(node.run, health, timeout=15), node=name,
                                        timeout=READY_TIMEOUT_S, what=f"{component} healthy",
                                        recorder=run.recorder)
                except LaneFailure as exc:
                    run.recorder.check(f"{component} healthy on {name}", True, False, node=name)
                    raise LaneFailure(f"{name}: {component} is not healthy: {exc}") from exc
                run.recorder.check(f"{component} healthy on {name}", True, result.ok, node=name)
            rows.append({"node": name, "component": component, "stands_in": spec.stands_in,
                         "healthy": True,
                         "ready_after_s": round(time.time() - (node.started_at or time.time()), 1)})
    return pd.DataFrame(rows)


def workload_state(run: Run, env: ClusterEnv) -> dict[str, str]:
    """Every workload key and its value, by a linearizable read through a live member."""
    cp = env.cp
    return wait_until(lambda: [cp.kv.read_prefix(cp.operator(), cp.live_members()[0], WORKLOAD_PREFIX)],
                      timeout=30, what="a linearizable read of the workload's keys", recorder=run.recorder)[0]


@lab_step("start the workload")
def start_workload(run: Run, env: ClusterEnv) -> pd.DataFrame:
    """`workload_clients` clients on `client`, each with one operation in flight, read
    (linearizably) and write `workload_keys` keys through the members' endpoints (the KV role's
    light client, failing over only past members it cannot reach) until the history is checked;
    every operation is recorded with its invoke and completion times. The keys must be absent at
    the start: the checker's registers start empty."""
    params = run.parameters(ClusterParameters)
    cp, node, members = env.cp, env.lab[env.client], list(env.cp.members)
    with run.step("the workload's keys are absent at the start"):
        present = workload_state(run, env)
        if not run.recorder.check("workload keys absent at the start", 0, len(present)):
            raise LaneFailure(f"the store is not empty at the start: {sorted(present)[:5]}")

    turn = itertools.count()

    def endpoints() -> list[str]:  # each call starts at the next member: a dead one delays few calls
        i = next(turn) % len(members)
        return members[i:] + members[:i]

    def client(shell: GuestShell) -> Client:  # each client its own SSH connection to the node
        def get(key: str) -> tuple[CommandResult, str | None]:
            result = cp.kv.read_value(shell, endpoints(), key)
            return result, value_of(result) if result.ok else None
        return Client(lambda k, v: cp.kv.put_value(shell, endpoints(), k, v), get, shell.close)

    keys = [f"{WORKLOAD_PREFIX}k{i}" for i in range(params.workload_keys)]
    clients = {f"{env.client}/c{i}": client(node.open_shell()) for i in range(1, params.workload_clients + 1)}
    env.workload = Workload(clients, keys, env.history, params.write_interval_s, params.read_fraction,
                            seed=run.run_id).start()
    return pd.DataFrame([{"clients": ", ".join(clients), "endpoints": ", ".join(members),
                          "keys": ", ".join(keys), "read fraction": params.read_fraction,
                          "pause between a client's operations (s)": params.write_interval_s}])


@lab_step("faults")
def run_faults(run: Run, env: ClusterEnv, faults: list[Fault]) -> pd.DataFrame:
    """Each fault of the schedule with its invariants checked (see `run_fault`), as one table."""
    return pd.concat([run_fault(run, env, fault, i) for i, fault in enumerate(faults, 1)], ignore_index=True)


def run_fault(run: Run, env: ClusterEnv, fault: Fault, index: int,
              during: Callable[[list[str]], None] | None = None) -> pd.DataFrame:
    """One fault with its invariants: healthy before, majority serving during, healthy and
    caught up after. `during(targets)` runs once the fault is in place, before its hold (e.g. to
    see a node down from the network)."""
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
        if during is not None:
            during(targets)
        if fault.hold_s:
            time.sleep(fault.hold_s)
        if fault.spec.disconnects:
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


def healthy_members(env: ClusterEnv, attempts: int = 3) -> list[str]:
    """The members whose health probe passes now, each given `attempts` tries: on a starved host
    (TCG guests on two loaded cores) one probe's 5 s deadline passes now and then on a member
    that is serving; a member that fails every try is reported."""
    def healthy(m: str) -> bool:
        return any(env.cp.kv.health(env.lab[m], m).ok for _ in range(attempts))
    return [m for m in env.cp.members if healthy(m)]


@lab_step("acknowledged writes and the whole history")
def acknowledged_writes(run: Run, env: ClusterEnv) -> pd.DataFrame:
    """Stop the workload and judge its whole history (kept as history.csv):

    - the final state is a linearizable read of the workload's keys, and every member's local
      (serializable) read, once caught up, is exactly that state;
    - acknowledged writes lost must be 0 (`lost_acknowledged`);
    - the checker must find one order of every read and write, consistent with real time, in
      which each read returns the latest write (the final state read last). `false` fails the
      lane and shows the operations around the violation; `unknown` (its budget ran out) is a
      skipped check with the reason, never a pass.
    """
    if env.workload is None:
        raise HarnessError("acknowledged_writes before start_workload: the notebook's cells are out of order")
    params = run.parameters(ClusterParameters)
    cp, history = env.cp, env.workload.stop()
    files.atomic_write_text(run.proof_root / "history.csv", history.table().to_csv(index=False))
    problems = []
    with run.step("final state: a linearizable read"):
        final = workload_state(run, env)
    with run.step("every member holds the final state"):
        try:
            run.show(cp.read_check("workload final state", prefix=WORKLOAD_PREFIX, expected=final,
                                   exact=True, timeout=30))
        except LaneFailure as exc:
            problems.append(str(exc))
    durability = lost_acknowledged(history, final)
    run.recorder.check("acknowledged writes lost", 0, len(durability.lost))
    if durability.lost:
        problems.append(f"{len(durability.lost)} acknowledged writes lost: "
                        + ", ".join(f"{o.key}={o.value}" for o in durability.lost[:10]))
    result = check(history.snapshot(), final, time_budget=params.checker_budget_s)
    _record_history_figures(run, result, durability)
    if result.linearizable is False:
        run.recorder.check("the whole history is linearizable", True, False)
        bad = result.violations[0]
        table = result.table()
        for column in ("call", "ret"):  # seconds since the run started, like every other table
            if column in table:
                table[column] = (table[column] - run.recorder.started).round(3)
        files.atomic_write_text(run.proof_root / "history-violations.csv", table.to_csv(index=False))
        run.show(table)
        problems.append(f"the history is not linearizable: key {bad.key} ({bad.kind}): {bad.reason}")
    elif result.linearizable == "unknown":
        out = result.outcomes[0]
        run.skip("the whole history is linearizable",
                 f"unknown: the checker's budget (checker_budget_s={params.checker_budget_s:g}) ran out "
                 f"on key {out.key} ({out.reason}); neither proven linearizable nor shown not to be")
    else:
        run.recorder.check("the whole history is linearizable", True, True)
    if problems:
        raise LaneFailure("; ".join(problems))
    return history_summary(result, durability)


def _record_history_figures(run: Run, result: CheckResult, durability: DurabilityCheck) -> None:
    """The headline figures every writing lane reports in result.json."""
    figure = run.recorder.figure
    figure("linearizable", result.linearizable)
    figure("operations", result.operations, "operations")
    figure("reads", result.reads, "operations")
    figure("writes", result.writes, "operations")
    for status in ("ok", "fail", "info"):
        figure(status, sum(by_type[status] for by_type in result.counts.values()), "operations")
    figure("acknowledged writes", durability.acknowledged, "writes")
    figure("acknowledged writes lost", len(durability.lost), "writes")
    figure("indeterminate writes", durability.indeterminate, "writes")
    figure("checker time", round(result.elapsed, 3), "s")


def history_summary(result: CheckResult, durability: DurabilityCheck) -> pd.DataFrame:
    """The history in numbers, as one table for the notebook."""
    counts = result.counts
    rows = [("linearizable", result.linearizable),
            ("operations (reads, writes)", f"{result.operations} ({result.reads}, {result.writes})"),
            ("reads ok / fail / info", " / ".join(str(counts["read"][s]) for s in ("ok", "fail", "info"))),
            ("writes ok / fail / info", " / ".join(str(counts["write"][s]) for s in ("ok", "fail", "info"))),
            ("acknowledged writes lost", len(durability.lost)),
            ("indeterminate writes (their value in the final state)",
             f"{durability.indeterminate} ({durability.indeterminate_final})"),
            ("keys (checked)", f"{result.keys} ({result.keys_checked})"),
            ("checker", f"{result.elapsed:.3f} s, {result.states} states")]
    return pd.DataFrame(rows, columns=["history", "value"])


@lab_step("workload latency plot")
def latency_plot(run: Run, env: ClusterEnv) -> None:
    """Each operation's latency over time (reads and writes), fault windows shaded."""
    from ucnb.kernel.plots import latency

    ops = [(o.t, o.latency, o.type) for o in env.history.completions()]
    run.show_figure(latency(run.recorder, ops, f"{run.lane.name}: workload reads and writes"), "latency.png")
