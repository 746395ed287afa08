"""End to end on the ultracloud profile: every lane through `ucnb run` (papermill, real nix, offline)
against a copy of the contract flake, and every way a product run fails.

The runs are independent (each its own flake copy and outputs root), so they start together and
the tests then judge each one: the whole set takes about as long as its slowest few runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

from ucnb import lanes, markers
from ucnb.evidence.proof import read_environment
from ucnb.product import commands, contract

from ..conftest import ROOT, Cli
from ..contract_fixtures import copy_contract_flake
from ..lab_fixtures import shared_run

pytestmark = pytest.mark.runs_checked_by_module  # no labs: each run is checked for leftover processes
UCNB = Cli(ROOT).argv()  # the one definition of the command line (tests/conftest.py)
ULTRACLOUD_LANES = sorted(name for name, lane in lanes.all_lanes().items() if "ultracloud" in lane.profiles)
BAREMETAL = ["pre-install.boot", "pre-install.phone-home.complete", "install.bundle-downloaded",
             "install.disko.complete", "install.nixos-install.complete", "reboot", "post-install.boot",
             "desired-system-active"]
# Markers the contract flake prints for a lane (its programs' own start/done, and the contract's
# sequences). `nix build` shows no build log, so the two check lanes print none on their output.
NO_MARKERS = {"deployer-vm-smoke", "deployer-vm-rollback"}
PARALLEL = 6
RUN_TIMEOUT_S = 300


def expected_markers(lane: str) -> list[str]:
    if lane in NO_MARKERS:
        return []
    sequence = [f"{m}.baremetal-qemu-worker" for m in BAREMETAL] if lane == "baremetal-iso" else []
    return [f"contract-flake.start.{lane}", *sequence, f"contract-flake.done.{lane}"]


@dataclass
class Case:
    name: str
    lane: str
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    done: subprocess.CompletedProcess[str] | None = None
    wall_s: float = 0.0
    outputs: Path = Path()
    flake: Path = Path()

    @property
    def root(self) -> Path:
        assert self.done is not None
        return Path(self.done.stdout.strip().splitlines()[-1])

    def result(self) -> dict[str, object]:
        return json.loads((self.root / "result.json").read_text())  # type: ignore[no-any-return]


FAILURES = [
    Case("exit-1", "fresh-smoke", {"UCNB_CONTRACT_FAIL": "fresh-smoke"}),
    Case("exit-1-and-success-false", "provider-vm-reality-proof",
         {"UCNB_CONTRACT_FAIL": "provider-vm-reality-proof"}),
    Case("exit-0-but-success-false", "core-control-plane-ops-proof",
         {"UCNB_CONTRACT_SUCCESS_FALSE": "core-control-plane-ops-proof"}),
    Case("no-result-json", "provider-vm-reality-proof",
         {"UCNB_CONTRACT_NO_RESULT": "provider-vm-reality-proof"}),
    Case("failure-marker", "baremetal-iso", {"UCNB_CONTRACT_FAIL_MARKER": "baremetal-iso"}),
    Case("hang", "fresh-matrix", {"UCNB_CONTRACT_HANG": "fresh-matrix", commands.TIMEOUT_CAP_VAR: "3"}),
]


def base_env(nix_config: str, outputs: Path) -> dict[str, str]:
    dropped = ("ULTRACLOUD_WORK_ROOT", commands.TIMEOUT_CAP_VAR)
    env = {k: v for k, v in os.environ.items() if not k.startswith("UCNB_CONTRACT_") and k not in dropped}
    return {**env, "NIX_CONFIG": nix_config, "UCNB_OUTPUTS": str(outputs), "UCNB_PROJECT_ROOT": str(ROOT),
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def start(case: Case, base: Path, nix_config: str) -> Case:
    case.flake = copy_contract_flake(base / case.name / "flake")
    case.outputs = base / case.name / "outputs"
    started = time.monotonic()
    case.done = subprocess.run([*UCNB, "run", case.lane, "--profile", "ultracloud", "--no-progress",
                                "-p", f"flake={case.flake}", *case.args], capture_output=True, text=True,
                               env={**base_env(nix_config, case.outputs), **case.env}, timeout=RUN_TIMEOUT_S)
    case.wall_s = time.monotonic() - started
    return case


@pytest.fixture(scope="module")
def nix_config(tmp_path_factory: pytest.TempPathFactory) -> str:
    return commands.offline_nix_config(tmp_path_factory.mktemp("nix-config"))


@shared_run()
def runs(tmp_path_factory: pytest.TempPathFactory, nix_config: str) -> Iterator[dict[str, Case]]:
    """Every lane passing, and every failure case, run concurrently; judged by the tests below."""
    base = tmp_path_factory.mktemp("ultracloud-runs")
    cases = [Case(lane, lane) for lane in ULTRACLOUD_LANES] + [
        Case(c.name, c.lane, dict(c.env), c.args) for c in FAILURES]
    started = time.monotonic()
    with ThreadPoolExecutor(PARALLEL) as pool:
        done = list(pool.map(lambda c: start(c, base, nix_config), cases))
    print(f"\n{len(done)} ultracloud runs in {time.monotonic() - started:.1f}s wall "
          f"(slowest {max(c.wall_s for c in done):.1f}s)")
    yield {c.name: c for c in done}


def processes_of(run_id: str) -> list[int]:
    needle = f"UCNB_RUN_ID={run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and needle in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def assert_sealed_and_nothing_left(case: Case) -> dict[str, str]:
    root = case.root
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=root).returncode == 0
    nbformat.validate(nbformat.read(root / f"{case.lane}.ipynb", as_version=4))
    env = read_environment(root)
    assert env["profile"] == "ultracloud"
    assert env["nix_version"] == ".".join(map(str, commands.detect_nix().version))
    assert env["product_flake"] == str(case.flake)
    assert "local_nix_max_jobs" in env and "cluster_nix_build_cores" in env
    deadline = time.monotonic() + 10
    while processes_of(env["run_id"]) and time.monotonic() < deadline:  # the kernel exiting
        time.sleep(0.2)
    assert processes_of(env["run_id"]) == [], "a process of the run was left running"
    return env


def csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open() as f:
        return list(csv.DictReader(f))


def logged_markers(root: Path) -> list[str]:
    """The markers in the product's own output (logs/product.log), parsed independently."""
    return [m.name for m in markers.parse_text((root / "logs" / "product.log").read_text())]


