"""End to end: deployer-vm-smoke and deployer-vm-rollback through `ucnb run` (papermill)."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

from ..conftest import Cli


def _run(cli: Cli, lane: str, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    return cli.run(lane, *args), cli.latest(lane)


def _observed(root: Path) -> list[dict[str, object]]:
    history: list[dict[str, object]] = json.loads((root / "deployer/state.json").read_text())[
        "nodes"]["worker"]["observed"]
    return history


def _checks(root: Path) -> dict[str, dict[str, str]]:
    with (root / "checks.csv").open() as f:
        return {row["name"]: row for row in csv.DictReader(f)}


def test_smoke_activates_the_prebuilt_target_system(cli: Cli) -> None:
    done, root = _run(cli, "deployer-vm-smoke")
    assert done.returncode == 0, done.stderr[-3000:]
    last = _observed(root)[-1]
    assert (last["generation"], last["status"]) == (2, "active")
    checks = _checks(root)
    assert checks["live system"]["observed"] == "lab-system-2"
    assert checks["no builder on the node"]["observed"] == "none"


def test_rollback_reports_rolled_back_and_keeps_the_previous_system(cli: Cli) -> None:
    done, root = _run(cli, "deployer-vm-rollback")
    assert done.returncode == 0, done.stderr[-3000:]
    last = _observed(root)[-1]
    assert (last["generation"], last["status"]) == (2, "rolled-back")
    checks = _checks(root)
    assert checks["live system"]["observed"] == "lab-system-1"
    assert checks["current system link"]["observed"] == "lab-system-1"


def test_smoke_fails_when_the_agent_rolls_back(cli: Cli) -> None:
    done, root = _run(cli, "deployer-vm-smoke", "-p", "health_check_command=test -e /nonexistent")
    assert done.returncode == 1
    result = json.loads((root / "result.json").read_text())
    assert "reported rolled-back for generation 2, expected active" in result["error"]["message"]
