"""End to end: deployer-vm-smoke and deployer-vm-rollback through `ucnb run` (papermill); the
passing smoke run is the portable suite's (the same lane and defaults, run once for both modules)."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from ..conftest import Cli
from .conftest import SharedRun


def _run(cli: Cli, lane: str, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    return cli.run(lane, *args), cli.latest(lane)


def _observed(root: Path) -> list[dict[str, object]]:
    history: list[dict[str, object]] = json.loads((root / "deployer/state.json").read_text())[
        "nodes"]["worker"]["observed"]
    return history


def _checks(root: Path) -> dict[str, dict[str, str]]:
    with (root / "checks.csv").open() as f:
        return {row["name"]: row for row in csv.DictReader(f)}


@pytest.mark.runs_checked_by_module   # portable_suite checks its runs left nothing
@pytest.mark.long(1)
def test_smoke_activates_the_prebuilt_target_system(portable_suite: SharedRun) -> None:
    """deployer-vm-smoke with its defaults, as the portable suite runs it (tests/e2e/test_suites.py)."""
    entries = json.loads((portable_suite.root / "suite.json").read_text())["entries"]
    (lane,) = [e for e in entries if e["kind"] == "lane" and e["name"] == "deployer-vm-smoke"]
    assert lane["status"] == "passed" and lane["exit_code"] == 0, portable_suite.done.stdout[-3000:]
    root = portable_suite.root / lane["proof_root"]
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
