"""rollout-soak: the longer-running companion of fresh-smoke: worker loss held degraded, service
restart churn, revalidation after each, and the KV history of the whole soak checked.

Lab profile: from clean state (a new six-node lab and a new control plane), for each worker the
planned drain cycle is skipped (no fleet-scheduler stand-in, so no maintenance state) and one
fail-stop power loss is held for `hold_s`: the worker is seen down from the network, boots back
and its services return to their expected state, and it reaches the control plane again as a
client. Then the services the lab runs restart one node at a time (chainfire on every member,
flaredb on every node running it) with their health before and after; deployer, fleet-scheduler
and node-agent restarts are skipped with reasons. After every cycle and restart the whole cluster
is revalidated, while clients on the gateway keep reading and writing; their whole history is
checked at the end. The scope exercised, and what was not and why, is written into the proof
root under the names the product's lane uses.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from pydantic import Field, model_validator

from ucnb import files
from ucnb.cluster import steps as cluster
from ucnb.cluster.controlplane import cluster_node_configs
from ucnb.cluster.faults import Fault
from ucnb.cluster.steps import ClusterEnv, ClusterParameters, NodeName
from ucnb.errors import LaneFailure, Transient
from ucnb.kernel.steps import boots, lab_step
from ucnb.kernel.wait import wait_until
from ucnb.lab.lab import NodeConfig
from ucnb.lanes import Lane

if TYPE_CHECKING:
    from ucnb.kernel.run import Run

Service = Literal["deployer", "fleet-scheduler", "node-agent", "chainfire", "flaredb"]
SERVICES: tuple[Service, ...] = ("deployer", "fleet-scheduler", "node-agent", "chainfire", "flaredb")
ALWAYS_UP = ("sshd",)  # what every lab guest supervises besides its class's services
STATUS_LINE = re.compile(r"^(?P<state>[a-z]+): (?P<path>[^:\s]+):", re.MULTILINE)  # runit's `sv status`
PROBE = "ucnb-probe"  # marks a health probe's exit status in a node's one-command look
SCOPE_FILES = ("scope-fixed-contract.json", "deployer-scope-fixed.txt", "fleet-scheduler-scope-fixed.txt")

# Why the lab restarts no deployer and no node-agent (the scheduler's reason is the profile's).
NOT_ON_THE_LAB = {
    "deployer": "the lab cluster is booted from the lab image, not provisioned through a deployer, so "
                "no deployer runs in this lane; the lab's reference deployer runs in the lanes that "
                "provision nodes through it (baremetal-iso, deployer-vm-smoke, deployer-vm-rollback)",
    "node-agent": "node-agent is fleet-scheduler's agent on the workers (it runs the services the "
                  "scheduler places there); the lab has no fleet-scheduler, so its nodes run no node-agent",
}

# The release boundary as the product's own documentation states it (ultracloud-testing).
PRODUCT_BOUNDARY: dict[str, Any] = {
    "lane": "one planned drain cycle and one fail-stop worker-loss cycle on the two native-runtime "
            "workers, each degraded state held for 30 seconds; restarts of deployer, fleet-scheduler, "
            "node-agent, chainfire and flaredb; then the live cluster revalidated",
    "deployer": "HA and DR scope-fixed to one active writer plus optional cold-standby restore, not "
                "automatic multi-instance failover",
    "fleet-scheduler": "short-lived active -> draining -> active maintenance transitions, fail-stop "
                       "worker loss, and replica restoration after the node returns",
    "nix-agent": "the steady-state KVM nodes do not ship nix-agent.service: the lane records scope "
                 "markers there; executable nix-agent proof is deployer-vm-rollback, baremetal-iso "
                 "and baremetal-iso-e2e",
    "outside": ["multi-hour maintenance windows",
                "arbitrary multi-voter ChainFire swaps that still need joint consensus",
                "larger-cluster or hardware ChainFire live membership reconfiguration",
                "destructive FlareDB schema rewrites", "fully automated online migration",
                "large-cluster drain storms"],
}


class Parameters(ClusterParameters):
    client: NodeName = "node06"  # the gateway: the workers lose power, the workload's clients must not
    workers: list[NodeName] = Field(default_factory=lambda: ["node04", "node05"], min_length=1, max_length=4)
    hold_s: float = Field(30.0, ge=0, le=600)
    restarts: list[Service] = Field(default_factory=lambda: list(SERVICES), max_length=len(SERVICES))
    recovery_timeout_s: float = Field(120.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _roles(self) -> Parameters:
        problems = [f"worker {w} is not one of nodes" for w in self.workers if w not in self.nodes]
        problems += [f"worker {w} is a voter" for w in self.workers if w in self.voters]
        if self.client in self.workers:
            problems.append(f"client {self.client} is a worker (the workers lose power)")
        if len(set(self.workers)) < len(self.workers) or len(set(self.restarts)) < len(self.restarts):
            problems.append("workers and restarts name each node or service once")
        if problems:
            raise ValueError("; ".join(problems))
        return self


LANE = Lane(name="rollout-soak", title="Rollout soak: worker loss held, service restarts, revalidation",
            parameters=Parameters, cell_timeout_s=3600)


@dataclass
class Soak:
    env: ClusterEnv
    params: Parameters
    configs: dict[str, NodeConfig]
    cycles: list[dict[str, Any]] = field(default_factory=list)    # the cycle timeline
    restarted: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)   # what was not exercised, and why
    faults: int = 0                                                # faults run so far (their index)

    def skip(self, run: Run, what: str, reason: str, node: str = "") -> pd.DataFrame:
        self.skipped.append({"what": what, "reason": reason})
        return run.skip(what, reason, node)


class NotHealthyYet(Transient):
    """A node's services are not (yet) in their expected state."""


