"""rollout-soak's pure parts: its parameters, what each node should run, one look at a node's
services, and the scope files (what was exercised, what was skipped and why)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from ucnb import lanes, profiles
from ucnb.cluster.controlplane import cluster_node_configs
from ucnb.errors import ParameterError
from ucnb.kernel.record import Recorder
from ucnb.lab.ssh import CommandResult
from ucnb.lanes import rollout_soak
from ucnb.lanes.rollout_soak import NotHealthyYet, Parameters, Soak

LAB = profiles.load("lab")


def test_the_defaults_are_the_contract_s_and_bad_values_are_refused() -> None:
    p = Parameters()
    assert (p.hold_s, p.workers, p.client) == (30.0, ["node04", "node05"], "node06")
    assert p.restarts == ["deployer", "fleet-scheduler", "node-agent", "chainfire", "flaredb"]
    lane = lanes.get("rollout-soak")
    for bad, needle in [({"hold_s": -1}, "hold_s"), ({"client": "node04"}, "the workers lose power"),
                        ({"workers": ["node01"]}, "is a voter"),
                        ({"workers": ["node09"]}, "not one of nodes"),
                        ({"workers": ["node04", "node04"]}, "once"), ({"restarts": ["etcd"]}, "restarts"),
                        ({"hold_s": "long"}, "hold_s")]:
        with pytest.raises(ParameterError, match=needle):
            lane.validate(bad)
    with pytest.raises(ValidationError):
        Parameters(hold_s=601)  # a hold beyond the notebook cell's timeout is refused up front
    assert Parameters(hold_s=0).hold_s == 0


def soak(members: tuple[str, ...] = ("node01", "node02", "node03"), nodes: dict[str, Any] | None = None
         ) -> Soak:
    params = Parameters()
    cp = SimpleNamespace(members=list(members), kv=SimpleNamespace(role=LAB.role("kv")))
    env = SimpleNamespace(cp=cp, lab=nodes or {}, client="node06")
    configs = {c.name: c for c in cluster_node_configs(LAB, params.nodes)}
    return Soak(env, params, configs)  # type: ignore[arg-type]


def test_each_node_should_run_its_class_s_services_and_a_held_one_only_as_a_member() -> None:
    s = soak()
    assert rollout_soak.expected_states(s, "node01") == {"sshd": "run", "flaredb": "run", "chainfire": "run"}
    assert rollout_soak.expected_states(s, "node04") == {"sshd": "run", "chainfire": "down"}
    assert rollout_soak.expected_states(s, "node06") == {"sshd": "run"}
    assert rollout_soak.expected_states(soak(("node01", "node04")), "node04")["chainfire"] == "run"


class CannedNode:
    """Answers one look at a node with runit's and the probes' words."""

    def __init__(self, out: str) -> None:
        self.out, self.commands = out, []  # type: ignore[var-annotated]

    def run(self, command: str, timeout: float = 30.0) -> CommandResult:
        self.commands.append(command)
        return CommandResult("n", command, 0, self.out, "", 0.1)


RUNNING = ("run: /run/service/sshd: (pid 101) 40s\nrun: /run/service/flaredb: (pid 99) 40s\n"
           "run: /run/service/chainfire: (pid 120) 38s\nucnb-probe flaredb 0\nucnb-probe chainfire 0\n")


def test_one_look_at_a_node_reads_its_services_and_probes_in_one_command() -> None:
    node = CannedNode(RUNNING)
    run = SimpleNamespace(profile=LAB)
    rows = rollout_soak.node_health(run, soak(nodes={"node01": node}), "node01")  # type: ignore[arg-type]
    assert len(node.commands) == 1
    assert "sv status /run/service/chainfire" in node.commands[0]
    assert str(LAB.components["flaredb"].health) in node.commands[0]
    assert {(r["service"], r["observed"], r["health probe"]) for r in rows} == {
        ("sshd", "run", "—"), ("flaredb", "run", "ok"), ("chainfire", "run", "ok")}


@pytest.mark.parametrize(("out", "needle"), [
    (RUNNING.replace("ucnb-probe chainfire 0", "ucnb-probe chainfire 1"),
     "chainfire run (expected run, probe failing)"),
    (RUNNING.replace("run: /run/service/flaredb: (pid 99) 40s",
                     "down: /run/service/flaredb: 2s, normally up"), "flaredb down (expected run"),
    (RUNNING.replace("run: /run/service/sshd: (pid 101) 40s\n", ""), "sshd ? (expected run"),
])
def test_a_service_down_or_failing_its_probe_is_not_healthy_yet(out: str, needle: str) -> None:
    run = SimpleNamespace(profile=LAB)
    with pytest.raises(NotHealthyYet, match=re.escape(needle)):
        rollout_soak.node_health(run, soak(nodes={"node01": CannedNode(out)}), "node01")  # type: ignore[arg-type]


def test_a_worker_s_held_service_must_stay_down() -> None:
    run = SimpleNamespace(profile=LAB)
    up = CannedNode("run: /run/service/sshd: (pid 1) 9s\nrun: /run/service/chainfire: (pid 2) 9s\n")
    with pytest.raises(NotHealthyYet, match="chainfire run \\(expected down"):
        rollout_soak.node_health(run, soak(nodes={"node04": up}), "node04")  # type: ignore[arg-type]


def test_the_scope_files_say_what_ran_what_did_not_and_why(tmp_path: Path) -> None:
    recorder = Recorder()
    for name, value in [("linearizable", True), ("operations", 900), ("acknowledged writes lost", 0)]:
        recorder.figure(name, value)
    run = SimpleNamespace(profile=LAB, lane=lanes.get("rollout-soak"), run_id="r1", proof_root=tmp_path,
                          recorder=recorder, skip=lambda what, reason, node="": None)
    s = soak(nodes={f"node0{i}": CannedNode("absent\n") for i in range(1, 7)})
    reason = LAB.role("scheduler").missing or ""
    for worker in ("node04", "node05"):
        s.skip(run, f"planned drain cycle on {worker} (active -> draining -> active)", reason)  # type: ignore[arg-type]
        s.cycles.append({"worker": worker, "cycle": "fail-stop power loss", "outcome": "passed",
                         "held (s)": 30.4, "outage (s)": 52.0})
    for service in ("deployer", "fleet-scheduler", "node-agent"):
        s.skip(run, f"restart {service}", rollout_soak.NOT_ON_THE_LAB.get(service, reason))  # type: ignore[arg-type]
    s.restarted.append({"service": "chainfire", "node": "node01", "outcome": "passed"})
    table = rollout_soak.scope_files.__wrapped__(run, s)  # type: ignore[attr-defined]
    assert list(table["file"]) == list(rollout_soak.SCOPE_FILES)
    contract = json.loads((tmp_path / "scope-fixed-contract.json").read_text())
    assert contract["hold_s"] == 30 and [c["worker"] for c in contract["exercised"]["power_loss_cycles"]] == [
        "node04", "node05"]
    assert contract["exercised"]["history"]["linearizable"] is True
    assert contract["exercised"]["service_restarts"] == [{"service": "chainfire", "node": "node01",
                                                          "outcome": "passed"}]
    assert {s["what"] for s in contract["skipped"]} >= {
        "restart deployer", "restart node-agent",
        "planned drain cycle on node04 (active -> draining -> active)"}
    assert all(s["reason"] for s in contract["skipped"])
    assert contract["stand_ins"]["chainfire"].startswith("etcd")
    deployer = (tmp_path / "deployer-scope-fixed.txt").read_text()
    assert "restart deployer: the lab cluster is booted from the lab image" in deployer
    assert "one active writer" in deployer
    assert "nix-agent scope markers (observed on each node): node01 absent, node02 absent" in deployer
    assert contract["nix_agent_scope_markers"] == {f"node0{i}": "absent" for i in range(1, 7)}
    assert all(c.ok for c in recorder.rows["checks"] if c.name.startswith("nix-agent scope marker"))
    scheduler = (tmp_path / "fleet-scheduler-scope-fixed.txt").read_text()
    assert "planned drain cycle on node05" in scheduler and "restart fleet-scheduler" in scheduler
    assert "node04: fail-stop power loss held 30.4 s (hold_s 30)" in scheduler
    assert "restart deployer" not in scheduler
