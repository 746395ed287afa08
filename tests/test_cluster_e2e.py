"""End to end: the cluster lanes on the lab, through papermill, and an unexpected node loss."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import ROOT, ucnb_objects

pytestmark = pytest.mark.e2e
UCNB = str(ROOT / ".venv/bin/ucnb")


def _run(outputs: Path, lane: str, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:  # type: ignore[type-arg]
    done = subprocess.run([UCNB, "run", lane, "--no-progress", *args], capture_output=True, text=True,
                          env={**os.environ, "UCNB_OUTPUTS": str(outputs)}, timeout=900)
    root = (outputs / lane / "latest").resolve()
    return done, json.loads((root / "result.json").read_text())


def _checks(outputs: Path, lane: str) -> list[dict[str, str]]:
    import csv

    return list(csv.DictReader(((outputs / lane / "latest") / "checks.csv").open()))


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


def test_membership_proof_passes_every_transition(outputs: Path, no_leaks: None) -> None:
    done, result = _run(outputs, "chainfire-live-membership-proof")
    assert result["verdict"] == "passed"
    assert done.returncode == 0, done.stderr[-3000:]
    checks = {c["name"]: c for c in _checks(outputs, "chainfire-live-membership-proof")}
    assert checks["promoting a learner not in sync is refused"]["ok"] == "True"
    assert checks["moving leadership to a learner is refused"]["ok"] == "True"
    assert checks["final members"]["observed"] == "['node01', 'node02', 'node03']"
    transitions = {n.split(":")[0] for n in checks if ": serializable reads on " in n}
    assert len(transitions) == 8  # canonical + seven transitions, each read-checked on every member
    assert checks["acknowledged writes lost"]["observed"] == "0"


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
    from ucnb.evidence.proof import read_environment

    lab = read_environment(events[0].parent)["lab_id"]   # this run's lab, not another one on the host
    victim = next(d for d in ucnb_objects()["domains"] if d == f"ucnb-{lab}-node04")
    subprocess.run(["virsh", "-c", "qemu:///system", "destroy", victim], check=True, capture_output=True)
    assert proc.wait(timeout=300) == 1, proc.stderr.read() if proc.stderr else ""
    result = json.loads(((outputs / "fresh-smoke" / "latest") / "result.json").read_text())
    message = json.dumps(result)
    assert "node04" in message and "outside the fault schedule" in message