@boots
def boot(run: Run) -> Soak:
    """Clean state: a new lab of fresh overlays booted, a new control plane (its own cluster
    token); the workload's keys are checked absent when it starts."""
    params = run.parameters(Parameters)
    configs = {c.name: c for c in cluster_node_configs(run.profile, params.nodes)}
    return Soak(cluster.boot_lab(run), params, configs)


@lab_step("readiness")
def readiness(run: Run, soak: Soak) -> pd.DataFrame:
    """Every control-plane service healthy, and every node's services in their expected state."""
    run.show(cluster.readiness(run, soak.env))
    return revalidate(run, soak, "readiness")


@lab_step("start the workload")
def start_workload(run: Run, soak: Soak) -> pd.DataFrame:
    """Clients on the gateway read and write throughout the soak (see `ucnb.cluster.steps`)."""
    return cluster.start_workload(run, soak.env)


def expected_states(soak: Soak, name: str) -> dict[str, str]:
    """What a node's supervisor should show: its class's services and sshd running; a held
    service down, except the KV role's on a current member."""
    config, kv = soak.configs[name], soak.env.cp.kv.role.service
    states = {s: "run" for s in (*ALWAYS_UP, *config.services)}
    states |= {s: "run" if s == kv and name in soak.env.cp.members else "down" for s in config.held}
    return states


def node_health(run: Run, soak: Soak, name: str) -> list[dict[str, Any]]:
    """One look at a node, in one command: each supervised service's state, and the health probe
    of each component expected running that has one; NotHealthyYet when anything differs."""
    node, expected = soak.env.lab[name], expected_states(soak, name)
    components = {s: run.profile.component(s) for s, want in expected.items() if want == "run"}
    probes = {s: c.health for s, c in components.items() if c.provided and c.health}
    command = " ; ".join([*(run.profile.service_manager.status.format(service=s) for s in expected),
                          *(f"( {p} ) >/dev/null 2>&1; echo {PROBE} {s} $?" for s, p in probes.items())])
    out = node.run(command, timeout=30).stdout
    observed = {m["path"].rsplit("/", 1)[-1]: m["state"] for m in STATUS_LINE.finditer(out)}
    passed = {w[1]: w[2] == "0" for w in (line.split() for line in out.splitlines()) if w[:1] == [PROBE]}
    rows = [{"node": name, "service": service, "expected": want, "observed": observed.get(service, "?"),
             "health probe": "ok" if passed.get(service) else "failing" if service in probes else "—"}
            for service, want in expected.items()]
    bad = [f"{r['service']} {r['observed']} (expected {r['expected']}, probe {r['health probe']})"
           for r in rows if r["observed"] != r["expected"] or r["health probe"] == "failing"]
    if bad:
        raise NotHealthyYet(f"{name}: {', '.join(bad)}")
    return rows


def healthy_node(run: Run, soak: Soak, name: str) -> list[dict[str, Any]]:
    """`node_health`, waited for (up to the recovery timeout)."""
    return wait_until(lambda: node_health(run, soak, name), timeout=soak.params.recovery_timeout_s,
                      what="services as expected and healthy", node=name, recorder=run.recorder)


