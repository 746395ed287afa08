"""End to end: deployer-vm-smoke and deployer-vm-rollback through `ucnb run` (papermill)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT, assert_run_left_nothing

pytestmark = pytest.mark.e2e
UCNB = str(ROOT / ".venv/bin/ucnb")


def _run(outputs: Path, lane: str, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    done = subprocess.run([UCNB, "run", lane, "--no-progress", *args], capture_output=True, text=True,
                          env={**os.environ, "UCNB_OUTPUTS": str(outputs)}, timeout=600)
    root = (outputs / lane / "latest").resolve()
    assert_run_left_nothing(root)
    return done, root


def _observed(root: Path) -> list[dict[str, object]]:
    history: list[dict[str, object]] = json.loads((root / "deployer/state.json").read_text())[
        "nodes"]["worker"]["observed"]
    return history


def _checks(root: Path) -> dict[str, dict[str, str]]:
    with (root / "checks.csv").open() as f:
        return {row["name"]: row for row in csv.DictReader(f)}


def test_smoke_activates_the_prebuilt_target_system(outputs: Path, lab_host: None) -> None:
    done, root = _run(outputs, "deployer-vm-smoke")
    assert done.returncode == 0, done.stderr[-3000:]
    last = _observed(root)[-1]
    assert (last["generation"], last["status"]) == (2, "active")
    checks = _checks(root)
    assert checks["live system"]["observed"] == "lab-system-2"
    assert checks["no builder on the node"]["observed"] == "none"


def test_rollback_reports_rolled_back_and_keeps_the_previous_system(outputs: Path, lab_host: None) -> None:
    done, root = _run(outputs, "deployer-vm-rollback")
    assert done.returncode == 0, done.stderr[-3000:]
    last = _observed(root)[-1]
    assert (last["generation"], last["status"]) == (2, "rolled-back")
    checks = _checks(root)
    assert checks["live system"]["observed"] == "lab-system-1"
    assert checks["current system link"]["observed"] == "lab-system-1"


def test_smoke_fails_when_the_agent_rolls_back(outputs: Path, lab_host: None) -> None:
    done, root = _run(outputs, "deployer-vm-smoke", "-p", "health_check_command=test -e /nonexistent")
    assert done.returncode == 1
    result = json.loads((root / "result.json").read_text())
    assert "reported rolled-back for generation 2, expected active" in result["error"]["message"]