@pytest.mark.parametrize("lane", ULTRACLOUD_LANES)
def test_every_lane_runs_the_product_for_real_and_passes(runs: dict[str, Case], lane: str) -> None:
    case = runs[lane]
    assert case.done is not None and case.done.returncode == 0, case.done.stderr if case.done else ""
    result = case.result()
    assert (result["verdict"], result["profile"]) == ("passed", "ultracloud")
    env = assert_sealed_and_nothing_left(case)
    recorded = [r["marker"] for r in csv_rows(case.root / "markers.csv")]
    assert recorded == logged_markers(case.root)  # every marker the product printed, recorded live
    expected = expected_markers(lane)
    sequence = markers.check_sequence(expected, [markers.Marker(m, 0, m) for m in recorded])
    assert all(c.ok for c in sequence), (expected, recorded)
    assert bool(recorded) == bool(expected)
    planned = contract.plan(lane, flake=case.flake)
    steps = [r for r in csv_rows(case.root / "timeline.csv") if r["node"] == "product"]
    assert [s["name"] for s in steps] == [c.name for c in planned]
    assert {s["outcome"] for s in steps} == {"passed"}
    checks = {c["name"]: c for c in csv_rows(case.root / "checks.csv")}
    assert all(checks[f"{c.name}: exit status"]["ok"] == "True" for c in planned)
    sums = (case.root / "SHA256SUMS").read_text()
    for command in planned:
        if command.proof_folder is None:
            continue
        copied = case.root / "product" / command.proof_folder
        product_result = json.loads((copied / "result.json").read_text())
        assert product_result["success"] is True and product_result["producer"] == "ucnb-contract-flake"
        for name in ("result.json", "environment.txt", *command.expected_files):
            assert f"  product/{command.proof_folder}/{name}\n" in sums, name
        assert checks[f"{command.name}: exit status and result.json agree"]["ok"] == "True"
        assert env["product_execution_model"] and env["vm_accelerator_mode"] == "kvm"
        assert env["vm_accelerator_reason"].startswith("reported by the product")
    if all(c.proof_folder is None for c in planned):
        assert not (case.root / "product").exists()  # the contract names nothing to ingest


def failed(case: Case) -> tuple[dict[str, object], str]:
    assert case.done is not None and case.done.returncode == 1, (case.done.stdout, case.done.stderr)
    result = case.result()
    assert result["verdict"] == "failed" and result["failing_step"]
    failing = result["failing_step"]
    assert isinstance(failing, dict) and failing["node"] == "product"
    assert_sealed_and_nothing_left(case)
    return result, str(failing["last_observation"])