def revalidate(run: Run, soak: Soak, label: str) -> pd.DataFrame:
    """Every node up with its services as expected and healthy (the members' chainfire among
    them), waiting up to the recovery timeout for each; the nodes are looked at in parallel."""
    def one(name: str) -> list[dict[str, Any]]:
        try:
            found = healthy_node(run, soak, name)
        except LaneFailure as exc:
            run.recorder.check(f"{label}: {name} services", "as expected and healthy", str(exc), ok=False,
                               node=name)
            raise
        run.recorder.check(f"{label}: {name} services", "as expected and healthy",
                           ", ".join(f"{r['service']} {r['observed']}" for r in found), ok=True, node=name)
        return found

    with ThreadPoolExecutor(max_workers=len(soak.params.nodes)) as pool:
        found = list(pool.map(one, soak.params.nodes))
    return pd.DataFrame([{"after": label, **r} for rows in found for r in rows])


def reaches_the_control_plane(run: Run, soak: Soak, name: str, label: str) -> None:
    """The node as a client: a linearizable read through the members answers from it."""
    cp = soak.env.cp
    result = wait_until(lambda: cp.kv.read_value(soak.env.lab[name], list(cp.members), "check/soak"),
                        timeout=soak.params.recovery_timeout_s, node=name, recorder=run.recorder,
                        what="a linearizable read through the members")
    run.recorder.check(f"{label}: {name} reaches the control plane", "answered", str(result), ok=result.ok,
                       node=name)


@lab_step("worker cycles")
def worker_cycles(run: Run, soak: Soak) -> pd.DataFrame:
    """For each worker: the planned drain cycle (skipped: no scheduler on this profile), then one
    fail-stop power loss held `hold_s`, each followed by a revalidation of the whole cluster.
    The table is the cycle timeline (seconds since the run started)."""
    drain_reason = run.profile.role("scheduler").missing or (
        f"the {run.profile.name} profile's scheduler maintenance checks are not implemented")
    for worker in soak.params.workers:
        soak.skip(run, f"planned drain cycle on {worker} (active -> draining -> active)", drain_reason,
                  worker)
        soak.cycles.append({"worker": worker, "cycle": "planned drain", "outcome": "skipped",
                            "why": drain_reason})
        soak.cycles.append(power_loss_cycle(run, soak, worker))
    return pd.DataFrame(soak.cycles)


def power_loss_cycle(run: Run, soak: Soak, worker: str) -> dict[str, Any]:
    """One fail-stop power loss of a worker: healthy and serving as a client before; down, seen
    from the gateway's side of the network, for at least `hold_s` while the control plane keeps a
    leader and accepts writes; powered on, its services as expected and a client again after."""
    env, hold, label = soak.env, soak.params.hold_s, f"{worker} power-loss cycle"
    with run.step(f"{worker} before its power loss", worker):
        healthy_node(run, soak, worker)
        reaches_the_control_plane(run, soak, worker, f"before the {label}")
    seen: dict[str, float] = {}

    def down(targets: list[str]) -> None:
        seen["down"] = observe_down(run, soak, worker)

    soak.faults += 1
    first = len(run.recorder.rows["faults"])
    cluster.run_fault(run, env, Fault(kind="power_loss", target=worker, hold_s=hold), soak.faults,
                      during=down)
    fault = run.recorder.rows["faults"][first]
    with run.step(f"{worker} after its power loss", worker):
        revalidate(run, soak, f"after the {label}")
        reaches_the_control_plane(run, soak, worker, f"after the {label}")
    healthy = time.time()
    assert fault.end is not None and fault.held_s is not None  # the fault row is closed by now
    if not run.recorder.check(f"{label}: degraded state held", f">= {hold:g} s", f"{fault.held_s:.1f} s",
                              ok=fault.held_s >= hold, node=worker):
        raise LaneFailure(f"{label}: held {fault.held_s:.1f} s, less than hold_s={hold:g}")
    t0 = run.recorder.started
    return {"worker": worker, "cycle": "fail-stop power loss", "outcome": "passed",
            "injected (s)": round(fault.start - t0, 1), "seen down after (s)": round(seen["down"], 1),
            "held (s)": round(fault.held_s, 1), "back (s)": round(fault.end - t0, 1),
            "revalidated (s)": round(healthy - t0, 1), "outage (s)": round(healthy - fault.start, 1)}


