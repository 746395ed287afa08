"""End to end: the cluster lanes on the lab, through papermill, and an unexpected node loss."""

from __future__ import annotations

import csv
import json
import subprocess
import time
from pathlib import Path

from ucnb.lab.registry import LIBVIRT_URI

from ..conftest import Cli
from ..lab_fixtures import OwnRuns


def _run(cli: Cli, lane: str, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:  # type: ignore[type-arg]
    done = cli.run(lane, *args, timeout=900)
    return done, json.loads((cli.latest(lane) / "result.json").read_text())


def _checks(cli: Cli, lane: str) -> dict[str, dict[str, str]]:
    with (cli.latest(lane) / "checks.csv").open() as f:
        return {row["name"]: row for row in csv.DictReader(f)}


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


def test_membership_proof_passes_every_transition(cli: Cli) -> None:
    done, result = _run(cli, "chainfire-live-membership-proof")
    assert result["verdict"] == "passed"
    assert done.returncode == 0, done.stderr[-3000:]
    checks = _checks(cli, "chainfire-live-membership-proof")
    assert checks["promoting a learner not in sync is refused"]["ok"] == "True"
    assert checks["moving leadership to a learner is refused"]["ok"] == "True"
    assert checks["final members"]["observed"] == "['node01', 'node02', 'node03']"
    transitions = {n.split(":")[0] for n in checks if ": serializable reads on " in n}
    assert len(transitions) == 8  # canonical + seven transitions, each read-checked on every member
    assert checks["acknowledged writes lost"]["observed"] == "0"


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
