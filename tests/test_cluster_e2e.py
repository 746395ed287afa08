"""End to end: the cluster lanes on the lab, through papermill, and an unexpected node loss."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import ROOT, assert_run_left_nothing, ucnb_objects

pytestmark = pytest.mark.e2e
UCNB = str(ROOT / ".venv/bin/ucnb")


def _run(outputs: Path, lane: str, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:  # type: ignore[type-arg]
    done = subprocess.run([UCNB, "run", lane, "--no-progress", *args], capture_output=True, text=True,
                          env={**os.environ, "UCNB_OUTPUTS": str(outputs)}, timeout=1800)
    root = (outputs / lane / "latest").resolve()
    return done, json.loads((root / "result.json").read_text())


def _checks(outputs: Path, lane: str) -> list[dict[str, str]]:
    return list(csv.DictReader(((outputs / lane / "latest") / "checks.csv").open()))


def _assert_history_checked_whole(outputs: Path, lane: str, result: dict) -> None:  # type: ignore[type-arg]
    """The writing lanes' history figures: linearizable, reads and writes recorded, none lost."""
    figures = {name: f["value"] for name, f in result["figures"].items()}
    assert figures["linearizable"] is True, figures
    assert figures["reads"] > 0 and figures["writes"] > 0 and figures["ok"] > 0
    assert figures["operations"] == figures["reads"] + figures["writes"] == (
        figures["ok"] + figures["fail"] + figures["info"])
    assert figures["acknowledged writes lost"] == 0
    checks = {c["name"]: c for c in _checks(outputs, lane)}
    assert checks["the whole history is linearizable"]["ok"] == "True"
    assert checks["workload keys absent at the start"]["ok"] == "True"
    members = [c for n, c in checks.items() if n.startswith("workload final state: serializable reads on ")]
    assert members and all(c["ok"] == "True" for c in members)
    history = (outputs / lane / "latest" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 2 * figures["operations"]  # header, then an invoke and a completion per op
    assert any(",ok,read,workload/" in line for line in history)


def test_fresh_smoke_passes_with_no_acknowledged_write_lost(outputs: Path, no_leaks: None) -> None:
    done, result = _run(outputs, "fresh-smoke")
    assert done.returncode == 0, done.stderr[-3000:]
    assert result["verdict"] == "passed"
    checks = {c["name"]: c for c in _checks(outputs, "fresh-smoke")}
    assert checks["acknowledged writes lost"]["observed"] == "0"
    assert any(n.endswith("cut-off side cannot write") and c["ok"] == "True" for n, c in checks.items())
    assert any(n.endswith("a new leader replaced the faulted one") for n in checks)
    faults = list((outputs / "fresh-smoke" / "latest" / "faults.csv").read_text().splitlines())
    assert len(faults) == 1 + 3  # header + power_loss, link_down, service_restart
    assert {s["name"] for s in result["skipped"]} >= {
        "worker registrations advertise exactly HYPERVISOR_TYPE_KVM"}
    assert (outputs / "fresh-smoke" / "latest" / "plots" / "latency.png").stat().st_size > 10_000
    _assert_history_checked_whole(outputs, "fresh-smoke", result)


def test_membership_proof_passes_every_transition(outputs: Path, no_leaks: None) -> None:
    done, result = _run(outputs, "chainfire-live-membership-proof")
    assert result["verdict"] == "passed"
    assert done.returncode == 0, done.stderr[-3000:]
    checks = {c["name"]: c for c in _checks(outputs, "chainfire-live-membership-proof")}
    assert checks["promoting a learner not in sync is refused"]["ok"] == "True"
    assert checks["moving leadership to a learner is refused"]["ok"] == "True"
    assert checks["final members"]["observed"] == "['node01', 'node02', 'node03']"
    transitions = {n.split(":")[0] for n in checks if ": serializable reads on " in n}
    transitions -= {"workload final state"}  # the history check's, after the workload
    assert len(transitions) == 8  # canonical + seven transitions, each read-checked on every member
    assert checks["acknowledged writes lost"]["observed"] == "0"
    _assert_history_checked_whole(outputs, "chainfire-live-membership-proof", result)


def test_rollout_soak_holds_each_worker_down_and_checks_the_whole_history(outputs: Path,
                                                                         lab_host: None) -> None:
    """Left-over check on this run's own lab only: on a shared host other labs come and go."""
    hold = 3
    done, result = _run(outputs, "rollout-soak", "-p", f"hold_s={hold}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert result["verdict"] == "passed"
    root = (outputs / "rollout-soak" / "latest").resolve()
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
    checks = {c["name"]: c for c in _checks(outputs, "rollout-soak")}
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
    _assert_history_checked_whole(outputs, "rollout-soak", result)
    assert_run_left_nothing(root)


def test_a_node_lost_outside_the_schedule_fails_the_lane_naming_it(outputs: Path,
                                                                  no_leaks: None) -> None:
    """Power off the client node once the control plane is formed: the next health check must
    name it, instead of the lane hanging."""
    env = {**os.environ, "UCNB_OUTPUTS": str(outputs)}
    proc = subprocess.Popen([UCNB, "run", "fresh-smoke", "--no-progress",
                             "-p", "nodes=[node01,node02,node03,node04]",
                             "-p", "faults=[{kind: service_restart, target: one, hold_s: 5}]"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    events: list[Path] = []
    while not any("form the control plane" in e.read_text() and '"passed"' in e.read_text()
                  for e in events):
        assert proc.poll() is None and time.monotonic() < deadline, "the control plane never formed"
        time.sleep(0.5)
        events = list((outputs / "fresh-smoke").glob("*/events.jsonl"))
    victim = next(d for d in ucnb_objects()["domains"] if d.endswith("-node04"))
    subprocess.run(["virsh", "-c", "qemu:///system", "destroy", victim], check=True, capture_output=True)
    assert proc.wait(timeout=300) == 1, proc.stderr.read() if proc.stderr else ""
    result = json.loads(((outputs / "fresh-smoke" / "latest") / "result.json").read_text())
    message = json.dumps(result)
    assert "node04" in message and "outside the fault schedule" in message