@pytest.mark.parametrize(("case_name", "says"), [
    ("exit-1", "exited 1"),
    ("exit-1-and-success-false", "the product exited 1 and result.json says success: false"),
    ("exit-0-but-success-false", "the product exited 0 but result.json says success: false"),
    ("no-result-json", "the product exited 0 but wrote no result.json"),
])
def test_a_failing_product_fails_the_lane_naming_which(runs: dict[str, Case], case_name: str,
                                                      says: str) -> None:
    case = runs[case_name]
    result, observed = failed(case)
    assert says in observed
    assert says in str(result["error"])  # the cell's error, as error.json recorded it
    checks = {c["name"]: c for c in csv_rows(case.root / "checks.csv")}
    if case.lane != "fresh-smoke":  # a lane whose contract names a result.json
        (agree,) = [c for name, c in checks.items() if name.endswith("exit status and result.json agree")]
        assert agree["ok"] == ("True" if case_name == "exit-1-and-success-false" else "False")
        assert (case.root / "product" / case.lane).is_dir()  # what a failed run wrote is kept too
    assert f"FAILED {case.lane}" in case.done.stderr if case.done else False


def test_a_failure_marker_ends_the_run_at_once_with_its_context(runs: dict[str, Case]) -> None:
    case = runs["failure-marker"]
    _, observed = failed(case)
    assert "printed failure marker install.disko.failed.contract" in observed and "about to fail" in observed
    assert case.wall_s < 120  # the product sleeps 300 s after the marker
    recorded = [r["marker"] for r in csv_rows(case.root / "markers.csv")]
    assert recorded[-1] == "install.disko.failed.contract"
    steps = [r for r in csv_rows(case.root / "timeline.csv") if r["node"] == "product"]
    assert [s["outcome"] for s in steps] == ["passed", "passed", "failed"]  # the two evals, then the run
    assert float(steps[-1]["end"]) - float(steps[-1]["start"]) < 30


def test_a_hanging_command_is_ended_at_its_timeout_with_nothing_left(runs: dict[str, Case]) -> None:
    case = runs["hang"]
    _, observed = failed(case)
    assert "did not finish within its timeout of 3s (process group killed)" in observed
    (step,) = [r for r in csv_rows(case.root / "timeline.csv") if r["node"] == "product"]
    assert 3 <= float(step["end"]) - float(step["start"]) < 20
    assert read_environment(case.root)["product_timeout_cap_s"] == "3"
    assert "hanging (UCNB_CONTRACT_HANG)" in (case.root / "logs" / "product.log").read_text()


def test_a_flake_value_with_a_shell_command_is_refused_and_nothing_runs(tmp_path: Path,
                                                                        nix_config: str) -> None:
    pwned = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
    outputs = tmp_path / "outputs"
    for extra in ((), ("--plan",)):
        done = subprocess.run([*UCNB, "run", "fresh-smoke", "--profile", "ultracloud", "-p",
                               f"flake=.; touch {pwned}", *extra], capture_output=True, text=True,
                              env=base_env(nix_config, outputs), cwd=tmp_path, timeout=60)
        assert not pwned.exists()
        if not extra:
            assert done.returncode == 2 and "flake:" in done.stderr and "does not exist" in done.stderr
    assert not outputs.exists(), "refused before anything started: no proof root"


def test_ctrl_c_ends_the_product_process_group(tmp_path: Path, nix_config: str) -> None:
    flake = copy_contract_flake(tmp_path / "flake")
    env = {**base_env(nix_config, tmp_path / "outputs"), "UCNB_CONTRACT_HANG": "fresh-smoke"}
    proc = subprocess.Popen([*UCNB, "run", "fresh-smoke", "--profile", "ultracloud", "--no-progress",
                             "-p", f"flake={flake}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    log = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        logs = list((tmp_path / "outputs").glob("fresh-smoke/*/logs/product.log"))
        if logs and "hanging (UCNB_CONTRACT_HANG)" in logs[0].read_text():
            log = logs[0]
            break
        time.sleep(0.2)
    assert log is not None, "the product never started hanging"
    run_id = read_environment(log.parents[1])["run_id"]
    assert processes_of(run_id)  # the kernel and the product's sleeping program
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends its foreground group
    assert proc.wait(timeout=60) == 130
    deadline = time.monotonic() + 10
    while processes_of(run_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_of(run_id) == []
    result = json.loads((log.parents[1] / "result.json").read_text())
    assert result["error"]["kind"] == "interrupted" and result["verdict"] == "failed"
    assert "# exit 0" not in log.read_text()  # ended, not finished
