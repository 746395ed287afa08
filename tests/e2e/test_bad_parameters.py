"""Every bad value is refused through `ucnb run` before any VM exists: exit 2 within 5 s, the
parameter named on stderr, no proof root, lab or domain made."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from ..conftest import ROOT, Cli
from ..lab_fixtures import ucnb_objects

pytestmark = pytest.mark.runs_checked_by_module  # refused before any run: nothing of a run to check
UCNB = Cli(ROOT).argv()  # the one definition of the command line (tests/conftest.py)

CASES = [
    ("fresh-smoke", ["-p", "faults=[{kind: power_loss, target: node99}]"], "faults[1].target"),
    ("fresh-smoke", ["-p", "faults=[{kind: meteor_strike, target: leader}]"], "kind"),
    ("fresh-smoke", ["-p", "faults=[{kind: service_restart, target: node05, service: flaredb}]"],
     "faults[1].service"),
    ("fresh-smoke", ["-p", "faults=[{kind: service_restart, target: one, service: 'x; reboot'}]"], "service"),
    ("fresh-smoke", ["-p", "faults=[{kind: power_loss, target: leader, hold_s: -1}]"], "hold_s"),
    ("fresh-smoke", ["-p", "voters=[node01, node02, node09]"], "voters"),
    ("fresh-smoke", ["-p", "client=node09"], "client"),
    ("fresh-smoke", ["-p", "nodes=[node01, node02, node03, node04, node07]"], "nodes"),
    ("chainfire-live-membership-proof", ["-p", "temporary=node02"], "temporary"),
    ("baremetal-iso", ["-p", "disk_size=1T;reboot"], "disk_size"),
    ("baremetal-iso", ["-p", "worker_disk_serial=$(reboot)"], "worker_disk_serial"),
    ("deployer-vm-smoke", ["-p", "memory_mib=99999"], "memory_mib"),
    ("single-node-quickstart", ["-p", "stop_services=[iam]"], "stop_services"),
    ("single-node-quickstart", ["-p", "boot_timeout_s=-3"], "boot_timeout_s"),
]


@pytest.mark.parametrize("lane, args, named", CASES, ids=[f"{c[0]}:{c[2]}" for c in CASES])
def test_a_bad_value_exits_2_fast_naming_it_with_no_vm(outputs: Path, lab_host: None, lane: str,
                                                      args: list[str], named: str) -> None:
    before = ucnb_objects()
    started = time.monotonic()
    done = subprocess.run([*UCNB, "run", lane, "--no-progress", *args], capture_output=True, text=True,
                          env={**os.environ, "UCNB_OUTPUTS": str(outputs)}, timeout=60)
    elapsed = time.monotonic() - started
    print(f"FIGURE bad-parameter {lane} {named}: exit {done.returncode} in {elapsed:.2f}s")
    assert done.returncode == 2, done.stderr
    assert named in done.stderr and "bad-parameters" in done.stderr
    assert elapsed < 5, f"refused after {elapsed:.1f}s"
    assert not outputs.exists() or not list(outputs.rglob("result.json")), "a run was started"
    after = ucnb_objects()
    assert set(after["domains"]) <= set(before["domains"]) and set(after["labs"]) <= set(before["labs"])


def test_a_secret_too_short_to_mask_is_refused_before_the_lane_starts(outputs: Path, lab_host: None) -> None:
    started = time.monotonic()
    env = {**os.environ, "UCNB_OUTPUTS": str(outputs), "ULTRACLOUD_BOOTSTRAP_TOKEN": "abc"}
    done = subprocess.run([*UCNB, "run", "single-node-quickstart", "--no-progress"], capture_output=True,
                          text=True, timeout=60, env=env)
    elapsed = time.monotonic() - started
    print(f"FIGURE bad-parameter short secret: exit {done.returncode} in {elapsed:.2f}s")
    assert done.returncode == 2 and elapsed < 5
    assert "bootstrap_token_env" in done.stderr
    assert "ULTRACLOUD_BOOTSTRAP_TOKEN has 3 characters" in done.stderr
    assert "abc" not in done.stderr
    assert not outputs.exists() or not list(outputs.rglob("result.json"))
