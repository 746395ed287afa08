"""Every bad value is refused through `ucnb run` before any VM exists: exit 2 within 5 s of CPU,
the parameter named on stderr, no proof root, lab, secrets file or process of the run made.

Each refused command gets a work root of its own, so what it made is found there whatever other
labs share the host (their wall time does depend on them: it is printed, CPU time is judged)."""

from __future__ import annotations

import os
import resource
import subprocess
import time
from pathlib import Path

import pytest

from ..conftest import ROOT, Cli
from ..lab_fixtures import OwnRuns

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


def _refuse(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """`ucnb run ARGS` with its own outputs and work roots: (outcome, wall s, CPU s of the command),
    after checking it made nothing: no proof root, no lab folder or secrets file, no process left."""
    work, outputs = tmp_path / "work", tmp_path / "outputs"
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    done = subprocess.run([*UCNB, "run", *args, "--no-progress"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "UCNB_OUTPUTS": str(outputs), "ULTRACLOUD_WORK_ROOT": str(work),
                               **env})
    wall, after = time.monotonic() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    assert not outputs.exists() or not list(outputs.rglob("result.json")), "a run was started"
    made = [p for folder in (work / "labs", work / "secrets") if folder.exists() for p in folder.iterdir()]
    assert not made, f"a refused run made {made}"
    assert not OwnRuns(tmp_path).processes(), "a refused run left a process"
    return done, wall, cpu


@pytest.mark.parametrize("lane, args, named", CASES, ids=[f"{c[0]}:{c[2]}" for c in CASES])
def test_a_bad_value_exits_2_fast_naming_it_with_no_vm(tmp_path: Path, lab_host: None, lane: str,
                                                      args: list[str], named: str) -> None:
    done, wall, cpu = _refuse(tmp_path, lane, *args)
    print(f"FIGURE bad-parameter {lane} {named}: exit {done.returncode} in {wall:.2f}s ({cpu:.2f}s CPU)")
    assert done.returncode == 2, done.stderr
    assert named in done.stderr and "bad-parameters" in done.stderr
    assert cpu < 5, f"refused after {cpu:.1f}s of CPU"


def test_a_secret_too_short_to_mask_is_refused_before_the_lane_starts(tmp_path: Path, lab_host: None) -> None:
    done, wall, cpu = _refuse(tmp_path, "single-node-quickstart", ULTRACLOUD_BOOTSTRAP_TOKEN="abc")
    print(f"FIGURE bad-parameter short secret: exit {done.returncode} in {wall:.2f}s ({cpu:.2f}s CPU)")
    assert done.returncode == 2 and cpu < 5
    assert "bootstrap_token_env" in done.stderr
    assert "ULTRACLOUD_BOOTSTRAP_TOKEN has 3 characters" in done.stderr
    assert "abc" not in done.stderr