def observe_down(run: Run, soak: Soak, worker: str) -> float:
    """Seconds until the worker is seen down: its domain off and no answer on the lab network
    to a ping from the client node (not the harness's word for it)."""
    env, start = soak.env, time.monotonic()
    node, peer = env.lab[worker], env.lab[env.client]

    def gone() -> bool:
        ping = peer.run(f"ping -c 1 -W 1 {shlex.quote(node.address)}", timeout=10)
        if ping.exit_status not in (0, 1):  # 1: no reply; anything else is not an answer about the node
            raise LaneFailure(f"{env.client}: ping did not run: {ping}")
        return not node.running() and ping.exit_status == 1

    wait_until(gone, timeout=30, what=f"{worker} down, seen from {env.client}", node=worker,
               recorder=run.recorder)
    took = time.monotonic() - start
    run.recorder.check(f"{worker} power-loss cycle: seen down from {env.client}", "no answer", "no answer",
                       node=worker)
    return took


@lab_step("service restarts")
def service_restarts(run: Run, soak: Soak) -> pd.DataFrame:
    """Each service of `restarts` restarted one node at a time, its health probed before and
    after and the whole cluster revalidated after each; the services the lab does not run are
    skipped with the reason."""
    scheduler = run.profile.role("scheduler").missing
    reasons = {**NOT_ON_THE_LAB, "fleet-scheduler": f"nothing to restart: {scheduler}" if scheduler else ""}
    for service in soak.params.restarts:
        spec = run.profile.component(service)
        nodes = [n for n in soak.params.nodes if expected_states(soak, n).get(spec.service or "") == "run"]
        reason = (reasons.get(service) or spec.missing
                  or ("" if nodes else f"no node of this lab runs {service}")
                  or ("" if spec.health else f"no health probe of {service} on this profile"))
        if reason:
            soak.skip(run, f"restart {service}", reason)
            soak.restarted.append({"service": service, "node": "—", "outcome": "skipped", "why": reason})
            continue
        soak.restarted += [restart(run, soak, service, node) for node in nodes]
    return pd.DataFrame(soak.restarted)


def restart(run: Run, soak: Soak, service: str, name: str) -> dict[str, Any]:
    """One restart: healthy before, restarted through the supervisor and healthy again (timed
    from the restart), the control plane's invariants around it, then the cluster revalidated."""
    spec, node, label = run.profile.component(service), soak.env.lab[name], f"{service} restart on {name}"
    health, unit = spec.health, spec.service
    assert health is not None and unit is not None  # service_restarts skips a service without them
    try:  # a probe is retried for a while: on a starved host one misses its deadline now and then
        before = wait_until(lambda: node.run(health, timeout=15), timeout=soak.params.recovery_timeout_s,
                            what=f"{service} healthy before its restart", node=name, recorder=run.recorder)
    except LaneFailure as exc:
        run.recorder.check(f"{label}: healthy before", "healthy", str(exc), ok=False, node=name)
        raise
    run.recorder.check(f"{label}: healthy before", "healthy", str(before), ok=True, node=name)
    took: list[float] = []

    def healthy_again(targets: list[str]) -> None:  # right after the restart, before the cluster checks
        start = time.monotonic()
        after = wait_until(lambda: node.run(health, timeout=15), timeout=soak.params.recovery_timeout_s,
                           what=f"{service} healthy after its restart", node=name, recorder=run.recorder)
        took.append(time.monotonic() - start)
        run.recorder.check(f"{label}: healthy after", "healthy", f"{after} after {took[0]:.1f} s", ok=True,
                           node=name)

    soak.faults += 1
    cluster.run_fault(run, soak.env, Fault(kind="service_restart", target=name, service=unit), soak.faults,
                      during=healthy_again)
    with run.step(f"revalidate after the {label}", name):
        revalidate(run, soak, f"after the {label}")
    return {"service": service, "node": name, "outcome": "passed", "healthy before": True,
            "healthy again (s after the restart)": round(took[0], 1)}


@lab_step("revalidation")
def revalidation(run: Run, soak: Soak) -> pd.DataFrame:
    """The live cluster after the whole soak: every node's services, the members, local reads of
    every key the lane wrote on each member, and each worker reaching the control plane."""
    table = revalidate(run, soak, "after the soak")
    soak.env.cp.read_check("after the soak")
    for worker in soak.params.workers:
        reaches_the_control_plane(run, soak, worker, "after the soak")
    return table


