"""End to end: the cluster lanes on the lab, through papermill, and an unexpected node loss."""

from __future__ import annotations

import csv
import json
import subprocess
import time
from pathlib import Path

import pytest

from ucnb.lab.registry import LIBVIRT_URI

from ..conftest import Cli, assert_reviewable_evidence
from ..lab_fixtures import OwnRuns


def _run(cli: Cli, lane: str, *args: str, timeout: float = 900
         ) -> tuple[subprocess.CompletedProcess[str], dict]:  # type: ignore[type-arg]
    done = cli.run(lane, *args, timeout=timeout)
    return done, json.loads((cli.latest(lane) / "result.json").read_text())


def _checks(cli: Cli, lane: str) -> dict[str, dict[str, str]]:
    with (cli.latest(lane) / "checks.csv").open() as f:
        return {row["name"]: row for row in csv.DictReader(f)}


def _assert_history_checked_whole(cli: Cli, lane: str, result: dict) -> None:  # type: ignore[type-arg]
    """The writing lanes' history figures: linearizable, reads and writes recorded, none lost."""
    figures = {name: f["value"] for name, f in result["figures"].items()}
    assert figures["linearizable"] is True, figures
    assert figures["reads"] > 0 and figures["writes"] > 0 and figures["ok"] > 0
    assert figures["operations"] == figures["reads"] + figures["writes"] == (
        figures["ok"] + figures["fail"] + figures["info"])
    assert figures["acknowledged writes lost"] == 0
    checks = _checks(cli, lane)
    assert checks["the whole history is linearizable"]["ok"] == "True"
    assert checks["workload keys absent at the start"]["ok"] == "True"
    members = [c for n, c in checks.items() if n.startswith("workload final state: serializable reads on ")]
    assert members and all(c["ok"] == "True" for c in members)
    history = (cli.latest(lane) / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 2 * figures["operations"]  # header, then an invoke and a completion per op
    assert any(",ok,read,workload/" in line for line in history)


@pytest.mark.long(1.5)
@pytest.mark.cluster
def test_fresh_smoke_passes_with_no_acknowledged_write_lost(cli: Cli) -> None:
    done, result = _run(cli, "fresh-smoke")
    assert done.returncode == 0, done.stderr[-3000:]
    assert result["verdict"] == "passed"
    checks = _checks(cli, "fresh-smoke")
    assert checks["acknowledged writes lost"]["observed"] == "0"
    assert any(n.endswith("cut-off side cannot write") and c["ok"] == "True" for n, c in checks.items())
    assert any(n.endswith("a new leader replaced the faulted one") for n in checks)
    faults = list((cli.latest("fresh-smoke") / "faults.csv").read_text().splitlines())
    assert len(faults) == 1 + 3  # header + power_loss, link_down, service_restart
    assert {s["name"] for s in result["skipped"]} >= {
        "worker registrations advertise exactly HYPERVISOR_TYPE_KVM"}
    assert (cli.latest("fresh-smoke") / "plots" / "latency.png").stat().st_size > 10_000
    # what a CI reads without parsing checks.csv, and what a reviewer opens
    assert result["figures"]["acknowledged writes lost"]["value"] == 0
    assert result["figures"]["acknowledged writes"]["value"] > 0
    assert_reviewable_evidence(cli.latest("fresh-smoke"))
    _assert_history_checked_whole(cli, "fresh-smoke", result)


@pytest.mark.long(1.5)
@pytest.mark.cluster
def test_membership_proof_passes_every_transition(cli: Cli) -> None:
    done, result = _run(cli, "chainfire-live-membership-proof")
    assert result["verdict"] == "passed"
    assert done.returncode == 0, done.stderr[-3000:]
    checks = _checks(cli, "chainfire-live-membership-proof")
    assert checks["promoting a learner not in sync is refused"]["ok"] == "True"
    assert checks["moving leadership to a learner is refused"]["ok"] == "True"
    assert checks["final members"]["observed"] == "['node01', 'node02', 'node03']"
    transitions = {n.split(":")[0] for n in checks if ": serializable reads on " in n}
    transitions -= {"workload final state"}  # the history check's, after the workload
    assert len(transitions) == 8  # canonical + seven transitions, each read-checked on every member
    assert checks["acknowledged writes lost"]["observed"] == "0"
    assert result["figures"]["membership transitions"]["value"] == 8
    assert_reviewable_evidence(cli.latest("chainfire-live-membership-proof"))
    _assert_history_checked_whole(cli, "chainfire-live-membership-proof", result)


@pytest.mark.long(3)
@pytest.mark.cluster
def test_rollout_soak_holds_each_worker_down_and_checks_the_whole_history(cli: Cli) -> None:
    hold = 3
    done, result = _run(cli, "rollout-soak", "-p", f"hold_s={hold}", timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert result["verdict"] == "passed"
    root = cli.latest("rollout-soak")
    with (root / "faults.csv").open() as f:
        faults = list(csv.DictReader(f))
    losses = [f for f in faults if f["kind"] == "power_loss"]
    assert [f["targets"] for f in losses] == ["node04", "node05"]
    for f in losses:  # each degraded state held at least hold_s, inside its fault interval
        assert float(f["held_s"]) >= hold and float(f["end"]) - float(f["start"]) >= float(f["held_s"])
    restarts = [f["targets"] for f in faults if f["kind"] == "service_restart"]
    assert restarts == ["node01", "node02", "node03"] * 2  # chainfire, then flaredb, one node at a time
    skipped = {s["name"]: s["reason"] for s in result["skipped"]}
    for worker in ("node04", "node05"):
        assert "fleet-scheduler" in skipped[f"planned drain cycle on {worker} (active -> draining -> active)"]
    assert {"restart deployer", "restart fleet-scheduler", "restart node-agent"} <= set(skipped)
    checks = _checks(cli, "rollout-soak")
    for worker in ("node04", "node05"):
        assert checks[f"{worker} power-loss cycle: seen down from node06"]["ok"] == "True"
        assert checks[f"{worker} power-loss cycle: degraded state held"]["ok"] == "True"
        back = checks[f"after the {worker} power-loss cycle: {worker} reaches the control plane"]
        assert back["ok"] == "True"
    assert checks["chainfire restart on node02: healthy after"]["ok"] == "True"
    contract = json.loads((root / "scope-fixed-contract.json").read_text())
    assert contract["hold_s"] == hold and len(contract["exercised"]["power_loss_cycles"]) == 2
    assert contract["exercised"]["history"]["linearizable"] is True
    assert all(s["reason"] for s in contract["skipped"])
    assert "restart deployer" in (root / "deployer-scope-fixed.txt").read_text()
    assert "planned drain cycle on node05" in (root / "fleet-scheduler-scope-fixed.txt").read_text()
    _assert_history_checked_whole(cli, "rollout-soak", result)
    assert_reviewable_evidence(root)


@pytest.mark.long(1)
@pytest.mark.cluster
def test_a_node_lost_outside_the_schedule_fails_the_lane_naming_it(cli: Cli, own_runs: OwnRuns) -> None:
    """Power off the client node once the control plane is formed: the next health check must
    name it, instead of the lane hanging."""
    proc = cli.start("run", "fresh-smoke", "--no-progress", "-p", "nodes=[node01,node02,node03,node04]",
                     "-p", "faults=[{kind: service_restart, target: one, hold_s: 5}]", stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    events: list[Path] = []
    while not any("form the control plane" in e.read_text() and '"passed"' in e.read_text()
                  for e in events):
        assert proc.poll() is None and time.monotonic() < deadline, "the control plane never formed"
        time.sleep(0.5)
        events = list((cli.outputs / "fresh-smoke").glob("*/events.jsonl"))
    (victim,) = [d for d in own_runs.discover().domains() if d.endswith("-node04")]  # this run's node04
    subprocess.run(["virsh", "-c", LIBVIRT_URI, "destroy", victim], check=True, capture_output=True)
    assert proc.wait(timeout=300) == 1, proc.stderr.read() if proc.stderr else ""
    result = json.loads((cli.latest("fresh-smoke") / "result.json").read_text())
    message = json.dumps(result)
    assert "node04" in message and "outside the fault schedule" in message
