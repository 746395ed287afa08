"""End to end: baremetal-iso through `ucnb run` (papermill): pass (the default run, shared with
tests/e2e/test_baremetal_bootstrap.py), refused phone-home, missing disk."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ucnb.evidence.proof import read_environment

from ..conftest import Cli, assert_no_secret
from .conftest import BOOTSTRAP_CANARY, SharedRun

LANE = "baremetal-iso"
WRONG = "wrong-token-0d9c8b7a6f"


def _run(cli: Cli, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    return cli.run(LANE, *args, **env), cli.latest(LANE)


@pytest.mark.runs_checked_by_module
def test_both_nodes_install_reboot_and_report_active(baremetal_default: SharedRun) -> None:
    done, root = baremetal_default.done, baremetal_default.root
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((root / "result.json").read_text())
    assert result["verdict"] == "passed"
    markers = (root / "markers.csv").read_text()
    for node in ("control-plane", "worker"):
        for name in ("pre-install.boot", "pre-install.phone-home.complete", "install.bundle-downloaded",
                     "install.disko.complete", "install.nixos-install.complete", "reboot",
                     "post-install.boot", "desired-system-active"):
            assert f"{name}.{node}" in markers
    requests = [json.loads(line) for line in (root / "deployer/requests.jsonl").read_text().splitlines()]
    assert {r["node_id"] for r in requests if r["path"] == "/api/v1/phone-home" and r["status"] == 200} == {
        "control-plane", "worker"}
    env = (root / "environment.txt").read_text()
    assert "vm_accelerator_mode=" in env and "execution_model=papermill-notebook" in env
    assert (root / "plots/baremetal-timeline.png").exists()
    assert_no_secret(root, BOOTSTRAP_CANARY)


def test_wrong_token_fails_at_phone_home_and_leaks_nothing(cli: Cli) -> None:
    done, root = _run(cli, "-p", "installer_token_env=UCNB_TEST_WRONG_TOKEN",
                      ULTRACLOUD_BOOTSTRAP_TOKEN=BOOTSTRAP_CANARY, UCNB_TEST_WRONG_TOKEN=WRONG)
    assert done.returncode == 1, done.stderr[-3000:]
    result = json.loads((root / "result.json").read_text())
    assert "pre-install.phone-home.failed.unauthorized" in result["error"]["message"]
    requests = [json.loads(line) for line in (root / "deployer/requests.jsonl").read_text().splitlines()]
    assert any(r["path"] == "/api/v1/phone-home" and r["status"] == 401 and r["auth"] == "invalid"
               for r in requests)
    assert_no_secret(root, BOOTSTRAP_CANARY, WRONG)


def test_disk_selector_matching_no_disk_ends_the_lane_at_once(cli: Cli) -> None:
    # A long install timeout, so that "at once" is told from "at the timeout" on a loaded host too.
    done, root = _run(cli, "-p", "worker_disk_serial=uc-other-disk", "-p", "install_timeout_s=900")
    assert done.returncode == 1, done.stderr[-3000:]
    result = json.loads((root / "result.json").read_text())
    message = result["error"]["message"]
    assert "install.disko.failed.target-disk-missing" in message
    assert "ULTRACLOUD_MARKER install.bundle-downloaded.worker" in message  # serial context
    assert result["failing_step"]["node"] == "worker"
    wall = float(read_environment(root)["wall_time_s"])
    assert wall < 300, "a failure marker must end the lane at once, not at the install timeout (900 s)"


def test_e2e_command_refuses_tcg_unless_allowed_and_records_it(cli: Cli, tmp_path: Path) -> None:
    refused = cli("baremetal-iso-e2e", str(tmp_path / "refused"), "--no-progress")
    env = read_environment(tmp_path / "refused")
    assert env["execution_model"] == "check-runner" and env["allow_tcg"] == "false"
    if env.get("vm_accelerator_mode") == "kvm":  # a real KVM host: nothing to refuse
        return
    assert refused.returncode == 3, refused.stderr[-2000:]
    result = json.loads((tmp_path / "refused/state/result.json").read_text())
    assert "--allow-tcg" in result["error"]["message"]
    allowed = cli("baremetal-iso-e2e", str(tmp_path / "allowed"), "--no-progress", "--allow-tcg")
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    env = read_environment(tmp_path / "allowed")
    assert (env["allow_tcg"], env["vm_accelerator_mode"], env["verdict"]) == ("true", "tcg", "passed")
    assert read_environment(tmp_path / "allowed/state")["execution_model"] == "check-runner"