@lab_step("acknowledged writes and the whole history")
def acknowledged_writes(run: Run, soak: Soak) -> pd.DataFrame:
    return cluster.acknowledged_writes(run, soak.env)


@lab_step("scope files")
def scope_files(run: Run, soak: Soak) -> pd.DataFrame:
    """`scope-fixed-contract.json`, `deployer-scope-fixed.txt` and `fleet-scheduler-scope-fixed.txt`
    in the proof root: what this run exercised, what it skipped and why, and the release boundary
    the product's documentation fixes."""
    figures = {f.name: f.value for f in run.recorder.rows["figures"]}
    history = {k: figures.get(k) for k in ("linearizable", "operations", "reads", "writes", "ok", "fail",
                                            "info", "acknowledged writes lost")}
    cycles = [c for c in soak.cycles if c["outcome"] != "skipped"]
    markers = nix_agent_markers(run, soak)
    nix_agent_lines = [
        "nix-agent scope markers (observed on each node): "
        + ", ".join(f"{node} {seen}" for node, seen in markers.items()) + "; on the lab, nix-agent's "
        "part is played by the reference node agent in deployer-vm-smoke, deployer-vm-rollback and "
        "baremetal-iso.", f"nix-agent (the product's documentation): {PRODUCT_BOUNDARY['nix-agent']}."]
    contract = {
        "schema": "ucnb.rollout-soak.scope/v1", "lane": run.lane.name, "profile": run.profile.name,
        "run_id": run.run_id, "workers": soak.params.workers, "hold_s": soak.params.hold_s,
        "exercised": {"power_loss_cycles": cycles,
                      "service_restarts": [r for r in soak.restarted if r["outcome"] != "skipped"],
                      "history": history},
        "skipped": soak.skipped,
        "nix_agent_scope_markers": markers,
        "stand_ins": {name: c.stands_in for name, c in run.profile.components.items() if c.provided},
        "product_release_boundary": PRODUCT_BOUNDARY,
    }
    texts = {
        SCOPE_FILES[0]: json.dumps(contract, indent=2, default=str) + "\n",
        SCOPE_FILES[1]: _scope_text(run, soak, "deployer", ["deployer"], PRODUCT_BOUNDARY["deployer"],
                                    extra=nix_agent_lines),
        SCOPE_FILES[2]: _scope_text(run, soak, "fleet-scheduler", ["drain", "fleet-scheduler", "node-agent"],
                                    PRODUCT_BOUNDARY["fleet-scheduler"],
                                    extra=["Exercised on the workers instead: " + "; ".join(
                                        f"{c['worker']}: fail-stop power loss held {c['held (s)']} s "
                                        f"(hold_s {soak.params.hold_s:g}), back and revalidated after "
                                        f"{c['outage (s)']} s" for c in cycles)]),
    }
    for name, text in texts.items():
        files.atomic_write_text(run.proof_root / name, text)
    return pd.DataFrame([{"file": name, "bytes": len(text.encode())} for name, text in texts.items()])


def nix_agent_markers(run: Run, soak: Soak) -> dict[str, str]:
    """Whether each node ships a nix-agent (the product's steady-state nodes do not: the lane
    records that per node instead of exercising one)."""
    probe = ("if command -v nix-agent >/dev/null || [ -e /run/service/nix-agent ]; "
             "then echo present; else echo absent; fi")
    markers = {}
    for name in soak.params.nodes:
        seen = soak.env.lab[name].run(probe, timeout=15).stdout.strip() or "not answered"
        run.recorder.check(f"nix-agent scope marker: {name}", "absent", seen, node=name)
        markers[name] = seen
    return markers


def _scope_text(run: Run, soak: Soak, subject: str, words: list[str], boundary: str,
                extra: list[str]) -> str:
    skipped = [s for s in soak.skipped if any(w in s["what"] for w in words)]
    lines = [f"{subject} scope of rollout-soak, {run.profile.name} profile, run {run.run_id}", "",
             "Not exercised on this profile:"]
    lines += [f"- {s['what']}: {s['reason']}" for s in skipped] or ["- (nothing skipped)"]
    lines += ["", *extra, "", f"Release boundary (the product's documentation): {boundary}.",
              "Outside the release-proven scope: " + "; ".join(PRODUCT_BOUNDARY["outside"]) + "."]
    return "\n".join(lines) + "\n"


@lab_step("workload latency plot")
def latency_plot(run: Run, soak: Soak) -> None:
    cluster.latency_plot(run, soak.env)
